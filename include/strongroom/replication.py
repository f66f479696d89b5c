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
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom import catalog, chunks, layout, records
from strongroom.catalog import Manifest, StoredObject
from strongroom.config import Config, RegionConfig, TransferConfig
from strongroom.connections import Connections
from strongroom.errors import IntegrityError, KeyringError, StorageError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.storage import MultipartUpload, ObjectStore, Upload

log = logging.getLogger(__name__)

SINGLE_COPY_LIMIT = 5 * 10**9  # CopyObject's limit: 5 GB
REPAIR_MARGIN = timedelta(hours=1)  # never re-copy a snapshot that expires within the hour


def copy_object(
    source: ObjectStore, target: ObjectStore, key: str, size: int, transfer: TransferConfig,
    *, single_copy_limit: int = SINGLE_COPY_LIMIT, retain_until: datetime | None = None,
    head: Callable[[bytes], tuple[int, bytes]] | None = None,
) -> str:
    """Copy ``key`` from ``source`` to ``target``; returns how it was copied.

    :param head: rewrites the object's leading bytes (an object container's header rewrapped for the
        target's keyring: :func:`strongroom.envelope.rewrap_object_head`): given the first chunk read, it
        returns how many of its bytes to drop and what to write in their place; the rest is copied as
        stored. Such a copy always streams (a server-side copy cannot change bytes)."""
    if head is None and source.endpoint == target.endpoint:
        how = target.copy_within(source, key, size, part_size=transfer.part_size,
                                 max_part_size=transfer.max_part_size, single_copy_limit=single_copy_limit,
                                 retain_until=retain_until)
        if how:
            return how
    _stream_copy(source, target, key, size, transfer, retain_until, head)
    return "streamed copy" if head is None else "streamed copy, header rewrapped"


def _stream_copy(
    source: ObjectStore, target: ObjectStore, key: str, size: int, transfer: TransferConfig,
    retain_until: datetime | None, head: Callable[[bytes], tuple[int, bytes]] | None = None,
) -> None:
    upload = target.multipart(
        key, part_size=transfer.part_size, max_part_size=transfer.max_part_size,
        concurrency=transfer.upload_concurrency, expected_size=size, retain_until=retain_until,
    )
    expected = size
    with upload:
        chunks = source.iter_chunks(
            key, size, chunk_size=transfer.part_size, concurrency=transfer.download_concurrency
        )
        for chunk in chunks:
            if head is not None:  # the first chunk (a part, or the whole object) holds the header
                dropped, replacement = head(chunk)
                chunk, head = replacement + chunk[dropped:], None
                expected += len(replacement) - dropped
            upload.write(chunk)
        if upload.complete() != expected:
            raise IntegrityError(f"copy of {key} to {target.where} has the wrong length")


def clear_leftovers(
    store: ObjectStore, database: str, snapshot_ids: list[str], run_started: datetime, older_than: timedelta
) -> None:
    """Abort, in one listing of ``database``'s unfinished uploads in ``store``, what earlier runs left there:

    - every upload of the snapshots this run copies (``snapshot_ids``) begun before this run began: nothing else
      writes them (a snapshot's keys are its own), so these are a failed or killed copy's, never another run's
      work in progress;
    - every upload begun more than ``older_than`` ago (the run timeout): what a killed run left in a region
      that was not its landing region, for a snapshot that may never be committed and so is never repaired.
      No run of this database is that old and still writing.
    """
    stale_before = datetime.now(UTC) - older_than
    copied = tuple(layout.data_prefix(database, snapshot_id) for snapshot_id in snapshot_ids)

    def leftover(upload: Upload) -> bool:
        return upload.initiated < stale_before or (upload.key.startswith(copied) and upload.initiated < run_started)

    with contextlib.suppress(StrongroomError):  # a region we cannot list fails on the copy itself
        store.abort_uploads(layout.database_prefix(database), leftover)


class SharedRead:
    """One read of the source's objects, fed to every target at once through a small queue per target.

    Each chunk is handed to every target as the same immutable object (no copy per target), and the
    read checks each object's length and SHA-256 against its manifest (the source region's read-back
    verification). A target whose queue stays full for ``grace`` seconds falls behind: it is detached
    from the shared read and, once that read is over, reads the rest from the source itself (its own
    ranges, from where it got to), so a slow region never sets the pace of the others nor competes with
    them for the source; a region that moves no byte at all for the stall deadline fails on its own
    (:class:`strongroom.storage.RetryPolicy`) and is dropped.
    """

    def __init__(
        self, source: ObjectStore, objects: list[StoredObject], names: list[str], transfer: TransferConfig,
        *, depth: int = 2, grace: float = 1.0,
    ) -> None:
        self.source, self.objects, self.transfer, self.grace = source, objects, transfer, grace
        self.queues: dict[str, queue.Queue[tuple[int, int, bytes | None]]] = {
            name: queue.Queue(maxsize=depth) for name in names
        }
        self.detached = {name: threading.Event() for name in names}
        self.error: StrongroomError | None = None
        self.checked = [threading.Event() for _ in objects]  # object i's bytes matched its manifest
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shared-read", daemon=True)

    def start(self) -> SharedRead:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join()

    def drop(self, name: str) -> None:
        """Stop feeding ``name`` (it failed) and free what was queued for it."""
        self.detached[name].set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.queues[name].get_nowait()

    def feeds(self, name: str) -> bool:
        """Whether ``name`` is one of the targets this read streams to."""
        return name in self.queues

    def reads(self, store: ObjectStore, objects: list[StoredObject]) -> bool:
        """Whether this is a read of exactly ``objects`` as ``store`` holds them (its check is theirs)."""
        same = (self.source.endpoint, self.source.bucket) == (store.endpoint, store.bucket)
        return same and self.objects == objects

    def wait_checked(self) -> None:
        """Wait for the read to end; raises what stopped it (the source's copy is then not known whole)."""
        self.done.wait()
        if self.error is not None:
            raise self.error

    def _offer(self, name: str, item: tuple[int, int, bytes | None]) -> None:
        if self.detached[name].is_set():
            return
        try:
            self.queues[name].put(item, timeout=self.grace)
        except queue.Full:
            self.detached[name].set()
            log.info("region %s falls behind the shared read: it reads the source itself from byte %d of %s",
                     name, item[1], self.objects[item[0]].key)

    def _run(self) -> None:
        try:
            for index, obj in enumerate(self.objects):
                info = self.source.head(obj.key)
                if info is None or info.size != obj.stored_size:
                    got = "missing" if info is None else f"{info.size} bytes"
                    raise IntegrityError(
                        f"{self.source.where}: {obj.key} is {got}, the manifest says {obj.stored_size} bytes"
                    )
                digest, offset = hashlib.sha256(), 0
                for chunk in self.source.iter_chunks(
                    obj.key, obj.stored_size, chunk_size=self.transfer.part_size,
                    concurrency=self.transfer.download_concurrency,
                ):
                    digest.update(chunk)
                    for name in self.queues:
                        self._offer(name, (index, offset, chunk))
                    offset += len(chunk)
                    del chunk
                if digest.hexdigest() != obj.sha256:
                    raise IntegrityError(f"{self.source.where}: {obj.key} does not match the SHA-256 in its manifest")
                self.checked[index].set()
                for name in self.queues:
                    self._offer(name, (index, obj.stored_size, None))
        except StrongroomError as exc:
            self.error = exc
        finally:
            self.done.set()

    def copy(self, name: str, target: ObjectStore, index: int, upload: MultipartUpload) -> None:
        """Write object ``index`` into ``upload`` from the shared read, or from the source once detached."""
        obj, feed, offset = self.objects[index], self.queues[name], 0
        while not (self.detached[name].is_set() and feed.empty()):
            try:
                at, (got, position, chunk) = offset, feed.get(timeout=0.2)
            except queue.Empty:
                if self.error is not None:
                    raise StorageError(f"not copied to {target.where}: the read of {obj.key} failed") from None
                continue
            if (got, position) != (index, at):
                raise StorageError(f"shared read out of order for {target.where}: {obj.key} at byte {at}")
            if chunk is None:
                return
            upload.write(chunk)
            offset += len(chunk)
            del chunk
        # a region that fell behind reads the rest itself, but only once the shared read is over: its
        # second read of the source never competes with the healthy regions' copies for the source
        self.done.wait()
        if self.error is not None:
            raise StorageError(f"not copied to {target.where}: the read of {obj.key} failed")
        upload.progress.tick()  # waiting for the others was not a stall of this region
        for chunk in self.source.iter_chunks(
            obj.key, obj.stored_size, chunk_size=self.transfer.part_size, start=offset,
            concurrency=max(1, self.transfer.download_concurrency // 2), progress=upload.progress,
        ):
            upload.write(chunk)
            del chunk


def fan_out_copy(
    source: ObjectStore, targets: Mapping[str, ObjectStore], obj: StoredObject, transfer: TransferConfig,
    *, retain_until: datetime | None = None, upload_concurrency: int | None = None,
) -> dict[str, StrongroomError]:
    """Stream ``obj`` from ``source`` into every target at once (:class:`SharedRead`): the source is read
    once while the targets keep up, so memory is about that of one transfer however many targets there are.

    Raises :class:`IntegrityError` when the source's bytes do not match ``obj``. Each target's copy still
    has to be verified by reading it back from that target. A target that fails is dropped, the others
    go on; returns the failures by target name.
    """
    read = SharedRead(source, [obj], list(targets), transfer).start()

    def copy(name: str) -> StrongroomError | None:
        try:
            stream_into(read, name, targets[name], 0, retain_until, upload_concurrency or transfer.upload_concurrency)
        except StrongroomError as exc:
            return exc
        return None

    names = list(targets)
    with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="fan-out") as pool:
        errors = dict(zip(names, pool.map(copy, names), strict=True))
    read.join()
    if isinstance(read.error, IntegrityError):
        raise read.error
    return {name: error for name, error in errors.items() if error is not None}


def stream_into(
    read: SharedRead, name: str, target: ObjectStore, index: int, retain_until: datetime | None, concurrency: int,
) -> None:
    """Copy object ``index`` of ``read`` into ``target`` as one multipart upload, completed only when the
    source's read of the whole object matched its manifest; any failure aborts the upload."""
    obj, transfer = read.objects[index], read.transfer
    try:
        upload = target.multipart(
            obj.key, part_size=transfer.part_size, max_part_size=transfer.max_part_size,
            concurrency=concurrency, expected_size=obj.stored_size, retain_until=retain_until,
        )
        with upload:
            read.copy(name, target, index, upload)
            while not read.checked[index].wait(0.2):  # never complete a copy of a source that is not whole
                if read.error is not None:
                    raise StorageError(f"not copied to {target.where}: the read of {obj.key} failed")
            if upload.complete() != obj.stored_size:
                raise IntegrityError(f"copy of {obj.key} to {target.where} has the wrong length")
    except BaseException:
        read.drop(name)
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
    pending = layout.pending_key(database, ref.snapshot_id)
    if store.head(pending) is not None:
        manifest = Manifest.from_json(store.get_bytes(pending), keyring, f"s3://{store.bucket}/{pending}")
        if (manifest.database, manifest.snapshot_id) != (database, ref.snapshot_id):
            raise IntegrityError(f"s3://{store.bucket}/{pending} describes another snapshot")
        return manifest
    return catalog.load_manifest(store, keyring, database, ref.snapshot_id)


def pending_ids(store: ObjectStore, database: str) -> list[str]:
    """Snapshots whose data is whole in ``store`` and whose pending manifest is still there: landed by a
    run that did not bring them to every region (stopped, killed, or a region was down)."""
    keys = (info.key for info in store.list_objects(layout.pending_prefix(database)))
    return layout.snapshot_ids(keys, database, layout.PENDING)


def find_gaps(
    config: Config, database: str, region_name: str, conns: Connections, now: datetime | None = None
) -> list[SnapshotRef]:
    """Snapshots committed in another region, or landed whole but left pending by an earlier run (in
    any region, this one too), but not committed here, that live for more than another hour.

    A gap counts only when its manifest (committed or pending) authenticates: a junk object named like a
    manifest (anyone with write access to that one bucket can make one) is skipped with a warning, tried
    from the next region that holds the id, and never fails this region (the monitor's key check alerts).
    """
    now = now or datetime.now(UTC)
    _, store, _ = _region(config, conns, region_name)
    present = set(catalog.snapshot_ids(store, database))  # a region we cannot list fails here, loudly
    gaps: dict[str, SnapshotRef] = {}
    for other in config.regions:
        try:
            _, other_store, _ = _region(config, conns, other.name)
            ids = [] if other.name == region_name else catalog.snapshot_ids(other_store, database)
            ids += pending_ids(other_store, database)
        except StrongroomError as exc:
            log.warning("cannot list %s while looking for gaps: %s", other.name, exc)
            continue
        for snapshot_id in ids:
            expires = layout.snapshot_id_time(snapshot_id) + config.retention
            if snapshot_id in present or snapshot_id in gaps or expires <= now + REPAIR_MARGIN:
                continue
            try:  # the pending manifest of a landed snapshot, or the committed one: authenticated either way
                source_manifest(config, conns, database, SnapshotRef(snapshot_id, other.name))
            except (IntegrityError, KeyringError) as exc:
                log.warning("%s: not repairing %s in %s from %s: %s", database, snapshot_id, region_name,
                            other.name, exc)
                continue
            gaps[snapshot_id] = SnapshotRef(snapshot_id, other.name)
    return [gaps[k] for k in sorted(gaps)]


def replicate_region(
    config: Config, database: str, region_name: str, conns: Connections,
    this_run: SnapshotRef | None, *, now: datetime | None = None, feed: SharedRead | None = None,
    transfer: TransferConfig | None = None, gaps: bool = True,
) -> list[SnapshotRef]:
    """Copy this run's snapshot, and every gap, into ``region_name``. Returns what verify must check.

    :param feed: the shared read of ``this_run``'s objects from its landing region (:func:`sync_regions`):
        when it streams to this region, this run's objects are written from it instead of being read from
        the source again. On any failure this region leaves the read, which then never waits for it.
    :param transfer: the concurrency of this region's copies (default ``config.transfer``; a share of it
        when several regions copy at once).
    :param gaps: also copy every gap (:func:`find_gaps`); :func:`sync_regions` copies them on their own.
    """
    started = datetime.now(UTC)
    transfer = transfer or config.transfer
    try:
        _, target, _ = _region(config, conns, region_name)
        target.check_bucket()
        refs = [this_run] if this_run else []
        if gaps:
            refs += [g for g in find_gaps(config, database, region_name, conns, now) if not this_run or g != this_run]
        clear_leftovers(target, database, [ref.snapshot_id for ref in refs if ref.source_region != region_name],
                        started, config.snapshot.run_timeout)
        for ref in refs:
            if ref.source_region == region_name:
                continue
            copy_started = time.monotonic()
            _, source, _ = _region(config, conns, ref.source_region)
            manifest = source_manifest(config, conns, database, ref)
            objects, retain_until = manifest.objects(), manifest.taken_at + config.retention
            stream = feed if feed is not None and feed.feeds(region_name) and ref == this_run else None
            if stream is not None and not stream.reads(source, objects):
                raise ValueError(f"the shared read given is not of snapshot {ref.snapshot_id} in {ref.source_region}")
            for index, obj in enumerate(objects):
                if stream is not None:
                    stream_into(stream, region_name, target, index, retain_until, transfer.upload_concurrency)
                    how = "streamed from the shared read"
                else:
                    how = copy_object(source, target, obj.key, obj.stored_size, transfer, retain_until=retain_until)
                log.info("%s: copied %s from %s to %s (%s)", database, obj.key, ref.source_region, region_name, how)
            if manifest.chunked:
                _, _, keyring = _region(config, conns, region_name)
                known = chunks.known_in(config, target, keyring, manifest, datetime.now(UTC))
                copied = chunks.copy_chunks(source, target, manifest, known, transfer, retain_until=retain_until)
                log.info("%s: copied %d of %d chunks of %s from %s to %s (the others are there)", database, copied,
                         len({c.name for c in manifest.chunks}), ref.snapshot_id, ref.source_region, region_name)
            log.info("%s: snapshot %s copied from %s to %s in %.1fs", database, ref.snapshot_id, ref.source_region,
                     region_name, time.monotonic() - copy_started)
    except BaseException:
        if feed is not None and feed.feeds(region_name):
            feed.drop(region_name)
        raise
    return refs


def verify_region(
    config: Config, database: str, region_name: str, conns: Connections, refs: list[SnapshotRef],
    *, transfer: TransferConfig | None = None, feed: SharedRead | None = None,
) -> list[SnapshotRef]:
    """Check each copy in ``region_name`` against its manifest by reading the stored bytes back.

    :param transfer: the concurrency of the read-back (default ``config.transfer``; a share of it when
        several regions verify at once).
    :param feed: the shared read of this run's snapshot: the landing region's copy, which that read has
        read and checked, is not read a second time; its check is waited for instead.
    """
    transfer = transfer or config.transfer
    _, store, keyring = _region(config, conns, region_name)
    for ref in refs:
        manifest = source_manifest(config, conns, database, ref)
        objects = manifest.objects()
        if feed is not None and feed.reads(store, objects):
            feed.wait_checked()
        else:
            for obj in objects:
                verify_object(store, obj, transfer)
        if manifest.chunked:
            _, _, source_keyring = _region(config, conns, ref.source_region)
            present = chunks.stored_sizes(store, database, manifest.chunk_key_id)  # one listing for both
            known = chunks.known_in(config, store, keyring, manifest, datetime.now(UTC), present)
            read_back = chunks.verify_new(store, manifest, manifest.data_key(source_keyring), known, transfer,
                                          present)
            log.info("%s: %d chunks of %s present in %s, %d read back", database, len(manifest.chunks),
                     ref.snapshot_id, region_name, read_back)
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
        key = layout.manifest_key(database, ref.snapshot_id)
        if store.head(key) is None:
            manifest = source_manifest(config, conns, database, ref)
            _, _, source_keyring = _region(config, conns, ref.source_region)
            data_key = manifest.data_key(source_keyring)
            own = manifest.rewrapped(data_key, keyring)
            erase_at = manifest.taken_at + config.retention  # a lock never outlives the erasure promise
            if own.chunked:
                chunks.check_present(store, own)
                base = chunks.newest_chunked(store, keyring, database)
                base = base if base is not None and base.chunk_key_id == own.chunk_key_id else None
                locked = chunks.lock_chunks(store, own, base, erase_at, chunks.lock_slack(config), config.transfer)
                own = replace(own, chunks_locked_until=locked)
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
    """Copy, verify and commit in one region on its own (the DAG runs these as three tasks; the CLI runs
    them for every region at once, fed by one read of the landing region, with :func:`sync_regions`)."""
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
    """Bring this run's snapshot to every region at once, then repair gaps (the CLI path): the DAG's
    per-region steps, :func:`replicate_region`, :func:`verify_region` and :func:`commit_region`, on one
    thread per region, fed by one read of the landing region.

    The snapshot's objects are read once from the region they landed in (:class:`SharedRead`) and each
    region's replicate step streams them from that read (server-side where a target shares the source's
    endpoint). That read is the landing region's read-back: its verify step waits for it instead of reading
    again, so the landing region commits only once the read found its copy whole. Each region copies, reads
    its copy back and commits at its own speed; a region that falls behind reads the source itself, and one
    that fails or stalls (no byte moved for ``transfer.stall_timeout``) leaves the shared read and is dropped
    from this run. Transfer concurrency is divided between the parallel transfers so memory stays about that
    of one transfer.

    Last, each region that committed this run's snapshot runs the same three steps for its gaps, one region
    after the other with the whole transfer concurrency: gaps are rare, memory stays that of one transfer,
    no repair competes with the shared read for the source, and a gap that cannot be repaired never holds
    back this run's commit.
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
    try:
        manifest = source_manifest(config, conns, database, this_run)
        _, source, _ = _region(config, conns, this_run.source_region)
    except StrongroomError as exc:
        for name in stores:
            outcomes.setdefault(name, str(exc))
        return {region.name: outcomes[region.name] for region in config.regions}
    targets = {name: store for name, store in stores.items() if name != this_run.source_region}
    streamed = [name for name, target in targets.items() if target.endpoint != source.endpoint]
    # about one transfer's memory for the whole fan-out: half the ranges in flight of a single download,
    # and half a single upload's parts divided between the targets (the parts are the chunks read, shared)
    fan_out = config.transfer.model_copy(
        update={"download_concurrency": max(1, config.transfer.download_concurrency // 2)}
    )
    streaming = config.transfer.model_copy(
        update={"upload_concurrency": max(1, config.transfer.upload_concurrency // (2 * max(1, len(streamed))))}
    )
    reading = config.transfer.model_copy(
        update={"download_concurrency": max(1, config.transfer.download_concurrency // max(1, len(targets)))}
    )
    read = SharedRead(source, manifest.objects(), streamed, fan_out)

    def steps(name: str) -> str:
        try:
            refs = replicate_region(config, database, name, conns, this_run, feed=read, gaps=False,
                                    transfer=streaming if read.feeds(name) else config.transfer)
            verified = verify_region(config, database, name, conns, refs, transfer=reading, feed=read)
            commit_region(config, database, name, conns, verified)
        except StrongroomError as exc:
            return str(exc)
        return COMMITTED

    names = list(stores)
    read.start()
    with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="region") as pool:
        for name, outcome in zip(names, pool.map(steps, names), strict=True):
            outcomes[name] = outcome
    read.join()
    for name in names:
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
                found = store.head(layout.manifest_key(database, ref.snapshot_id)) is not None
                outcome[region.name] = COMMITTED if found else f"snapshot {ref.snapshot_id} not committed"
            except StrongroomError as exc:
                outcome[region.name] = f"unreachable: {exc}"
        report.results[database] = outcome
        clear_pending(config, conns, database)
    record = {"checked_at": report.checked_at, "results": report.results}
    for region in config.regions:
        with contextlib.suppress(StrongroomError):  # an unreachable region is already in the report
            records.write(conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region)),
                          layout.RUN_RECORD_KEY, record, kind=RUN_RECORD_KIND)
    return report


RUN_RECORD_KIND = "run"


def clear_pending(config: Config, conns: Connections, database: str) -> list[str]:
    """Delete every pending manifest whose snapshot is committed in every region (this run's and any an
    earlier, stopped run left and this one repaired). A region that cannot be read keeps them all."""
    stores = {region.name: conns.store(region, config.transfer) for region in config.regions}
    try:
        committed = [set(catalog.snapshot_ids(store, database)) for store in stores.values()]
    except StrongroomError as exc:
        log.info("%s: pending manifests kept: %s", database, exc)
        return []
    everywhere = set.intersection(*committed) if committed else set()
    cleared = []
    for store in stores.values():
        with contextlib.suppress(StrongroomError):  # a leftover is removed by the next run or retention
            for snapshot_id in pending_ids(store, database):
                if snapshot_id in everywhere:
                    store.delete(layout.pending_key(database, snapshot_id))
                    cleared.append(snapshot_id)
    return cleared
