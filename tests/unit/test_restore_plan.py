"""The pure decisions of a restore: the form's snapshot field, the production guard, the approval rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from strongroom.approval import Run, grant, verify
from strongroom.errors import ConfigError, RefusedError
from strongroom.keyring import Keyring
from strongroom.restore import (
    RestorePlan,
    check_clearance,
    guard_production,
    parse_snapshot_choice,
    run_suffix,
    sandbox_dbname,
    sandbox_taken_at,
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
    ("2026-11-26T14:00:00", "needs an explicit UTC offset"),
    ("20261126T140000Z-XYZ", "neither"),
])
def test_bad_snapshot_choice_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_snapshot_choice(text)


def test_sandbox_database_is_named_after_source_and_snapshot_time() -> None:
    taken = datetime(2026, 11, 26, 15, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    assert sandbox_dbname("shop", taken) == "shop_20261126_140405"
    suffix = run_suffix("manual__2026-11-26T14:00:00+00:00")
    assert len(suffix) == 6 and suffix != run_suffix("manual__2026-11-26T14:00:01+00:00")
    name = sandbox_dbname("shop", taken, suffix)
    assert name == f"shop_20261126_140405_{suffix}"
    assert sandbox_taken_at(name, ["shop"]) == datetime(2026, 11, 26, 14, 4, 5, tzinfo=UTC)
    assert sandbox_taken_at("shop_20261126_140405", ["shop"]) is not None  # named before run suffixes
    assert sandbox_taken_at(name, ["bulk"]) is None and sandbox_taken_at("shop", ["shop"]) is None
    with pytest.raises(ConfigError, match="too long"):
        sandbox_dbname("x" * 50, taken, suffix)


def test_production_needs_its_name_typed() -> None:
    guard_production(None, "x", None)
    guard_production("ledger", "x", "ledger")
    with pytest.raises(RefusedError, match=r"is the production database ledger: type 'ledger' to confirm$"):
        guard_production("ledger", "x", None)
    with pytest.raises(RefusedError, match=r"\(typed 'Ledger'\)"):
        guard_production("ledger", "x", "Ledger")
    with pytest.raises(RefusedError, match="is not a production database"):
        guard_production(None, "x", "ledger")


APPROVERS = ["alice", "bob"]
RUN = Run("restore_database", "manual__2026-11-26T14:00:00+00:00", "alice")
KEYRING = Keyring("k1", {"k1": bytes(range(32))})
TARGET = "postgres@db:5432/ledger"


def test_a_second_person_who_is_an_approver_must_approve() -> None:
    sealed = grant(approval("bob"), RUN, APPROVERS, KEYRING, TARGET)
    assert sealed["approved_by"] == "bob" and verify(sealed, RUN, KEYRING, TARGET) == "bob"
    with pytest.raises(RefusedError, match="alice triggered this restore and cannot approve it"):
        grant(approval("alice"), RUN, APPROVERS, KEYRING, TARGET)
    with pytest.raises(RefusedError, match=r"carol is not an approver \(restore.approvers: alice, bob\)"):
        grant(approval("carol"), RUN, APPROVERS, KEYRING, TARGET)
    with pytest.raises(RefusedError, match="no approvers are configured"):
        grant(approval("bob"), RUN, [], KEYRING, TARGET)
    with pytest.raises(RefusedError, match="not approved"):
        grant(approval("bob", "Reject"), RUN, APPROVERS, KEYRING, TARGET)
    with pytest.raises(RefusedError, match="does not say who approved"):
        grant(approval(None), RUN, APPROVERS, KEYRING, TARGET)
    with pytest.raises(RefusedError, match="does not say who triggered"):
        grant(approval("bob"), Run(RUN.dag_id, RUN.run_id, None), APPROVERS, KEYRING, TARGET)
    # the same person under another field (id vs name) is still the same person
    same = {"chosen_options": ["Approve"], "responded_by_user": {"id": "bob", "name": "alice"}}
    with pytest.raises(RefusedError, match="cannot approve"):
        grant(same, RUN, APPROVERS, KEYRING, TARGET)


def test_a_forged_or_replayed_clearance_does_not_authenticate() -> None:
    sealed = grant(approval("bob"), RUN, APPROVERS, KEYRING, TARGET)
    forged = {"chosen_options": ["Approve"], "approved_by": "bob", "subject": TARGET, "key_id": "k1",
              "responded_by_user": {"id": "bob", "name": "bob"}, "mac": "0" * 64}
    other_run = Run(RUN.dag_id, "manual__2026-11-27T00:00:00+00:00", "alice")
    for clearance, run, subject in (
        (forged, RUN, TARGET),  # an XCom written through the REST API
        ({**sealed, "approved_by": "carol"}, RUN, TARGET),  # the approver changed afterwards
        (sealed, other_run, TARGET),  # replayed into another run
        (sealed, Run(RUN.dag_id, RUN.run_id, "mallory"), TARGET),  # another triggering user
        (sealed, RUN, "postgres@db:5432/shop"),  # another target
        ({**sealed, "key_id": "nosuch"}, RUN, TARGET),
    ):
        with pytest.raises(RefusedError, match="does not authenticate"):
            verify(clearance, run, KEYRING, subject)
    with pytest.raises(RefusedError, match="no approval on record"):
        verify(approval("bob"), RUN, KEYRING, TARGET)  # Airflow's own ApprovalOperator output is not a clearance


def test_clearance_of_a_production_restore() -> None:
    sealed = grant(approval("bob"), RUN, APPROVERS, KEYRING, TARGET)
    assert check_clearance(plan(production=None), None, RUN, KEYRING, None) is None  # nothing to prove
    assert check_clearance(plan(), sealed, RUN, KEYRING, {"safety_snapshot": "20261126T150000Z-000001"}) == "bob"
    with pytest.raises(RefusedError, match="no safety snapshot"):
        check_clearance(plan(), sealed, RUN, KEYRING, {"safety_snapshot": None})
    with pytest.raises(RefusedError, match="no approval on record"):
        check_clearance(plan(), None, RUN, KEYRING, {"safety_snapshot": "x"})
    # a production database that no longer exists has nothing to protect, but still needs the approval
    check_clearance(plan(new_database=True), sealed, RUN, KEYRING, None)
    with pytest.raises(RefusedError):
        check_clearance(plan(new_database=True), None, RUN, KEYRING, None)
