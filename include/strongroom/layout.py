"""The bucket layout: the one module that builds and parses the keys Strongroom writes.

Every region's bucket holds the same keys (``docs/storage-layout.md`` says who writes each one, in what
order, and when it is deleted)::

    databases/<db>/data/<snapshot id>/<object>      a snapshot's encrypted data objects
    databases/<db>/pending/<snapshot id>.json       the pre-commit manifest (landing region, until committed)
    databases/<db>/manifests/<snapshot id>.json     the commit point, one per region
    chunks/<db>/<chunk key id>/<name>               a chunk of chunked snapshots, shared by all that name it
    objects/<source>/content/<content id>           sealed content of an object-storage backup
    objects/<source>/points/<time>.idx              sealed point index (the commit point of a pass)
    objects/<source>/partial/journal.idx            sealed progress of an unfinished pass
    restore-tests/<db>/<time>-<hex>/result.json     a restore test's result (and its Data Docs under docs/)
    audit/retention/<time>-<hex>.json               what a prune deleted, where and why
    status/last-run.json, monitor.json, alerts.json the newest run's outcome; the monitor's alert state
    leases/restore-tests/<time>-<hex>.json          a throwaway server a restore test is running
    leases/drills/<bucket>.json                     a throwaway bucket a platform drill is using
    platform/points/<time>-<hex>.json               a platform point: the parts of one hour, every region
    platform/recoveries/<time>-<hex>.json           a platform recovery's report
    platform/drills/<time>-<hex>.json               a platform drill's evidence

Every time in a key name is a UTC second written one way, ``20261126T140003Z`` (:func:`stamp`,
:func:`parse_stamp`), so keys sort by time as plain strings. The formats are on disk: existing snapshots
must keep restoring, so a change here is a change of format.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from strongroom.errors import NotFoundError

# ---- times in key names ------------------------------------------------------------------------------------

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_STAMP = r"\d{8}T\d{6}Z"


def stamp(at: datetime) -> str:
    """``at`` as the UTC second that names keys, e.g. ``20261126T140003Z``."""
    return at.astimezone(UTC).strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> datetime:
    """The UTC time :func:`stamp` wrote; raises :class:`ValueError` for anything else."""
    return datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=UTC)


def _stamped(at: datetime, random_bytes: int) -> str:
    """A name that sorts by time and stays unique within the second: ``<stamp>-<random hex>``."""
    return f"{stamp(at)}-{secrets.token_hex(random_bytes)}"


# ---- snapshots of databases --------------------------------------------------------------------------------

DATABASES = "databases/"
DATA, PENDING, MANIFESTS = "data", "pending", "manifests"
_SNAPSHOT_ID = rf"{_STAMP}-[0-9a-f]{{6}}"
_ID = re.compile(rf"^({_STAMP})-[0-9a-f]{{6}}$")
_SNAPSHOT_KEY = re.compile(
    rf"^{DATABASES}(?P<database>[^/]+)/(?:(?P<data>{DATA})/(?P<data_id>{_SNAPSHOT_ID})/"
    rf"|(?P<record>{PENDING}|{MANIFESTS})/(?P<record_id>{_SNAPSHOT_ID})\.json$)"
)


class SnapshotKey(NamedTuple):
    database: str
    kind: str  # DATA, PENDING or MANIFESTS
    snapshot_id: str


def new_snapshot_id(taken_at: datetime) -> str:
    """Ids sort by time: the UTC second of ``taken_at``, then three random bytes in hex."""
    return _stamped(taken_at, 3)


def is_snapshot_id(text: str) -> bool:
    return _ID.match(text) is not None


def snapshot_id_time(snapshot_id: str) -> datetime:
    match = _ID.match(snapshot_id)
    if not match:
        raise NotFoundError(f"{snapshot_id!r} is not a snapshot id (expected e.g. 20261126T140000Z-1a2b3c)")
    return parse_stamp(match.group(1))


def database_prefix(database: str) -> str:
    return f"{DATABASES}{database}/"


def data_prefix(database: str, snapshot_id: str | None = None) -> str:
    """Where the data objects of every snapshot of ``database`` are, or of one snapshot."""
    return f"{database_prefix(database)}{DATA}/" + (f"{snapshot_id}/" if snapshot_id else "")


def data_key(database: str, snapshot_id: str, name: str) -> str:
    return f"{data_prefix(database, snapshot_id)}{name}"


def manifest_prefix(database: str) -> str:
    return f"{database_prefix(database)}{MANIFESTS}/"


def manifest_key(database: str, snapshot_id: str) -> str:
    return f"{manifest_prefix(database)}{snapshot_id}.json"


def pending_prefix(database: str) -> str:
    return f"{database_prefix(database)}{PENDING}/"


def pending_key(database: str, snapshot_id: str) -> str:
    return f"{pending_prefix(database)}{snapshot_id}.json"


# Chunks live outside databases/, whose lifecycle backstop expires objects by age: a chunk stays as long as
# a snapshot inside the window names it, however old the chunk is (strongroom.buckets flags any rule that
# would expire one).
CHUNKS = "chunks/"
_CHUNK_KEY = re.compile(rf"^{CHUNKS}(?P<database>[^/]+)/(?P<key_id>[0-9a-f]{{16}})/(?P<name>[0-9a-f]{{64}})$")


class ChunkKey(NamedTuple):
    database: str
    chunk_key_id: str
    name: str


def is_chunk_key_id(text: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{16}", text) is not None


def is_chunk_name(text: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{64}", text) is not None


def chunks_prefix(database: str, chunk_key_id: str | None = None) -> str:
    """Where the chunks of ``database``'s chunked snapshots are, or those sealed under one chunk key."""
    return f"{CHUNKS}{database}/" + (f"{chunk_key_id}/" if chunk_key_id else "")


def chunk_key(database: str, chunk_key_id: str, name: str) -> str:
    return f"{chunks_prefix(database, chunk_key_id)}{name}"


def parse_chunk_key(key: str) -> ChunkKey | None:
    """Database, chunk key id and name of a chunk's key; None for any other key."""
    match = _CHUNK_KEY.match(key)
    return ChunkKey(match.group("database"), match.group("key_id"), match.group("name")) if match else None


def parse_snapshot_key(key: str) -> SnapshotKey | None:
    """Which database, kind and snapshot a key under ``databases/`` belongs to; None for any other key."""
    match = _SNAPSHOT_KEY.match(key)
    if not match:
        return None
    if match.group("data"):
        return SnapshotKey(match.group("database"), DATA, match.group("data_id"))
    return SnapshotKey(match.group("database"), match.group("record"), match.group("record_id"))


def is_manifest_key(key: str) -> bool:
    """A committed manifest's key (the commit point, deleted last)."""
    parsed = parse_snapshot_key(key)
    return parsed is not None and parsed.kind == MANIFESTS


def snapshot_ids(keys: Iterable[str], database: str, kind: str) -> list[str]:
    """The ids, oldest first, of the snapshots of ``database`` among ``keys`` that have a key of ``kind``
    (MANIFESTS: committed; PENDING: landed, not committed everywhere yet)."""
    parsed = [parse_snapshot_key(key) for key in keys]
    return sorted(p.snapshot_id for p in parsed if p and p.database == database and p.kind == kind)


# ---- object-storage backups --------------------------------------------------------------------------------

OBJECTS = "objects/"
CONTENT, POINTS, PARTIAL = "content", "points", "partial"
_POINT_SUFFIX = ".idx"
_JOURNAL = "journal.idx"


class ObjectKey(NamedTuple):
    source: str
    kind: str  # CONTENT, POINTS, PARTIAL, or whatever other folder the key is in
    name: str  # the rest of the key: a content id, ``<time>.idx``, ``journal.idx``


def source_prefix(source: str) -> str:
    return f"{OBJECTS}{source}/"


def content_prefix(source: str) -> str:
    return f"{source_prefix(source)}{CONTENT}/"


def content_key(source: str, content_id: str) -> str:
    return f"{content_prefix(source)}{content_id}"


def points_prefix(source: str) -> str:
    return f"{source_prefix(source)}{POINTS}/"


def point_key(source: str, at: datetime) -> str:
    return f"{points_prefix(source)}{stamp(at)}{_POINT_SUFFIX}"


def journal_key(source: str) -> str:
    return f"{source_prefix(source)}{PARTIAL}/{_JOURNAL}"


def parse_object_key(key: str) -> ObjectKey | None:
    """Source, folder and name of a key ``objects/<source>/<folder>/<name>``; None for any other key."""
    if not key.startswith(OBJECTS):
        return None
    parts = key[len(OBJECTS) :].split("/", 2)
    if len(parts) < 3:
        return None
    return ObjectKey(parts[0], parts[1], parts[2])


def point_time(name: str) -> datetime | None:
    """The time a point index is named after (``<time>.idx``, the name in :class:`ObjectKey`), else None."""
    if not name.endswith(_POINT_SUFFIX):
        return None
    try:
        return parse_stamp(name.removesuffix(_POINT_SUFFIX))
    except ValueError:
        return None


# ---- records Strongroom keeps about itself -----------------------------------------------------------------

STATUS = "status/"
RUN_RECORD_KEY = f"{STATUS}last-run.json"  # the newest snapshot run's outcome, every region
MONITOR_STATE_KEY = f"{STATUS}monitor.json"  # what the monitor alerted on, and when
DELIVERY_KEY = f"{STATUS}alerts.json"  # the last alert delivered and the last delivery that failed

AUDIT = "audit/"
AUDIT_PREFIX = f"{AUDIT}retention/"
RESTORE_TESTS = "restore-tests/"
LEASES = "leases/"
LEASE_PREFIX = f"{LEASES}{RESTORE_TESTS}"
PLATFORM = "platform/"
PLATFORM_POINTS = f"{PLATFORM}points/"
PLATFORM_RECOVERIES = f"{PLATFORM}recoveries/"
PLATFORM_DRILLS = f"{PLATFORM}drills/"
# Records named with the UTC second they were made, deleted by retention once older than the window.
DATED_RECORD_PREFIXES = (AUDIT_PREFIX, RESTORE_TESTS, PLATFORM_POINTS, PLATFORM_RECOVERIES, PLATFORM_DRILLS)
_RECORD_TIME = re.compile(rf"/({_STAMP})-")
_RESULT = "result.json"
_DOCS = "docs"


def audit_key(at: datetime) -> str:
    return f"{AUDIT_PREFIX}{_stamped(at, 3)}.json"


def record_time(key: str) -> datetime | None:
    """The time a dated record (audit record, restore-test run) is named with; None when it has none."""
    match = _RECORD_TIME.search(key)
    try:
        return parse_stamp(match.group(1)) if match else None
    except ValueError:  # e.g. a 13th month: not a name Strongroom wrote
        return None


def restore_tests_prefix(database: str) -> str:
    return f"{RESTORE_TESTS}{database}/"


def new_restore_test_run(database: str, tested_at: datetime) -> str:
    """The folder of one restore-test run: ``restore-tests/<db>/<time>-<hex>/``."""
    return f"{restore_tests_prefix(database)}{_stamped(tested_at, 3)}/"


def restore_test_result_key(run: str) -> str:
    return f"{run}{_RESULT}"


def restore_test_doc_key(run: str, name: str) -> str:
    return f"{run}{_DOCS}/{name}"


def is_restore_test_result(key: str) -> bool:
    return key.startswith(RESTORE_TESTS) and key.endswith(f"/{_RESULT}")


def is_restore_test_doc(key: str) -> bool:
    """A restore test's Data Docs file, ``restore-tests/<db>/<run>/docs/...`` (never a path with ``..``)."""
    parts = key.split("/")
    return key.startswith(RESTORE_TESTS) and parts[3:4] == [_DOCS] and len(parts) > 4 and ".." not in parts


def new_lease_id(at: datetime) -> str:
    return _stamped(at, 4)


def lease_key(lease_id: str) -> str:
    return f"{LEASE_PREFIX}{lease_id}.json"


DRILL_LEASE_PREFIX = f"{LEASES}drills/"
DRILL_BUCKET_PREFIX = "strongroom-drill-"  # a platform drill's throwaway buckets: strongroom-drill-<12 hex>
_DRILL_BUCKET = re.compile(rf"^{DRILL_BUCKET_PREFIX}[0-9a-f]{{12}}$")


def is_drill_bucket(name: str) -> bool:
    return bool(_DRILL_BUCKET.match(name))


def drill_lease_key(bucket: str) -> str:
    """The lease of a platform drill's throwaway bucket (written before the bucket is created)."""
    if not is_drill_bucket(bucket):
        raise ValueError(f"{bucket!r} is not a platform drill's bucket name")
    return f"{DRILL_LEASE_PREFIX}{bucket}.json"


# ---- platform points and recoveries (strongroom.recovery) --------------------------------------------------

_PLATFORM_ID = re.compile(rf"^({_STAMP})-[0-9a-f]{{6}}$")
_PLATFORM_KEY = re.compile(rf"^{PLATFORM}(?:points|recoveries)/({_STAMP}-[0-9a-f]{{6}})\.json$")
_PLATFORM_DRILL_KEY = re.compile(rf"^{PLATFORM_DRILLS}({_STAMP}-[0-9a-f]{{6}})\.json$")


def new_platform_id(at: datetime) -> str:
    """A platform point's or recovery's id: the UTC second it was made, then three random bytes in hex."""
    return _stamped(at, 3)


def platform_id_time(platform_id: str) -> datetime:
    match = _PLATFORM_ID.match(platform_id)
    if not match:
        raise NotFoundError(f"{platform_id!r} is not a platform point id (expected e.g. 20261126T140000Z-1a2b3c)")
    return parse_stamp(match.group(1))


def platform_point_key(point_id: str) -> str:
    platform_id_time(point_id)
    return f"{PLATFORM_POINTS}{point_id}.json"


def recovery_report_key(recovery_id: str) -> str:
    platform_id_time(recovery_id)
    return f"{PLATFORM_RECOVERIES}{recovery_id}.json"


def platform_drill_key(drill_id: str) -> str:
    """Where a platform drill's evidence is stored (:func:`strongroom.drill.run_platform_drill`)."""
    platform_id_time(drill_id)
    return f"{PLATFORM_DRILLS}{drill_id}.json"


def parse_platform_drill_key(key: str) -> str | None:
    """The drill id of a ``platform/drills/<id>.json`` key; None for any other key."""
    match = _PLATFORM_DRILL_KEY.match(key)
    return match.group(1) if match else None


def parse_platform_point_key(key: str) -> str | None:
    """The point id of a ``platform/points/<id>.json`` key; None for any other key."""
    match = _PLATFORM_KEY.match(key)
    return match.group(1) if match and key.startswith(PLATFORM_POINTS) else None


def parse_recovery_report_key(key: str) -> str | None:
    """The recovery id of a ``platform/recoveries/<id>.json`` key; None for any other key."""
    match = _PLATFORM_KEY.match(key)
    return match.group(1) if match and key.startswith(PLATFORM_RECOVERIES) else None


# ---- review copies (in a review bucket, not a backup bucket) -----------------------------------------------

_REVIEW_FOLDER = len("20261126T140000Z-3fa9c1")


def review_prefix(source: str, point: datetime, suffix: str) -> str:
    """Where a restore into a review bucket puts its objects: the source, the point's time and the run's
    suffix, e.g. ``uploads/20261126T140000Z-3fa9c1/``. The point's time is what its expiry is computed from."""
    return f"{source}/{stamp(point)}-{suffix}/"


def review_point(key: str) -> datetime | None:
    """The point time of a review copy's key, when it is one (see :func:`review_prefix`)."""
    parts = key.split("/", 2)
    if len(parts) < 3 or len(parts[1]) != _REVIEW_FOLDER:
        return None
    try:
        return parse_stamp(parts[1][: -len("-3fa9c1")])
    except ValueError:
        return None
