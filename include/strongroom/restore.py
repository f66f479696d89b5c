"""Restore a snapshot into a target database, all or nothing.

The whole object is downloaded, checked against the manifest's size and SHA-256, decrypted (every
segment authenticated) and decompressed into a private spool file *before* an existing target is touched,
so a tampered or truncated snapshot leaves it exactly as it was. A database that does not exist yet is
created and loaded while the dump arrives (:mod:`strongroom.streamload`: definitions first, then the
tables' data in parallel streams), since any failure, up to the last check, drops it again. The spool is
removed afterwards.

The pipeline, shared by :func:`restore_snapshot` and the restore test (:mod:`strongroom.drill`):
:func:`locate_snapshot` (which snapshot, in which region), :func:`open_spool`, :func:`fetch_snapshot`
(download, verify, decrypt; the primary, else the next region that can serve it), the roles
(:mod:`strongroom.roles`), :func:`restore_file` (``pg_restore``; a new database is dropped again when it
fails) and :func:`compare_rows`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from strongroom import (
    approval,
    catalog,
    chunks,
    dumpfile,
    envelope,
    layout,
    postgres,
    regions,
    roles,
    sandbox,
    snapshot,
    spool,
    streamload,
)
from strongroom.catalog import Manifest
from strongroom.config import Config, RegionConfig, TransferConfig, parse_time
from strongroom.connections import Connections
from strongroom.errors import (
    ConfigError,
    IntegrityError,
    NotFoundError,
    RefusedError,
    RestoreError,
    SourceError,
    StrongroomError,
)
from strongroom.keyring import Keyring
from strongroom.progress import Progress
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreResult:
    database: str
    snapshot_id: str
    taken_at: str
    region: str
    unavailable: tuple[str, ...]
    target: str
    created_database: bool
    tables: int
    rows: int
    download_seconds: float
    restore_seconds: float
    no_owner: bool = False  # owners and privileges were NOT restored (missing_roles no_owner)
    roles: dict[str, Any] | None = None  # what missing_roles create did (roles.RoleReport)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def role_lines(self) -> list[str]:
        """What the report says about owners and roles, one line each."""
        if self.no_owner:
            return ["owners and privileges were NOT restored, as asked: everything belongs to the restoring role"]
        return roles.RoleReport(**self.roles).lines() if self.roles else []


# how a restore treats roles the snapshot needs and the target lacks
ROLES_REFUSE, ROLES_CREATE, ROLES_NO_OWNER = "refuse", "create", "no_owner"
ROLE_CHOICES = (ROLES_REFUSE, ROLES_CREATE, ROLES_NO_OWNER)


class SpoolWatcher(Protocol):
    """Told about the dump as it is spooled (:class:`strongroom.streamload.StreamingLoad`)."""

    @property
    def loading(self) -> bool: ...

    def begin(self, manifest: Manifest, data_key: bytes | None = None) -> None: ...

    def grew(self, path: str, size: int) -> None: ...

    def abandon(self) -> None: ...


def fetch_dump(
    store: ObjectStore, manifest: Manifest, data_key: bytes, path: str, transfer: TransferConfig,
    watcher: SpoolWatcher | None = None,
) -> dict[str, float]:
    """Download, verify, decrypt and decompress the dump into ``path`` (mode 0600), then write its data
    offsets (:mod:`strongroom.dumpfile`) so a parallel ``pg_restore`` seeks instead of scanning.

    With a ``watcher`` the dump is spooled as stored instead (:func:`sealed_spool`; the watcher's streams
    unseal it), and the watcher is told when the download starts and after each write (the bytes written so
    far are on disk); when it is ``loading`` the data from the spool already, nothing is written to ``path``,
    else the verified stored bytes are unsealed into ``path`` afterwards.

    Returns the seconds spent waiting for bytes (``download``) and decrypting, decompressing, writing
    and indexing them (``decrypt``); the first two overlap with the parallel range downloads.
    """
    if manifest.chunked:
        return _fetch_chunks(store, manifest, data_key, path, transfer, watcher)
    obj = manifest.dump
    where = f"s3://{store.bucket}/{obj.key}"
    info = store.head(obj.key)
    if info is None:
        raise IntegrityError(f"{where} is missing although its manifest exists")
    if info.size != obj.stored_size:
        raise IntegrityError(f"{where} is {info.size} bytes, the manifest says {obj.stored_size}")
    digest = hashlib.sha256()
    progress = Progress(f"download {manifest.database} snapshot {manifest.snapshot_id}", obj.stored_size)
    waited = 0.0

    def received() -> Iterator[bytes]:
        """The object's bytes as they arrive, hashed; the time spent waiting for them counts as download."""
        nonlocal waited
        chunks = store.iter_chunks(
            obj.key, obj.stored_size, chunk_size=transfer.part_size, concurrency=transfer.download_concurrency
        )
        mark = time.monotonic()
        for chunk in chunks:
            waited += time.monotonic() - mark
            digest.update(chunk)
            yield chunk
            progress.add(len(chunk))
            mark = time.monotonic()

    started = time.monotonic()
    written = 0
    sealed = sealed_spool(path)
    if watcher is None:
        written = _unseal_into(path, received(), data_key, manifest, where)
    else:  # spooled as stored: the watcher's streams unseal it
        watcher.begin(manifest, data_key)
        stored = _spool_stored(sealed, received(), watcher)
        if stored != obj.stored_size:
            raise IntegrityError(f"{where}: {stored} bytes read, the manifest says {obj.stored_size}")
    if digest.hexdigest() != obj.sha256:
        raise IntegrityError(f"{where} does not match the SHA-256 in its manifest")
    loading = watcher is not None and watcher.loading
    if watcher is not None and not loading:  # not loaded as it arrived: unsealed now, restored from the file
        with open(sealed, "rb") as src:
            written = _unseal_into(path, iter(lambda: src.read(transfer.part_size), b""), data_key, manifest, where)
        os.unlink(sealed)
    if not loading:
        if written != obj.plain_size:
            raise IntegrityError(f"{where}: {written} bytes restored, manifest says {obj.plain_size}")
        index_dump(path, manifest)
    return {"download": round(waited, 3), "decrypt": round(time.monotonic() - started - waited, 3)}


def _unseal_into(path: str, stored: Iterable[bytes], data_key: bytes, manifest: Manifest, where: str) -> int:
    """Unseal the dump's ``stored`` bytes into a new file at ``path`` (mode 0600); returns its size."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for plain in envelope.unseal_stream(stored, data_key, manifest.object_identity("dump"), where):
            written += out.write(plain)
    return written


def sealed_spool(path: str) -> str:
    """Where :func:`fetch_dump` spools the stored bytes of a dump that is loaded as it arrives."""
    return path + ".sealed"


def _spool_stored(sealed: str, stored: Iterable[bytes], watcher: SpoolWatcher) -> int:
    """Write the dump's ``stored`` bytes as they are into a new file at ``sealed`` (mode 0600), telling
    ``watcher`` after each write; returns how many were written."""
    written = 0
    fd = os.open(sealed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in stored:
            written += out.write(chunk)
            out.flush()
            watcher.grew(sealed, written)
    return written


def _fetch_chunks(
    store: ObjectStore, manifest: Manifest, data_key: bytes, path: str, transfer: TransferConfig,
    watcher: SpoolWatcher | None,
) -> dict[str, float]:
    """:func:`fetch_dump` of a chunked snapshot: its chunks fetched in parallel, each authenticated, written
    in order (:func:`strongroom.chunks.spool`)."""
    started = time.monotonic()
    chunks.check_present(store, manifest)  # a missing chunk fails here, before anything is written
    if watcher is not None:
        watcher.begin(manifest)
    chunks.spool(store, manifest, data_key, path, transfer,
                 (lambda written: watcher.grew(path, written)) if watcher is not None else None)
    if watcher is None or not watcher.loading:
        index_dump(path, manifest)
    return {"download": 0.0, "decrypt": round(time.monotonic() - started, 3)}


def index_dump(path: str, manifest: Manifest) -> None:
    """Write the data offsets of the spooled dump (:func:`strongroom.dumpfile.index_data_blocks`); a dump
    that cannot be indexed still restores, more slowly (a warning)."""
    try:
        dumpfile.index_data_blocks(path)
    except dumpfile.DumpLayoutError as exc:
        log.warning("dump of snapshot %s keeps no data offsets (parallel restore is slower): %s",
                    manifest.snapshot_id, exc)


@dataclass(frozen=True)
class Fetched:
    """A snapshot selected, downloaded, verified and decrypted into a spool file, and where it came from."""

    manifest: Manifest
    region: str
    globals: roles.Globals | None  # when asked for (None also when the snapshot holds none)
    phases: dict[str, float] = field(default_factory=dict)  # seconds: download, decrypt (see fetch_dump)
    unavailable: tuple[str, ...] = ()  # "<region>: <why>" for each region passed over


def _fetch_from(
    config: Config, conns: Connections, region: RegionConfig, database: str, path: str,
    *, snapshot_id: str | None, at: datetime | None, with_globals: bool = False,
    watcher: SpoolWatcher | None = None,
) -> Fetched:
    """Select the snapshot in one region and fetch it, verified and decrypted, into ``path`` (and its
    globals, when asked)."""
    store = conns.store(region, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(region))
    manifest = catalog.select_snapshot(store, keyring, database, snapshot_id=snapshot_id, at=at)
    data_key = manifest.data_key(keyring)
    phases = fetch_dump(store, manifest, data_key, path, config.transfer, watcher)
    specs = roles.fetch_globals(store, manifest, data_key) if with_globals else None
    return Fetched(manifest, region.name, specs, phases)


def fetch_snapshot(
    config: Config, conns: Connections, database: str, path: str, *, snapshot_id: str | None = None,
    at: datetime | None = None, region: str | None = None, with_globals: bool = False,
    watcher: SpoolWatcher | None = None,
) -> Fetched:
    """Select the snapshot and fetch it into ``path``: from ``region`` only, else from the primary or,
    when a snapshot, object, key or integrity check fails there, the next region in configured order
    (:func:`strongroom.regions.first_answer`). A failed attempt abandons what ``watcher`` did with it."""

    def attempt(where: RegionConfig) -> Fetched:
        try:
            return _fetch_from(config, conns, where, database, path, snapshot_id=snapshot_id, at=at,
                               with_globals=with_globals, watcher=watcher)
        except BaseException as exc:
            if watcher is not None:
                watcher.abandon()
            if isinstance(exc, StrongroomError):  # the next region starts from nothing
                for spooled in (path, sealed_spool(path)):
                    if os.path.exists(spooled):
                        os.unlink(spooled)
            raise

    answer = regions.first_answer(config, describe_choice(database, snapshot_id, at), attempt, region=region)
    return replace(answer.value, unavailable=answer.unavailable)


def describe_choice(database: str, snapshot_id: str | None, at: datetime | None) -> str:
    """The snapshot asked for, as a log line or an error names it."""
    if snapshot_id:
        return f"snapshot {snapshot_id} of {database}"
    if at is not None:
        return f"the newest snapshot of {database} taken at or before {at.isoformat()}"
    return f"the newest snapshot of {database}"


def open_spool(config: Config, prefix: str) -> spool.Spool:
    """A private directory for one restore's dump, after removing what dead restores left behind."""
    sandbox.clean_leftovers(config.restore.spool_dir)
    return spool.Spool.create(config.restore.spool_dir, prefix, config.restore.lease)


def compare_rows(
    settings: postgres.PgSettings, manifest: Manifest, tables: Sequence[str] = (), *, jobs: int = 1
) -> dict[str, tuple[int, int | None]]:
    """Each table the snapshot recorded (only ``tables``, when given): (rows recorded, rows restored;
    None for a table that was not restored), counted over ``jobs`` connections."""
    actual = postgres.count_rows(settings, jobs=jobs)
    return {t: (n, actual.get(t)) for t, n in sorted(manifest.tables.items()) if not tables or t in tables}


def restore_snapshot(
    config: Config,
    database: str,
    target: postgres.PgSettings,
    conns: Connections,
    *,
    snapshot_id: str | None = None,
    at: datetime | None = None,
    region: str | None = None,
    clean: bool = False,
    tables: Sequence[str] = (),
    missing_roles: str = ROLES_REFUSE,
    with_passwords: bool = False,
) -> RestoreResult:
    """Restore a snapshot of ``database`` into ``target``; the target is untouched unless all checks pass.

    Without ``region``, the primary is tried first and every other region after it, in configured order,
    when a snapshot, object, key or integrity check fails there; the result says which region served.
    With ``tables`` only those tables (definitions and rows) are restored, into a new database.

    Owners and privileges are restored as they were. Before the target is touched, every role the snapshot
    needs must exist there: ``missing_roles`` says what happens otherwise: ``refuse`` (one line naming
    them), ``create`` (from the snapshot's globals, NOLOGIN and without passwords unless
    ``with_passwords``; an existing role is never altered) or ``no_owner`` (no owners, no privileges).
    """
    db = config.database(database)
    _check_roles_choice(missing_roles)
    regions.candidates(config, region)  # an unknown region is refused before the target is looked at
    state = postgres.inspect_target(target)
    _check_target(target, state, clean, tables)
    into = target if state.exists else _loading_target(target)  # a new database: renamed once it passed
    jobs = restore_jobs(config)
    bin_dir = config.snapshot.pg_bin_dir
    lease = open_spool(config, "strongroom-restore-")
    spool_dir = str(lease.path)
    role_report: roles.RoleReport | None = None

    def entries(manifest: Manifest, path: str) -> tuple[tuple[str, ...], list[str], str | None]:
        """The tables asked for, the TOC lines to restore and the list file naming them (None: all)."""
        chosen = resolve_tables(manifest, tables)
        if not chosen:
            return chosen, postgres.toc(path, bin_dir), None
        use_list = os.path.join(spool_dir, "tables.list")
        listed = postgres.table_list(path, chosen, bin_dir)
        with open(use_list, "w", encoding="utf-8") as out:
            out.write(listed)
        return chosen, listed.splitlines(), use_list

    def missing(manifest: Manifest, chosen: Sequence[str], toc_lines: Sequence[str]) -> list[str]:
        if missing_roles == ROLES_NO_OWNER:
            return []
        return roles.missing_roles(target, roles.needed_roles(manifest.inventory, toc_lines, chosen))

    def prepare(manifest: Manifest, path: str) -> tuple[list[str], str | None]:
        chosen, toc_lines, use_list = entries(manifest, path)
        if absent := missing(manifest, chosen, toc_lines):
            raise roles.refusal(target.describe(), absent)
        return toc_lines, use_list

    # A new database is loaded while the dump arrives (strongroom.streamload); not when roles are to be
    # created: that changes the server, which dropping the database would not undo.
    load = None
    if not state.exists and missing_roles != ROLES_CREATE:
        load = streamload.StreamingLoad(into, spool_dir, prepare, jobs=jobs, bin_dir=bin_dir,
                                        no_owner=missing_roles == ROLES_NO_OWNER)
    try:
        path = os.path.join(spool_dir, "dump")
        started = time.monotonic()
        try:
            fetched = fetch_snapshot(config, conns, db.name, path, snapshot_id=snapshot_id, at=at, region=region,
                                     with_globals=missing_roles == ROLES_CREATE, watcher=load)
        except streamload.Stopped as stop:
            raise stop.error from None
        manifest = fetched.manifest
        downloaded = time.monotonic()
        log.info("restoring %s snapshot %s from %s into %s", db.name, manifest.snapshot_id, fetched.region,
                 target.describe())
        if load is not None and load.loading:
            chosen = resolve_tables(manifest, tables)
            _finish_load(load)
        else:
            if load is not None:  # the dump could not be read as it arrived: indexed and restored now
                index_dump(path, manifest)
            chosen, toc_lines, use_list = entries(manifest, path)
            absent = missing(manifest, chosen, toc_lines)
            if absent and missing_roles == ROLES_REFUSE:
                raise roles.refusal(target.describe(), absent)
            if absent:
                role_report = roles.create_roles(target, fetched.globals, absent, with_passwords=with_passwords)
                for line in role_report.lines():
                    log.warning("%s: %s", target.describe(), line)
            restore_file(config, into, path, state, clean=clean, use_list=use_list,
                         no_owner=missing_roles == ROLES_NO_OWNER)
        restored = time.monotonic()
    finally:
        lease.remove()

    try:
        counted = compare_rows(into, manifest, chosen, jobs=jobs)
        log.info("%s: %d tables' rows counted in %.1fs", target.describe(), len(counted),
                 time.monotonic() - restored)
        wrong = {t: (n, got) for t, (n, got) in counted.items() if got != n}
        if wrong:
            table, (expected, got) = sorted(wrong.items())[0]
            dropped = "; the new database was dropped" if into is not target else ""
            raise IntegrityError(
                f"restored {target.describe()} differs from snapshot {manifest.snapshot_id}: "
                f"{table} has {got} rows, the snapshot recorded {expected} ({len(wrong)} table(s) differ){dropped}"
            )
        if into is not target:
            postgres.rename_database(into, target.dbname)
    except BaseException as exc:
        if into is not target:
            with contextlib.suppress(Exception):
                postgres.drop_database(into)  # we created it: leave nothing half-checked behind
            if isinstance(exc, SourceError):
                raise RestoreError(f"{exc}; the new database was dropped") from None
        raise
    return RestoreResult(
        database=db.name,
        snapshot_id=manifest.snapshot_id,
        taken_at=manifest.taken_at.isoformat(),
        region=fetched.region,
        unavailable=fetched.unavailable,
        target=target.describe(),
        created_database=not state.exists,
        tables=len(counted),
        rows=sum(n for n, _ in counted.values()),
        download_seconds=round(downloaded - started, 3),
        restore_seconds=round(restored - downloaded, 3),
        no_owner=missing_roles == ROLES_NO_OWNER,
        roles=role_report.to_dict() if role_report else None,
    )


def restore_globals(
    config: Config, conns: Connections, database: str, target: postgres.PgSettings, *,
    snapshot_id: str | None = None, at: datetime | None = None, region: str | None = None,
    with_passwords: bool = False,
) -> tuple[str, roles.RoleReport]:
    """Create the roles of a snapshot's globals that the target's server lacks (rebuilding a server); an
    existing role is never altered, tablespaces are only reported. Returns the snapshot id and the report."""
    db = config.database(database)
    manifest, found_in = locate_snapshot(config, conns, db.name, snapshot_id=snapshot_id, at=at, region=region)
    where = config.region(found_in)
    store = conns.store(where, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(where))
    data_key = manifest.data_key(keyring)
    specs = roles.fetch_globals(store, manifest, data_key)
    if specs is None:
        raise NotFoundError(f"snapshot {manifest.snapshot_id} of {db.name} holds no globals "
                            f"({manifest.globals_note or 'not captured'})")
    names = [n for n in specs.roles if not n.startswith("pg_")]
    report = roles.create_roles(target, specs, names, with_passwords=with_passwords)
    log.info("roles of %s snapshot %s on %s: %d created", db.name, manifest.snapshot_id, target.describe(),
             len(report.created))
    return manifest.snapshot_id, report


def restore_jobs(config: Config) -> int:
    """How many ``pg_restore`` jobs (and row-counting connections) a restore uses."""
    return config.restore.jobs or (os.cpu_count() or 1)


def _loading_target(target: postgres.PgSettings) -> postgres.PgSettings:
    """Where a new database is loaded until every check has passed (:func:`strongroom.postgres.loading_name`).
    What a restore into the same name left there when it was killed is dropped first; while something is
    connected to it (a restore into that name running now) the restore is refused."""
    loading = target.with_dbname(postgres.loading_name(target.dbname))
    if postgres.inspect_target(loading).exists:
        if sessions := postgres.sessions_in(loading):
            raise RestoreError(f"a restore into {target.describe()} is running: its new database is being loaded as "
                               f"{loading.dbname} ({sessions} session(s)); wait for it to finish or stop it")
        log.warning("%s: dropped %s, left behind by a restore into it that did not finish", target.describe(),
                    loading.dbname)
        postgres.drop_database(loading)
    return loading


def _finish_load(load: streamload.StreamingLoad) -> None:
    """The dump is verified: the data streams read to its end, and ``post-data`` is restored with ``jobs``
    (:meth:`strongroom.streamload.StreamingLoad.finish`). Any failure drops the new database."""
    try:
        load.finish()
    except BaseException as exc:
        load.abandon()  # we created it: leave nothing half-restored behind
        if isinstance(exc, StrongroomError):
            raise RestoreError(f"{exc}; the new database was dropped") from None
        raise


def _check_roles_choice(choice: str) -> None:
    if choice not in ROLE_CHOICES:
        raise ConfigError(f"missing roles {choice!r}: choose {', '.join(ROLE_CHOICES)}")


def restore_file(
    config: Config, target: postgres.PgSettings, path: str, state: postgres.TargetState, *, clean: bool = False,
    use_list: str | None = None, no_owner: bool = False, restorer: postgres.PgSettings | None = None,
) -> None:
    """``pg_restore`` the fetched dump at ``path`` into ``target``: an existing database in one transaction
    (it ends fully restored or as it was); a new one is created, restored with parallel jobs and dropped
    again when that fails.

    With ``restorer`` (the restore test; ``target`` is a superuser of an isolated server) nothing production
    wrote ever runs as a superuser. The new database belongs to ``restorer``, a login role that is no
    superuser, only a member of production's roles (:func:`strongroom.roles.prepare_restorer`), and
    production's owners are kept. The superuser replays only the ``pre-data`` section (definitions, owners,
    comments and their privileges, in which no function body, constraint or default is evaluated);
    everything that can run production's code (the data load: CHECK constraints, generated columns; then
    indexes, constraints, triggers, materialized views, default privileges) runs as ``restorer``.
    """
    jobs = restore_jobs(config)
    bin_dir = config.snapshot.pg_bin_dir
    if state.exists:
        if restorer is not None:
            raise RestoreError(f"{target.describe()} exists: a restore as an unprivileged role needs a new database")
        # an existing database is restored in one transaction: it ends fully restored or as it was
        postgres.restore_dump(target, path, jobs=1, single_transaction=True, clean=clean, bin_dir=bin_dir,
                              no_owner=no_owner)
        return
    postgres.create_database(target, owner=restorer.user if restorer else None)
    try:
        if restorer is None:
            postgres.restore_dump(target, path, jobs=jobs, single_transaction=False, clean=False, bin_dir=bin_dir,
                                  use_list=use_list, no_owner=no_owner)
        else:
            postgres.restore_dump(target, path, jobs=1, single_transaction=True, clean=False, bin_dir=bin_dir,
                                  use_list=use_list, sections=("pre-data",))
            postgres.restore_dump(restorer, path, jobs=jobs, single_transaction=False, clean=False, bin_dir=bin_dir,
                                  use_list=use_list, sections=("data", "post-data"))
    except BaseException as exc:
        postgres.drop_database(target)  # we created it: leave nothing half-restored behind
        if isinstance(exc, StrongroomError):
            raise RestoreError(f"{exc}; the new database was dropped") from None
        raise


def _check_target(
    target: postgres.PgSettings, state: postgres.TargetState, clean: bool, tables: Sequence[str]
) -> None:
    if tables and state.exists:
        raise RestoreError(
            f"a partial restore (tables) goes into a new database, and {target.describe()} exists: "
            "restore the tables elsewhere and copy the rows you need from there"
        )
    if state.exists and state.relations and not clean:
        raise RestoreError(
            f"target {target.describe()} is not empty ({state.relations} relations): "
            "restore into a new database, or restore with `clean` to replace its contents"
        )


def resolve_tables(manifest: Manifest, tables: Sequence[str]) -> tuple[str, ...]:
    """``tables`` as the snapshot names them ("schema.table"); a bare name must match exactly one table."""
    out: list[str] = []
    for name in tables:
        if name in manifest.tables:
            out.append(name)
            continue
        matches = [t for t in manifest.tables if t.split(".", 1)[1] == name]
        if len(matches) != 1:
            reason = "is ambiguous: name the schema" if matches else "is not in it"
            raise NotFoundError(f"table {name!r} {reason} (snapshot {manifest.snapshot_id} of {manifest.database})")
        out.append(matches[0])
    return tuple(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class RestorePlan:
    """What a restore will do, decided before anything is touched. Holds no secret: it travels in XCom."""

    database: str
    snapshot_id: str
    taken_at: str
    region: str | None  # None: the primary, then the other regions
    found_in: str
    target_conn_id: str | None  # None: given as a DSN (CLI only)
    target_dbname: str
    target: str  # where, without credentials
    new_database: bool
    production: str | None  # the configured source database the target is, if any
    tables: tuple[str, ...]
    clean: bool
    missing_roles: str = ROLES_REFUSE

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "tables": list(self.tables)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RestorePlan:
        return cls(**{**data, "tables": tuple(data.get("tables", ()))})


def parse_snapshot_choice(text: str) -> tuple[str | None, datetime | None]:
    """The form's snapshot field: "newest" (or empty), a snapshot id, or a time with a UTC offset."""
    text = text.strip()
    if text.lower() in ("", "newest", "latest"):
        return None, None
    if layout.is_snapshot_id(text):
        return text, None
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"snapshot {text!r} is neither 'newest', a snapshot id (e.g. 20261126T140000Z-a1b2c3) "
            "nor a time (e.g. 2026-11-26T14:00:00+00:00)"
        ) from None
    return None, parse_time(text, "snapshot time")


SANDBOX_NAME = re.compile(r"^(?P<database>.+)_(?P<taken>\d{8}_\d{6})(?:_(?P<suffix>[0-9a-f]{6}))?$")
_PG_NAME_MAX = 63


def run_suffix(run_id: str) -> str:
    """Six hex digits that tell one run's sandbox from another's (the same snapshot restored twice)."""
    return hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:6]


def sandbox_dbname(database: str, taken_at: datetime, suffix: str | None = None) -> str:
    """The sandbox target's name: the source's, the snapshot's time and a run suffix,
    e.g. shop_20261126_140000_3fa9c1. The snapshot time in the name is what its expiry is computed from."""
    name = f"{database}_{taken_at.astimezone(UTC):%Y%m%d_%H%M%S}" + (f"_{suffix}" if suffix else "")
    if len(name.encode("utf-8")) > _PG_NAME_MAX:
        raise ConfigError(f"database name {database!r} is too long for a sandbox name ({name} is over 63 bytes)")
    return name


def sandbox_taken_at(name: str, databases: Sequence[str]) -> datetime | None:
    """The snapshot time a sandbox database is named after, when ``name`` is one (of a configured source)."""
    match = SANDBOX_NAME.match(name)
    if not match or match.group("database") not in databases:
        return None
    return datetime.strptime(match.group("taken"), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)


def locate_snapshot(
    config: Config, conns: Connections, database: str, *, snapshot_id: str | None, at: datetime | None,
    region: str | None,
) -> tuple[Manifest, str]:
    """The snapshot a restore would use, and the region it was found in: ``region`` only, else the primary
    or the next region that holds it (:func:`strongroom.regions.first_answer`)."""

    def select(where: RegionConfig) -> Manifest:
        store = conns.store(where, config.transfer)
        keyring = conns.keyring(config.keyring_conn_id(where))
        return catalog.select_snapshot(store, keyring, database, snapshot_id=snapshot_id, at=at)

    answer = regions.first_answer(config, describe_choice(database, snapshot_id, at), select, region=region)
    return answer.value, answer.region.name


def production_source(config: Config, conns: Connections, target: postgres.PgSettings) -> str | None:
    """The configured source database that ``target`` is: the same cluster (system identifier) and the same
    database (``current_database()``), read over each connection itself, so whatever host name, address,
    port, pooler alias or user reached it. Called after connecting and before anything is written.

    When an identity cannot be read, a target with a source's database name counts as that source: a guess
    may only ever add a confirmation, never skip one.
    """
    target_id = postgres.server_identity(target)
    for db in config.databases:
        source = conns.postgres(db.postgres_conn_id)
        source_id = postgres.server_identity(source)
        if target_id is not None and source_id is not None:
            if target_id == source_id:
                return db.name
            continue
        names = {source.dbname, *([source_id.database] if source_id else [])}
        if target.dbname in names or (target_id is not None and target_id.database in names):
            return db.name
    return None


def guard_production(source: str | None, target: str, confirm: str | None) -> None:
    """Refuse to overwrite a production source unless its name was typed; refuse a confirmation for nothing."""
    if source and confirm != source:
        typed = f" (typed {confirm!r})" if confirm else ""
        raise RefusedError(
            f"target {target} is the production database {source}: type {source!r} to confirm{typed}"
        )
    if confirm and not source:
        raise RefusedError(
            f"a production confirmation was given ({confirm!r}) but target {target} is not a production database"
        )


SANDBOX = "sandbox"


def plan_restore(
    config: Config,
    conns: Connections,
    database: str,
    *,
    target_conn_id: str = SANDBOX,
    target_dsn: postgres.PgSettings | None = None,
    snapshot_id: str | None = None,
    at: datetime | None = None,
    region: str | None = None,
    tables: Sequence[str] = (),
    clean: bool = False,
    confirm_production: str | None = None,
    missing_roles: str = ROLES_REFUSE,
    run_suffix: str | None = None,
    approval_required: bool = False,
) -> RestorePlan:
    """Check every input and decide the restore; reads the catalog and the target, changes nothing.

    The target is ``target_dsn`` when given, else the connection ``target_conn_id``'s database, else
    (``"sandbox"``) a new database on ``restore.sandbox_conn_id`` named after the source and snapshot time.
    """
    db = config.database(database)
    _check_roles_choice(missing_roles)
    if region:
        config.region(region)
    if target_conn_id == SANDBOX and target_dsn is None and not config.restore.sandbox_conn_id:
        raise ConfigError("no sandbox server is configured (restore.sandbox_conn_id): name a target connection")
    manifest, found_in = locate_snapshot(config, conns, db.name, snapshot_id=snapshot_id, at=at, region=region)
    chosen = resolve_tables(manifest, tables)
    conn_id: str | None
    if target_dsn is not None:
        target, conn_id = target_dsn, None
    elif target_conn_id == SANDBOX:
        conn_id = config.restore.sandbox_conn_id
        assert conn_id is not None
        target = conns.postgres(conn_id).with_dbname(sandbox_dbname(db.name, manifest.taken_at, run_suffix))
    else:
        target, conn_id = conns.postgres(target_conn_id), target_conn_id
    state = postgres.inspect_target(target)
    if target_conn_id == SANDBOX and target_dsn is None and state.exists:
        raise RestoreError(f"{target.describe()} exists already (restored before?): drop it or choose a target")
    _check_target(target, state, clean, chosen)
    source = production_source(config, conns, target)
    guard_production(source, target.describe(), confirm_production)
    if missing_roles == ROLES_REFUSE and manifest.inventory:  # refused here already, not only when it runs
        missing = roles.missing_roles(target, roles.needed_roles(manifest.inventory, (), chosen))
        if missing:
            raise roles.refusal(target.describe(), missing)
    if source and approval_required and not config.restore.approvers:
        raise RefusedError(f"target {target.describe()} is the production database {source}, and no approvers "
                           "are configured (restore.approvers): nobody could approve it")
    return RestorePlan(
        database=db.name, snapshot_id=manifest.snapshot_id, taken_at=manifest.taken_at.isoformat(),
        region=region, found_in=found_in, target_conn_id=conn_id, target_dbname=target.dbname,
        target=target.describe(), new_database=not state.exists, production=source, tables=chosen, clean=clean,
        missing_roles=missing_roles,
    )


def planned_target(conns: Connections, plan: RestorePlan) -> postgres.PgSettings:
    """The target of a plan made in another task (a plan with a DSN target cannot leave its process)."""
    if plan.target_conn_id is None:
        raise ConfigError("this plan's target was a DSN: it can only be executed where it was made")
    return conns.postgres(plan.target_conn_id).with_dbname(plan.target_dbname)


def check_target_choice(config: Config, choice: str) -> None:
    """The restore_database form offers the sandbox and the configured targets, nothing else."""
    allowed = [SANDBOX, *config.restore.target_conn_ids]
    if choice not in allowed:
        raise ConfigError(f"target {choice!r} is not a configured restore target (choose from {', '.join(allowed)})")


def check_clearance(
    plan: RestorePlan, clearance: Mapping[str, Any] | None, run: approval.Run, keyring: Keyring,
    safety: Mapping[str, Any] | None,
) -> str | None:
    """Before a production target is touched: the approval task sealed a second person's approval for this
    run and target, and the target's safety snapshot exists. Returns the approver (None: not production)."""
    if not plan.production:
        return None
    approver = approval.verify(clearance, run, keyring, plan.target)
    if not plan.new_database and not (safety or {}).get("safety_snapshot"):
        raise RefusedError(f"no safety snapshot of the production database {plan.production} was taken")
    return approver


def take_safety_snapshot(config: Config, conns: Connections, plan: RestorePlan) -> str | None:
    """A fresh snapshot of the production database about to be overwritten, committed in every region."""
    if not plan.production or plan.new_database:
        return None
    return safety_snapshot(config, conns, plan.production, "the restore")


def safety_snapshot(config: Config, conns: Connections, production: str, before: str) -> str:
    """The safety snapshot of the production database ``production`` before ``before`` overwrites it (a
    single restore, a platform recovery): a snapshot committed in every region, or the error that says why
    not. There is no way to skip it: the caller refuses to overwrite without it."""
    result = snapshot.snapshot_database(config, production, conns)
    log.info("safety snapshot of %s before %s: %s", production, before, result["snapshot_id"])
    return str(result["snapshot_id"])


def execute_plan(
    config: Config, conns: Connections, plan: RestorePlan, target: postgres.PgSettings, *, with_passwords: bool = False
) -> RestoreResult:
    """Restore as planned; the target must still be the one planned (same name, same production status)."""
    if target.dbname != plan.target_dbname:
        raise RefusedError(f"target {target.describe()} is not the planned {plan.target}")
    source = production_source(config, conns, target)
    if source != plan.production:
        raise RefusedError(f"target {target.describe()} changed since the plan: production is now {source!r}")
    return restore_snapshot(
        config, plan.database, target, conns, snapshot_id=plan.snapshot_id, region=plan.region,
        clean=plan.clean, tables=plan.tables, missing_roles=plan.missing_roles, with_passwords=with_passwords,
    )
