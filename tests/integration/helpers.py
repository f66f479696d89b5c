"""Helpers for integration tests: table fingerprints and running the real CLI."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from strongroom.postgres import PgSettings, table_fingerprints

if TYPE_CHECKING:
    from strongroom import catalog
    from tests.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]


def fingerprints(conn_kwargs: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """Per user table: (row count, md5 of all rows in a stable order)."""
    return table_fingerprints(PgSettings(**conn_kwargs))


def schema_dump(port: int, dbname: str, password: str) -> str:
    result = subprocess.run(
        ["/usr/lib/postgresql/15/bin/pg_dump", "--schema-only", "--no-owner", "--no-privileges",
         "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", dbname],
        capture_output=True, text=True, check=True, env={**os.environ, "PGPASSWORD": password},
    )
    # comments and the random \restrict token (PostgreSQL 15.14+) differ between any two dumps
    skip = ("--", "\\restrict", "\\unrestrict")
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith(skip))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def cli_env(env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> dict[str, str]:
    merged = {**os.environ, **(env or {})}
    for name in unset:
        merged.pop(name, None)
    return merged


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "strongroom.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(env), cwd=ROOT,
    )


def run_cli(
    *args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = (), timeout: float = 300
) -> CliResult:
    result = subprocess.run(
        [sys.executable, "-m", "strongroom.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=cli_env(env, unset), cwd=ROOT,
    )
    return CliResult(result.returncode, result.stdout, result.stderr)


@dataclass
class Chunky:
    """A database of its own snapshotted as chunked snapshots (snapshot.format: chunked, 256 KiB chunks) to
    the test stack's regions, driven through the CLI (:func:`chunked_database` sets it up)."""

    stack: Stack
    config: Path
    env: dict[str, str]
    database: str

    def cli(self, *args: str, config: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
        return run_cli("--config", str(config or self.config), *args, env={**self.env, **(env or {})}, timeout=400)

    def snapshot(self) -> str:
        result = self.cli("snapshot", "--database", self.database)
        assert result.code == 0, result.stderr
        match = re.search(r"snapshot (\d{8}T\d{6}Z-[0-9a-f]{6})", result.stderr + result.stdout)
        assert match, result.stderr
        return match.group(1)

    def chunk_versions(self, region: str) -> list[tuple[str, str]]:
        """Every version of every chunk of the database in ``region``, read from the S3 server."""
        from strongroom import layout
        from tests.conftest import BUCKETS

        client = self.stack.client_for(region)
        found = []
        for page in client.get_paginator("list_object_versions").paginate(
                Bucket=BUCKETS[region], Prefix=layout.chunks_prefix(self.database)):
            found += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
        return found

    def manifest(self, snapshot_id: str, region: str | None = None) -> catalog.Manifest:
        from strongroom import catalog
        from strongroom.airflow_adapter import connections
        from strongroom.config import load_config
        from tests.conftest import PRIMARY

        config = load_config(self.config)
        conns = connections()
        where = config.region(region or PRIMARY)
        return catalog.load_manifest(conns.store(where, config.transfer),
                                     conns.keyring(config.keyring_conn_id(where)), self.database, snapshot_id)

    def dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.stack.pg.port} user=postgres dbname={dbname}"

    def restore(self, snapshot_id: str, target: str, region: str | None) -> CliResult:
        """Restore into a new ``target`` from ``region`` (None: the primary, falling back to the others)."""
        self.stack.pg.execute(f"DROP DATABASE IF EXISTS {target}")
        where = ("--region", region) if region else ()
        return self.cli("restore", "--database", self.database, "--snapshot", snapshot_id, *where,
                        "--target-dsn", self.dsn(target), env={"PGPASSWORD": self.stack.pg.password})


def chunked_database(stack: Stack, base: Path, database: str, patch: pytest.MonkeyPatch) -> Chunky:
    """Create ``database`` (~8 MB of rows zstd cannot shrink much, in insertion order, so changes to the
    newest rows stay local, and a small ``notes`` table) and a chunked configuration for it in ``base``;
    its connection is set in the environment through ``patch``."""
    from tests.conftest import write_config

    stack.pg.execute(f"DROP DATABASE IF EXISTS {database}")
    stack.pg.execute(f"CREATE DATABASE {database}")
    stack.pg.execute("CREATE TABLE items (id int PRIMARY KEY, body text NOT NULL)", database)
    stack.pg.execute("INSERT INTO items SELECT g, string_agg(md5(random()::text || g || i), '') "
                     "FROM generate_series(1, 4000) g, generate_series(1, 60) i GROUP BY g", database)
    stack.pg.execute("CREATE TABLE notes (id serial PRIMARY KEY, note text)", database)
    stack.pg.execute("INSERT INTO notes (note) VALUES ('first')", database)
    spool = base / "spool"
    spool.mkdir()
    conn_id = f"pg_{database}"
    config = write_config(
        base / "chunked.yaml",
        databases=[{"name": database, "postgres_conn_id": conn_id}],
        snapshot={"run_timeout": "50m", "retries": 0, "retry_delay": "1s", "deadline": "off",
                  "format": "chunked", "chunk_size": "256KiB"},
        restore={"spool_dir": str(spool)},
    )
    env = {f"AIRFLOW_CONN_{conn_id.upper()}": stack.pg.airflow_uri(database)}
    for name, value in env.items():
        patch.setenv(name, value)
    return Chunky(stack, config, env, database)


@contextlib.contextmanager
def own_s3_servers(stack: Stack) -> Iterator[Stack]:
    """``stack`` with S3 servers of its own, one per region with the regions' buckets, their connections set
    in the environment while it lasts (a module's outages or thousands of objects touch no other test)."""
    import dataclasses

    from devstack import MotoServer
    from tests.conftest import BUCKETS, REGIONS, conn_id, env_name

    servers = {r: MotoServer().start() for r in REGIONS}
    saved = {r: os.environ[env_name(conn_id(r))] for r in REGIONS}
    try:
        for region, server in servers.items():
            server.create_bucket(BUCKETS[region], region)
            os.environ[env_name(conn_id(region))] = server.airflow_conn(region)
        yield dataclasses.replace(stack, servers=servers)
    finally:
        os.environ.update({env_name(conn_id(r)): value for r, value in saved.items()})
        for server in servers.values():
            server.stop()
