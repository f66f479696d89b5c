"""Platform recovery's pure parts: plans travel as JSON (no secret), parts validate, the report sums up."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.config import parse_config
from strongroom.errors import ConfigError, NotFoundError, RecoveryError
from strongroom.recovery import (
    BUCKET,
    DATABASE,
    FAILED,
    OK,
    Part,
    PartResult,
    RecoveryPlan,
    RecoveryReport,
    _plan,
    require_success,
    spread_seconds,
)

T0 = datetime(2026, 11, 26, 14, 0, 3, tzinfo=UTC)
SHOP = Part(DATABASE, "shop", "20261126T140003Z-a1b2c3", T0.isoformat())
BULK = Part(DATABASE, "bulk", "20261126T140411Z-d4e5f6", (T0 + timedelta(minutes=4, seconds=8)).isoformat())
UPLOADS = Part(BUCKET, "shop-uploads", (T0 + timedelta(minutes=2)).isoformat(), (T0 + timedelta(minutes=2)).isoformat())


def test_plan_round_trips_through_json_and_measures_the_windows() -> None:
    requested = T0 + timedelta(hours=1)
    plan = _plan("eu-west-1", requested, [SHOP, BULK, UPLOADS], "20261126T150000Z-0a0b0c")
    assert plan.spread_seconds == 248.0  # latest minus earliest part
    assert plan.point_time == T0.isoformat()  # the oldest part: the most any part loses
    assert plan.data_loss_seconds == 3600.0
    wire = json.loads(json.dumps(plan.to_dict()))
    assert RecoveryPlan.from_dict(wire) == plan
    assert set(wire) == {"region", "requested_at", "point_time", "data_loss_seconds", "spread_seconds", "parts",
                         "point_id"}
    assert plan.lines()[1] == f"  database shop snapshot {SHOP.ref} (taken {SHOP.at})"


@pytest.mark.parametrize("bad", [
    {"kind": "table", "name": "x", "ref": "20261126T140003Z-a1b2c3", "at": "2026-11-26T14:00:03+00:00"},
    {"kind": "database", "name": "x", "ref": "../../etc", "at": "2026-11-26T14:00:03+00:00"},
    {"kind": "database", "name": "x", "ref": "20261126T140003Z-a1b2c3", "at": "2026-11-26T14:00:03"},
    {"kind": "bucket", "name": "x", "ref": "yesterday", "at": "2026-11-26T14:00:03+00:00"},
    {"kind": "bucket", "name": "x", "at": "2026-11-26T14:00:03+00:00"},
])
def test_a_part_that_is_not_one_is_refused(bad: dict[str, str]) -> None:
    with pytest.raises((ValueError, KeyError, ConfigError, NotFoundError)):
        Part.from_dict(bad)


def test_spread_of_nothing_is_zero() -> None:
    assert spread_seconds([]) == 0.0 and spread_seconds([SHOP]) == 0.0


def _report(*results: PartResult, rto: float = 3600.0) -> RecoveryReport:
    return RecoveryReport("20261126T160000Z-aaaaaa", "eu-west-1", None, T0.isoformat(), T0.isoformat(), 0.0, 0.0,
                          T0.isoformat(), 125.0, rto, "database bulk snapshot x (2m)", results)


def test_report_names_the_rto_the_slowest_part_and_every_failed_part() -> None:
    ok = PartResult(DATABASE, "shop", SHOP.ref, "eu-west-1", "u@h/shop_rec", OK, 12.0, 1000, "3 tables, 10 rows")
    bad = PartResult(BUCKET, "shop-uploads", UPLOADS.ref, "eu-west-1", "s3://rec", FAILED, 2.0, error="boom")
    report = _report(ok, bad, rto=60.0)
    assert not report.success and not report.within_rto
    assert "OVER the RTO of 1m" in report.headline() and "slowest database bulk" in report.headline()
    assert report.lines()[2] == f"  bucket shop-uploads point {UPLOADS.ref} from eu-west-1 into s3://rec: " \
                                "FAILED: boom (0 bytes, 2s)"
    with pytest.raises(RecoveryError, match=r"failed for bucket shop-uploads point .* \(boom\); 1 other part"):
        require_success(report)
    assert require_success(_report(ok)).within_rto
    assert json.loads(json.dumps(report.to_dict()))["parts"][1]["error"] == "boom"


BASE = {"regions": [{"name": "eu-central-1", "bucket": "sr-a", "aws_conn_id": "s3"}],
        "encryption": {"keyring_conn_id": "kr"}, "databases": [{"name": "shop", "postgres_conn_id": "pg"}],
        "object_storage": [{"bucket": "shop-uploads", "aws_conn_id": "s3"}]}


def test_recovery_config_defaults_and_names() -> None:
    config = parse_config(dict(BASE, recovery={
        "databases": {"shop": "pg_recovery_shop"},
        "buckets": {"shop-uploads": {"bucket": "recovered-shop-uploads", "aws_conn_id": "s3_recovery"}}}))
    assert config.recovery.concurrency == 2 and config.recovery.rto == timedelta(hours=4)
    assert config.recovery.buckets["shop-uploads"].bucket == "recovered-shop-uploads"
    assert config.restore_test.rto == timedelta(hours=4)  # its own setting, unchanged


@pytest.mark.parametrize(("recovery", "line"), [
    ({"databases": {"shpo": "pg"}},
     "recovery: databases names 'shpo', which is not a configured database (configured: shop)"),
    ({"buckets": {"uploads": {"bucket": "abc", "aws_conn_id": "s3"}}},
     "recovery: buckets names 'uploads', which is not a configured object_storage source (configured: shop-uploads)"),
    ({"concurrency": 0}, "recovery.concurrency: Input should be greater than or equal to 1"),
    ({"rto": "soon"}, "recovery.rto: 'soon' is not a duration such as 30d, 12h, 45m, 90s or 500ms"),
])
def test_recovery_config_errors_are_one_line(recovery: dict[str, object], line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(dict(BASE, recovery=recovery))
    assert str(caught.value) == f"config <config>: {line}"
