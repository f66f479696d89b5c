"""The deduplication benchmark's pure parts (bench/dedup.py): the workloads' hourly plans and the simulated
chunk store's accounting, with the product's real envelope sealing the chunks."""

from __future__ import annotations

import hmac
import os
import struct
from pathlib import Path

import pytest

from bench.dedup import (
    WORKLOADS,
    SimulatedChunkStore,
    TableSizes,
    envelope_seal,
    feed,
    plan_hour,
    summarize_series,
)

BASE = TableSizes(customers=10_000, orders=40_000, events=160_000)


def test_the_append_workload_appends_after_the_previous_hours_and_ships_the_newest_orders() -> None:
    first, second = (plan_hour(WORKLOADS["append"], hour, BASE) for hour in (1, 2))
    assert first.new_orders == range(40_001, 40_201)  # 0.5% of 40,000
    assert second.new_orders == range(40_201, 40_401)
    assert second.new_events == range(160_801, 161_601)
    assert second.shipped_orders == range(40_001, 40_201)  # the orders placed the hour before
    assert first.shipped_orders == range(39_801, 40_001)
    assert not (second.deleted_orders or second.deleted_events or second.updated_orders or second.updated_events
                or second.updated_customers)


def test_deletes_pick_old_rows_anywhere_and_uniform_updates_every_row_there_is() -> None:
    deleted = plan_hour(WORKLOADS["delete"], 5, BASE)
    assert len(deleted.deleted_orders) == 40 and len(deleted.deleted_events) == 160  # 0.1%
    assert all(1 <= i <= BASE.orders for i in deleted.deleted_orders)
    assert min(deleted.deleted_events) < BASE.events // 4 and max(deleted.deleted_events) > BASE.events * 3 // 4
    updated = plan_hour(WORKLOADS["update"], 5, BASE)
    assert len(updated.updated_events) == len(set(updated.updated_events)) == 1600  # 1%, distinct
    assert max(updated.updated_orders) < updated.new_orders.start  # not this hour's own new rows
    assert list(updated.updated_customers) == sorted(updated.updated_customers)
    assert not updated.deleted_orders


def test_a_plan_is_the_same_every_time_and_differs_between_hours() -> None:
    workload = WORKLOADS["update"]
    assert plan_hour(workload, 3, BASE) == plan_hour(workload, 3, BASE)
    assert plan_hour(workload, 3, BASE).updated_events != plan_hour(workload, 4, BASE).updated_events
    with pytest.raises(ValueError, match="hour 0"):
        plan_hour(workload, 0, BASE)


def _chunk_list(key: bytes, *chunks: bytes) -> bytes:
    """A snapshot's chunk list as the store writes it: each chunk's name and length, in order."""
    return b"".join(hmac.digest(key, c, "sha256") + struct.pack(">Q", len(c)) for c in chunks)


def test_the_simulated_store_stores_each_chunk_once_and_counts_the_envelope() -> None:
    seal, key = envelope_seal(), os.urandom(32)
    store = SimulatedChunkStore(512 * 1024, key, seal)
    a, b, c = os.urandom(300_000), os.urandom(200_000), b"x" * 100_000
    first = store.add_chunks([a, b, c])
    assert (first.chunks, first.new_chunks, first.objects, first.plain_bytes) == (3, 3, 4, 600_000)
    # random bytes do not compress: a sealed chunk is its zstd frame plus the 52-byte header and a 16-byte tag
    assert seal(a) > len(a) + 52 + 16 and seal(c) < 1000
    assert first.uploaded_bytes == first.stored_bytes == seal(a) + seal(b) + seal(c) + seal(_chunk_list(key, a, b, c))

    again = store.add_chunks([a, memoryview(b), a])  # a repeated chunk is stored once, referenced twice
    assert (again.chunks, again.new_chunks, again.objects) == (3, 0, 5)
    assert again.uploaded_bytes == seal(_chunk_list(key, a, b, a))  # only the snapshot's chunk list
    assert again.stored_bytes == first.stored_bytes + again.uploaded_bytes


def test_feeding_a_file_twice_uploads_only_the_chunk_list_the_second_time(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.write_bytes(os.urandom(9 << 20))  # the 1 MiB store's max is 4 MiB: 3 chunks at least
    stores = [SimulatedChunkStore(size, os.urandom(32), envelope_seal()) for size in (256 * 1024, 1 << 20)]
    first, second = feed(stores, dump), feed(stores, dump)
    assert set(first) == {"256 KiB", "1024 KiB"}
    for label, one in first.items():
        assert one.plain_bytes == 9 << 20 and one.chunks >= 3
        assert second[label].new_chunks == 0  # what it uploads is the chunk list alone
        assert second[label].uploaded_bytes < 52 + 16 + 100 + 40 * one.chunks
    assert first["256 KiB"].chunks > first["1024 KiB"].chunks


def test_series_ratios() -> None:
    assert summarize_series([100, 10, 20], [100, 110, 130]) == {"stored_vs_one": 1.3, "upload_vs_first": 0.15}
