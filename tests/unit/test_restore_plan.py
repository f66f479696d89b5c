"""The pure decisions of a restore: the form's snapshot field, the production guard, the approval rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from strongroom.errors import ConfigError, RefusedError
from strongroom.restore import (
    RestorePlan,
    check_approval,
    check_clearance,
    guard_production,
    parse_snapshot_choice,
    sandbox_dbname,
)


def approval(user: str | None, option: str = "Approve") -> dict:
    return {"chosen_options": [option], "params_input": {},
            "responded_by_user": {"id": user, "name": user} if user else None}


def plan(**changes: object) -> RestorePlan:
    base = dict(database="ledger", snapshot_id="20261126T140000Z-a1b2c3", taken_at="2026-11-26T14:00:00+00:00",
                region=None, found_in="eu-central-1", target_conn_id="pg_ledger", target_dbname="ledger",
                target="postgres@db:5432/ledger", new_database=False, production="ledger", tables=(), clean=True)
    base.update(changes)
    return RestorePlan(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("newest", (None, None)),
    ("  ", (None, None)),
    ("20261126T140000Z-a1b2c3", ("20261126T140000Z-a1b2c3", None)),
    ("2026-11-26T14:00:00+00:00", (None, datetime(2026, 11, 26, 14, tzinfo=UTC))),
    ("2026-11-26T14:00:00Z", (None, datetime(2026, 11, 26, 14, tzinfo=UTC))),
    ("2026-11-26T15:00:00+01:00", (None, datetime(2026, 11, 26, 15, tzinfo=timezone(timedelta(hours=1))))),
])
def test_snapshot_choice(text: str, expected: tuple) -> None:
    assert parse_snapshot_choice(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("yesterday", "neither 'newest', a snapshot id"),
    ("2026-11-26T14:00:00", "needs a UTC offset"),
    ("20261126T140000Z-XYZ", "neither"),
])
def test_bad_snapshot_choice_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_snapshot_choice(text)


def test_sandbox_database_is_named_after_source_and_snapshot_time() -> None:
    taken = datetime(2026, 11, 26, 15, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    assert sandbox_dbname("shop", taken) == "shop_20261126_140405"


def test_production_needs_its_name_typed() -> None:
    guard_production(None, "x", None)
    guard_production("ledger", "x", "ledger")
    with pytest.raises(RefusedError, match=r"is the production database ledger: type 'ledger' to confirm$"):
        guard_production("ledger", "x", None)
    with pytest.raises(RefusedError, match=r"\(typed 'Ledger'\)"):
        guard_production("ledger", "x", "Ledger")
    with pytest.raises(RefusedError, match="is not a production database"):
        guard_production(None, "x", "ledger")


def test_a_second_person_must_approve() -> None:
    assert check_approval(approval("bob"), "alice") == "bob"
    with pytest.raises(RefusedError, match="alice triggered this restore and cannot approve it"):
        check_approval(approval("alice"), "alice")
    with pytest.raises(RefusedError, match="not approved"):
        check_approval(approval("bob", "Reject"), "alice")
    with pytest.raises(RefusedError, match="not approved"):
        check_approval(None, "alice")
    with pytest.raises(RefusedError, match="does not say who approved"):
        check_approval(approval(None), "alice")
    with pytest.raises(RefusedError, match="does not say who triggered"):
        check_approval(approval("bob"), None)
    # the same person under another field (id vs name) is still the same person
    same = {"chosen_options": ["Approve"], "responded_by_user": {"id": "alice", "name": "Alice A."}}
    with pytest.raises(RefusedError, match="cannot approve"):
        check_approval(same, "alice")


def test_clearance_of_a_production_restore() -> None:
    check_clearance(plan(production=None), None, None, None)  # not production: nothing to prove
    check_clearance(plan(), approval("bob"), "alice", {"safety_snapshot": "20261126T150000Z-000001"})
    with pytest.raises(RefusedError, match="no safety snapshot"):
        check_clearance(plan(), approval("bob"), "alice", {"safety_snapshot": None})
    with pytest.raises(RefusedError, match="cannot approve"):
        check_clearance(plan(), approval("alice"), "alice", {"safety_snapshot": "x"})
    # a production database that no longer exists has nothing to protect, but still needs the approval
    check_clearance(plan(new_database=True), approval("bob"), "alice", None)
    with pytest.raises(RefusedError):
        check_clearance(plan(new_database=True), None, "alice", None)


def test_plan_round_trips_through_xcom_json() -> None:
    import json

    made = plan(tables=("public.entries",))
    assert RestorePlan.from_dict(json.loads(json.dumps(made.to_dict()))) == made
