"""Copy ciphertext between regions, and verify a region's copy from its own bytes.

Objects are copied exactly as stored (never decrypted). When both buckets share an endpoint the
provider copies server-side (a multipart copy above 5 GB, never one CopyObject); otherwise, or when the
provider refuses, the bytes stream through with the same memory bound as an upload; :func:`fan_out_copy`
streams one read into several regions at once. No ACL header is ever sent: buckets with ACLs disabled
reject them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from strongroom import catalog, crypto, records
from strongroom.catalog import Manifest, StoredObject
from strongroom.config import Config, RegionConfig, TransferConfig
from strongroom.connections import Connections
from strongroom.errors import IntegrityError, KeyringError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.storage import MultipartUpload, ObjectStore, PartSizer

log = logging.getLogger(__name__)

SINGLE_COPY_LIMIT = 5 * 10**9  # CopyObject's limit: 5 GB
REPAIR_MARGIN = timedelta(hours=1)  # never re-copy a snapshot that expires within the hour


def copy_object(
    source: ObjectStore, target: ObjectStore, key: str, size: int, transfer: TransferConfig,
    *, single_copy_limit: int = SINGLE_COPY_LIMIT, retain_until: datetime | None = None,
) -> str:
    """Copy ``key`` from ``source`` to ``target``; returns how it was copied."""
    if source.endpoint == target.endpoint:
        try:
            if size <= single_copy_limit:
                target.client.copy_object(
                    Bucket=target.bucket, Key=key, CopySource={"Bucket": source.bucket, "Key": key},
                    **target.lock_args(retain_until),
                )
                return "server-side copy"
            _multipart_copy(source, target, key, size, transfer, retain_until)
            return "server-side multipart copy"
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            log.warning("server-side copy to %s refused (%s); streaming the bytes instead", target.where, code)
    _stream_copy(source, target, key, size, transfer, retain_until)
    return "streamed copy"


def _stream_copy(
    source: ObjectStore, target: ObjectStore, key: str, size: int, transfer: TransferConfig,
    retain_until: datetime | None,
) -> None:
    upload = target.multipart(
        key, part_size=transfer.part_size, max_part_size=transfer.max_part_size,
        concurrency=transfer.upload_concurrency, expected_size=size, retain_until=retain_until,
    )
    with upload:
        chunks = source.iter_chunks(
            key, size, chunk_size=transfer.part_size, concurrency=transfer.download_concurrency
        )
        for chunk in chunks:
            upload.write(chunk)
        if upload.complete() != size:
            raise IntegrityError(f"copy of {key} to {target.where} has the wrong length")


def fan_out_copy(
    source: ObjectStore, targets: Mapping[str, ObjectStore], obj: StoredObject, transfer: TransferConfig,
    *, retain_until: datetime | None = None, upload_concurrency: int | None = None,
) -> dict[str, StrongroomError]:
    """Stream ``obj`` from ``source`` into every target at once: the source is read once, each chunk is
    handed to every target's upload as the same immutable object (no copy per target), so memory is that
    of one transfer however many targets there are.

    The bytes read are the source's stored bytes: their length and SHA-256 are checked against ``obj``, so
    this read is also the source region's read-back verification (raises :class:`IntegrityError` when it
    fails). Each target's copy still has to be verified by reading it back from that target. A target that
    fails is dropped, the others go on; returns the failures by target name.
    """
    failed: dict[str, StrongroomError] = {}
    info = source.head(obj.key)
    if info is None or info.size != obj.stored_size:
        got = "missing" if info is None else f"{info.size} bytes"
        raise IntegrityError(f"{source.where}: {obj.key} is {got}, the manifest says {obj.stored_size} bytes")
    concurrency = upload_concurrency or transfer.upload_concurrency
    uploads: dict[str, MultipartUpload] = {}
    try:
        for name, target in targets.items():
            try:
                upload = target.multipart(
                    obj.key, part_size=transfer.part_size, max_part_size=transfer.max_part_size,
                    concurrency=concurrency, expected_size=obj.stored_size, retain_until=retain_until,
                )
                uploads[name] = upload.__enter__()
            except StrongroomError as exc:
                failed[name] = exc
        digest = hashlib.sha256()
        for chunk in source.iter_chunks(
            obj.key, obj.stored_size, chunk_size=transfer.part_size, concurrency=transfer.download_concurrency
        ):
            digest.update(chunk)
            for name, upload in list(uploads.items()):
                try:
                    upload.write(chunk)
                except StrongroomError as exc:
                    failed[name] = exc
                    uploads.pop(name).abort()
            del chunk
        if digest.hexdigest() != obj.sha256:
            raise IntegrityError(f"{source.where}: {obj.key} does not match the SHA-256 in its manifest")

        def complete(name: str) -> StrongroomError | None:
            upload = uploads[name]
            try:
                if upload.complete() != obj.stored_size:
                    raise IntegrityError(f"copy of {obj.key} to {targets[name].where} has the wrong length")
            except StrongroomError as exc:
                upload.abort()
                return exc
            return None

        # completing makes the provider assemble the object (seconds for a large one): all targets at once
        names = list(uploads)
        with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="s3-complete") as pool:
            for name, error in zip(names, pool.map(complete, names), strict=True):
                uploads.pop(name)
                if error is not None:
                    failed[name] = error
    finally:
        for upload in uploads.values():  # an exception above: no partial object is ever completed
            upload.abort()
    return failed


def _multipart_copy(
    source: ObjectStore, target: ObjectStore, key: str, size: int, transfer: TransferConfig,
    retain_until: datetime | None,
) -> None:
    client = target.client
    upload_id = client.create_multipart_upload(
        Bucket=target.bucket, Key=key, **target.lock_args(retain_until)
    )["UploadId"]
    try:
        sizer = PartSizer(transfer.part_size, transfer.max_part_size, target.max_parts, size)
        parts, offset, number = [], 0, 1
        while offset < size:
            length = min(sizer.size_for(number), size - offset)
            response = client.upload_part_copy(
                Bucket=target.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                CopySource={"Bucket": source.bucket, "Key": key},
                CopySourceRange=f"bytes={offset}-{offset + length - 1}",
            )
            parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
            offset += length
            number += 1
        client.complete_multipart_upload(
            Bucket=target.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        try:
            client.abort_multipart_upload(Bucket=target.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            log.error("could not abort multipart copy of %s in %s: %s", key, target.where, exc)
        raise


def verify_object(store: ObjectStore, obj: StoredObject, transfer: TransferConfig) -> None:
    """Read the stored bytes back and compare their length and SHA-256 with the manifest."""
    info = store.head(obj.key)
    if info is None:
        raise IntegrityError(f"{store.where}: {obj.key} is missing")
    if info.size != obj.stored_size:
        raise IntegrityError(f"{store.where}: {obj.key} is {info.size} bytes, the manifest says {obj.stored_size}")
    digest = hashlib.sha256()
    for chunk in store.iter_chunks(
        obj.key, obj.stored_size, chunk_size=transfer.part_size, concurrency=transfer.download_concurrency
    ):
        digest.update(chunk)
    if digest.hexdigest() != obj.sha256:
        raise IntegrityError(f"{store.where}: {obj.key} does not match the SHA-256 in its manifest")


# ---- region by region: copy, verify, commit, repair ------------------------------------------------------


@dataclass(frozen=True)
class SnapshotRef:
    """A snapshot and the region holding its authoritative manifest (pending or committed)."""

    snapshot_id: str
    source_region: str

    def to_dict(self) -> dict[str, str]:
        return {"snapshot_id": self.snapshot_id, "source_region": self.source_region}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SnapshotRef:
        return cls(str(data["snapshot_id"]), str(data["source_region"]))


def _region(config: Config, conns: Connections, name: str) -> tuple[RegionConfig, ObjectStore, Keyring]:
    region = config.region(name)
    return region, conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region))


def source_manifest(config: Config, conns: Connections, database: str, ref: SnapshotRef) -> Manifest:
    """The manifest a copy is made from: the landing region's pending one, or a committed one."""
    _, store, keyring = _region(config, conns, ref.source_region)
    pending = catalog.pending_key(database, ref.snapshot_id)
    if store.head(pending) is not None:
        manifest = Manifest.from_json(store.get_bytes(pending), keyring, f"s3://{store.bucket}/{pending}")
        if (manifest.database, manifest.snapshot_id) != (database, ref.snapshot_id):
            raise IntegrityError(f"s3://{store.bucket}/{pending} describes another snapshot")
        return manifest
    return catalog.load_manifest(store, keyring, database, ref.snapshot_id)


def find_gaps(
    config: Config, database: str, region_name: str, conns: Connections, now: datetime | None = None
) -> list[SnapshotRef]:
    """Snapshots committed in another region but missing here, that live for more than another hour.

    A gap counts only when the other region's manifest authenticates: a junk object named like a manifest
    (anyone with write access to that one bucket can make one) is skipped with a warning, tried from the
    next region that holds the id, and never fails this region (the monitor's key check alerts on it).
    """
    now = now or datetime.now(UTC)
    _, store, _ = _region(config, conns, region_name)
    present = set(catalog.snapshot_ids(store, database))  # a region we cannot list fails here, loudly
    gaps: dict[str, SnapshotRef] = {}
    for other in config.regions:
        if other.name == region_name:
            continue
        try:
            _, other_store, other_keyring = _region(config, conns, other.name)
            ids = catalog.snapshot_ids(other_store, database)
        except StrongroomError as exc:
            log.warning("cannot list %s while looking for gaps: %s", other.name, exc)
            continue
        for snapshot_id in ids:
            expires = catalog.snapshot_id_time(snapshot_id) + config.retention
            if snapshot_id in present or snapshot_id in gaps or expires <= now + REPAIR_MARGIN:
                continue
            try:
                catalog.load_manifest(other_store, other_keyring, database, snapshot_id)
            except (IntegrityError, KeyringError) as exc:
                log.warning("%s: not repairing %s in %s from %s: %s", database, snapshot_id, region_name,
                            other.name, exc)
                continue
            gaps[snapshot_id] = SnapshotRef(snapshot_id, other.name)
    return [gaps[k] for k in sorted(gaps)]


def replicate_region(
    config: Config, database: str, region_name: str, conns: Connections,
    this_run: SnapshotRef | None, *, now: datetime | None = None,
) -> list[SnapshotRef]:
    """Copy this run's snapshot, and every gap, into ``region_name``. Returns what verify must check."""
    _, target, _ = _region(config, conns, region_name)
    target.check_bucket()
    refs = [this_run] if this_run else []
    refs += [g for g in find_gaps(config, database, region_name, conns, now) if not this_run or g != this_run]
    for ref in refs:
        if ref.source_region == region_name:
            continue
        _, source, _ = _region(config, conns, ref.source_region)
        manifest = source_manifest(config, conns, database, ref)
        for obj in manifest.objects():
            how = copy_object(source, target, obj.key, obj.stored_size, config.transfer,
                              retain_until=manifest.taken_at + config.retention)
            log.info("%s: copied %s from %s to %s (%s)", database, obj.key, ref.source_region, region_name, how)
    return refs


def verify_region(
    config: Config, database: str, region_name: str, conns: Connections, refs: list[SnapshotRef]
) -> list[SnapshotRef]:
    """Check each copy in ``region_name`` against its manifest by reading the stored bytes back."""
    _, store, _ = _region(config, conns, region_name)
    for ref in refs:
        manifest = source_manifest(config, conns, database, ref)
        for obj in manifest.objects():
            verify_object(store, obj, config.transfer)
        log.info("%s: snapshot %s verified in %s", database, ref.snapshot_id, region_name)
    return refs


def commit_region(
    config: Config, database: str, region_name: str, conns: Connections, refs: list[SnapshotRef]
) -> list[str]:
    """Write each verified snapshot's manifest in ``region_name``, its data key wrapped by this region's
    keyring, so the region's copy needs nothing from any other region. Idempotent."""
    _, store, keyring = _region(config, conns, region_name)
    committed = []
    for ref in refs:
        key = catalog.manifest_key(database, ref.snapshot_id)
        if store.head(key) is None:
            manifest = source_manifest(config, conns, database, ref)
            _, _, source_keyring = _region(config, conns, ref.source_region)
            data_key = crypto.unwrap_key(
                source_keyring.key(manifest.key_id), manifest.key_id, manifest.wrapped_key, manifest.identity
            )
            own = replace(
                manifest,
                key_id=keyring.active_id,
                wrapped_key=crypto.wrap_key(keyring.active_key, keyring.active_id, data_key, manifest.identity),
            )
            erase_at = manifest.taken_at + config.retention  # a lock never outlives the erasure promise
            for obj in own.objects():
                info = store.head(obj.key)
                if info is None or info.size != obj.stored_size:
                    raise IntegrityError(f"{store.where}: {obj.key} is missing or incomplete; not committing")
                store.apply_lock(obj.key, erase_at)
                store.confirm_lock(obj.key, erase_at)
            store.put_bytes(key, own.to_json(keyring), retain_until=erase_at)
            try:
                store.confirm_lock(key, erase_at)
            except StrongroomError:
                with contextlib.suppress(StrongroomError):
                    store.delete(key)  # an unlocked manifest in a locking region is not a commit
                raise
            log.info("%s: committed snapshot %s in %s", database, ref.snapshot_id, region_name)
        committed.append(ref.snapshot_id)
    return committed


def sync_region(
    config: Config, database: str, region_name: str, conns: Connections, this_run: SnapshotRef | None
) -> list[str]:
    """Copy, verify and commit in one region on its own (the DAG runs these as three tasks; the CLI brings
    a run's snapshot to every region at once with :func:`sync_regions`)."""
    refs = replicate_region(config, database, region_name, conns, this_run)
    verified = verify_region(config, database, region_name, conns, refs)
    return commit_region(config, database, region_name, conns, verified)


class CachedConnections:
    """Connections that build each region's store and keyring once and share them between threads.

    An S3 client costs tens to hundreds of milliseconds to build (and memory), and one run of
    :func:`sync_regions` asks for the same few stores dozens of times; boto3 clients are thread-safe.
    """

    def __init__(self, inner: Connections) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._stores: dict[tuple[str, str, str, TransferConfig], ObjectStore] = {}
        self._keyrings: dict[str, Keyring] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def store(self, region: RegionConfig, transfer: TransferConfig) -> ObjectStore:
        key = (region.name, region.bucket, region.aws_conn_id, transfer)
        with self._lock:
            if key not in self._stores:
                self._stores[key] = self.inner.store(region, transfer)
            return self._stores[key]

    def keyring(self, conn_id: str) -> Keyring:
        with self._lock:
            if conn_id not in self._keyrings:
                self._keyrings[conn_id] = self.inner.keyring(conn_id)
            return self._keyrings[conn_id]


def sync_regions(
    config: Config, database: str, conns: Connections, this_run: SnapshotRef
) -> dict[str, str]:
    """Bring this run's snapshot to every region at once, then repair gaps (the CLI path).

    The snapshot's objects are read once from the region they landed in and streamed to every other
    region in parallel (:func:`fan_out_copy`; server-side where a target shares the source's endpoint);
    that read verifies the landing region's copy. Then each region, in its own thread, reads its copy
    back and checks it (:func:`verify_object`) and commits it; last, each committed region's gaps are
    copied, verified and committed, one region after the other. Transfer concurrency is divided between
    the parallel transfers so memory stays that of one transfer.
    Returns each region's outcome: ``"committed"`` or the error that stopped it; never raises for a region.
    """
    conns = conns if isinstance(conns, CachedConnections) else CachedConnections(conns)
    outcomes: dict[str, str] = {}
    stores: dict[str, ObjectStore] = {}
    for region in config.regions:
        try:
            store = conns.store(region, config.transfer)
            store.check_bucket()
            stores[region.name] = store
        except StrongroomError as exc:
            outcomes[region.name] = str(exc)
    copied: set[str] = set()  # regions holding a copy still to be read back
    verified: set[str] = set()  # regions whose copy was read back while streaming from it
    started = time.monotonic()
    try:
        manifest = source_manifest(config, conns, database, this_run)
        _, source, _ = _region(config, conns, this_run.source_region)
        targets = {name: store for name, store in stores.items() if name != this_run.source_region}
        streamed = {n: t for n, t in targets.items() if t.endpoint != source.endpoint}
        retain_until = manifest.taken_at + config.retention
        # one transfer's memory for the whole fan-out: half the ranges in flight of a single download, and
        # half a single upload's parts divided between the targets (the parts are the chunks read, shared)
        fan_out = config.transfer.model_copy(
            update={"download_concurrency": max(1, config.transfer.download_concurrency // 2)}
        )
        share = max(1, config.transfer.upload_concurrency // (2 * max(1, len(streamed))))
        failed: dict[str, StrongroomError] = {}
        for obj in manifest.objects():
            live = {n: t for n, t in streamed.items() if n not in failed}
            source_error: StrongroomError | None = None
            try:
                failed |= fan_out_copy(source, live, obj, fan_out, retain_until=retain_until,
                                       upload_concurrency=share)
            except IntegrityError as exc:  # the landing region's own copy is bad: so is every copy of it
                source_error = exc
            for name in [n for n in targets if n not in streamed and n not in failed]:
                try:
                    copy_object(source, targets[name], obj.key, obj.stored_size, config.transfer,
                                retain_until=retain_until)
                except StrongroomError as exc:
                    failed[name] = exc
            if source_error is not None:
                raise source_error
        for name, error in failed.items():
            outcomes[name] = str(error)
        copied = {n for n in targets if n not in failed}
        verified = {this_run.source_region}
        log.info("%s: snapshot %s streamed from %s to %s in %.1fs", database, this_run.snapshot_id,
                 this_run.source_region, ", ".join(sorted(copied)) or "no region", time.monotonic() - started)
    except StrongroomError as exc:
        for name in stores:
            outcomes.setdefault(name, str(exc))

    # each region reads its copy back; split the download concurrency between the parallel readers
    readers = max(1, len(copied))
    reading = config.transfer.model_copy(
        update={"download_concurrency": max(1, config.transfer.download_concurrency // readers)}
    )

    def finish(name: str) -> str:
        try:
            if name in copied:
                for obj in source_manifest(config, conns, database, this_run).objects():
                    verify_object(stores[name], obj, reading)
                log.info("%s: snapshot %s verified in %s", database, this_run.snapshot_id, name)
            commit_region(config, database, name, conns, [this_run])
            return COMMITTED
        except StrongroomError as exc:
            return str(exc)

    pending = [name for name in stores if name in copied or name in verified]
    with ThreadPoolExecutor(max_workers=max(1, len(pending)), thread_name_prefix="region") as pool:
        for name, outcome in zip(pending, pool.map(finish, pending), strict=True):
            outcomes[name] = outcome
    # gaps (snapshots another region holds and this one missed) are rare: repaired one region after the
    # other with the whole transfer concurrency, so memory stays that of one transfer
    for name in pending:
        if outcomes[name] != COMMITTED:
            continue
        try:
            refs = replicate_region(config, database, name, conns, None)
            commit_region(config, database, name, conns, verify_region(config, database, name, conns, refs))
        except StrongroomError as exc:
            outcomes[name] = str(exc)
    return {region.name: outcomes[region.name] for region in config.regions}


# ---- the end of a run: which regions hold this run's snapshots ---------------------------------------------


@dataclass
class RunReport:
    results: dict[str, dict[str, str]] = field(default_factory=dict)  # database -> region -> outcome
    checked_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def missing(self) -> list[tuple[str, str, str]]:
        return [(db, region, outcome) for db, regions in sorted(self.results.items())
                for region, outcome in regions.items() if outcome != COMMITTED]

    @property
    def ok(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        parts = [f"{db} in {region} ({outcome})" for db, region, outcome in self.missing]
        return "not committed: " + "; ".join(parts) if parts else "committed in every region"


COMMITTED = "committed"


def check_run(config: Config, conns: Connections, runs: Mapping[str, SnapshotRef | None]) -> RunReport:
    """Which regions hold each database's snapshot of this run; records the outcome in every region."""
    report = RunReport()
    for database, ref in runs.items():
        outcome: dict[str, str] = {}
        for region in config.regions:
            if ref is None:
                outcome[region.name] = "no snapshot was taken this run"
                continue
            try:
                store = conns.store(region, config.transfer)
                found = store.head(catalog.manifest_key(database, ref.snapshot_id)) is not None
                outcome[region.name] = COMMITTED if found else f"snapshot {ref.snapshot_id} not committed"
            except StrongroomError as exc:
                outcome[region.name] = f"unreachable: {exc}"
        report.results[database] = outcome
        if ref is not None and all(v == COMMITTED for v in outcome.values()):
            with contextlib.suppress(StrongroomError):  # a leftover is removed by retention
                conns.store(config.region(ref.source_region), config.transfer).delete(
                    catalog.pending_key(database, ref.snapshot_id)
                )
    record = {"checked_at": report.checked_at, "results": report.results}
    for region in config.regions:
        with contextlib.suppress(StrongroomError):  # an unreachable region is already in the report
            records.write(conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region)),
                          RUN_RECORD_KEY, record, kind=RUN_RECORD_KIND)
    return report


RUN_RECORD_KEY = "status/last-run.json"
RUN_RECORD_KIND = "run"
