"""Object-storage backups against real S3 servers (one per region, the source on its own bucket)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom import objects, retention
from strongroom.config import Config, load_config
from strongroom.errors import RefusedError, StrongroomError
from strongroom.storage import ObjectStore
from tests.conftest import BUCKETS, PRIMARY, REGIONS, Stack, conn_id, write_config
from tests.integration.helpers import own_s3_servers, run_cli, start_cli

SOURCE = "sr-test-uploads"
CANARY_BYTES = b"OBJECT-CANARY-93d1f0-secret-contract"
CANARY_NAME = "customers/acme-gmbh/CANARY-NAME-4be7.pdf"


class CountingConnections:
    """The real connections; the source client counts the GetObject requests it sends."""

    def __init__(self, conns) -> None:
        self._conns = conns
        self.source_gets = 0

    def __getattr__(self, name: str):
        return getattr(self._conns, name)

    def source_store(self, source, transfer) -> ObjectStore:
        store = self._conns.source_store(source, transfer)

        def count(**_: object) -> None:
            self.source_gets += 1

        store.client.meta.events.register("before-call.s3.GetObject", count)
        return store


def source_config(tmp_path: Path, name: str = "objects.yaml", **overrides: object) -> Config:
    return load_config(write_config(
        tmp_path / name, object_storage=[{"bucket": SOURCE, "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}],
        **overrides))


@pytest.fixture(scope="module")
def ostack(stack: Stack) -> Iterator[Stack]:
    """This module's own three S3 servers: its thousands of objects must not slow the shared ones."""
    with own_s3_servers(stack) as own:
        yield own


@pytest.fixture(scope="module")
def source(ostack: Stack) -> Iterator[object]:
    ostack.servers[PRIMARY].create_bucket(SOURCE, PRIMARY)
    client = ostack.client_for(PRIMARY)
    yield client


def put(client, key: str, body: bytes) -> None:
    client.put_object(Bucket=SOURCE, Key=key, Body=body)


def restored(ostack: Stack, bucket: str) -> dict[str, bytes]:
    client = ostack.client_for(PRIMARY)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:  # thousands of small reads: in parallel, as a restore writes them
        bodies = pool.map(lambda k: client.get_object(Bucket=bucket, Key=k)["Body"].read(), keys)
        return dict(zip(keys, bodies, strict=True))


def test_three_passes_restore_each_moment_exactly(ostack: Stack, source, conns, tmp_path: Path) -> None:
    config = source_config(tmp_path)
    counting = CountingConnections(conns)
    moments: list[tuple[datetime, dict[str, bytes]]] = []
    put(source, "a.txt", b"alpha v1")
    put(source, "docs/b.bin", bytes(range(256)) * 100)
    put(source, CANARY_NAME, CANARY_BYTES)
    put(source, "dup-1.txt", b"same bytes")
    put(source, "dup-2.txt", b"same bytes")
    first = objects.backup_pass(config, SOURCE, counting)
    assert first.committed == REGIONS and first.read_from_source == 5
    assert all(n == 4 for n in first.stored.values())  # duplicate content stored once
    moments.append((datetime.fromisoformat(first.taken_at), restored(ostack, SOURCE)))

    time.sleep(1.1)
    gets_before = counting.source_gets
    put(source, "a.txt", b"alpha v2, overwritten")
    source.delete_object(Bucket=SOURCE, Key="docs/b.bin")
    second = objects.backup_pass(config, SOURCE, counting)
    assert counting.source_gets - gets_before == 1  # only the new version of a.txt: nothing unchanged re-read
    moments.append((datetime.fromisoformat(second.taken_at), restored(ostack, SOURCE)))

    time.sleep(1.1)
    put(source, "c/new.txt", b"third pass")
    third = objects.backup_pass(config, SOURCE, counting)
    assert third.read_from_source == 1
    moments.append((datetime.fromisoformat(third.taken_at), restored(ostack, SOURCE)))

    for i, (at, expected) in enumerate(moments):
        target = f"sr-restore-{i}"
        ostack.servers[PRIMARY].create_bucket(target, PRIMARY)
        result = run_cli("--config", str(tmp_path / "objects.yaml"), "objects", "restore", "--bucket", SOURCE,
                         "--at", (at + timedelta(seconds=0.5)).isoformat(), "--target-bucket", target, "--json")
        assert result.code == 0, result.stderr
        assert restored(ostack, target) == expected, i
    listed = run_cli("--config", str(tmp_path / "objects.yaml"), "objects", "list", "--bucket", SOURCE,
                     "--at", moments[1][0].isoformat(), "--json")
    assert sorted(o["key"] for o in json.loads(listed.stdout)["objects"]) == sorted(moments[1][1])


def test_no_backup_byte_reveals_a_content_or_a_file_name(ostack: Stack, source, conns, tmp_path: Path) -> None:
    put(source, CANARY_NAME, CANARY_BYTES)
    objects.backup_pass(source_config(tmp_path), SOURCE, conns)
    for region in REGIONS:
        keys = [k for k in ostack.list_keys(region) if k.startswith(f"objects/{SOURCE}/")]
        assert any("/points/" in k for k in keys) and any("/content/" in k for k in keys)
        for key in keys:
            assert b"CANARY-NAME-4be7" not in key.encode()
            data = ostack.read(key, region)
            assert CANARY_BYTES not in data and b"CANARY-NAME-4be7" not in data and b"acme-gmbh" not in data


def test_the_live_source_is_never_the_target_unless_confirmed(ostack: Stack, source, conns, tmp_path: Path) -> None:
    config = source_config(tmp_path)
    objects.backup_pass(config, SOURCE, conns)
    target = conns.source_store(config.source(SOURCE), config.transfer)
    with pytest.raises(RefusedError) as refused:
        objects.restore_point(config, conns, SOURCE, datetime.now(UTC), target)
    assert str(refused.value) == (f"the target is the live source bucket {SOURCE!r}: restore with "
                                  f"`confirm_source={SOURCE}` to overwrite it deliberately")  # the library's words
    result = run_cli("--config", str(tmp_path / "objects.yaml"), "objects", "restore", "--bucket", SOURCE,
                     "--at", datetime.now(UTC).isoformat(), "--target-bucket", SOURCE)
    assert result.code == 1 and result.error_lines == [
        f"strongroom: error: the target is the live source bucket {SOURCE!r}: restore with --confirm-source {SOURCE} "
        "to overwrite it deliberately"]


def test_a_killed_pass_resumes_and_completes(ostack: Stack, source, conns, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = source_config(tmp_path)
    with source_batch(source, "bulk/", 600):
        pass
    path = tmp_path / "objects.yaml"
    proc = start_cli("--config", str(path), "objects", "backup", "--bucket", SOURCE,
                     env={"STRONGROOM_JOURNAL_EVERY": "0.2"})
    region = next(r for r in config.regions if r.name == PRIMARY)
    store, keyring = conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region))

    def journaled() -> int:
        """How many objects the pass's progress journal records (0 until its first journal with any)."""
        try:
            journal = objects._load_journal(store, keyring, SOURCE)
        except StrongroomError:  # replaced or removed while being read
            return 0
        return len(journal.entries) if journal else 0

    # stop the pass once its journal records some objects (the first journal may record none yet)
    deadline = time.monotonic() + 120
    while journaled() < 20:
        assert proc.poll() is None, "the pass finished before it could be stopped"
        assert time.monotonic() < deadline, "no progress journal was written"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    counting = CountingConnections(conns)
    resumed = objects.backup_pass(config, SOURCE, counting)
    assert 0 < resumed.read_from_source < 600  # what the journal recorded is not read again
    point = objects.list_point(config, conns, SOURCE, None, "bulk/")
    assert len(point["objects"]) == 600


class source_batch:
    def __init__(self, client, prefix: str, count: int) -> None:
        self.client, self.prefix, self.count = client, prefix, count

    def __enter__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: put(self.client, f"{self.prefix}{i:05d}", f"object {i}".encode() * 20),
                          range(self.count)))

    def __exit__(self, *exc: object) -> None:
        return None


def test_after_the_window_deleted_content_is_gone_and_live_content_kept(
    ostack: Stack, source, conns, tmp_path: Path
) -> None:
    config = source_config(tmp_path)
    put(source, "keep/forever.txt", b"long-lived content")
    put(source, "erase/me.txt", b"ERASE-ME-content-7c1d")
    first = objects.backup_pass(config, SOURCE, conns)
    source.delete_object(Bucket=SOURCE, Key="erase/me.txt")
    time.sleep(6)  # the two points are at least 6 s apart: the window below has 3 s of margin on each side
    newest = objects.backup_pass(config, SOURCE, conns)
    now = datetime.now(UTC)
    age_first = (now - datetime.fromisoformat(first.taken_at)).total_seconds()
    age_newest = (now - datetime.fromisoformat(newest.taken_at)).total_seconds()
    window = round((age_first + age_newest) / 2)  # was newest's age + 1.5 s, truncated: under 1 s of margin
    assert age_newest + 2 < window < age_first - 2
    short = source_config(tmp_path, "short.yaml", retention=f"{window}s")
    retention.prune_all(short, conns)
    for region in REGIONS:
        keys = [k for k in ostack.list_keys(region) if k.startswith(f"objects/{SOURCE}/")]
        contents = [ostack.read(k, region) for k in keys]
        assert len([k for k in keys if "/points/" in k]) == 1, region
        versions = ostack.client_for(region).list_object_versions(Bucket=BUCKETS[region],
                                                                 Prefix=f"objects/{SOURCE}/")
        live_ids = {k.rsplit("/", 1)[1] for k in keys if "/content/" in k}
        all_ids = {v["Key"].rsplit("/", 1)[1] for v in versions.get("Versions", []) + versions.get("DeleteMarkers", [])
                   if "/content/" in v["Key"]}
        assert all_ids == live_ids  # no stray version of a deleted content survives
        assert len(contents) == len(keys)
    listing = objects.list_point(config, conns, SOURCE, None, "")
    assert "keep/forever.txt" in [o["key"] for o in listing["objects"]]
    assert "erase/me.txt" not in [o["key"] for o in listing["objects"]]
    target = "sr-restore-keep"
    ostack.servers[PRIMARY].create_bucket(target, PRIMARY)
    objects.restore_point(config, conns, SOURCE, datetime.now(UTC),
                          conns.bucket_store(conn_id(PRIMARY), target, PRIMARY, config.transfer), prefix_="keep/")
    assert restored(ostack, target) == {"keep/forever.txt": b"long-lived content"}


def test_restore_test_checks_a_sample_and_catches_a_corrupt_content(
    ostack: Stack, source, conns, tmp_path: Path
) -> None:
    import random

    from strongroom import drill

    config = source_config(tmp_path)
    put(source, "sample/one.txt", b"sampled content")
    objects.backup_pass(config, SOURCE, conns)
    good = drill.check_objects(config, conns, SOURCE, config.region("eu-west-1"), random.Random(1), sample=1000)
    assert good.success and len(good.expectations) >= 1 and good.region == "eu-west-1"
    keys = [k for k in ostack.list_keys("eu-west-1") if k.startswith(f"objects/{SOURCE}/content/")]
    victim = keys[0]
    original = ostack.read(victim, "eu-west-1")
    ostack.write(victim, original[:-3] + bytes([original[-3] ^ 1]) + original[-2:], "eu-west-1")
    try:
        bad = drill.check_objects(config, conns, SOURCE, config.region("eu-west-1"), random.Random(1), sample=1000)
    finally:
        ostack.write(victim, original, "eu-west-1")
    assert not bad.success and "IntegrityError" in (bad.error or "")


def test_status_covers_source_buckets(ostack: Stack, source, conns, tmp_path: Path) -> None:
    from strongroom.status import collect_status

    config = source_config(tmp_path)
    result = objects.backup_pass(config, SOURCE, conns)
    rows = [r for r in collect_status(config, conns) if r.kind == "bucket"]
    assert {r.region for r in rows} == set(REGIONS)
    newest = datetime.fromisoformat(result.taken_at).strftime("%Y%m%dT%H%M%SZ")
    assert all(r.newest == newest and r.gaps == [] and r.age_seconds is not None for r in rows)


def test_five_thousand_objects_over_several_passes_restore_correctly(
    ostack: Stack, source, conns, tmp_path: Path
) -> None:
    config = source_config(tmp_path, "many.yaml")
    with source_batch(source, "many/", 5000):
        pass
    first = objects.backup_pass(config, SOURCE, conns)
    assert first.objects >= 5000
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:  # change 300, delete 200, add 100
        list(pool.map(lambda i: put(source, f"many/{i:05d}", f"changed {i}".encode()), range(0, 300)))
        list(pool.map(lambda i: source.delete_object(Bucket=SOURCE, Key=f"many/{i:05d}"), range(300, 500)))
        list(pool.map(lambda i: put(source, f"many/new-{i:04d}", f"new {i}".encode()), range(100)))
    second = objects.backup_pass(config, SOURCE, conns)
    assert second.read_from_source == 400
    target = "sr-restore-many"
    ostack.servers[PRIMARY].create_bucket(target, PRIMARY)
    done = objects.restore_point(config, conns, SOURCE, datetime.now(UTC),
                                 conns.bucket_store(conn_id(PRIMARY), target, PRIMARY, config.transfer),
                                 prefix_="many/")
    assert done["objects"] == 5000 - 200 + 100
    got = restored(ostack, target)
    assert got["many/00000"] == b"changed 0" and got["many/04999"] == b"object 4999" * 20
    assert "many/00300" not in got and got["many/new-0099"] == b"new 99"


def test_objects_above_the_part_size_stream_both_ways(ostack: Stack, source, conns, tmp_path: Path) -> None:
    import os as _os

    config = source_config(tmp_path, "large.yaml")
    big = _os.urandom(3 * 2**20) * 4  # 12 MiB, above the 5 MiB part size of the test configuration
    put(source, "large/video.bin", big)
    put(source, "large/copy.bin", big)  # the same content: stored once per region
    result = objects.backup_pass(config, SOURCE, conns)
    assert result.committed == REGIONS
    client = ostack.client_for("eu-west-1")
    listed = [o for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKETS["eu-west-1"], Prefix=f"objects/{SOURCE}/content/") for o in page.get("Contents", [])]
    large = [o["Key"] for o in listed if o["Size"] > 5 * 2**20]
    assert len(large) == 1  # sealed once (a multipart upload, not held whole), though two keys hold it
    assert big not in ostack.read(large[0], "eu-west-1")
    target = "sr-restore-large"
    ostack.servers[PRIMARY].create_bucket(target, PRIMARY)
    objects.restore_point(config, conns, SOURCE, datetime.now(UTC),
                          conns.bucket_store(conn_id(PRIMARY), target, PRIMARY, config.transfer), prefix_="large/",
                          region="eu-west-1")
    assert restored(ostack, target) == {"large/video.bin": big, "large/copy.bin": big}


def test_init_buckets_says_when_a_source_bucket_is_not_versioned(ostack: Stack, tmp_path: Path) -> None:
    client = ostack.client_for(PRIMARY)
    client.create_bucket(Bucket="sr-unversioned", CreateBucketConfiguration={"LocationConstraint": PRIMARY})
    path = write_config(tmp_path / "uv.yaml", object_storage=[
        {"bucket": "sr-unversioned", "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}])
    result = run_cli("--config", str(path), "init-buckets")
    assert result.code == 1
    assert "source sr-unversioned" in result.stdout and "DRIFT: versioning is not enabled" in result.stdout
    assert client.get_bucket_versioning(Bucket="sr-unversioned").get("Status") is None  # never changed
