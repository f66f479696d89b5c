"""Take a consistent, compressed, encrypted snapshot of one database and commit it.

One streaming pipeline, no plaintext at rest::

    pg_dump --format=custom --compress=0 --snapshot=S  ->  zstd (multithreaded)  ->  SRSTRM AES-256-GCM
        ->  S3 multipart upload (memory bounded by part size x concurrency)

The middle two steps are :func:`strongroom.envelope.seal_stream`.

``take_snapshot`` writes the data objects and a *pending* manifest into the landing region (the primary,
or the next reachable region); ``replication`` copies them to every other region, verifies each copy from
its own bytes and commits it there by writing that region's manifest, the commit point. Until then the
snapshot does not exist in that region.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any, TypeVar

from strongroom import __version__, catalog, chunks, envelope, inventory, layout, postgres, replication
from strongroom.catalog import ChunkRef, Manifest, StoredObject
from strongroom.config import Config, RegionConfig
from strongroom.connections import Connections
from strongroom.errors import ReplicationError, SourceError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.progress import duration_text, size_text
from strongroom.regions import first_answer
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)

T = TypeVar("T")

DUMP_OBJECT = "dump.zst.srenc"
GLOBALS_OBJECT = "globals.sql.zst.srenc"


@dataclass(frozen=True)
class SnapshotResult:
    """What a snapshot task hands on (through XCom): small, and nothing secret."""

    database: str
    snapshot_id: str
    taken_at: str
    region: str
    stored_bytes: int
    plain_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RowCounter(threading.Thread):
    """Counts rows in the exported snapshot while pg_dump streams it."""

    def __init__(self, session: postgres.SnapshotSession, checksum_max_rows: int) -> None:
        super().__init__(name="row-counter", daemon=True)
        self.session = session
        self.checksum_max_rows = checksum_max_rows
        self.counts: dict[str, int] = {}
        self.checksums: dict[str, str] = {}
        self.inventory: dict[str, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            # the schema as of the snapshot, in its own transaction, before the row counts
            self.inventory = inventory.read_inventory(self.session.connection)
            self.counts = self.session.count_rows()
            if self.checksum_max_rows:
                self.checksums = self.session.checksums(self.counts, self.checksum_max_rows)
        except BaseException as exc:
            self.error = exc

    def result(self) -> dict[str, int]:
        self.join()
        if self.error is not None:
            raise SourceError(f"counting rows in the snapshot failed: {str(self.error).splitlines()[0]}")
        return self.counts


def take_snapshot(config: Config, database: str, conns: Connections, *, retry: bool = False) -> SnapshotResult:
    """Dump ``database`` at one consistent point in time into the landing region, uncommitted.

    The landing region is the primary, or the first reachable region after it when the primary is down,
    so a region outage never stops snapshots. Replication copies from there to every other region.

    Unfinished uploads of this database begun more than ``snapshot.run_timeout`` ago are aborted first;
    with ``retry`` (the task's previous try died, e.g. with its worker) every unfinished upload of this
    database is: the dead try's upload cannot be finished by anyone, and nothing committed is touched.
    """
    started = time.monotonic()
    db = config.database(database)
    source = conns.postgres(db.postgres_conn_id)
    for each in config.regions:  # a missing or broken keyring is a configuration error: fail before writing
        conns.keyring(config.keyring_conn_id(each))
    region, store = landing_region(config, conns)
    keyring = conns.keyring(config.keyring_conn_id(region))
    bin_dir = config.snapshot.pg_bin_dir
    stale_before = datetime.now(UTC) - (timedelta(0) if retry else config.snapshot.run_timeout)
    store.abort_stale_uploads(layout.database_prefix(db.name), stale_before)
    dump_version = postgres.tool_version(postgres.tool("pg_dump", bin_dir))
    chunked = config.snapshot.format == "chunked"
    base = chunks.base_for(config, store, keyring, db.name, datetime.now(UTC)) if chunked else None
    data_key = base.key.key if base is not None else envelope.new_data_key()

    with postgres.snapshot_session(source) as session:
        if int(dump_version.split(".")[0]) < int(session.server_version.split(".")[0]):
            raise SourceError(f"pg_dump {dump_version} is older than server {session.server_version}")
        snapshot_id = layout.new_snapshot_id(session.taken_at)
        log.info("snapshot %s of %s at %s (server clock)", snapshot_id, db.name, session.taken_at.isoformat())
        estimate = _expected_size(store, keyring, db.name, session.database_size)
        if base is not None:
            dump, counter, refs = _stream_chunks(config, store, session, source, db.name, base, estimate)
        else:
            dump, counter = _stream_dump(config, store, session, source, db.name, snapshot_id, data_key, estimate)

    globals_obj, globals_note = None, "disabled in config"
    if config.snapshot.capture_globals:
        globals_obj, globals_note = _store_globals(
            config, store, source, db.name, snapshot_id, data_key, session.taken_at + config.retention
        )

    if base is not None:
        key_id, wrapped_key = catalog.wrap_chunk_key(data_key, keyring, db.name, base.key.key_id)
    else:
        key_id, wrapped_key = catalog.wrap_data_key(data_key, keyring, db.name, snapshot_id)
    manifest = Manifest(
        snapshot_id=snapshot_id,
        database=db.name,
        taken_at=session.taken_at,
        server_version=session.server_version,
        pg_dump_version=dump_version,
        key_id=key_id,
        wrapped_key=wrapped_key,
        dump=dump,
        tables=counter.counts,
        checksums=counter.checksums,
        inventory=counter.inventory,
        globals=globals_obj,
        globals_note=globals_note,
        strongroom_version=__version__,
        chunk_key_id=base.key.key_id if base is not None else "",
        chunks=tuple(refs) if base is not None else (),
    )
    store.put_bytes(layout.pending_key(db.name, snapshot_id), manifest.to_json(keyring))
    seconds = round(time.monotonic() - started, 3)
    log.info("snapshot %s of %s stored: %d bytes in %.1fs", snapshot_id, db.name, dump.stored_size, seconds)
    return SnapshotResult(
        db.name, snapshot_id, session.taken_at.isoformat(), region.name, dump.stored_size, dump.plain_size, seconds
    )


def _expected_size(store: ObjectStore, keyring: Keyring, database: str, database_size: int) -> int:
    """What the dump will likely hold, for progress: the previous snapshot's dump size, else the database's
    size on disk (which counts indexes a dump leaves out: an over-estimate)."""
    try:
        return catalog.select_snapshot(store, keyring, database).dump.plain_size or database_size
    except StrongroomError:
        return database_size


def _stream_dump(
    config: Config,
    store: ObjectStore,
    session: postgres.SnapshotSession,
    source: postgres.PgSettings,
    database: str,
    snapshot_id: str,
    data_key: bytes,
    estimate: int | None = None,
) -> tuple[StoredObject, RowCounter]:
    """Stream the dump into the store as one multipart upload, completed only once the dump and the row
    counts succeeded (any failure aborts it: no partial object is ever completed)."""
    key = layout.data_key(database, snapshot_id, DUMP_OBJECT)
    transfer = config.transfer
    upload = store.multipart(
        key,
        part_size=transfer.part_size,
        max_part_size=transfer.max_part_size,
        concurrency=transfer.upload_concurrency,
        expected_size=session.database_size,
        retain_until=session.taken_at + config.retention,
    )
    with upload:
        stats, counter = stream_dump(config, session, source, database, snapshot_id, data_key, upload.write, estimate)
        upload.complete()
    return StoredObject(key, stats.plain_size, stats.compressed_size, stats.stored_size, stats.sha256), counter


def _stream_chunks(
    config: Config, store: ObjectStore, session: postgres.SnapshotSession, source: postgres.PgSettings,
    database: str, base: chunks.Base, estimate: int | None,
) -> tuple[StoredObject, RowCounter, list[ChunkRef]]:
    """Stream the dump into the store as chunks (:mod:`strongroom.chunks`), uploading only those the
    region's newest committed manifest does not name. Nothing names the chunks until the pending manifest
    is written: a failure leaves only unnamed chunks, which a prune removes."""
    writer = chunks.ChunkWriter(
        store, database, base.key, known=base.known, retain_until=session.taken_at + config.retention,
        level=config.snapshot.zstd_level, concurrency=config.transfer.upload_concurrency,
    )

    def write(reader: IO[bytes]) -> list[ChunkRef]:
        return chunks.write_stream(reader, writer, config.snapshot.chunk_size, label=f"snapshot {database}",
                                   total=estimate)

    refs, counter = run_dump(config, session, source, database, write)
    stats = writer.stats
    log.info("%s: %d chunks, %d new (%s of %s), %s uploaded", database, stats.chunks, stats.new_chunks,
             size_text(stats.new_plain), size_text(stats.plain), size_text(stats.uploaded))
    stored = sum(r.stored for r in refs)
    summary = StoredObject(layout.chunks_prefix(database, base.key.key_id), stats.plain, stored, stored, "")
    return summary, counter, refs


def stream_dump(
    config: Config,
    session: postgres.SnapshotSession,
    source: postgres.PgSettings,
    database: str,
    snapshot_id: str,
    data_key: bytes,
    sink: Callable[[bytes], None],
    estimate: int | None = None,
) -> tuple[envelope.SealStats, RowCounter]:
    """The snapshot pipeline: pg_dump of the session's snapshot -> zstd -> AES-256-GCM -> ``sink``, while the
    row counter reads the schema inventory, row counts and small tables' checksums in the same snapshot.

    ``sink`` receives the sealed bytes in order: the landing region's multipart upload for a snapshot, a
    file or nothing for the benchmark (bench/snapshot.py), which so measures the code the product runs.
    Returns only when pg_dump and the row counter both succeeded (:func:`run_dump`).
    """

    def seal(reader: IO[bytes]) -> envelope.SealStats:
        return envelope.seal_stream(
            reader,
            sink,
            data_key=data_key,
            identity=envelope.object_identity("dump", database, snapshot_id),
            level=config.snapshot.zstd_level,
            threads=config.snapshot.zstd_threads,
            label=f"snapshot {database}",
            total=estimate,
        )

    return run_dump(config, session, source, database, seal)


def run_dump(
    config: Config, session: postgres.SnapshotSession, source: postgres.PgSettings, database: str,
    consume: Callable[[IO[bytes]], T],
) -> tuple[T, RowCounter]:
    """pg_dump of the session's snapshot into ``consume`` (which reads the dump to its end), while the row
    counter reads the schema inventory, row counts and small tables' checksums in the same snapshot.

    Returns what ``consume`` returned only when pg_dump and the row counter both succeeded; on any failure
    pg_dump is killed and the session's queries cancelled before the error propagates."""
    counter = RowCounter(session, config.restore_test.checksum_max_rows)
    counter.start()
    dump = postgres.start_dump(source, session.snapshot_name, config.snapshot.pg_bin_dir,
                               lock_wait_timeout=config.snapshot.lock_wait_timeout)
    watchdog = _StallWatchdog(dump, config.snapshot.dump_stall_timeout.total_seconds())
    try:
        stats = consume(watchdog.reader(dump.stdout))
        if dump.wait() != 0:
            if watchdog.fired:
                raise SourceError(f"pg_dump of {database} stalled: no output for "
                                  f"{duration_text(watchdog.seconds)} (snapshot.dump_stall_timeout); the dump was "
                                  "stopped")
            counter.join(timeout=30)  # a failed count aborts the snapshot's transaction: it is the cause
            if counter.error is not None:
                counter.result()
            raise SourceError(f"pg_dump of {database} failed: {dump.error_line()}")
        counter.result()
    except BaseException:
        dump.kill()
        with contextlib.suppress(Exception):  # a source that cannot be reached to cancel: the cause is above
            session.connection.cancel_safe(timeout=10)
        counter.join(timeout=10)  # a stalled source holds the count too: it is a daemon, not waited for
        raise
    finally:
        watchdog.stop()
    return stats, counter


class _StallWatchdog:
    """Kills pg_dump when it writes nothing for ``seconds``: a stalled source must not hold the run."""

    def __init__(self, dump: postgres.ToolProcess, seconds: float) -> None:
        self.dump, self.seconds = dump, seconds
        self.fired = False
        self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dump-watchdog", daemon=True)
        self._thread.start()

    def reader(self, stream: IO[bytes]) -> IO[bytes]:
        watchdog = self

        class _Ticking:
            def read(self, size: int = -1) -> bytes:
                data = stream.read(size)
                watchdog.last = time.monotonic()
                return data

        return _Ticking()  # type: ignore[return-value]

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.seconds / 4)):
            if time.monotonic() - self.last > self.seconds:
                self.fired = True
                log.error("pg_dump wrote nothing for %.0fs: stopping it", self.seconds)
                self.dump.process.kill()
                return

    def stop(self) -> None:
        self._stop.set()


def _store_globals(
    config: Config, store: ObjectStore, source: postgres.PgSettings, database: str, snapshot_id: str,
    data_key: bytes, retain_until: datetime,
) -> tuple[StoredObject | None, str]:
    sql_bytes, note = postgres.dump_globals(source, config.snapshot.pg_bin_dir,
                                            timeout=config.snapshot.dump_stall_timeout.total_seconds())
    if sql_bytes is None:
        return None, note
    identity = envelope.object_identity("globals", database, snapshot_id)
    sealed, stats = envelope.seal_blob(data_key, identity, sql_bytes, level=config.snapshot.zstd_level)
    key = layout.data_key(database, snapshot_id, GLOBALS_OBJECT)
    store.put_bytes(key, sealed, retain_until=retain_until)
    return StoredObject(key, stats.plain_size, stats.compressed_size, stats.stored_size, stats.sha256), note


def landing_region(config: Config, conns: Connections) -> tuple[RegionConfig, ObjectStore]:
    """The first region, in configured order, whose bucket answers."""

    def reachable(region: RegionConfig) -> ObjectStore:
        store = conns.store(region, config.transfer)
        store.check_bucket()
        return store

    answer = first_answer(config, "the landing of a new snapshot", reachable)
    return answer.region, answer.value


def snapshot_database(config: Config, database: str, conns: Connections) -> dict[str, Any]:
    """Take a snapshot and bring it to every region (the CLI's ``strongroom snapshot``).

    The landing region's copy is read once and streamed to every other region at once, then each region
    verifies and commits its copy in parallel (``replication.sync_regions``; a DAG gives each region its
    own tasks instead). A failed region does not stop the others. Raises naming every region that did not
    commit, after the others did.
    """
    shared = replication.CachedConnections(conns)  # one client per region for the whole run
    result = take_snapshot(config, database, shared)
    this_run = replication.SnapshotRef(result.snapshot_id, result.region)
    started = time.monotonic()
    outcomes = replication.sync_regions(config, database, shared, this_run)
    report = replication.check_run(config, shared, {database: this_run})
    replication_seconds = round(time.monotonic() - started, 3)
    log.info("%s: snapshot %s replicated, verified and committed in %.1fs", database, result.snapshot_id,
             replication_seconds)
    if not report.ok:
        missing = [
            f"{region} ({outcomes.get(region) if outcomes.get(region) != 'committed' else outcome})"
            for _, region, outcome in report.missing
        ]
        raise ReplicationError(f"{database}: snapshot {result.snapshot_id} not committed in " + "; ".join(missing))
    return dict(result.to_dict(), regions=outcomes, replication_seconds=replication_seconds)
