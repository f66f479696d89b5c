"""Chunked snapshots (snapshot.format: chunked) through the real pipeline, the CLI and the S3 servers:
identical restores from every region, only changed chunks uploaded and copied, a damaged chunk named and
passed over, a key rotation that stores chunks anew."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom import envelope, layout
from tests.conftest import PRIMARY, REGIONS, Stack, keyring_conn
from tests.integration.helpers import Chunky, chunked_database, fingerprints, schema_dump

DB = "chunky"
WEST, NORTH = REGIONS[1], REGIONS[2]


@pytest.fixture(scope="module")
def chunky(stack: Stack, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
           ) -> Iterator[Chunky]:
    yield chunked_database(stack, tmp_path_factory.mktemp("chunked"), DB, monkeypatch_module)


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
