"""A region that missed object-storage passes while it was down gets those points back: every region ends
with the same points, each restorable from that region alone (real S3 servers, one per region)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom import layout, objects
from strongroom.config import Config, load_config
from tests.conftest import BUCKETS, PRIMARY, REGIONS, Stack, conn_id, env_name, write_config
from tests.integration.helpers import own_s3_servers, start_cli
from tests.integration.test_regions import closed_port, dead_region_conn

SOURCE = "sr-test-repair-src"
NORTH, WEST = "eu-north-1", "eu-west-1"
FAST = {"part_size": "5MiB", "upload_concurrency": 2, "connect_timeout": "1s", "read_timeout": "5s",
        "max_attempts": 1}


@pytest.fixture(scope="module")
def rstack(stack: Stack) -> Iterator[Stack]:
    """This module's own S3 servers (the source bucket on the primary's): its outages touch no other test."""
    with own_s3_servers(stack) as own:
        own.servers[PRIMARY].create_bucket(SOURCE, PRIMARY)
        yield own


@pytest.fixture()
def config(rstack: Stack, tmp_path: Path) -> Config:
    return load_config(write_config(
        tmp_path / "repair.yaml", transfer=FAST,
        object_storage=[{"bucket": SOURCE, "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}]))


class Outage:
    """Make one region's endpoint refuse connections, in this process and in the CLIs it starts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, region: str) -> None:
        self.monkeypatch, self.name = monkeypatch, env_name(conn_id(region))
        self.saved = os.environ[self.name]

    def __enter__(self) -> None:
        self.monkeypatch.setenv(self.name, dead_region_conn(closed_port()))

    def __exit__(self, *exc: object) -> None:
        self.monkeypatch.setenv(self.name, self.saved)


def put(rstack: Stack, key: str, body: bytes) -> None:
    rstack.client_for(PRIMARY).put_object(Bucket=SOURCE, Key=key, Body=body)


def delete(rstack: Stack, key: str) -> None:
    rstack.client_for(PRIMARY).delete_object(Bucket=SOURCE, Key=key)


def keys(rstack: Stack, region: str, kind: str) -> list[str]:
    return [k for k in rstack.list_keys(region) if k.startswith(f"objects/{SOURCE}/{kind}/")]


def region_side(config: Config, conns, region: str):
    cfg = config.region(region)
    return conns.store(cfg, config.transfer), conns.keyring(config.keyring_conn_id(cfg))


def every_index_has_its_contents(config: Config, conns, region: str) -> list[datetime]:
    """The points ``region`` holds, after checking each one's every content is stored there."""
    store, keyring = region_side(config, conns, region)
    present = {info.key.rsplit("/", 1)[1] for info in store.list_objects(layout.content_prefix(SOURCE))}
    times = objects.point_times(store, SOURCE)
    for at in times:
        index = objects.load_point(store, keyring, SOURCE, at)
        lacking = {e.content_id for e in index.entries.values()} - present
        assert not lacking, f"{region}: point {at} lacks {len(lacking)} contents"
    return times


def test_a_missed_point_is_copied_back_and_restores_from_that_region_alone(
    rstack: Stack, config: Config, conns, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    put(rstack, "keep.txt", b"kept all along")
    put(rstack, "a.txt", b"alpha v1")
    first = objects.backup_pass(config, SOURCE, conns)
    assert first.committed == REGIONS and first.repaired == {}

    time.sleep(1.1)
    put(rstack, "a.txt", b"alpha v2, written while eu-north-1 was down")
    put(rstack, "gone-soon.txt", b"lives only during the outage")
    big = os.urandom(6 * 2**20)  # above the 5 MiB part size: a streamed, multipart copy
    put(rstack, "big/video.bin", big)
    with Outage(monkeypatch, NORTH):
        missed = objects.backup_pass(config, SOURCE, conns)
    assert missed.committed == [PRIMARY, WEST] and list(missed.failed) == [NORTH]
    missed_at = datetime.fromisoformat(missed.taken_at)
    versions = {k: e.version_id for k, e in objects.load_point(
        *region_side(config, conns, PRIMARY), SOURCE, missed_at).entries.items()}

    # while the region is still away the outage's versions are replaced: only the repair can bring them back
    time.sleep(1.1)
    delete(rstack, "gone-soon.txt")
    put(rstack, "big/video.bin", b"small now")
    put(rstack, "a.txt", b"alpha v3")
    with caplog.at_level(logging.INFO, logger="strongroom.objects"):
        back = objects.backup_pass(config, SOURCE, conns)
    assert back.committed == REGIONS and back.failed == {} and back.repair_failed == {}
    assert back.repaired == {NORTH: [layout.stamp(missed_at)]}
    assert any("copied from eu-central-1 to eu-north-1" in r.getMessage() for r in caplog.records)

    held = {region: every_index_has_its_contents(config, conns, region) for region in REGIONS}
    assert held[NORTH] == held[PRIMARY] == held[WEST] and missed_at in held[NORTH]
    indexes = [objects.load_point(*region_side(config, conns, r), SOURCE, missed_at).entries for r in REGIONS]
    assert indexes[0] == indexes[1] == indexes[2]

    # restored from eu-north-1 alone (eu-west-1 down as well): the bytes of the versions the point names
    target = "sr-repair-restored"
    rstack.servers[PRIMARY].create_bucket(target, PRIMARY)
    with Outage(monkeypatch, WEST):
        done = objects.restore_point(config, conns, SOURCE, missed_at + timedelta(seconds=0.5),
                                     conns.bucket_store(conn_id(PRIMARY), target, PRIMARY, config.transfer),
                                     region=NORTH)
    assert done["region"] == NORTH and done["point"] == missed_at.isoformat()
    client = rstack.client_for(PRIMARY)
    assert sorted(versions) == ["a.txt", "big/video.bin", "gone-soon.txt", "keep.txt"]
    for key, version_id in versions.items():
        expected = client.get_object(Bucket=SOURCE, Key=key, VersionId=version_id)["Body"].read()
        assert client.get_object(Bucket=target, Key=key)["Body"].read() == expected, key
    assert client.get_object(Bucket=target, Key="big/video.bin")["Body"].read() == big

    again = objects.backup_pass(config, SOURCE, conns)  # converged: nothing more to copy
    assert again.repaired == {} and again.repair_failed == {}


def test_a_junk_point_in_one_region_is_never_copied(
    rstack: Stack, config: Config, conns, caplog: pytest.LogCaptureFixture
) -> None:
    put(rstack, "junk-test.txt", b"real content")
    objects.backup_pass(config, SOURCE, conns)
    junk_key = layout.point_key(SOURCE, (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0))
    rstack.write(junk_key, b"SROBJ\x00\x01\n anyone with write access to one bucket wrote this", WEST)
    try:
        with caplog.at_level(logging.WARNING, logger="strongroom.objects"):
            result = objects.backup_pass(config, SOURCE, conns)
        assert result.committed == REGIONS and result.repaired == {} and result.repair_failed == {}
        for region in (PRIMARY, NORTH):
            assert junk_key not in rstack.list_keys(region)
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(junk_key.rsplit("/", 1)[1].removesuffix(".idx") in m and "not copied" in m for m in warned)
    finally:
        rstack.client_for(WEST).delete_object(Bucket=BUCKETS[WEST], Key=junk_key)


def test_a_killed_repair_leaves_no_index_without_its_contents_and_the_next_run_converges(
    rstack: Stack, config: Config, conns, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects.backup_pass(config, SOURCE, conns)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: put(rstack, f"burst/{i:04d}", f"burst object {i}".encode() * 30), range(400)))
    time.sleep(1.1)
    with Outage(monkeypatch, NORTH):
        missed = objects.backup_pass(config, SOURCE, conns)
    assert list(missed.failed) == [NORTH]
    missed_key = layout.point_key(SOURCE, datetime.fromisoformat(missed.taken_at))
    with ThreadPoolExecutor(8) as pool:  # gone before the region returns: only the repair copies them
        list(pool.map(lambda i: delete(rstack, f"burst/{i:04d}"), range(400)))
    time.sleep(1.1)

    before = len(keys(rstack, NORTH, "content"))
    path = write_config(tmp_path / "kill.yaml", transfer=FAST,
                        object_storage=[{"bucket": SOURCE, "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}])
    proc = start_cli("--config", str(path), "objects", "backup", "--bucket", SOURCE)
    deadline = time.monotonic() + 120
    while len(keys(rstack, NORTH, "content")) < before + 20:
        assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the repair copied nothing"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert missed_key not in rstack.list_keys(NORTH)  # killed among the contents, before the index
    every_index_has_its_contents(config, conns, NORTH)

    converged = objects.backup_pass(config, SOURCE, conns)
    assert converged.repaired == {NORTH: [missed_key.rsplit("/", 1)[1].removesuffix(".idx")]}
    assert converged.repair_failed == {} and converged.failed == {}
    held = {region: every_index_has_its_contents(config, conns, region) for region in REGIONS}
    assert held[NORTH] == held[PRIMARY] == held[WEST]
    entries = [objects.load_point(*region_side(config, conns, r), SOURCE, datetime.fromisoformat(missed.taken_at))
               .entries for r in REGIONS]
    assert entries[0] == entries[1] == entries[2] and len([k for k in entries[0] if k.startswith("burst/")]) == 400


def test_a_platform_point_recorded_while_a_region_was_down_is_recorded_there_once_it_returns(
    rstack: Stack, conns, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from strongroom import recovery

    config = load_config(write_config(  # only the bucket: this module's regions hold no database snapshot
        tmp_path / "platform.yaml", transfer=FAST, databases=[],
        object_storage=[{"bucket": SOURCE, "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}]))
    objects.backup_pass(config, SOURCE, conns)
    with Outage(monkeypatch, NORTH):
        missed = recovery.record_point(config, conns)
    assert list(missed["unreachable"]) == [NORTH]
    junk_id = layout.new_platform_id(datetime.now(UTC) - timedelta(hours=2))
    junk_key = layout.platform_point_key(junk_id)
    rstack.write(junk_key, b'{"point_id": "' + junk_id.encode() + b'", "complete": true}', WEST)
    try:
        back = recovery.record_point(config, conns)
        assert back["unreachable"] == {} and back["repair_failed"] == {}
        assert back["repaired"] == {NORTH: [missed["point_id"]]}
        assert junk_key not in rstack.list_keys(NORTH) and junk_key not in rstack.list_keys(PRIMARY)
    finally:
        rstack.client_for(WEST).delete_object(Bucket=BUCKETS[WEST], Key=junk_key)
    listed = {(p.point_id, p.region): p for p in recovery.list_points(config, conns)}
    for region in REGIONS:  # every region lists both points, authenticated with its own keyring
        assert (missed["point_id"], region) in listed and (back["point_id"], region) in listed, region
    copied = listed[(missed["point_id"], NORTH)]
    assert copied.complete and copied.parts == listed[(missed["point_id"], PRIMARY)].parts
    plan = recovery.plan_recovery(config, conns, point_id=missed["point_id"], region=NORTH)
    assert plan.region == NORTH and [p.name for p in plan.parts] == [SOURCE]
    assert recovery.record_point(config, conns)["repaired"] == {}  # converged
