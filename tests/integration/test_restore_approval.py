"""A production restore under a running Airflow, driven through its REST API by three users.

alice (op) triggers `restore_database` over the production database `ledger` (through another host name,
so only the system identifier tells it is production). The run waits for a human: approved by bob (one of
`restore.approvers`), it takes a safety snapshot and restores. Approved by alice herself, rejected, answered
by carol (an op, not an approver), or "approved" by a forged XCom and a task marked successful by hand,
the target stays untouched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.integration.helpers import fingerprints
from tests.mailsink import MailSink
from tests.standalone import Airflow

DAG = "restore_database"
APPROVAL = "approve_production_restore"
HUMAN_PAUSE = 6  # seconds between the request appearing and the answer


def _manifests(stack: Stack) -> set[str]:
    return {k for k in stack.list_keys() if k.startswith("databases/ledger/manifests/")}


def _trigger(airflow: Airflow, user: str, snapshot_id: str) -> str:
    conf = {"database": "ledger", "snapshot": snapshot_id, "target": "pg_ledger_alias",
            "replace_contents": True, "confirm_production": "ledger"}
    run = airflow.api(user, f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})
    return str(run["dag_run_id"])


def _wait(what: str, probe: Any, airflow: Airflow, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}\n{airflow.log_tail()}")


def _states(airflow: Airflow, run_id: str) -> dict[str, str | None]:
    tis = airflow.api("alice", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in tis}


def _wait_for_approval_request(airflow: Airflow, run_id: str) -> dict:
    _wait(f"{run_id} to wait for approval",
          lambda: _states(airflow, run_id).get(APPROVAL) in ("awaiting_input", "deferred"), airflow)
    return dict(airflow.api("alice", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{APPROVAL}/-1/hitlDetails"))


def _respond(airflow: Airflow, user: str, run_id: str, option: str) -> None:
    # Airflow 3.3.2 race, not ours: an answer within a moment of the task parking re-queues it before the
    # executor has reported the parking process's exit, and the scheduler then fails it as "changed
    # externally". People take longer than this to read the request.
    time.sleep(HUMAN_PAUSE)
    airflow.api(user, f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{APPROVAL}/-1/hitlDetails",
                {"chosen_options": [option], "params_input": {}}, method="PATCH")


def _finished(airflow: Airflow, run_id: str) -> str:
    def done() -> str | None:
        state = airflow.api("alice", f"/dags/{DAG}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None
    return str(_wait(f"{run_id} to finish", done, airflow))


@pytest.fixture(scope="module")
def snapshot_then_change(stack: Stack, ledger: Path) -> tuple[str, dict]:
    """A snapshot of ledger, then a row written after it: a restore visibly takes the row away."""
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database

    at_snapshot = fingerprints(stack.pg.connect_kwargs("ledger"))
    taken = snapshot_database(load_config(ledger), "ledger", connections())
    stack.pg.execute("INSERT INTO accounts VALUES (4242, 'written after the snapshot')", "ledger")
    return str(taken["snapshot_id"]), at_snapshot


def test_self_approved_or_rejected_production_restores_leave_the_target_untouched(
    airflow_ui: Airflow, stack: Stack, snapshot_then_change: tuple[str, dict], mail: MailSink
) -> None:
    snapshot_id, _ = snapshot_then_change
    airflow_ui.wait_for_dag(DAG)
    before = (fingerprints(stack.pg.connect_kwargs("ledger")), _manifests(stack))

    self_approved = _trigger(airflow_ui, "alice", snapshot_id)
    rejected = _trigger(airflow_ui, "alice", snapshot_id)
    request = _wait_for_approval_request(airflow_ui, self_approved)
    assert "Restore over PRODUCTION: ledger" in request["subject"]
    assert "alice" in request["body"] and snapshot_id in request["body"]
    _respond(airflow_ui, "alice", self_approved, "Approve")
    _wait_for_approval_request(airflow_ui, rejected)
    _respond(airflow_ui, "bob", rejected, "Reject")

    assert _finished(airflow_ui, self_approved) == "failed"
    states = _states(airflow_ui, self_approved)
    # the approval task itself refuses, from the response Airflow hands it (not from any XCom)
    assert states[APPROVAL] == "failed" and states["safety_snapshot"] == "upstream_failed"
    assert states["restore"] == "upstream_failed"
    assert _finished(airflow_ui, rejected) == "success"  # a rejection is an answer, not a failure
    states = _states(airflow_ui, rejected)
    assert states["safety_snapshot"] == "skipped" and states["restore"] == "skipped"

    assert (fingerprints(stack.pg.connect_kwargs("ledger")), _manifests(stack)) == before
    # the refusal is the failure alert ops receive: one mail, naming the task and why
    refused = [m for _, m in mail.received(at_least=1, timeout=30)
               if f"restore_database.{APPROVAL}" in m["Subject"]]
    assert len(refused) == 1, [m["Subject"] for _, m in mail.received()]
    assert "alice triggered this restore and cannot approve it" in refused[0]["Subject"]


def test_production_restore_approved_by_a_second_person_runs_after_a_safety_snapshot(
    airflow_ui: Airflow, stack: Stack, snapshot_then_change: tuple[str, dict]
) -> None:
    snapshot_id, at_snapshot = snapshot_then_change
    airflow_ui.wait_for_dag(DAG)
    manifests = _manifests(stack)
    run_id = _trigger(airflow_ui, "alice", snapshot_id)
    _wait_for_approval_request(airflow_ui, run_id)
    assert fingerprints(stack.pg.connect_kwargs("ledger")) != at_snapshot  # nothing before the approval
    _respond(airflow_ui, "bob", run_id, "Approve")

    assert _finished(airflow_ui, run_id) == "success", _states(airflow_ui, run_id)
    assert fingerprints(stack.pg.connect_kwargs("ledger")) == at_snapshot
    safety = airflow_ui.api("alice", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/safety_snapshot/xcomEntries/"
                            "return_value")["value"]
    assert safety["approved_by"] == "bob"
    new = _manifests(stack) - manifests
    assert [k.rsplit("/", 1)[1].removesuffix(".json") for k in new] == [safety["safety_snapshot"]]


def test_a_user_who_is_not_an_approver_cannot_answer(
    airflow_ui: Airflow, stack: Stack, snapshot_then_change: tuple[str, dict]
) -> None:
    from tests.standalone import request

    snapshot_id, _ = snapshot_then_change
    airflow_ui.wait_for_dag(DAG)
    before = fingerprints(stack.pg.connect_kwargs("ledger"))
    run_id = _trigger(airflow_ui, "alice", snapshot_id)
    details = _wait_for_approval_request(airflow_ui, run_id)
    assert sorted(u["id"] for u in details["assigned_users"]) == ["alice", "bob"]  # restore.approvers
    time.sleep(HUMAN_PAUSE)
    status, body = request(
        f"{airflow_ui.base}/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/{APPROVAL}/-1/hitlDetails",
        token=airflow_ui.token("carol"), body={"chosen_options": ["Approve"], "params_input": {}}, method="PATCH")
    assert status == 403, body
    assert _states(airflow_ui, run_id)[APPROVAL] in ("awaiting_input", "deferred")  # still waiting
    _respond(airflow_ui, "bob", run_id, "Reject")
    assert _finished(airflow_ui, run_id) == "success"
    assert fingerprints(stack.pg.connect_kwargs("ledger")) == before


def test_a_forged_approval_xcom_and_a_task_marked_successful_by_hand_are_refused(
    airflow_ui: Airflow, stack: Stack, snapshot_then_change: tuple[str, dict]
) -> None:
    snapshot_id, _ = snapshot_then_change
    airflow_ui.wait_for_dag(DAG)
    before = (fingerprints(stack.pg.connect_kwargs("ledger")), _manifests(stack))
    run_id = _trigger(airflow_ui, "alice", snapshot_id)
    _wait_for_approval_request(airflow_ui, run_id)
    base = f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{APPROVAL}"
    # what an approval looks like, written by alice through the REST API, as if bob had approved
    forged = {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": {"id": "bob", "name": "bob"},
              "approved_by": "bob", "subject": "anything", "key_id": "k-test-1", "mac": "0" * 64}
    airflow_ui.api("alice", f"{base}/xcomEntries", {"key": "return_value", "value": forged, "map_index": -1})
    airflow_ui.api("alice", base, {"new_state": "success"}, method="PATCH")
    assert _finished(airflow_ui, run_id) == "failed"
    states = _states(airflow_ui, run_id)
    assert states[APPROVAL] == "success" and states["safety_snapshot"] == "failed", states
    assert states["restore"] == "upstream_failed"
    assert "does not authenticate (not written by the approval task" in airflow_ui.task_log(
        DAG, run_id, "safety_snapshot")
    assert (fingerprints(stack.pg.connect_kwargs("ledger")), _manifests(stack)) == before
