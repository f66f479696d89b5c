"""Tampered, truncated or reordered snapshots, and wrong keys, fail with an integrity error and leave the
target exactly as it was."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from strongroom import catalog, envelope, layout
from strongroom.config import load_config
from strongroom.errors import IntegrityError
from strongroom.keyring import Keyring
from strongroom.postgres import PgSettings
from strongroom.restore import restore_snapshot
from strongroom.snapshot import snapshot_database
from tests.conftest import PRIMARY, Stack, write_config
from tests.integration.helpers import run_cli

SEGMENT = envelope.SEGMENT_SIZE + envelope.TAG_SIZE


@pytest.fixture(scope="module")
def bulk(stack: Stack, config, conns) -> dict:
    result = snapshot_database(config, "bulk", conns)
    manifest = catalog.load_manifest(
        conns.store(config.primary, config.transfer), conns.keyring(config.keyring_conn_id(config.primary)), "bulk",
        result["snapshot_id"],
    )
    segments = (manifest.dump.stored_size - envelope.HEADER_SIZE + SEGMENT - 1) // SEGMENT
    assert segments >= 3, "the bulk fixture must span several encryption segments"
    return {"snapshot_id": result["snapshot_id"], "key": manifest.dump.key, "segments": segments,
            "manifest_key": layout.manifest_key("bulk", result["snapshot_id"])}


@pytest.fixture()
def precious(stack: Stack) -> Iterator[PgSettings]:
    """An existing database with data that a failed restore must not change."""
    stack.pg.execute("DROP DATABASE IF EXISTS precious")
    stack.pg.execute("CREATE DATABASE precious")
    stack.pg.execute("CREATE TABLE keep (id int); INSERT INTO keep SELECT generate_series(1, 42)", "precious")
    yield PgSettings(dbname="precious", host="127.0.0.1", port=stack.pg.port, user="postgres",
                     password=stack.pg.password)


def _segment_offset(index: int) -> int:
    return envelope.HEADER_SIZE + index * SEGMENT


def flip(offset_of: Callable[[dict], int]) -> Callable[[bytes, dict], bytes]:
    def tamper(data: bytes, info: dict) -> bytes:
        at = offset_of(info)
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
    return tamper


def truncate_at_boundary(data: bytes, info: dict) -> bytes:
    return data[: _segment_offset(info["segments"] - 1)]


def swap_first_two(data: bytes, info: dict) -> bytes:
    a, b, c = _segment_offset(0), _segment_offset(1), _segment_offset(2)
    return data[:a] + data[b:c] + data[a:b] + data[c:]


TAMPERING = {
    "byte flipped in the first segment": flip(lambda i: _segment_offset(0) + 100),
    "byte flipped in a middle segment": flip(lambda i: _segment_offset(i["segments"] // 2) + 7),
    "byte flipped in the last segment": flip(lambda i: -5),
    "byte flipped in the header": flip(lambda i: 20),
    "truncated at a segment boundary": truncate_at_boundary,
    "two segments swapped": swap_first_two,
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_object_fails_and_leaves_targets_untouched(
    case: str, stack: Stack, config, conns, bulk: dict, precious: PgSettings
) -> None:
    original = stack.read(bulk["key"])
    stack.write(bulk["key"], TAMPERING[case](original, bulk))
    try:
        new_target = PgSettings(dbname="never_created", host="127.0.0.1", port=stack.pg.port, user="postgres",
                                password=stack.pg.password)
        with pytest.raises(IntegrityError):
            restore_snapshot(config, "bulk", new_target, conns, snapshot_id=bulk["snapshot_id"], region=PRIMARY)
        assert not stack.database_exists("never_created")
        with pytest.raises(IntegrityError):
            restore_snapshot(config, "bulk", precious, conns, snapshot_id=bulk["snapshot_id"], clean=True,
                             region=PRIMARY)
        _assert_precious_untouched(stack)
    finally:
        stack.write(bulk["key"], original)


def _assert_precious_untouched(stack: Stack) -> None:
    with psycopg.connect(**stack.pg.connect_kwargs("precious")) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        assert tables == [("keep",)]
        assert conn.execute("SELECT count(*) FROM keep").fetchone() == (42,)


def test_tampered_manifest_is_rejected(stack: Stack, config, conns, bulk: dict, precious: PgSettings) -> None:
    original = stack.read(bulk["manifest_key"])
    doc = json.loads(original)
    doc["tables"]["public.blobs"] += 1
    stack.write(bulk["manifest_key"], json.dumps(doc).encode())
    try:
        with pytest.raises(IntegrityError, match="failed authentication"):
            restore_snapshot(config, "bulk", precious, conns, snapshot_id=bulk["snapshot_id"], clean=True,
                             region=PRIMARY)
        _assert_precious_untouched(stack)
    finally:
        stack.write(bulk["manifest_key"], original)


class _WrongKeyConnections:
    """The real connections, except a keyring whose key under the same id is different."""

    def __init__(self, conns) -> None:
        self._conns = conns

    def postgres(self, conn_id: str) -> PgSettings:
        return self._conns.postgres(conn_id)

    def store(self, region, transfer):
        return self._conns.store(region, transfer)

    def keyring(self, conn_id: str) -> Keyring:
        real = self._conns.keyring(conn_id)
        wrong = base64.b64encode(os.urandom(32)).decode()
        return Keyring.from_extra({"active": real.active_id, "keys": {real.active_id: wrong}})


def test_wrong_key_fails_and_leaves_target_untouched(
    stack: Stack, config, conns, bulk: dict, precious: PgSettings
) -> None:
    with pytest.raises(IntegrityError):
        restore_snapshot(config, "bulk", precious, _WrongKeyConnections(conns), snapshot_id=bulk["snapshot_id"],
                         clean=True, region=PRIMARY)
    _assert_precious_untouched(stack)


def test_untampered_bulk_restores_after_all(stack: Stack, config, conns, bulk: dict) -> None:
    """The tamper tests above fail for the tampering, not for a broken fixture."""
    target = PgSettings(dbname="bulk_ok", host="127.0.0.1", port=stack.pg.port, user="postgres",
                        password=stack.pg.password)
    result = restore_snapshot(config, "bulk", target, conns, snapshot_id=bulk["snapshot_id"])
    assert result.rows == 3000


def test_restore_falls_back_to_the_next_region_when_the_primary_copy_is_corrupt(
    stack: Stack, config, conns, bulk: dict
) -> None:
    original = stack.read(bulk["key"])
    stack.write(bulk["key"], flip(lambda i: _segment_offset(1) + 3)(original, bulk))
    try:
        target = PgSettings(dbname="bulk_fallback", host="127.0.0.1", port=stack.pg.port, user="postgres",
                            password=stack.pg.password)
        result = restore_snapshot(config, "bulk", target, conns, snapshot_id=bulk["snapshot_id"])
    finally:
        stack.write(bulk["key"], original)
    assert result.region == "eu-west-1"
    assert len(result.unavailable) == 1 and result.unavailable[0].startswith("eu-central-1: ")
    assert result.rows == 3000


def near_the_end(data: bytes, info: dict) -> bytes:
    """A byte flipped in the last segment but one: long after the dump's table of contents, so a restore
    into a new database is already loading it (strongroom.streamload) when the corruption arrives."""
    return flip(lambda i: _segment_offset(i["segments"] - 2) + 11)(data, info)


def test_corruption_near_the_end_drops_the_new_database_that_was_being_loaded(
    tmp_path: Path, stack: Stack, bulk: dict, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    config_path = write_config(tmp_path / "strongroom.yaml", restore={"spool_dir": str(spool)})
    config = load_config(config_path)
    from strongroom.airflow_adapter import connections

    target = PgSettings(dbname="late_corruption", host="127.0.0.1", port=stack.pg.port, user="postgres",
                        password=stack.pg.password)
    original = stack.read(bulk["key"])
    stack.write(bulk["key"], near_the_end(original, bulk))
    try:
        with caplog.at_level(logging.INFO, logger="strongroom.streamload"), pytest.raises(IntegrityError):
            restore_snapshot(config, "bulk", target, connections(), snapshot_id=bulk["snapshot_id"],
                             region=PRIMARY)
        # the database existed, with its definitions and data streams, before the corruption was found
        assert any("while the dump arrives" in r.getMessage() for r in caplog.records), caplog.text
        assert not stack.database_exists("late_corruption")
        assert not list(spool.glob("strongroom-restore-*"))  # no plaintext left in the spool

        result = run_cli("--config", str(config_path), "restore", "--database", "bulk", "--snapshot",
                         bulk["snapshot_id"], "--region", PRIMARY, "--target-dsn",
                         f"host=127.0.0.1 port={stack.pg.port} user=postgres dbname=late_corruption",
                         env={"PGPASSWORD": stack.pg.password})
    finally:
        stack.write(bulk["key"], original)
    assert result.code == 1, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith("strongroom: error: "), result.stderr
    assert "failed authentication" in result.error_lines[0] or "SHA-256" in result.error_lines[0], result.stderr
    assert not stack.database_exists("late_corruption")
    assert not list(spool.glob("strongroom-restore-*"))


def test_a_new_database_is_loaded_from_the_stored_bytes_and_no_plaintext_dump_reaches_the_disk(
    tmp_path: Path, stack: Stack, bulk: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore into a new database spools the dump as stored (encrypted): when every byte has arrived,
    the spool holds the stored object and the dump's header and TOC, never the plaintext dump."""
    from strongroom import streamload
    from strongroom.airflow_adapter import connections

    spool = tmp_path / "spool"
    config = load_config(write_config(tmp_path / "strongroom.yaml", restore={"spool_dir": str(spool)}))
    seen: dict[str, bytes] = {}
    finish = streamload.StreamingLoad.finish

    def observed(self: streamload.StreamingLoad) -> None:  # what is on disk once the download is verified
        [folder] = spool.glob("strongroom-restore-*")
        seen.update({p.name: p.read_bytes() for p in folder.iterdir()})
        finish(self)

    monkeypatch.setattr(streamload.StreamingLoad, "finish", observed)
    target = PgSettings(dbname="loaded_sealed", host="127.0.0.1", port=stack.pg.port, user="postgres",
                        password=stack.pg.password)
    result = restore_snapshot(config, "bulk", target, connections(), snapshot_id=bulk["snapshot_id"], region=PRIMARY)
    assert result.rows == 3000 and result.created_database
    assert "dump" not in seen, sorted(seen)
    assert seen["dump.sealed"] == stack.read(bulk["key"])  # the stored bytes, as stored
    assert len(seen["toc"]) < len(seen["dump.sealed"]) / 2  # only the header and TOC are plaintext
    assert not list(spool.glob("strongroom-restore-*"))


def test_a_dump_that_cannot_be_read_as_it_arrives_is_unsealed_and_restored_after_its_download(
    tmp_path: Path, stack: Stack, bulk: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sealed spool's other way: when the TOC cannot be read as the dump arrives (a layout this
    release does not know), the verified stored bytes are unsealed into a plaintext spool and restored."""
    from strongroom import dumpfile
    from strongroom.airflow_adapter import connections

    def unreadable(path: str) -> None:
        raise dumpfile.DumpLayoutError("a layout this test pretends not to know")

    monkeypatch.setattr(dumpfile, "partial_toc", unreadable)
    spool = tmp_path / "spool"
    config = load_config(write_config(tmp_path / "strongroom.yaml", restore={"spool_dir": str(spool)}))
    target = PgSettings(dbname="unsealed_after", host="127.0.0.1", port=stack.pg.port, user="postgres",
                        password=stack.pg.password)
    result = restore_snapshot(config, "bulk", target, connections(), snapshot_id=bulk["snapshot_id"], region=PRIMARY)
    assert result.rows == 3000 and result.created_database
    assert stack.database_exists("unsealed_after")
    assert not list(spool.glob("strongroom-restore-*"))
