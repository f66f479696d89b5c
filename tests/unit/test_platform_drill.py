"""The platform drill's pure parts (region rotation, its one line, its summary) and the recover_platform
DAG's small helpers (the form's fields, the approval's subject)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from strongroom import drill, recovery
from strongroom.config import parse_config
from strongroom.errors import ConfigError, NotFoundError, RestoreTestError

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
BASE = {
    "regions": [{"name": n, "bucket": f"sr-{n}", "aws_conn_id": "s3"} for n in ("eu-central-1", "eu-west-1",
                                                                               "eu-north-1")],
    "encryption": {"keyring_conn_id": "kr"},
}
CONFIG = parse_config(BASE)


def test_each_drill_recovers_from_the_region_after_the_last_ones() -> None:
    names = [drill.drill_region(CONFIG, last, NOW).name for last in ("eu-central-1", "eu-west-1", "eu-north-1")]
    assert names == ["eu-west-1", "eu-north-1", "eu-central-1"]
    # no drill on record (or one from a region no longer configured): the day's rotation
    for last in (None, "eu-south-1"):
        assert drill.drill_region(CONFIG, last, NOW) == drill.rotation_region(CONFIG, NOW)


def test_the_drill_schedule_is_weekly_by_default_and_configurable() -> None:
    assert CONFIG.recovery.drill_schedule == "0 2 * * 0"
    assert parse_config({**BASE, "recovery": {"drill_schedule": "@daily"}}).recovery.drill_schedule == "@daily"


def test_the_drill_timeout_is_the_rto_plus_two_hours_unless_set() -> None:
    from datetime import timedelta

    assert CONFIG.recovery.drill_run_timeout == CONFIG.recovery.rto + timedelta(hours=2)
    assert parse_config({**BASE, "recovery": {"rto": "1h"}}).recovery.drill_run_timeout == timedelta(hours=3)
    set_ = parse_config({**BASE, "recovery": {"drill_timeout": "90m"}}).recovery
    assert set_.drill_run_timeout == timedelta(minutes=90)


def _evidence(**changes: object) -> dict:
    evidence = {"region": "eu-west-1", "point_id": "20261129T010000Z-a1b2c3", "point_time": NOW.isoformat(),
                "total_seconds": 95.0, "rto_seconds": 14400.0, "within_rto": True, "success": True, "error": None,
                "slowest": "database shop snapshot 20261129T010000Z-d4e5f6 (1m 5s)", "drill_id": "x",
                "stored_in": ["eu-central-1"],
                "parts": [{"kind": "database", "name": "shop", "result": "passed", "failures": []},
                          {"kind": "bucket", "name": "uploads", "result": "passed", "failures": []}]}
    evidence.update(changes)
    evidence["headline"] = drill.drill_headline(evidence)
    return evidence


def test_a_drill_over_its_rto_fails_naming_the_slowest_part() -> None:
    passed = _evidence()
    assert passed["headline"].startswith("platform drill from eu-west-1 passed: recovered point 20261129T010000Z")
    assert "within the RTO" in passed["headline"]
    assert drill.require_drill_success(passed) == drill.drill_summary(passed)
    over = _evidence(total_seconds=2.5, rto_seconds=1.0, within_rto=False, success=False)
    assert "OVER the RTO of 1s" in over["headline"]
    assert over["headline"].endswith("slowest part: database shop snapshot 20261129T010000Z-d4e5f6 (1m 5s)")
    with pytest.raises(RestoreTestError, match=r"OVER the RTO.*slowest part: database shop"):
        drill.require_drill_success(over)


def test_a_failed_part_or_plan_is_named() -> None:
    parts = [{"kind": "database", "name": "shop", "result": "FAILED", "failures": ["schema: table x is missing"]}]
    failed = _evidence(parts=parts, success=False)
    assert failed["headline"].endswith("failed: database shop: schema: table x is missing")
    unplanned = _evidence(error="NotFoundError: no complete platform point in region eu-west-1", success=False)
    assert unplanned["headline"] == ("platform drill from eu-west-1 FAILED: NotFoundError: no complete platform "
                                     "point in region eu-west-1")


def test_the_recover_form_fields() -> None:
    assert recovery.parse_form_choice(None, None) == (None, None)
    assert recovery.parse_form_choice("  ", "") == (None, None)
    assert recovery.parse_form_choice(" 20261129T010000Z-a1b2c3 ", None) == ("20261129T010000Z-a1b2c3", None)
    assert recovery.parse_form_choice(None, "2026-11-29T01:30:00Z") == (None, datetime(2026, 11, 29, 1, 30,
                                                                                         tzinfo=UTC))
    # what Airflow 3.3's date-time picker sends: the picked time as UTC, with a Z
    assert recovery.parse_form_choice(None, "2026-11-29T01:30:00.000Z") == (None, datetime(2026, 11, 29, 1, 30,
                                                                                             tzinfo=UTC))
    with pytest.raises(ConfigError, match=r"^at 2026-11-29T01:30:00 needs an explicit UTC offset"):
        recovery.parse_form_choice(None, "2026-11-29T01:30:00")  # as everywhere else: never guessed as UTC
    with pytest.raises(ConfigError, match=r"^at 'yesterday' is not an ISO 8601 time"):
        recovery.parse_form_choice(None, "yesterday")
    with pytest.raises(NotFoundError, match="is not a platform point id"):
        recovery.parse_form_choice("newest", None)
    assert recovery.confirmations(None) == []
    assert recovery.confirmations(" shop, ledger  uploads") == ["shop", "ledger", "uploads"]


def test_the_approval_names_exactly_the_production_sources() -> None:
    assert recovery.approval_subject({"shop", "ledger"}) == "platform recovery over production ledger, shop"
    assert recovery.approval_subject(["shop"]) != recovery.approval_subject(["shop", "ledger"])
