"""Metrics for Airflow's StatsD: what is measured, decided here without Airflow.

Names are ``strongroom.<what>.<database>[.<region>]`` (StatsD has no tags; Airflow adds its
``[metrics] statsd_prefix``, ``airflow`` by default). Values are plain numbers; the adapter sends them.

| metric | kind | meaning |
|---|---|---|
| ``strongroom.snapshot.stored_bytes.<db>`` | gauge | size of the stored (compressed, encrypted) snapshot |
| ``strongroom.snapshot.plain_bytes.<db>`` | gauge | size of the dump before compression |
| ``strongroom.snapshot.duration.<db>`` | timer (ms) | dump, compress, encrypt and upload into the landing region |
| ``strongroom.backup.age_seconds.<db>.<region>`` | gauge | newest backup's age (databases, buckets), if any |
| ``strongroom.backup.present.<db>.<region>`` | gauge | 1: the region holds a committed backup; 0: none |
| ``strongroom.restore_test.duration.<db>`` | timer (ms) | measured restore time (download, decrypt, restore) |
| ``strongroom.restore_test.success.<db>`` | gauge | 1 passed, 0 failed: the newest restore test |
| ``strongroom.restore_test.failed.<db>`` | counter | one per failed restore test |
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

PREFIX = "strongroom"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Literal["gauge", "timing", "incr"]
    value: float


def _part(text: str) -> str:
    """A name part StatsD and Airflow's name check accept: letters, digits, '_' and '-'."""
    return _UNSAFE.sub("_", text)


def name(*parts: str) -> str:
    return ".".join([PREFIX, *(_part(p) for p in parts)])


def snapshot_metrics(result: Mapping[str, Any]) -> list[Metric]:
    """From a snapshot task's result (``SnapshotResult.to_dict()``)."""
    db = str(result["database"])
    return [
        Metric(name("snapshot", "stored_bytes", db), "gauge", float(result["stored_bytes"])),
        Metric(name("snapshot", "plain_bytes", db), "gauge", float(result["plain_bytes"])),
        Metric(name("snapshot", "duration", db), "timing", float(result["seconds"]) * 1000),
    ]


def age_metrics(rows: Iterable[Any]) -> list[Metric]:
    """From ``status.collect_status`` rows: the newest backup's age per database (or bucket) and region.

    A region without a backup has no age (a negative gauge would read as a delta in StatsD): ``present``
    says so instead.
    """
    out = []
    for row in rows:
        present = row.age_seconds is not None
        out.append(Metric(name("backup", "present", row.database, row.region), "gauge", 1.0 if present else 0.0))
        if present:
            out.append(Metric(name("backup", "age_seconds", row.database, row.region), "gauge", float(row.age_seconds)))
    return out


def restore_test_metrics(result: Mapping[str, Any]) -> list[Metric]:
    """From a restore test's result (``DrillResult.to_dict()``)."""
    db = str(result["database"])
    out = [
        Metric(name("restore_test", "duration", db), "timing", float(result["restore_seconds"]) * 1000),
        Metric(name("restore_test", "success", db), "gauge", 1.0 if result["success"] else 0.0),
    ]
    if not result["success"]:
        out.append(Metric(name("restore_test", "failed", db), "incr", 1.0))
    return out
