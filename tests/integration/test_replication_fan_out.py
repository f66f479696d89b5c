"""The CLI's replication: one read of the landing region streamed to every other region at once.

Every region is a separate S3 server (its own moto process), so every copy streams through Strongroom."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import pytest

from strongroom import layout, replication
from strongroom.catalog import StoredObject
from strongroom.errors import IntegrityError
from strongroom.replication import SnapshotRef
from strongroom.snapshot import snapshot_database, take_snapshot
from strongroom.storage import MultipartUpload, ObjectStore, PartSizer
from tests.conftest import PRIMARY, REGIONS, Stack

WEST, NORTH = REGIONS[1], REGIONS[2]
MiB = 1 << 20


def _stores(config: Any, conns: Any) -> dict[str, ObjectStore]:
    return {r: conns.store(config.region(r), config.transfer) for r in REGIONS}


def _object(stack: Stack, key: str, data: bytes) -> StoredObject:
    stack.write(key, data, PRIMARY)
    return StoredObject(key, len(data), len(data), len(data), hashlib.sha256(data).hexdigest())


def test_fan_out_reads_the_source_once_into_every_target(stack: Stack, config, conns) -> None:
    data = bytes(range(256)) * (52 * 1024)  # 13 MiB: three 5 MiB parts in each target
    obj = _object(stack, "fan-out/whole", data)
    stores = _stores(config, conns)
    failed = replication.fan_out_copy(stores[PRIMARY], {WEST: stores[WEST], NORTH: stores[NORTH]}, obj,
                                      config.transfer, upload_concurrency=1)
    assert failed == {}
    for region in (WEST, NORTH):
        assert stack.read("fan-out/whole", region) == data
        assert stack.uploads(region) == []


def test_fan_out_from_a_corrupt_source_fails_and_completes_no_copy(stack: Stack, config, conns) -> None:
    data = bytes(reversed(range(256))) * (28 * 1024)  # 7 MiB
    obj = _object(stack, "fan-out/corrupt", data)
    stack.write("fan-out/corrupt", data[:4096] + bytes([data[4096] ^ 1]) + data[4097:], PRIMARY)  # same size
    stores = _stores(config, conns)
    with pytest.raises(IntegrityError, match=rf"{PRIMARY}.*SHA-256"):
        replication.fan_out_copy(stores[PRIMARY], {WEST: stores[WEST], NORTH: stores[NORTH]}, obj, config.transfer)
    for region in (WEST, NORTH):
        assert "fan-out/corrupt" not in stack.list_keys(region)
        assert stack.uploads(region) == []


def test_fan_out_drops_a_failing_target_and_completes_the_others(stack: Stack, config, conns) -> None:
    data = b"\x5a" * (11 * MiB)
    obj = _object(stack, "fan-out/one-fails", data)
    stores = _stores(config, conns)
    missing = ObjectStore(stores[NORTH].client, "sr-test-no-such-bucket", region=NORTH)
    failed = replication.fan_out_copy(stores[PRIMARY], {NORTH: missing, WEST: stores[WEST]}, obj, config.transfer)
    assert list(failed) == [NORTH] and "sr-test-no-such-bucket" in str(failed[NORTH])
    assert stack.read("fan-out/one-fails", WEST) == data


class _StoresItWrong(MultipartUpload):
    """An upload whose provider stores one byte other than it was sent (size and metadata unchanged)."""

    flipped = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.flipped and len(data) > 100:
            self.flipped = True
            data = bytes(data[:100]) + bytes([data[100] ^ 0x01]) + bytes(data[101:])
        super().write(data)


class _CorruptingStore(ObjectStore):
    def multipart(self, key: str, *, part_size: int, max_part_size: int, concurrency: int, expected_size: int = 0,
                  retain_until: datetime | None = None) -> MultipartUpload:
        sizer = PartSizer(part_size, max_part_size, self.max_parts, expected_size)
        return _StoresItWrong(self, key, sizer, concurrency, self.lock_args(retain_until))


class _Conns:
    """The real connections, except that one region's store corrupts what it stores."""

    def __init__(self, inner: Any, bad_region: str) -> None:
        self.inner, self.bad_region = inner, bad_region

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def store(self, region: Any, transfer: Any) -> ObjectStore:
        store = self.inner.store(region, transfer)
        if region.name != self.bad_region:
            return store
        return _CorruptingStore(store.client, store.bucket, region=store.region, max_parts=store.max_parts)


def test_a_copy_stored_wrong_is_caught_by_reading_it_back_and_repaired_next_run(
    stack: Stack, config, conns
) -> None:
    landed = take_snapshot(config, "bulk", conns)
    ref = SnapshotRef(landed.snapshot_id, landed.region)
    manifest = layout.manifest_key("bulk", landed.snapshot_id)

    outcomes = replication.sync_regions(config, "bulk", _Conns(conns, NORTH), ref)
    # the bytes streamed were right, what north stored is not: only a read-back of north's copy sees it
    assert outcomes[PRIMARY] == outcomes[WEST] == "committed"
    assert "SHA-256" in outcomes[NORTH] and NORTH in outcomes[NORTH]
    assert manifest in stack.list_keys(PRIMARY) and manifest in stack.list_keys(WEST)
    assert manifest not in stack.list_keys(NORTH)

    # the next run (healthy) copies the snapshot north again, checks it and commits it there
    again = replication.sync_regions(config, "bulk", conns, ref)
    assert again == dict.fromkeys(REGIONS, "committed")
    assert manifest in stack.list_keys(NORTH)
    key = layout.data_key("bulk", landed.snapshot_id, "dump.zst.srenc")
    assert stack.read(key, NORTH) == stack.read(key, PRIMARY)


def test_the_cli_runs_the_dags_per_region_steps_in_every_region(
    stack: Stack, config, conns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's snapshot is replicated by the DAG's own steps, not a second implementation: in every region
    the real replicate, verify and commit run for this run's snapshot, in that order, each doing its part
    (the copy is there once replicate returns, the manifest once commit does), with the shared read, which
    is the landing region's read-back."""
    calls: list[dict[str, Any]] = []

    def counted(step: str) -> Any:
        real = getattr(replication, step)

        def call(config: Any, database: str, region: str, conns: Any, arg: Any, **kwargs: Any) -> Any:
            result = real(config, database, region, conns, arg, **kwargs)
            refs = [arg] if isinstance(arg, SnapshotRef) else arg or []
            keys = stack.list_keys(region)
            calls.append({"step": step, "region": region, "ids": [r.snapshot_id for r in refs],
                          "fed": isinstance(kwargs.get("feed"), replication.SharedRead), "keys": keys})
            return result

        return call

    for step in ("replicate_region", "verify_region", "commit_region"):
        monkeypatch.setattr(replication, step, counted(step))
    read_back: list[str] = []
    verify_object = replication.verify_object

    def counted_read_back(store: ObjectStore, obj: StoredObject, transfer: Any) -> None:
        read_back.append(store.region)
        verify_object(store, obj, transfer)

    monkeypatch.setattr(replication, "verify_object", counted_read_back)
    result = snapshot_database(config, "bulk", conns)
    snapshot_id = result["snapshot_id"]
    assert result["regions"] == dict.fromkeys(REGIONS, "committed")
    data = layout.data_key("bulk", snapshot_id, "dump.zst.srenc")
    manifest = layout.manifest_key("bulk", snapshot_id)
    for region in REGIONS:
        steps = [c for c in calls if c["region"] == region and c["ids"] == [snapshot_id]]
        assert [c["step"] for c in steps] == ["replicate_region", "verify_region", "commit_region"], region
        assert steps[0]["fed"] and steps[1]["fed"], region
        assert data in steps[0]["keys"] and manifest not in steps[0]["keys"], region
        assert manifest not in steps[1]["keys"] and manifest in steps[2]["keys"], region
    # the landing region's copy was checked by the shared read, never read a second time
    assert result["region"] == PRIMARY and PRIMARY not in read_back and {WEST, NORTH} <= set(read_back)


def test_a_killed_runs_upload_in_a_region_it_did_not_land_in_is_aborted_by_the_next_run(stack: Stack, conns) -> None:
    """A run killed while streaming into another region leaves an unfinished upload there, for a snapshot
    that is never committed and so never repaired: the next run of that database aborts it (uploads of the
    database begun more than the run timeout ago; moto dates every upload 2010, so age is not shown here)."""
    from strongroom.config import load_config
    from tests.conftest import BUCKETS

    key = layout.data_key("shop", "20200101T000000Z-0rphan", "dump.zst.srenc")
    for region in (WEST, NORTH):
        stack.client_for(region).create_multipart_upload(Bucket=BUCKETS[region], Key=key)
    result = snapshot_database(load_config(stack.config_path), "shop", conns)
    assert set(result["regions"].values()) == {"committed"}, result
    assert {r: stack.uploads(r) for r in REGIONS} == {r: [] for r in REGIONS}
