"""Chunked snapshots (snapshot.format: chunked) through the real pipeline, the CLI and the S3 servers:
identical restores from every region, only changed chunks uploaded and copied, a damaged chunk named and
passed over, a key rotation that stores chunks anew."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strongroom import catalog, envelope, layout
from strongroom.config import load_config
from tests.conftest import BUCKETS, PRIMARY, REGIONS, Stack, keyring_conn, write_config
from tests.integration.helpers import CliResult, fingerprints, run_cli, schema_dump

DB = "chunky"
WEST, NORTH = REGIONS[1], REGIONS[2]


@dataclass
class Chunky:
    stack: Stack
    config: Path
    env: dict[str, str]

    def cli(self, *args: str, config: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
        return run_cli("--config", str(config or self.config), *args, env={**self.env, **(env or {})}, timeout=400)

    def snapshot(self, **kwargs: object) -> str:
        result = self.cli("snapshot", "--database", DB, **kwargs)  # type: ignore[arg-type]
        assert result.code == 0, result.stderr
        match = re.search(r"snapshot (\d{8}T\d{6}Z-[0-9a-f]{6})", result.stderr + result.stdout)
        assert match, result.stderr
        return match.group(1)

    def chunk_versions(self, region: str) -> list[tuple[str, str]]:
        """Every version of every chunk of the database in ``region``, read from the S3 server."""
        client = self.stack.client_for(region)
        found = []
        for page in client.get_paginator("list_object_versions").paginate(Bucket=BUCKETS[region],
                                                                          Prefix=layout.chunks_prefix(DB)):
            found += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
        return found

    def manifest(self, snapshot_id: str, region: str = PRIMARY) -> catalog.Manifest:
        config = load_config(self.config)
        from strongroom.airflow_adapter import connections

        conns = connections()
        where = config.region(region)
        return catalog.load_manifest(conns.store(where, config.transfer),
                                     conns.keyring(config.keyring_conn_id(where)), DB, snapshot_id)

    def dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.stack.pg.port} user=postgres dbname={dbname}"

    def restore(self, snapshot_id: str, target: str, region: str) -> CliResult:
        self.stack.pg.execute(f"DROP DATABASE IF EXISTS {target}")
        return self.cli("restore", "--database", DB, "--snapshot", snapshot_id, "--region", region,
                        "--target-dsn", self.dsn(target),
                        env={"PGPASSWORD": self.stack.pg.password})


@pytest.fixture(scope="module")
def chunky(stack: Stack, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
           ) -> Iterator[Chunky]:
    stack.pg.execute(f"DROP DATABASE IF EXISTS {DB}")
    stack.pg.execute(f"CREATE DATABASE {DB}")
    # ~8 MB of rows zstd cannot shrink much, in insertion order: changes to the newest rows stay local
    stack.pg.execute("CREATE TABLE items (id int PRIMARY KEY, body text NOT NULL)", DB)
    stack.pg.execute("INSERT INTO items SELECT g, string_agg(md5(random()::text || g || i), '') "
                     "FROM generate_series(1, 4000) g, generate_series(1, 60) i GROUP BY g", DB)
    stack.pg.execute("CREATE TABLE notes (id serial PRIMARY KEY, note text)", DB)
    stack.pg.execute("INSERT INTO notes (note) VALUES ('first')", DB)
    base = tmp_path_factory.mktemp("chunked")
    spool = base / "spool"
    spool.mkdir()
    config = write_config(
        base / "chunked.yaml",
        databases=[{"name": DB, "postgres_conn_id": "pg_chunky"}],
        snapshot={"run_timeout": "50m", "retries": 0, "retry_delay": "1s", "deadline": "off",
                  "format": "chunked", "chunk_size": "256KiB"},
        restore={"spool_dir": str(spool)},
    )
    env = {"AIRFLOW_CONN_PG_CHUNKY": stack.pg.airflow_uri(DB)}
    for name, value in env.items():
        monkeypatch_module.setenv(name, value)
    yield Chunky(stack, config, env)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def first(chunky: Chunky) -> str:
    return chunky.snapshot()


def test_a_chunked_snapshot_restores_identically_from_every_region(chunky: Chunky, first: str) -> None:
    manifest = chunky.manifest(first)
    assert manifest.chunked and len(manifest.chunks) >= 10, len(manifest.chunks)
    source = fingerprints(chunky.stack.pg.connect_kwargs(DB))
    for region in REGIONS:
        target = f"chunky_from_{region.replace('-', '_')}"
        result = chunky.restore(first, target, region)
        assert result.code == 0, result.stderr
        assert fingerprints(chunky.stack.pg.connect_kwargs(target)) == source, region
        pw = chunky.stack.pg.password
        assert schema_dump(chunky.stack.pg.port, DB, pw) == schema_dump(chunky.stack.pg.port, target, pw)
        held = chunky.manifest(first, region)  # authenticated under that region's own keyring
        assert [c.name for c in held.chunks] == [c.name for c in manifest.chunks]


def test_an_unchanged_database_uploads_only_the_chunks_of_the_dump_header(chunky: Chunky, first: str) -> None:
    before = {region: set(chunky.chunk_versions(region)) for region in REGIONS}
    second = chunky.snapshot()
    new = {region: set(chunky.chunk_versions(region)) - before[region] for region in REGIONS}
    manifest = chunky.manifest(second)
    assert manifest.chunk_key_id == chunky.manifest(first).chunk_key_id
    for region in REGIONS:  # the header (with the dump's time and table of contents) changes, the data does not
        assert 1 <= len(new[region]) <= 2, (region, len(new[region]), len(manifest.chunks))


def test_stored_chunks_reveal_nothing(chunky: Chunky, first: str) -> None:
    for key, _ in chunky.chunk_versions(PRIMARY)[:50]:
        data = chunky.stack.read(key)
        assert data.startswith(envelope.MAGIC)
        assert b"PGDMP" not in data and b"items" not in data


def test_a_damaged_chunk_is_named_and_the_restore_takes_it_from_the_next_region(chunky: Chunky, first: str) -> None:
    manifest = chunky.manifest(first)
    victim = manifest.chunks[len(manifest.chunks) // 2]
    key = layout.chunk_key(DB, manifest.chunk_key_id, victim.name)
    original = chunky.stack.read(key)
    try:
        chunky.stack.write(key, original[:-1] + bytes([original[-1] ^ 1]))  # same length, one bit flipped
        only_primary = chunky.restore(first, "chunky_damaged", PRIMARY)
        assert only_primary.code != 0
        assert victim.name in only_primary.stderr and len(only_primary.error_lines) == 1, only_primary.stderr
        assert not chunky.stack.database_exists("chunky_damaged")
        anywhere = chunky.cli("restore", "--database", DB, "--snapshot", first, "--target-dsn",
                              chunky.dsn("chunky_fallback"), env={"PGPASSWORD": chunky.stack.pg.password})
        assert anywhere.code == 0, anywhere.stderr
        assert fingerprints(chunky.stack.pg.connect_kwargs("chunky_fallback")) == fingerprints(
            chunky.stack.pg.connect_kwargs(DB))
    finally:
        chunky.stack.write(key, original)


def test_a_key_rotation_stores_every_chunk_again_under_a_new_chunk_key(
        chunky: Chunky, first: str, tmp_path: Path) -> None:
    keys = chunky.stack.primary_keyring_extra["keys"]
    rotated = {"active": "k-primary-2", "keys": {**keys, "k-primary-2": base64.b64encode(os.urandom(32)).decode()}}
    env = {"AIRFLOW_CONN_KR_PRIMARY": keyring_conn(rotated)}
    before = chunky.manifest(first)
    result = chunky.cli("snapshot", "--database", DB, env=env)
    assert result.code == 0, result.stderr
    sid = re.search(r"snapshot (\d{8}T\d{6}Z-[0-9a-f]{6})", result.stderr + result.stdout).group(1)  # type: ignore[union-attr]
    doc = json.loads(chunky.stack.read(layout.manifest_key(DB, sid)))
    assert doc["encryption"]["key_id"] == "k-primary-2"
    assert doc["chunk_key_id"] != before.chunk_key_id
    assert len(doc["chunks"]) >= 10
