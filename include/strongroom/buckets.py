"""``strongroom init-buckets``: create or check each region's bucket.

The state every region's bucket should be in: versioning on, public access blocked, default server-side
encryption (a second layer under Strongroom's own), Object Lock when the region asks for it, and
lifecycle rules that are only a backstop for pruning:

* ``databases/``: current objects expire after retention plus one day;
* bucket-wide: noncurrent versions expire after one day, expired delete markers are removed, and
  unfinished multipart uploads are aborted after one day.

No rule ever expires current objects outside ``databases/`` (object-storage backups keep content for as
long as a recent point in time needs it), and no rule acts before a snapshot's window has ended.
A bucket this command created (tagged ``strongroom:managed=true``) is brought to that state; any other
bucket is only checked, and its drift reported, never changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from strongroom.config import Config, ObjectSourceConfig, RegionConfig
from strongroom.connections import Connections
from strongroom.storage import ObjectStore

MANAGED_TAG = {"Key": "strongroom:managed", "Value": "true"}
_PUBLIC_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                 "RestrictPublicBuckets": True}


def lifecycle_rules(retention: timedelta) -> list[dict[str, Any]]:
    days = math.ceil(retention / timedelta(days=1)) + 1
    return [
        {"ID": "strongroom-databases-backstop", "Status": "Enabled", "Filter": {"Prefix": "databases/"},
         "Expiration": {"Days": days}},
        {"ID": "strongroom-versions-and-uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
         "Expiration": {"ExpiredObjectDeleteMarker": True},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    ]


@dataclass
class BucketReport:
    region: str
    bucket: str
    created: bool = False
    managed: bool = False
    drift: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drift or self.fixed == self.drift

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, ok=self.ok)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _read(call: Any, missing: set[str], **kwargs: Any) -> dict[str, Any] | None:
    try:
        return dict(call(**kwargs))
    except ClientError as exc:
        if _code(exc) in missing:
            return None
        raise


def observe(store: ObjectStore, region: RegionConfig, retention: timedelta) -> list[str]:
    """How the bucket differs from the desired state (empty: it matches)."""
    c, b = store.client, store.bucket
    drift = []
    if c.get_bucket_versioning(Bucket=b).get("Status") != "Enabled":
        drift.append("versioning is not enabled")
    block = _read(c.get_public_access_block, {"NoSuchPublicAccessBlockConfiguration"}, Bucket=b)
    if not block or block.get("PublicAccessBlockConfiguration") != _PUBLIC_BLOCK:
        drift.append("public access is not fully blocked")
    sse = _read(c.get_bucket_encryption, {"ServerSideEncryptionConfigurationNotFoundError"}, Bucket=b)
    if not sse or not sse.get("ServerSideEncryptionConfiguration", {}).get("Rules"):
        drift.append("default server-side encryption is off")
    rules = _read(c.get_bucket_lifecycle_configuration, {"NoSuchLifecycleConfiguration"}, Bucket=b)
    have = {r.get("ID"): r for r in (rules or {}).get("Rules", [])}
    for want in lifecycle_rules(retention):
        got = have.pop(want["ID"], None)
        if got is None or any(got.get(k) != v for k, v in want.items()):
            drift.append(f"lifecycle rule {want['ID']} is missing or differs")
    for rule_id, rule in have.items():
        if rule.get("Status") == "Enabled" and ("Expiration" in rule or "NoncurrentVersionExpiration" in rule):
            drift.append(f"lifecycle rule {rule_id} is not Strongroom's and may delete backups early")
    if region.object_lock != "off":
        lock = _read(c.get_object_lock_configuration, {"ObjectLockConfigurationNotFoundError"}, Bucket=b)
        if not lock or lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            drift.append("object lock is not enabled (it can only be turned on when a bucket is created)")
    return drift


def _apply(store: ObjectStore, retention: timedelta) -> None:
    c, b = store.client, store.bucket
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    c.put_public_access_block(Bucket=b, PublicAccessBlockConfiguration=_PUBLIC_BLOCK)
    c.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    c.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": lifecycle_rules(retention)})


def init_bucket(config: Config, region: RegionConfig, conns: Connections) -> BucketReport:
    store = conns.store(region, config.transfer)
    c, b = store.client, store.bucket
    report = BucketReport(region.name, b)
    try:
        exists = _read(c.head_bucket, {"404", "NoSuchBucket", "NotFound"}, Bucket=b) is not None
        if not exists:
            args: dict[str, Any] = {"Bucket": b}
            if region.name != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": region.name}
            if region.object_lock != "off":
                args["ObjectLockEnabledForBucket"] = True
            c.create_bucket(**args)
            c.put_bucket_tagging(Bucket=b, Tagging={"TagSet": [MANAGED_TAG]})
            report.created = True
        tags = _read(c.get_bucket_tagging, {"NoSuchTagSet", "NoSuchTagSetError"}, Bucket=b) or {}
        report.managed = MANAGED_TAG in tags.get("TagSet", [])
        report.drift = observe(store, region, config.retention)
        if report.managed and report.drift:
            _apply(store, config.retention)
            remaining = observe(store, region, config.retention)
            report.fixed = [d for d in report.drift if d not in remaining]
    except (ClientError, BotoCoreError) as exc:
        raise store._fail(exc, "initialising", None) from None
    return report


def check_source(config: Config, source: ObjectSourceConfig, conns: Connections) -> BucketReport:
    """A source bucket is only checked, never changed: versioning must be on for point-in-time restores."""
    store = conns.source_store(source, config.transfer)
    report = BucketReport(f"source {source.bucket}", source.bucket)
    try:
        status = store.client.get_bucket_versioning(Bucket=store.bucket).get("Status")
    except (ClientError, BotoCoreError) as exc:
        raise store._fail(exc, "checking versioning of", None) from None
    if status != "Enabled":
        report.drift.append("versioning is not enabled on this source bucket: overwritten or deleted files "
                            "between two passes cannot be backed up (enable it on the bucket)")
    return report


def init_buckets(config: Config, conns: Connections) -> list[BucketReport]:
    reports = [init_bucket(config, region, conns) for region in config.regions]
    return reports + [check_source(config, source, conns) for source in config.object_storage]
