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

from strongroom import layout
from strongroom.config import Config, ObjectSourceConfig, RegionConfig
from strongroom.connections import Connections
from strongroom.storage import ObjectStore

MANAGED_TAG = {"Key": "strongroom:managed", "Value": "true"}
_PUBLIC_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                 "RestrictPublicBuckets": True}


def lifecycle_rules(retention: timedelta) -> list[dict[str, Any]]:
    days = math.ceil(retention / timedelta(days=1)) + 1
    return [
        {"ID": "strongroom-databases-backstop", "Status": "Enabled", "Filter": {"Prefix": layout.DATABASES},
         "Expiration": {"Days": days}},
        {"ID": "strongroom-versions-and-uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
         "Expiration": {"ExpiredObjectDeleteMarker": True},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    ]


def _expires_chunks(rule: dict[str, Any]) -> bool:
    """Whether a lifecycle rule expires current objects under ``chunks/`` by age or date."""
    expiration = rule.get("Expiration", {})
    if not ("Days" in expiration or "Date" in expiration):
        return False
    where = rule.get("Filter", {})
    prefix = where.get("Prefix", where.get("And", {}).get("Prefix", rule.get("Prefix", "")))
    return layout.CHUNKS.startswith(prefix) or prefix.startswith(layout.CHUNKS)


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


def observe(store: ObjectStore, region: RegionConfig, retention: timedelta) -> list[str]:
    """How the bucket differs from the desired state (empty: it matches)."""
    drift = []
    if store.versioning() != "Enabled":
        drift.append("versioning is not enabled")
    block = store.bucket_setting("public_access_block")
    if not block or block.get("PublicAccessBlockConfiguration") != _PUBLIC_BLOCK:
        drift.append("public access is not fully blocked")
    sse = store.bucket_setting("encryption")
    if not sse or not sse.get("ServerSideEncryptionConfiguration", {}).get("Rules"):
        drift.append("default server-side encryption is off")
    rules = store.bucket_setting("lifecycle")
    have = {r.get("ID"): r for r in (rules or {}).get("Rules", [])}
    for want in lifecycle_rules(retention):
        got = have.pop(want["ID"], None)
        if got is None or any(got.get(k) != v for k, v in want.items()):
            drift.append(f"lifecycle rule {want['ID']} is missing or differs")
    for rule_id, rule in have.items():
        if rule.get("Status") == "Enabled" and ("Expiration" in rule or "NoncurrentVersionExpiration" in rule):
            drift.append(f"lifecycle rule {rule_id} is not Strongroom's and may delete backups early")
        if rule.get("Status") == "Enabled" and _expires_chunks(rule):
            drift.append(f"lifecycle rule {rule_id} expires chunks by age: a chunk an old snapshot wrote is still "
                         f"needed by every newer one naming it (remove the rule; prune deletes chunks)")
    if region.object_lock != "off":
        lock = store.bucket_setting("object_lock")
        if not lock or lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            drift.append("object lock is not enabled (it can only be turned on when a bucket is created)")
    return drift


def _apply(store: ObjectStore, retention: timedelta) -> None:
    store.put_bucket_setting("versioning", {"Status": "Enabled"})
    store.put_bucket_setting("public_access_block", _PUBLIC_BLOCK)
    store.put_bucket_setting("encryption", {
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    store.put_bucket_setting("lifecycle", {"Rules": lifecycle_rules(retention)})


def init_bucket(config: Config, region: RegionConfig, conns: Connections) -> BucketReport:
    store = conns.store(region, config.transfer)
    report = BucketReport(region.name, store.bucket)
    if not store.bucket_exists():
        store.create_bucket(object_lock=region.object_lock != "off", tags=[MANAGED_TAG])
        report.created = True
    tags = store.bucket_setting("tagging") or {}
    report.managed = MANAGED_TAG in tags.get("TagSet", [])
    report.drift = observe(store, region, config.retention)
    if report.managed and report.drift:
        _apply(store, config.retention)
        remaining = observe(store, region, config.retention)
        report.fixed = [d for d in report.drift if d not in remaining]
    return report


def check_source(config: Config, source: ObjectSourceConfig, conns: Connections) -> BucketReport:
    """A source bucket is only checked, never changed: versioning must be on for point-in-time restores."""
    store = conns.source_store(source, config.transfer)
    report = BucketReport(f"source {source.bucket}", source.bucket)
    if store.versioning() != "Enabled":
        report.drift.append("versioning is not enabled on this source bucket: overwritten or deleted files "
                            "between two passes cannot be backed up (enable it on the bucket)")
    return report


def init_buckets(config: Config, conns: Connections) -> list[BucketReport]:
    reports = [init_bucket(config, region, conns) for region in config.regions]
    return reports + [check_source(config, source, conns) for source in config.object_storage]
