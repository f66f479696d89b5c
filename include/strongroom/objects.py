"""Object-storage backups: versioned, encrypted, multi-region, restorable to any point in the window.

A *pass* lists the source bucket's live object versions and stores each content it has not seen before in
every region, then commits a *point index*: for every live key at that instant, which stored content it
had. Content is stored once per distinct content: its id is an HMAC-SHA256 of the bytes under a key
derived from the keyring, so the backup does not reveal whether a known file is stored. Contents, indexes
and journals are sealed in the object container of :mod:`strongroom.envelope` (a fresh data key each,
wrapped by the region's keyring; ``docs/encryption-format.md``); file names appear only inside sealed indexes.

Each region's bucket holds, under ``objects/<source>/``, the contents, one point index per committed pass
(the commit point) and the journal of an unfinished pass; :mod:`strongroom.layout` builds those keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom import envelope, layout
from strongroom.config import Config, RegionConfig, TransferConfig, require_offset
from strongroom.connections import Connections
from strongroom.errors import IntegrityError, NotFoundError, RefusedError, ReplicationError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.progress import Progress
from strongroom.regions import first_answer
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)

ID_INFO = b"strongroom content-id v1"
LIST_INSTEAD_OF_HEAD = 500
JOURNAL_EVERY = float(os.environ.get("STRONGROOM_JOURNAL_EVERY", "15"))  # seconds between progress journals


# ---- content ids -----------------------------------------------------------------------------------------


def id_key(keyring: Keyring, key_id: str | None = None) -> tuple[str, bytes]:
    kid = key_id or keyring.active_id
    return kid, envelope.hkdf(keyring.key(kid), ID_INFO)


def content_id(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


# ---- point indexes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    content_id: str
    version_id: str
    size: int


@dataclass
class PointIndex:
    source: str
    taken_at: datetime
    id_key_id: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        entries = {k: [e.content_id, e.version_id, e.size] for k, e in sorted(self.entries.items())}
        return json.dumps({"format": "strongroom.points/1", "source": self.source,
                           "taken_at": self.taken_at.isoformat(), "id_key_id": self.id_key_id,
                           "entries": entries}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> PointIndex:
        try:
            doc = json.loads(raw)
            return cls(doc["source"], datetime.fromisoformat(doc["taken_at"]), doc["id_key_id"],
                       {k: Entry(c, v, int(s)) for k, (c, v, s) in doc["entries"].items()})
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"point index {where} is malformed") from None


def _identity(kind: str, source: str, name: str) -> bytes:
    return envelope.object_identity(kind, source, name)


def point_times(store: ObjectStore, source: str) -> list[datetime]:
    out = []
    for info in store.list_objects(layout.points_prefix(source)):
        at = layout.point_time(info.key.rsplit("/", 1)[-1])
        if at is not None:
            out.append(at)
    return sorted(out)


def load_point(store: ObjectStore, keyring: Keyring, source: str, at: datetime) -> PointIndex:
    return _read_point(store, keyring, source, at)[1]


def _read_point(store: ObjectStore, keyring: Keyring, source: str, at: datetime) -> tuple[bytes, PointIndex]:
    """A point index as stored and as authenticated and parsed (:class:`IntegrityError` when it is not one)."""
    key = layout.point_key(source, at)
    sealed = store.get_bytes(key)
    raw = envelope.unseal_object(sealed, keyring, _identity("points", source, layout.stamp(at)), key)
    index = PointIndex.from_bytes(raw, key)
    if index.source != source or index.taken_at != at:
        raise IntegrityError(f"{key} belongs to another source or time")
    return sealed, index


def _load_journal(store: ObjectStore, keyring: Keyring, source: str) -> PointIndex | None:
    key = layout.journal_key(source)
    if store.head(key) is None:
        return None
    try:
        raw = envelope.unseal_object(store.get_bytes(key), keyring, _identity("journal", source, "journal"), key)
        return PointIndex.from_bytes(raw, key)
    except StrongroomError as exc:
        log.warning("ignoring unreadable journal %s: %s", key, exc)
        return None


# ---- a backup pass ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceVersion:
    key: str
    version_id: str
    size: int


def live_versions(store: ObjectStore, prefixes: list[str]) -> dict[str, SourceVersion]:
    """Every live key's current version (paginated); keys whose latest version is a delete marker are gone."""
    return {v.key: SourceVersion(v.key, v.version_id or "null", v.size)
            for p in prefixes or [""] for v in store.versions(p) if v.is_latest and not v.delete_marker}


@dataclass
class _Region:
    config: RegionConfig
    store: ObjectStore
    keyring: Keyring
    known: dict[tuple[str, str], str] = field(default_factory=dict)  # (key, version) -> content id
    id_key_id: str = ""
    error: str | None = None
    claimed: set[str] = field(default_factory=set)  # content ids stored (or being stored) this pass
    present: set[str] | None = None  # content ids already stored, when listed up front
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class PassResult:
    source: str
    taken_at: str
    objects: int = 0
    read_from_source: int = 0
    bytes_read: int = 0
    stored: dict[str, int] = field(default_factory=dict)  # region -> contents uploaded
    committed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    repaired: dict[str, list[str]] = field(default_factory=dict)  # region -> points copied into it (stamps)
    repair_failed: dict[str, str] = field(default_factory=dict)  # region -> why its repair stopped
    seconds: float = 0.0

    def errors(self) -> list[str]:
        """One phrase per region this pass left behind: its point not committed, or its repair stopped."""
        return ([f"point not committed in {region} ({why})" for region, why in self.failed.items()]
                + [f"repair failed in {region} ({why})" for region, why in self.repair_failed.items()])

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def backup_pass(
    config: Config, source_name: str, conns: Connections, *, now: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> PassResult:
    """One incremental pass of a source bucket into every region; commits a point index in each."""
    started = time.monotonic()
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    source = config.source(source_name)
    src = conns.source_store(source, config.transfer)
    id_key_id, key = id_key(conns.keyring(config.encryption.keyring_conn_id))
    regions = _open_regions(config, conns, source.bucket, id_key_id)
    live = live_versions(src, source.prefixes)
    result = PassResult(source.bucket, now.isoformat(), objects=len(live))
    usable = [r for r in regions if r.error is None]
    if not usable:
        raise ReplicationError(f"{source.bucket}: no backup region is reachable: "
                               + "; ".join(f"{r.config.name} ({r.error})" for r in regions))
    todo = [v for v in live.values() if any((v.key, v.version_id) not in r.known for r in usable)]
    log.info("%s: %d live objects, %d to read", source.bucket, len(live), len(todo))
    if len(todo) > LIST_INSTEAD_OF_HEAD:  # one paginated listing beats a HEAD per new content
        for region in usable:
            listed = region.store.list_objects(layout.content_prefix(source.bucket))
            region.present = {info.key.rsplit("/", 1)[1] for info in listed}
    found: dict[tuple[str, str], str] = {}
    progress = Progress(f"{source.bucket} pass", len(todo), unit="objects")
    last_journal = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=source.concurrency, thread_name_prefix="objects")
    try:
        for done, (version, cid, size) in enumerate(
            pool.map(lambda v: _store_one(config, src, source.bucket, v, key, usable, result), todo), 1
        ):
            found[(version.key, version.version_id)] = cid
            result.read_from_source += 1
            result.bytes_read += size
            progress.update(done)
            if on_progress:
                on_progress(done)
            if time.monotonic() - last_journal > JOURNAL_EVERY:
                _write_journals(usable, source.bucket, now, id_key_id, found, live)
                last_journal = time.monotonic()
    finally:  # stopped (SIGTERM, timeout, error): drop the queued objects, the journal has the progress
        pool.shutdown(wait=True, cancel_futures=True)
    for region in usable:
        entries = {}
        for k, v in live.items():
            # a version unknown to any usable region was read and stored this pass, so it is in `found`
            cid = region.known.get((k, v.version_id)) or found[(k, v.version_id)]
            entries[k] = Entry(cid, v.version_id, v.size)
        index = PointIndex(source.bucket, now, id_key_id, entries)
        try:
            ident = _identity("points", source.bucket, layout.stamp(now))
            sealed = envelope.seal_object(index.to_bytes(), region.keyring, ident)
            region.store.put_bytes(layout.point_key(source.bucket, now), sealed)
            region.store.delete(layout.journal_key(source.bucket))
            result.committed.append(region.config.name)
        except StrongroomError as exc:
            result.failed[region.config.name] = str(exc)
    for region in regions:
        if region.error:
            result.failed[region.config.name] = region.error
    repair = repair_points(config, source.bucket, conns, now=now,
                           skip={r.config.name for r in regions if r.error})
    result.repaired, result.repair_failed = repair.repaired, repair.failed
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _open_regions(config: Config, conns: Connections, source: str, id_key_id: str) -> list[_Region]:
    regions = []
    for cfg in config.regions:
        region = _Region(cfg, conns.store(cfg, config.transfer), conns.keyring(config.keyring_conn_id(cfg)))
        try:
            region.store.check_bucket()
            times = point_times(region.store, source)
            indexes = [load_point(region.store, region.keyring, source, times[-1])] if times else []
            journal = _load_journal(region.store, region.keyring, source)
            for index in [*indexes, *([journal] if journal else [])]:
                if index.id_key_id == id_key_id:  # ids under a rotated key are recomputed once
                    region.known.update({(k, e.version_id): e.content_id for k, e in index.entries.items()})
        except StrongroomError as exc:
            region.error = str(exc)
            log.error("region %s skipped for %s: %s", cfg.name, source, exc)
        regions.append(region)
    return regions


def _store_one(
    config: Config, src: ObjectStore, source: str, version: SourceVersion, key: bytes,
    regions: list[_Region], result: PassResult,
) -> tuple[SourceVersion, str, int]:
    if version.size > config.transfer.part_size:
        return _store_large(config, src, source, version, key, regions, result)
    data = src.read_version(version.key, version.version_id)
    cid = content_id(key, data)
    for region in regions:
        if not _claim(region, source, version, cid):
            continue
        sealed = envelope.seal_object(data, region.keyring, _identity("content", source, cid))
        region.store.put_bytes(layout.content_key(source, cid), sealed)
        result.stored[region.config.name] = result.stored.get(region.config.name, 0) + 1
    return version, cid, len(data)


def _claim(region: _Region, source: str, version: SourceVersion, cid: str) -> bool:
    """Whether this call should store ``cid`` in ``region`` (not stored yet, not claimed by another)."""
    with region.lock:  # two keys with the same bytes in one pass: one upload
        if cid in region.claimed:
            return False
        region.claimed.add(cid)
    if (version.key, version.version_id) in region.known:
        return False
    if region.present is not None:
        return cid not in region.present
    return region.store.head(layout.content_key(source, cid)) is None


def _store_large(
    config: Config, src: ObjectStore, source: str, version: SourceVersion, key: bytes,
    regions: list[_Region], result: PassResult,
) -> tuple[SourceVersion, str, int]:
    """An object above the part size streams: read once to learn its id, once more to seal it into every
    region that lacks it, with memory bounded by part size and concurrency, never by the object's size."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    size = 0
    for chunk in src.stream_version(version.key, version.version_id):
        mac.update(chunk)
        size += len(chunk)
    cid = mac.hexdigest()
    needing = [r for r in regions if _claim(r, source, version, cid)]
    if not needing:
        return version, cid, size
    transfer = config.transfer
    with contextlib.ExitStack() as stack:
        writers = []
        for region in needing:
            upload = stack.enter_context(region.store.multipart(
                layout.content_key(source, cid), part_size=transfer.part_size, max_part_size=transfer.max_part_size,
                concurrency=transfer.upload_concurrency, expected_size=size))
            sealer = envelope.ObjectSealer(region.keyring, _identity("content", source, cid), upload.write)
            writers.append((upload, sealer))
        again = hmac.new(key, digestmod=hashlib.sha256)
        for chunk in src.stream_version(version.key, version.version_id):
            again.update(chunk)
            for _, writer in writers:
                writer.write(chunk)
        if again.hexdigest() != cid:  # the version changed under us: store nothing
            raise IntegrityError(f"{src.where}: {version.key} changed while it was being read")
        for upload, writer in writers:
            writer.close()
            upload.complete()
    for region in needing:
        result.stored[region.config.name] = result.stored.get(region.config.name, 0) + 1
    return version, cid, size


def _write_journals(regions: list[_Region], source: str, now: datetime, id_key_id: str,
                    found: dict[tuple[str, str], str], live: dict[str, SourceVersion]) -> None:
    entries = {k: Entry(cid, v, live[k].size) for (k, v), cid in found.items() if k in live}
    raw = PointIndex(source, now, id_key_id, entries).to_bytes()
    for region in regions:
        try:
            sealed = envelope.seal_object(raw, region.keyring, _identity("journal", source, "journal"))
            region.store.put_bytes(layout.journal_key(source), sealed)
        except StrongroomError as exc:
            log.warning("could not write the progress journal in %s: %s", region.config.name, exc)


# ---- repair: every region converges to the same committed points -------------------------------------------


@dataclass
class Repair:
    repaired: dict[str, list[str]] = field(default_factory=dict)  # region -> points copied into it (stamps)
    failed: dict[str, str] = field(default_factory=dict)  # region -> the error that stopped its repair


@dataclass(frozen=True)
class _Side:
    config: RegionConfig
    store: ObjectStore
    keyring: Keyring
    keyring_conn_id: str


def repair_points(
    config: Config, source_name: str, conns: Connections, *, now: datetime | None = None,
    skip: set[str] | frozenset[str] = frozenset(),
) -> Repair:
    """Copy into each region every point of ``source_name`` another region holds and it lacks (a pass it
    missed while it was down), with the contents it references, so every region can restore every point
    of the window on its own. Points that leave the window within :data:`replication.REPAIR_MARGIN` are
    not copied.

    Ciphertext is copied as stored (server-side where the endpoints allow), each object's header rewrapped
    for the target's keyring when the regions' keyrings differ. Every content copied is read back from
    the target and authenticated there (content id and size); the point index is written last, so a
    repair stopped at any moment leaves contents no point references (the next repair uses them, prune
    removes them otherwise), never an index without its contents. Copies are locked, in a locking
    region, until the point's time plus the retention.

    A point that does not authenticate where it is found (a junk object named like one) is skipped with a
    warning and taken from the next region that holds it, if any. A region that fails its repair is named
    in the result; the others go on. ``skip``: regions already known to be unreachable this run.
    """
    from strongroom.replication import REPAIR_MARGIN

    now = now or datetime.now(UTC)
    source = config.source(source_name).bucket
    out = Repair()
    sides: dict[str, _Side] = {}
    held: dict[str, set[datetime]] = {}
    for cfg in config.regions:
        if cfg.name in skip:
            continue
        try:
            conn_id = config.keyring_conn_id(cfg)
            side = _Side(cfg, conns.store(cfg, config.transfer), conns.keyring(conn_id), conn_id)
            held[cfg.name] = set(point_times(side.store, source))
            sides[cfg.name] = side
        except StrongroomError as exc:
            out.failed[cfg.name] = f"points unreadable: {exc}"
            log.error("%s: points of region %s unreadable, not repaired: %s", source, cfg.name, exc)
    oldest = now - config.retention + REPAIR_MARGIN
    for name, times in held.items():
        lacking = sorted({t for other, ts in held.items() if other != name for t in ts if t > oldest} - times)
        if not lacking:
            continue
        try:
            done = _repair_region(config, conns, source, sides, held, sides[name], lacking)
        except StrongroomError as exc:
            out.failed[name] = str(exc)
            log.error("%s: repair of region %s stopped: %s", source, name, exc)
            continue
        if done:
            out.repaired[name] = done
    return out


def _repair_region(
    config: Config, conns: Connections, source: str, sides: dict[str, _Side], held: dict[str, set[datetime]],
    target: _Side, lacking: list[datetime],
) -> list[str]:
    present = {info.key.rsplit("/", 1)[1] for info in target.store.list_objects(layout.content_prefix(source))}
    stored_sizes: dict[str, dict[str, int]] = {}  # origin region -> content id -> stored size
    done = []
    for at in lacking:
        stamp = layout.stamp(at)

        def read_from(where: RegionConfig, at: datetime = at) -> tuple[_Side, bytes, PointIndex]:
            origin = sides.get(where.name)
            if origin is None or origin is target or at not in held[where.name]:
                raise NotFoundError(f"{where.name} does not hold the point")
            return origin, *_read_point(origin.store, origin.keyring, source, at)  # junk: the next region

        try:
            origin, sealed, index = first_answer(config, f"point {stamp} of {source} for {target.config.name}",
                                                 read_from).value
        except StrongroomError as exc:
            log.warning("%s: point %s authenticates in no region that holds it: not copied to %s (%s)", source,
                        stamp, target.config.name, exc)
            continue
        if origin.config.name not in stored_sizes:
            stored_sizes[origin.config.name] = {
                info.key.rsplit("/", 1)[1]: info.size
                for info in origin.store.list_objects(layout.content_prefix(source))}
        copied = _copy_point(config, conns, source, origin, target, sealed, index, present,
                             stored_sizes[origin.config.name])
        log.info("%s: point %s copied from %s to %s (%d contents copied, %d already there)", source, stamp,
                 origin.config.name, target.config.name, copied,
                 len({e.content_id for e in index.entries.values()}) - copied)
        done.append(stamp)
    return done


def _copy_point(
    config: Config, conns: Connections, source: str, origin: _Side, target: _Side, sealed: bytes,
    index: PointIndex, present: set[str], stored_sizes: dict[str, int],
) -> int:
    """Copy one point's missing contents, verify each in ``target``, then write its index. Returns how
    many contents were copied."""
    from strongroom.replication import copy_object

    transfer, stamp = config.transfer, layout.stamp(index.taken_at)
    retain_until = index.taken_at + config.retention
    _, ikey = id_key(conns.keyring(config.encryption.keyring_conn_id), index.id_key_id)
    sizes = {e.content_id: e.size for e in index.entries.values()}
    missing = sorted(cid for cid in sizes if cid not in present)
    for cid in missing:
        if cid not in stored_sizes:
            raise IntegrityError(f"{origin.store.where}: content {cid} of point {stamp} is missing; "
                                 f"point not copied to {target.config.name}")
    rewrap = origin.keyring_conn_id != target.keyring_conn_id

    def head(identity: bytes, where: str) -> Callable[[bytes], tuple[int, bytes]] | None:
        if not rewrap:
            return None
        return lambda leading: envelope.rewrap_object_head(leading, origin.keyring, target.keyring, identity, where)

    def copy_one(cid: str) -> None:
        key, identity = layout.content_key(source, cid), _identity("content", source, cid)
        copy_object(origin.store, target.store, key, stored_sizes[cid], transfer, retain_until=retain_until,
                    head=head(identity, f"{origin.store.where}: {key}"))
        try:
            target.store.apply_lock(key, retain_until)
            target.store.confirm_lock(key, retain_until)
            _check_content(target.store, target.keyring, source, cid, sizes[cid], ikey, transfer)
        except IntegrityError:
            with contextlib.suppress(StrongroomError):  # a bad copy must not pass for a stored content later
                target.store.delete(key)
            raise
        progress.add(1)

    progress = Progress(f"{source} point {stamp} into {target.config.name}", len(missing), unit="contents")
    small = [cid for cid in missing if stored_sizes[cid] <= transfer.part_size]
    with ThreadPoolExecutor(max_workers=config.source(source).concurrency, thread_name_prefix="repair") as pool:
        list(pool.map(copy_one, small))
    for cid in missing:  # larger contents stream one at a time: memory stays that of one transfer
        if stored_sizes[cid] > transfer.part_size:
            copy_one(cid)
    present.update(missing)
    key = layout.point_key(source, index.taken_at)
    if rewrap:
        dropped, replacement = envelope.rewrap_object_head(
            sealed, origin.keyring, target.keyring, _identity("points", source, stamp), key)
        sealed = replacement + sealed[dropped:]
    target.store.put_bytes(key, sealed, retain_until=retain_until)  # the commit point: last
    try:
        target.store.confirm_lock(key, retain_until)
        if load_point(target.store, target.keyring, source, index.taken_at).entries != index.entries:
            raise IntegrityError(f"{target.store.where}: {key} reads back different from its origin's")
    except StrongroomError:
        with contextlib.suppress(StrongroomError):
            target.store.delete(key)  # an unlocked or unreadable index is not a commit
        raise
    return len(missing)


def _check_content(store: ObjectStore, keyring: Keyring, source: str, cid: str, size: int, ikey: bytes,
                   transfer: TransferConfig) -> None:
    """Read a content back from ``store`` and open it with that region's keyring: its keyed hash and size
    must be the content id's and the point's (streamed, never held whole)."""
    key = layout.content_key(source, cid)
    info = store.head(key)
    if info is None:
        raise IntegrityError(f"{store.where}: {key} is missing after its copy")
    chunks = store.iter_chunks(key, info.size, chunk_size=transfer.part_size,
                               concurrency=transfer.download_concurrency)
    mac, got = hmac.new(ikey, digestmod=hashlib.sha256), 0
    for plain in envelope.unseal_object_stream(chunks, keyring, _identity("content", source, cid), key):
        mac.update(plain)
        got += len(plain)
    if mac.hexdigest() != cid or got != size:
        raise IntegrityError(f"{store.where}: {key} does not match its content id after its copy")


# ---- listing and restoring a point in time ----------------------------------------------------------------


def point_at(config: Config, conns: Connections, source: str, at: datetime | None,
             region: str | None = None) -> tuple[RegionConfig, PointIndex]:
    """The newest committed point at or before ``at`` (None: the newest): from ``region``, else the primary
    or the next region that has one (:func:`strongroom.regions.first_answer`). When there is none, the
    error lists the points there are."""
    if at is None:
        at = datetime.now(UTC)
    require_offset(at, "at")
    config.source(source)

    def point_in(cfg: RegionConfig) -> PointIndex:
        store, keyring = conns.store(cfg, config.transfer), conns.keyring(config.keyring_conn_id(cfg))
        every = point_times(store, source)
        times = [t for t in every if t <= at]
        if not times:
            newest = [t.isoformat() for t in reversed(every)][:10]
            listed = ", ".join(newest) + (f" and {len(every) - 10} older" if len(every) > 10 else "")
            raise NotFoundError(f"no point of {source} at or before {at.isoformat()} in {cfg.name} "
                                f"(choose from: {listed or 'none yet'})")
        return load_point(store, keyring, source, times[-1])

    answer = first_answer(config, f"a point of {source} at or before {at.isoformat()}", point_in, region=region)
    return answer.region, answer.value


def list_point(
    config: Config, conns: Connections, source: str, at: datetime | None, prefix_: str = ""
) -> dict[str, Any]:
    where, index = point_at(config, conns, source, at or datetime.now(UTC))
    entries = {k: e for k, e in index.entries.items() if k.startswith(prefix_)}
    return {"source": source, "point": index.taken_at.isoformat(), "region": where.name,
            "objects": [{"key": k, "size": e.size, "version_id": e.version_id} for k, e in sorted(entries.items())]}


def fetch_content(store: ObjectStore, keyring: Keyring, source: str, entry: Entry, id_key_bytes: bytes) -> bytes:
    key = layout.content_key(source, entry.content_id)
    data = envelope.unseal_object(store.get_bytes(key), keyring, _identity("content", source, entry.content_id), key)
    if content_id(id_key_bytes, data) != entry.content_id or len(data) != entry.size:
        raise IntegrityError(f"{store.where}: {key} does not match its content id")
    return data


def compare_restored(target: ObjectStore, index: PointIndex, id_key_bytes: bytes, prefix: str = "") -> list[str]:
    """Every difference between a bucket a point was restored into (under ``prefix``) and the point itself,
    one line each: a key missing or not in the point, a size or a content (keyed hash) that differs.
    Empty: the bucket holds exactly the point. Objects are streamed, never held whole."""
    listed = {info.key.removeprefix(prefix): info.size for info in target.list_objects(prefix)}
    out = [f"{key} is missing" for key in sorted(set(index.entries) - set(listed))]
    out += [f"{key} is not in the point" for key in sorted(set(listed) - set(index.entries))]
    for key, entry in sorted(index.entries.items()):
        if key not in listed:
            continue
        if listed[key] != entry.size:
            out.append(f"{key} is {listed[key]} bytes, the point says {entry.size}")
            continue
        mac = hmac.new(id_key_bytes, digestmod=hashlib.sha256)
        for chunk in target.stream_version(prefix + key):
            mac.update(chunk)
        if mac.hexdigest() != entry.content_id:
            out.append(f"{key}: its content differs from the point's")
    return out


VERIFY_FIRST_BUDGET = 256 * 2**20


def _restore_large(config: Config, store: ObjectStore, keyring: Keyring, source: str, key: str, entry: Entry,
                   ikey: bytes, target: ObjectStore, target_key: str) -> None:
    ckey = layout.content_key(source, entry.content_id)
    info = store.head(ckey)
    if info is None:
        raise IntegrityError(f"{store.where}: {ckey} is missing")
    transfer = config.transfer
    chunks = store.iter_chunks(ckey, info.size, chunk_size=transfer.part_size,
                               concurrency=transfer.download_concurrency)
    mac, size = hmac.new(ikey, digestmod=hashlib.sha256), 0
    upload = target.multipart(target_key, part_size=transfer.part_size, max_part_size=transfer.max_part_size,
                              concurrency=transfer.upload_concurrency, expected_size=entry.size)
    with upload:
        identity = _identity("content", source, entry.content_id)
        for plain in envelope.unseal_object_stream(chunks, keyring, identity, ckey):
            mac.update(plain)
            size += len(plain)
            upload.write(plain)
        if mac.hexdigest() != entry.content_id or size != entry.size:
            raise IntegrityError(f"{store.where}: {ckey} does not match its content id")
        upload.complete()


IN_PLACE = "in_place"  # the restore_objects form's choice for the source bucket itself


@dataclass(frozen=True)
class RestoreTarget:
    """Where restore_objects writes: a configured review target, or the source bucket itself (in place)."""

    name: str
    bucket: str
    aws_conn_id: str
    in_place: bool


def check_target_bucket(config: Config, bucket: str, source: str, allow_source: str | None) -> None:
    """A backup bucket is never a target; a configured source only in place, with its name typed."""
    for region in config.regions:
        if region.bucket == bucket:
            raise RefusedError(f"target bucket {bucket} is the backup bucket of region {region.name}: never a target")
    for other in config.object_storage:
        if other.bucket == bucket and other.bucket != source:
            raise RefusedError(f"target bucket {bucket} is the live source bucket {other.bucket} of other backups: "
                               "never a target of another source's restore")
    if bucket == source and allow_source != source:
        raise RefusedError(f"the target is the live source bucket {source!r}: restore with "
                           f"`confirm_source={source}` to overwrite it deliberately")


def choose_target(config: Config, source: str, choice: str, confirm_source: str | None) -> RestoreTarget:
    """The restore_objects form's target: a configured review target, or ``in_place`` with the source's name
    typed into confirm_source. Nothing else: a bucket is never free text."""
    src = config.source(source)
    if choice == IN_PLACE:
        if confirm_source != src.bucket:
            typed = f" (typed {confirm_source!r})" if confirm_source else ""
            raise RefusedError(f"confirm_source: restoring in place overwrites the live bucket {src.bucket}: "
                               f"type {src.bucket!r} to confirm{typed}")
        return RestoreTarget(IN_PLACE, src.bucket, src.aws_conn_id, True)
    if confirm_source:
        raise RefusedError(f"confirm_source: given ({confirm_source!r}) but target {choice!r} is not the source "
                           "itself: leave it empty")
    for target in config.object_restore_targets:
        if target.name == choice:
            check_target_bucket(config, target.bucket, src.bucket, None)
            return RestoreTarget(target.name, target.bucket, target.aws_conn_id, False)
    known = ", ".join([t.name for t in config.object_restore_targets] + [IN_PLACE])
    raise RefusedError(f"target: {choice!r} is not a configured object restore target (choose from: {known})")


def restore_point(
    config: Config, conns: Connections, source: str, at: datetime | None, target: ObjectStore, *,
    prefix_: str = "", region: str | None = None, allow_source: str | None = None, review_suffix: str | None = None,
) -> dict[str, Any]:
    """Write the objects as they were at ``at`` (None: the newest point) into ``target``. A backup bucket is
    never the target; the live source only when ``allow_source`` repeats its name (a confirmed choice).
    With ``review_suffix`` the objects go under :func:`layout.review_prefix` (a review copy, removed on expiry)."""
    src_cfg = config.source(source)
    check_target_bucket(config, target.bucket, src_cfg.bucket, allow_source)
    where, index = point_at(config, conns, source, at, region)
    into = layout.review_prefix(source, index.taken_at, review_suffix) if review_suffix else ""
    store, keyring = conns.store(where, config.transfer), conns.keyring(config.keyring_conn_id(where))
    _, ikey = id_key(conns.keyring(config.encryption.keyring_conn_id), index.id_key_id)
    chosen = {k: e for k, e in index.entries.items() if k.startswith(prefix_)}
    small = {k: e for k, e in chosen.items() if e.size <= config.transfer.part_size}
    progress = Progress(f"restore {source} point {layout.stamp(index.taken_at)}", len(chosen), unit="objects")
    with ThreadPoolExecutor(max_workers=src_cfg.concurrency) as pool:
        if sum(e.size for e in small.values()) <= VERIFY_FIRST_BUDGET:
            # every small object is fetched and verified before the first write: a bad point writes nothing
            verified = dict(zip(small, pool.map(lambda e: fetch_content(store, keyring, source, e, ikey),
                                                small.values()), strict=True))
            for _ in pool.map(lambda item: target.put_bytes(into + item[0], item[1]), verified.items()):
                progress.add(1)
        else:  # too much to hold: each object is verified before it is written
            for _ in pool.map(lambda item: target.put_bytes(into + item[0], fetch_content(store, keyring, source,
                                                                                          item[1], ikey)),
                              small.items()):
                progress.add(1)
    for k, e in chosen.items():  # large objects stream; an upload that fails its check is aborted, not completed
        if k not in small:
            _restore_large(config, store, keyring, source, k, e, ikey, target, into + k)
            progress.add(1)
    return {"source": source, "point": index.taken_at.isoformat(), "region": where.name,
            "target": target.bucket, "prefix": into, "objects": len(chosen),
            "bytes": sum(e.size for e in chosen.values())}
