"""Chunked snapshots (snapshot.format: chunked) through the real pipeline, the CLI and the S3 servers:
identical restores from every region, only changed chunks uploaded and copied, a damaged chunk named and
passed over, a key rotation that stores chunks anew."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom import catalog, chunks, envelope, layout
from strongroom.config import load_config
from tests.conftest import BUCKETS, PRIMARY, REGIONS, Stack, keyring_conn, write_config
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


# ---- retention and erasure --------------------------------------------------------------------------------

ERASED = "chunky_erase"
RETENTION = 90  # seconds: the prunes below evaluate the policy at chosen past instants (`prune --now`)


@pytest.fixture(scope="module")
def erase(chunky: Chunky, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Chunky:
    pg = chunky.stack.pg
    pg.execute(f"DROP DATABASE IF EXISTS {ERASED}")
    pg.execute(f"CREATE DATABASE {ERASED}")
    pg.execute("CREATE TABLE items (id int PRIMARY KEY, body text NOT NULL)", ERASED)
    pg.execute("INSERT INTO items SELECT g, string_agg(md5(random()::text || g || i), '') "
               "FROM generate_series(1, 3000) g, generate_series(1, 60) i GROUP BY g", ERASED)
    doc = json.loads(chunky.config.read_text())
    config = write_config(tmp_path_factory.mktemp("erase") / "erase.yaml", **{
        **doc, "retention": f"{RETENTION}s", "databases": [{"name": ERASED, "postgres_conn_id": "pg_chunky_erase"}],
        # no globals: their copies are multipart uploads, and moto lists every upload as begun in 2010, so a
        # prune racing a snapshot there aborts them as stale (S3 gives the real time); chunks are single PUTs
        "snapshot": {**doc["snapshot"], "run_timeout": "40s", "capture_globals": False}})
    monkeypatch_module.setenv("AIRFLOW_CONN_PG_CHUNKY_ERASE", pg.airflow_uri(ERASED))
    return Chunky(chunky.stack, config, {**chunky.env, "AIRFLOW_CONN_PG_CHUNKY_ERASE": pg.airflow_uri(ERASED)},
                  ERASED)


def _snapshot_of(c: Chunky, database: str) -> str:
    result = c.cli("snapshot", "--database", database)
    assert result.code == 0, result.stderr
    match = re.search(r"snapshot (\d{8}T\d{6}Z-[0-9a-f]{6})", result.stderr + result.stdout)
    assert match, result.stderr
    return match.group(1)


def _manifest_of(c: Chunky, database: str, snapshot_id: str, region: str) -> catalog.Manifest:
    from strongroom.airflow_adapter import connections

    config = load_config(c.config)
    conns = connections()
    where = config.region(region)
    return catalog.load_manifest(conns.store(where, config.transfer), conns.keyring(config.keyring_conn_id(where)),
                                 database, snapshot_id)


def _chunk_versions(c: Chunky, database: str, region: str) -> list[tuple[str, str]]:
    client = c.stack.client_for(region)
    pages = client.get_paginator("list_object_versions").paginate(Bucket=BUCKETS[region],
                                                                  Prefix=layout.chunks_prefix(database))
    return [(v["Key"], v["VersionId"]) for page in pages for v in page.get("Versions", [])]


def _wait_until(moment: datetime) -> None:
    while datetime.now(UTC) < moment:
        time.sleep(0.2)


def test_erased_rows_leave_every_region_with_the_snapshots_that_held_them(erase: Chunky) -> None:
    canary = "ERASE-ME-4b1d93"
    erase.stack.pg.execute(f"UPDATE items SET body = repeat('{canary}', 200) WHERE id = 1500", ERASED)
    held = _snapshot_of(erase, ERASED)  # the last snapshot with the canary
    erase.stack.pg.execute("DELETE FROM items WHERE id = 1500", ERASED)
    after = _snapshot_of(erase, ERASED)
    old = {r: _manifest_of(erase, ERASED, held, r) for r in REGIONS}
    new = {r: _manifest_of(erase, ERASED, after, r) for r in REGIONS}
    assert new[PRIMARY].chunk_key_id == old[PRIMARY].chunk_key_id  # the second reused the first's chunks
    shared = {c.name for c in old[PRIMARY].chunks} & {c.name for c in new[PRIMARY].chunks}
    only_old = {c.name for c in old[PRIMARY].chunks} - {c.name for c in new[PRIMARY].chunks}
    assert shared and only_old
    # the policy at an instant when `held` is past the window and `after` is not
    now = old[PRIMARY].taken_at + timedelta(seconds=RETENTION + 1)
    assert new[PRIMARY].taken_at >= now - timedelta(seconds=RETENTION)
    _wait_until(now)
    pruned = erase.cli("prune", "--now", now.isoformat())
    assert pruned.code == 0, pruned.stderr
    for region in REGIONS:
        versions = _chunk_versions(erase, ERASED, region)
        names = {key.rsplit("/", 1)[1] for key, _ in versions}
        assert not names & only_old, region  # every version of what only the expired snapshot named is gone
        assert shared <= names, region  # what the kept one names stays
        key = chunks.ChunkKey(new[region].chunk_key_id, new[region].data_key(_keyring(erase, region)))
        for chunk_key, version_id in versions:  # decrypt every remaining version: the canary is nowhere
            sealed = erase.stack.client_for(region).get_object(Bucket=BUCKETS[region], Key=chunk_key,
                                                               VersionId=version_id)["Body"].read()
            name = chunk_key.rsplit("/", 1)[1]
            plain = envelope.unseal_blob(key.key, key.identity(ERASED, name), sealed, chunk_key)
            assert canary.encode() not in plain, (region, chunk_key)
    restored = erase.cli("restore", "--database", ERASED, "--snapshot", after, "--region", NORTH, "--target-dsn",
                         erase.dsn("chunky_erase_restored"), env={"PGPASSWORD": erase.stack.pg.password})
    assert restored.code == 0, restored.stderr


def _keyring(c: Chunky, region: str):  # type: ignore[no-untyped-def]
    from strongroom.airflow_adapter import connections

    config = load_config(c.config)
    return connections().keyring(config.keyring_conn_id(config.region(region)))


def test_prunes_racing_snapshots_leave_every_committed_snapshot_whole(erase: Chunky) -> None:
    committed: list[str] = []
    for round_ in range(3):
        erase.stack.pg.execute(f"UPDATE items SET body = md5(random()::text) WHERE id % 97 = {round_}", ERASED)
        with ThreadPoolExecutor(max_workers=2) as pool:
            snap = pool.submit(_snapshot_of, erase, ERASED)
            prune = pool.submit(erase.cli, "prune")
            committed.append(snap.result())
            assert prune.result().code == 0, prune.result().stderr
    for region in REGIONS:  # whatever the prunes left committed is whole (the oldest may be past the window)
        store = _store(erase, region)
        left = [sid for sid in catalog.snapshot_ids(store, ERASED) if sid in committed]
        assert committed[-1] in left, region
        for snapshot_id in left:
            chunks.check_present(store, _manifest_of(erase, ERASED, snapshot_id, region))
    restored = erase.cli("restore", "--database", ERASED, "--snapshot", committed[-1], "--target-dsn",
                         erase.dsn("chunky_erase_race"), env={"PGPASSWORD": erase.stack.pg.password})
    assert restored.code == 0, restored.stderr


def test_a_newest_manifest_pruned_while_it_is_read_is_taken_as_gone(chunky: Chunky, first: str) -> None:
    """A prune racing a snapshot can delete the region's newest manifest between the listing and the read: no
    chunk is then reused from it (the copy uploads what it needs) instead of the region failing the snapshot."""
    from strongroom.airflow_adapter import connections
    from strongroom.storage import ObjectInfo, ObjectStore

    database, gone = chunky.database, "20991231T235959Z-abcdef"

    class PrunedMeanwhile(ObjectStore):
        """The real bucket, listed before a prune deleted its newest manifest: one key more than it holds."""

        def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
            yield from super().list_objects(prefix)
            if prefix == layout.manifest_prefix(database):
                yield ObjectInfo(layout.manifest_key(database, gone), 100)

    config = load_config(chunky.config)
    real = _store(chunky, PRIMARY)
    store = PrunedMeanwhile(real.client, real.bucket, region=real.region)
    keyring = connections().keyring(config.keyring_conn_id(config.region(PRIMARY)))
    assert catalog.snapshot_ids(store, database)[-1] == gone
    assert chunks.newest_chunked(store, keyring, database) is None
    assert gone not in catalog.snapshot_ids(real, database)  # listed, not there: what a prune leaves meanwhile


def _store(c: Chunky, region: str):  # type: ignore[no-untyped-def]
    from strongroom.airflow_adapter import connections

    config = load_config(c.config)
    return connections().store(config.region(region), config.transfer)


# ---- Object Lock on shared chunks -------------------------------------------------------------------------

LOCK_RETENTION = 900  # seconds: locks are extended when they fall short by more than a thirtieth (30 s)


def test_a_reused_chunks_lock_follows_the_newest_snapshot_naming_it_and_never_goes_beyond(
        chunky: Chunky, first: str, tmp_path: Path) -> None:
    from devstack import MotoServer

    server = MotoServer().start()
    region = "eu-west-3"
    env = {**chunky.env, "AIRFLOW_CONN_LOCK_CHUNKS": server.airflow_conn(region)}
    doc = json.loads(chunky.config.read_text())
    config = write_config(tmp_path / "locked.yaml", **{
        **doc, "retention": f"{LOCK_RETENTION}s",
        "regions": [{"name": region, "bucket": "sr-chunks-locked", "aws_conn_id": "lock_chunks",
                     "object_lock": "governance"}],
        "snapshot": {**doc["snapshot"], "run_timeout": "60s"}})
    client = server.client(region)

    def locks(manifest: catalog.Manifest) -> dict[str, datetime]:
        return {c.name: client.head_object(Bucket="sr-chunks-locked", Key=key)["ObjectLockRetainUntilDate"]
                for c, key in zip(manifest.chunks, manifest.chunk_keys(), strict=True)}

    def manifest(snapshot_id: str) -> catalog.Manifest:
        raw = client.get_object(Bucket="sr-chunks-locked", Key=layout.manifest_key(DB, snapshot_id))["Body"].read()
        return catalog.Manifest.from_json(raw, _keyring_from(env), "test")

    def snapshot() -> catalog.Manifest:
        result = chunky.cli("snapshot", "--database", DB, config=config, env=env)
        assert result.code == 0, result.stderr
        found = re.search(r"snapshot (\d{8}T\d{6}Z-[0-9a-f]{6})", result.stderr + result.stdout)
        assert found, result.stderr
        return manifest(found.group(1))

    retention = timedelta(seconds=LOCK_RETENTION)
    try:
        created = chunky.cli("init-buckets", config=config, env=env)
        assert created.code == 0, created.stdout + created.stderr
        one = snapshot()
        assert all(abs(until - (one.taken_at + retention)) <= timedelta(seconds=1) for until in locks(one).values())
        _wait_until(one.taken_at + retention / 30 + timedelta(seconds=1))  # past the slack
        two = snapshot()
        assert two.chunk_key_id == one.chunk_key_id
        erase_two = two.taken_at + retention
        for name, until in locks(two).items():  # reused or new: locked until the newest naming it, no longer
            assert abs(until - erase_two) <= timedelta(seconds=1), name
        assert two.chunks_locked_until == erase_two
        only_one = {c.name for c in one.chunks} - {c.name for c in two.chunks}
        for name in only_one:
            until = client.head_object(Bucket="sr-chunks-locked",
                                       Key=layout.chunk_key(DB, one.chunk_key_id, name))["ObjectLockRetainUntilDate"]
            assert abs(until - (one.taken_at + retention)) <= timedelta(seconds=1)  # not extended: not named
        three = snapshot()  # soon after: within the slack its reused chunks keep the lock they have
        if three.taken_at + retention - retention / 30 <= erase_two:
            assert three.chunks_locked_until == erase_two
        else:
            assert three.chunks_locked_until == three.taken_at + retention
        assert all(until <= three.taken_at + retention + timedelta(seconds=1) for until in locks(three).values())
    finally:
        server.stop()


def _keyring_from(env: dict[str, str]):  # type: ignore[no-untyped-def]
    from strongroom.keyring import Keyring

    return Keyring.from_extra(json.loads(os.environ["AIRFLOW_CONN_STRONGROOM_KEYRING"])["extra"])
