"""PostgreSQL: connection settings, sessions and the dump/restore tools, with no secret on any argv.

Passwords reach libpq through the child's environment (``PGPASSWORD``) or, for psycopg, as an in-memory
keyword; command lines carry only tool options, the snapshot name and the database name.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import psycopg
from psycopg import sql

from strongroom.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

_LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
}
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
# what a PostgreSQL child may inherit from us: the search path, locale and time zone, nothing more
_BASE_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_COLLATE", "LC_MESSAGES", "TZ")
# the libpq variables a caller may set for a connection given without a password (break-glass --target-dsn)
_LIBPQ_PASSTHROUGH = ("PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY",
                      "PGSERVICE", "PGSERVICEFILE")
# Output settings a content checksum depends on: pinned at snapshot time and in the restore sandbox.
STABLE_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO,YMD", "IntervalStyle": "postgres",
                   "extra_float_digits": "3", "bytea_output": "hex"}
# md5 over every row's text in a stable order; "{}.{}" is the table
CHECKSUM_SQL = "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {}.{} t"


@dataclass(frozen=True)
class PgSettings:
    """Where and as whom to connect. ``password`` is never printed; ``None`` lets libpq find one."""

    dbname: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dsn(cls, dsn: str) -> PgSettings:
        """A libpq DSN (URI or key=value) without a password; PGPASSWORD/PGPASSFILE supply it."""
        try:
            parts = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            raise ConfigError("`target_dsn` is not a valid libpq connection string") from None
        if parts.get("password") or re.match(r"^postgres(ql)?://[^/@]*:[^/@]*@", dsn):
            raise ConfigError(
                "`target_dsn` must not contain a password: set PGPASSWORD or PGPASSFILE instead"
            )
        dbname = parts.pop("dbname", None)
        if not dbname:
            raise ConfigError("`target_dsn` must name a database (dbname=... or a path in the URI)")
        port = parts.pop("port", None)
        return cls(
            dbname=str(dbname),
            host=str(parts.pop("host")) if parts.get("host") else None,
            port=int(port) if port else None,
            user=str(parts.pop("user")) if parts.get("user") else None,
            options={k: str(v) for k, v in parts.items() if k in _LIBPQ_ENV},
        )

    def describe(self) -> str:
        host = self.host or "local socket"
        port = f":{self.port}" if self.port else ""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{host}{port}/{self.dbname}"

    def with_dbname(self, dbname: str) -> PgSettings:
        return replace(self, dbname=dbname)

    def env(self) -> dict[str, str]:
        """The environment for a libpq tool: only what it needs (see :func:`minimal_env`), plus these settings.

        Nothing else of ours reaches the child: no ``AIRFLOW_CONN_*``, no cloud or keyring variables. The
        password is this connection's own; the caller's ``PGPASSWORD``/``PGPASSFILE`` pass only when these
        settings carry none (a ``--target-dsn`` given on the command line).
        """
        env = minimal_env()
        if self.password is None:
            env.update({k: v for k, v in os.environ.items() if k in _LIBPQ_PASSTHROUGH})
        env["PGDATABASE"] = self.dbname
        for value, var in ((self.host, "PGHOST"), (self.port, "PGPORT"), (self.user, "PGUSER")):
            if value is not None:
                env[var] = str(value)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        for key, value in self.options.items():
            if key in _LIBPQ_ENV:
                env[_LIBPQ_ENV[key]] = str(value)
        return env

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dbname": self.dbname, "connect_timeout": 10}
        for name in ("host", "port", "user", "password"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        kwargs.update({k: v for k, v in self.options.items() if k in _LIBPQ_ENV})
        return kwargs


def minimal_env() -> dict[str, str]:
    """The environment every PostgreSQL child starts from: PATH, locale and time zone of ours, nothing else."""
    env = {k: v for k, v in os.environ.items() if k in _BASE_ENV}
    env.setdefault("PATH", "/usr/bin:/bin")
    return env


def connect(settings: PgSettings, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(autocommit=autocommit, **settings.connect_kwargs())
    except psycopg.Error as exc:
        raise SourceError(f"cannot connect to {settings.describe()}: {_first_line(exc)}") from None


def _first_line(exc: BaseException | str) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:  # libpq prefixes the interesting part with FATAL/ERROR
        if "FATAL" in line or "ERROR" in line or "error:" in line:
            return line
    return lines[0] if lines else type(exc).__name__ if isinstance(exc, BaseException) else ""


def tool(name: str, bin_dir: str | None = None) -> str:
    """Path of a PostgreSQL client tool: ``bin_dir``, else the newest /usr/lib/postgresql/N/bin, else PATH."""
    if bin_dir:
        path = os.path.join(bin_dir, name)
        if not os.access(path, os.X_OK):
            raise ConfigError(f"snapshot.pg_bin_dir: {path} is not an executable")
        return path
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2] or 0))
    for directory in reversed(versions):
        if os.access(os.path.join(directory, name), os.X_OK):
            return os.path.join(directory, name)
    found = shutil.which(name)
    if not found:
        raise ConfigError(f"{name} not found: install the PostgreSQL client tools or set snapshot.pg_bin_dir")
    return found


def tool_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True, env=minimal_env()).stdout
    match = re.search(r"\d+(\.\d+)+", out)
    return match.group(0) if match else out.strip()


@dataclass(frozen=True)
class TableRef:
    schema: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class SnapshotSession:
    """A REPEATABLE READ transaction whose exported snapshot pg_dump shares."""

    connection: psycopg.Connection[Any]
    snapshot_name: str
    taken_at: datetime
    server_version: str
    database_size: int

    def tables(self) -> list[TableRef]:
        rows = self.connection.execute(
            """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'
               ORDER BY 1, 2""",
            (list(_SYSTEM_SCHEMAS),),
        ).fetchall()
        return [TableRef(schema, name) for schema, name in rows]

    def checksums(self, counts: dict[str, int], max_rows: int) -> dict[str, str]:
        """Content checksums of the tables with at most ``max_rows`` rows, in this same snapshot."""
        for name, value in STABLE_SETTINGS.items():
            self.connection.execute(sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        out: dict[str, str] = {}
        for table in self.tables():
            if counts.get(table.qualified, max_rows + 1) <= max_rows:
                query = sql.SQL(CHECKSUM_SQL).format(sql.Identifier(table.schema), sql.Identifier(table.name))
                row = self.connection.execute(query).fetchone()
                out[table.qualified] = str(row[0]) if row else ""
        return out

    def count_rows(self) -> dict[str, int]:
        """Exact row counts per table, read in the exported snapshot itself."""
        counts: dict[str, int] = {}
        for table in self.tables():
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(table.schema), sql.Identifier(table.name)
            )
            row = self.connection.execute(query).fetchone()
            counts[table.qualified] = int(row[0]) if row else 0
        return counts


@contextmanager
def snapshot_session(settings: PgSettings) -> Iterator[SnapshotSession]:
    """Open the transaction, export its snapshot, and keep it open until the caller is done."""
    conn = connect(settings)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        # The snapshot is taken at this first statement; clock_timestamp() reads the server's clock then.
        row = conn.execute(
            "SELECT pg_export_snapshot(), clock_timestamp(), current_setting('server_version'),"
            " pg_database_size(current_database())"
        ).fetchone()
        assert row is not None
        name, taken_at, version, size = row
        yield SnapshotSession(conn, str(name), taken_at.astimezone(UTC), str(version).split()[0], int(size))
        # no ROLLBACK: closing ends the read-only transaction, and a source stalled by now cannot hold us
    except psycopg.Error as exc:
        raise SourceError(f"database {settings.dbname}: {_first_line(exc)}") from None
    finally:
        conn.close()


class ToolProcess:
    """A PostgreSQL tool running with its stdout piped to us (or, with ``feed``, its stdin piped from us and
    its stdout discarded); stderr is collected on a thread."""

    def __init__(self, argv: list[str], env: dict[str, str], *, feed: bool = False) -> None:
        self.argv0 = os.path.basename(argv[0])
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL if feed else subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if feed else subprocess.DEVNULL, env=env, bufsize=0,
        )
        _grow_pipe(self.process.stdin if feed else self.process.stdout)
        self._stderr: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    @property
    def stdout(self) -> IO[bytes]:
        assert self.process.stdout is not None
        return self.process.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.process.stdin is not None
        return self.process.stdin

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)
                log.info("%s: %s", self.argv0, line)

    def wait(self) -> int:
        code = self.process.wait()
        self._reader.join(timeout=10)
        return code

    def error_line(self) -> str:
        errors = [line for line in self._stderr if "error" in line.lower() or "fatal" in line.lower()]
        return (errors or self._stderr or [f"{self.argv0} exited with {self.process.returncode}"])[0]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()


def _grow_pipe(pipe: IO[bytes] | None) -> None:
    """Ask for a 1 MiB pipe so each read returns a large block (fewer, bigger compress/encrypt calls)."""
    if pipe is None:
        return
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass


def start_dump(settings: PgSettings, snapshot_name: str, bin_dir: str | None = None, *,
               lock_wait_timeout: timedelta = timedelta(seconds=60)) -> ToolProcess:
    argv = [
        tool("pg_dump", bin_dir),
        "--format=custom",
        "--compress=0",  # zstd downstream compresses faster, on every core
        f"--snapshot={snapshot_name}",
        f"--lock-wait-timeout={max(1, round(lock_wait_timeout.total_seconds() * 1000))}ms",
        "--no-password",
    ]
    return ToolProcess(argv, settings.env())


def dump_globals(
    settings: PgSettings, bin_dir: str | None = None, *, timeout: float | None = None
) -> tuple[bytes | None, str]:
    """Roles and tablespaces as SQL, with role passwords when the role may read them.

    Returns ``(sql, note)``; ``sql`` is None when the role may read neither (a warning, not a failure).
    Raises :class:`SourceError` when pg_dumpall takes longer than ``timeout`` seconds (a stalled source).
    """
    base = [tool("pg_dumpall", bin_dir), "--globals-only", "--no-password", f"--database={settings.dbname}"]
    for extra, note in (([], "roles with passwords"), (["--no-role-passwords"], "roles without passwords")):
        try:
            result = subprocess.run(base + extra, capture_output=True, env=settings.env(), check=False,
                                    timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SourceError(f"pg_dumpall of {settings.describe()} stalled: no result in {timeout:g}s") from None
        if result.returncode == 0:
            return result.stdout, note
        last = _first_line(result.stderr.decode("utf-8", "replace"))
    log.warning("globals not captured (the role may not read them): %s", last)
    return None, f"not captured: {last}"


def restore_dump(
    target: PgSettings, path: str, *, jobs: int, single_transaction: bool, clean: bool, bin_dir: str | None,
    use_list: str | None = None, no_owner: bool = False, sections: Sequence[str] = (),
) -> None:
    """pg_restore a custom-format file; in one transaction (all or nothing) or with parallel jobs.

    Owners, privileges, default privileges, comments and security labels are restored as dumped, unless
    ``no_owner`` (then everything belongs to the restoring role and no GRANT is replayed). ``use_list`` is a
    TOC list file (``pg_restore -L``): only its entries are restored; ``sections`` restricts to
    ``pre-data``, ``data`` and/or ``post-data``.
    """
    argv = _restore_argv(target, bin_dir, use_list=use_list, no_owner=no_owner, sections=sections)
    argv += ["--single-transaction"] if single_transaction else [f"--jobs={max(1, jobs)}"]
    argv += ["--clean", "--if-exists"] if clean else []
    result = subprocess.run([*argv, path], capture_output=True, env=target.env(), check=False)
    if result.returncode != 0:
        raise SourceError(f"pg_restore into {target.describe()} failed: {_first_line(result.stderr.decode())}")


def start_restore_stream(
    target: PgSettings, *, bin_dir: str | None, use_list: str, no_owner: bool = False,
    sections: Sequence[str] = ("data",),
) -> ToolProcess:
    """A ``pg_restore`` of the entries in ``use_list`` that reads the custom-format dump from its stdin as
    it is written (:class:`ToolProcess` with ``feed``). Reading a pipe, it restores the entries in file
    order, one job; several such streams, each with its own tables, load in parallel."""
    argv = _restore_argv(target, bin_dir, use_list=use_list, no_owner=no_owner, sections=sections)
    return ToolProcess(argv, target.env(), feed=True)


def start_restore(
    target: PgSettings, path: str, *, bin_dir: str | None, use_list: str | None, jobs: int, no_owner: bool = False,
    sections: Sequence[str] = (),
) -> ToolProcess:
    """``pg_restore --jobs`` of a custom-format file into a new database, running (:meth:`ToolProcess.wait`
    for its exit code, :meth:`ToolProcess.error_line` for its error)."""
    argv = _restore_argv(target, bin_dir, use_list=use_list, no_owner=no_owner, sections=sections)
    return ToolProcess([*argv, f"--jobs={max(1, jobs)}", path], target.env())


def _restore_argv(
    target: PgSettings, bin_dir: str | None, *, use_list: str | None, no_owner: bool, sections: Sequence[str]
) -> list[str]:
    argv = [tool("pg_restore", bin_dir), "--exit-on-error", "--no-password"]
    argv += ["--no-owner", "--no-privileges"] if no_owner else []
    argv += [f"--section={section}" for section in sections]
    argv += [f"--use-list={use_list}"] if use_list else []
    return [*argv, f"--dbname={_conninfo_dbname(target.dbname)}"]


# a TOC line of `pg_restore --list`: "<id>; <tableoid> <oid> <DESC> <schema> <name> <owner>"
_TOC_LINE = re.compile(r"^(\d+); \d+ \d+ (TABLE DATA|TABLE|SEQUENCE SET|SEQUENCE|SCHEMA) (\S+) (\S+) ")


def toc(path: str, bin_dir: str | None = None) -> list[str]:
    """The entries of a custom-format dump, as ``pg_restore --list`` prints them (comments left out)."""
    result = subprocess.run([tool("pg_restore", bin_dir), "--list", path], capture_output=True, check=False,
                            env=minimal_env())
    if result.returncode != 0:
        raise SourceError(f"pg_restore --list failed: {_first_line(result.stderr.decode())}")
    return [line for line in result.stdout.decode().splitlines() if line and not line.startswith(";")]


def table_list(path: str, tables: Iterable[str], bin_dir: str | None = None) -> str:
    """The TOC list that restores only ``tables`` ("schema.table"): their definitions and rows, and schemas.

    Indexes, constraints, triggers and every other table are left out: a partial restore is meant for
    reading rows back, not for a working copy of the application's schema.
    """
    wanted = {tuple(t.split(".", 1)) for t in tables}
    schemas = {schema for schema, _ in wanted}
    keep: list[str] = []
    for line in toc(path, bin_dir):
        match = _TOC_LINE.match(line)
        if not match:
            continue
        kind, schema, name = match.group(2), match.group(3), match.group(4)
        is_schema = kind == "SCHEMA" and name in schemas - {"public"}
        if is_schema or ((schema, name) in wanted and kind.startswith("TABLE")):
            keep.append(line)
    found = {(m.group(3), m.group(4)) for m in map(_TOC_LINE.match, keep) if m and m.group(2) == "TABLE"}
    if missing := wanted - found:
        raise SourceError("the snapshot's dump has no table " + ", ".join(sorted(".".join(t) for t in missing)))
    return "\n".join(keep) + "\n"


@dataclass(frozen=True)
class ServerIdentity:
    """Which cluster and database a connection really reached, whatever host, port or user it used."""

    system_identifier: str
    database: str


_IDENTITY_SQL = "SELECT system_identifier::text, current_database() FROM pg_control_system()"


def server_identity(settings: PgSettings) -> ServerIdentity | None:
    """The cluster's system identifier and ``current_database()``, read over the connection itself.

    For a database that does not exist yet, the identifier is read through the ``postgres`` database and
    the database is the name it would be created with. None when neither can be read.
    """
    try:
        with psycopg.connect(**settings.connect_kwargs()) as conn:
            row = conn.execute(_IDENTITY_SQL).fetchone()
            return ServerIdentity(str(row[0]), str(row[1])) if row else None
    except psycopg.Error as exc:
        missing = isinstance(exc, psycopg.errors.InvalidCatalogName) or (
            "does not exist" in str(exc) and f'"{settings.dbname}"' in str(exc))
        if not missing:
            return None
    try:
        with psycopg.connect(**settings.with_dbname("postgres").connect_kwargs()) as conn:
            row = conn.execute(_IDENTITY_SQL).fetchone()
            return ServerIdentity(str(row[0]), settings.dbname) if row else None
    except psycopg.Error:
        return None


def _conninfo_dbname(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


@dataclass(frozen=True)
class TargetState:
    exists: bool
    relations: int


def inspect_target(target: PgSettings) -> TargetState:
    """Does the target database exist, and how many user relations does it hold? Changes nothing."""
    try:
        with psycopg.connect(**target.connect_kwargs()) as conn:
            row = conn.execute(
                """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind IN ('r','p','v','m','S','f')
                     AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'""",
                (list(_SYSTEM_SCHEMAS),),
            ).fetchone()
            return TargetState(True, int(row[0]) if row else 0)
    except psycopg.errors.InvalidCatalogName:
        return TargetState(False, 0)
    except psycopg.OperationalError as exc:
        if "does not exist" in str(exc) and f'"{target.dbname}"' in str(exc):
            return TargetState(False, 0)
        raise SourceError(f"cannot connect to target {target.describe()}: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise SourceError(f"cannot inspect target {target.describe()}: {_first_line(exc)}") from None


def _maintenance(target: PgSettings) -> psycopg.Connection[Any]:
    return connect(target.with_dbname("postgres"), autocommit=True)


def create_database(target: PgSettings, *, owner: str | None = None) -> None:
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.dbname))
    if owner:
        query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    with _maintenance(target) as conn:
        try:
            conn.execute(query)
        except psycopg.Error as exc:
            raise SourceError(f"cannot create database {target.describe()}: {_first_line(exc)}") from None


LOADING_PREFIX = "strongroom_loading_"


def loading_name(dbname: str) -> str:
    """The name a restore loads a new database under until every check has passed, when it is renamed to
    ``dbname``: a restore killed midway leaves no half-loaded database under the name ops asked for, and the
    next restore into that name finds what was left (the same name every time) and drops it."""
    return LOADING_PREFIX + hashlib.sha256(dbname.encode()).hexdigest()[:16]


def rename_database(target: PgSettings, new_name: str) -> None:
    """``ALTER DATABASE target RENAME TO new_name`` (nothing may be connected to it)."""
    query = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(target.dbname), sql.Identifier(new_name))
    with _maintenance(target) as conn:
        try:
            conn.execute(query)
        except psycopg.Error as exc:
            raise SourceError(f"cannot rename {target.describe()} to {new_name}: {_first_line(exc)}") from None


def sessions_in(target: PgSettings) -> int:
    """How many sessions are connected to the database ``target`` names."""
    with _maintenance(target) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (target.dbname,)).fetchone()
        return int(row[0]) if row else 0


def list_databases(server: PgSettings) -> list[str]:
    """The names of the databases on ``server`` (templates excluded)."""
    try:
        with _maintenance(server) as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname")
            return [str(r[0]) for r in rows]
    except psycopg.Error as exc:
        raise SourceError(f"cannot list the databases of {server.describe()}: {_first_line(exc)}") from None


def drop_database(target: PgSettings) -> None:
    with _maintenance(target) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.dbname)))


def count_rows(settings: PgSettings, *, jobs: int = 1) -> dict[str, int]:
    """Exact row counts of every user table (outside a snapshot: for checking a restored copy).

    With ``jobs`` > 1 the tables are counted over that many connections at once, the largest first (a
    restored copy that nothing else writes to: no shared snapshot is needed).
    """
    if jobs <= 1:
        with connect(settings) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            session = SnapshotSession(conn, "", datetime.now(UTC), "", 0)
            return session.count_rows()
    with connect(settings) as conn:
        rows = conn.execute(
            """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'
               ORDER BY c.relpages DESC, 1, 2""",
            (list(_SYSTEM_SCHEMAS),),
        ).fetchall()
    todo = [TableRef(schema, name) for schema, name in rows]
    counts: dict[str, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with connect(settings, autocommit=True) as conn:
                while True:
                    with lock:
                        if not todo or errors:
                            return
                        table = todo.pop(0)
                    query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(table.schema), sql.Identifier(table.name))
                    row = conn.execute(query).fetchone()
                    with lock:
                        counts[table.qualified] = int(row[0]) if row else 0
        except BaseException as exc:  # handed to the caller's thread below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"count-rows-{i}") for i in range(min(jobs, len(todo)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return dict(sorted(counts.items()))


def table_fingerprints(settings: PgSettings) -> dict[str, tuple[int, str]]:
    """Per user table: (row count, md5 over every row's text in a stable order).

    Two databases with equal fingerprints hold the same rows in every table. Reads whole tables: meant
    for proving a restore equal to its source, not for hot paths.
    """
    out: dict[str, tuple[int, str]] = {}
    with connect(settings) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        for table in SnapshotSession(conn, "", datetime.now(UTC), "", 0).tables():
            query = sql.SQL(CHECKSUM_SQL.replace("SELECT md5", "SELECT count(*), md5", 1)).format(
                sql.Identifier(table.schema), sql.Identifier(table.name)
            )
            row = conn.execute(query).fetchone()
            assert row is not None
            out[table.qualified] = (int(row[0]), str(row[1]))
    return out
