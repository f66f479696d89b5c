"""Metric names and values, decided without Airflow."""

from __future__ import annotations

from strongroom.metrics import Metric, age_metrics, name, restore_test_metrics, snapshot_metrics
from strongroom.status import RegionStatus


def test_names_are_safe_for_statsd() -> None:
    assert name("backup", "age_seconds", "shop", "eu-west-1") == "strongroom.backup.age_seconds.shop.eu-west-1"
    assert name("snapshot", "stored_bytes", "my db:1|x") == "strongroom.snapshot.stored_bytes.my_db_1_x"


def test_snapshot_metrics() -> None:
    result = {"database": "shop", "stored_bytes": 1234, "plain_bytes": 9999, "seconds": 1.5}
    assert snapshot_metrics(result) == [
        Metric("strongroom.snapshot.stored_bytes.shop", "gauge", 1234.0),
        Metric("strongroom.snapshot.plain_bytes.shop", "gauge", 9999.0),
        Metric("strongroom.snapshot.duration.shop", "timing", 1500.0),
    ]


def test_age_metrics_mark_a_missing_backup() -> None:
    rows = [RegionStatus("shop", "eu-west-1", "x", "t", 120, 3),
            RegionStatus("shop", "eu-north-1", None, None, None, 0)]
    assert age_metrics(rows) == [
        Metric("strongroom.backup.present.shop.eu-west-1", "gauge", 1.0),
        Metric("strongroom.backup.age_seconds.shop.eu-west-1", "gauge", 120.0),
        Metric("strongroom.backup.present.shop.eu-north-1", "gauge", 0.0),  # no age: a negative gauge is a delta
    ]


def test_a_failed_restore_test_counts() -> None:
    passed = restore_test_metrics({"database": "shop", "restore_seconds": 2.5, "success": True})
    failed = restore_test_metrics({"database": "shop", "restore_seconds": 0.0, "success": False})
    assert [m.value for m in passed] == [2500.0, 1.0]
    assert failed[1:] == [Metric("strongroom.restore_test.success.shop", "gauge", 0.0),
                          Metric("strongroom.restore_test.failed.shop", "incr", 1.0)]
