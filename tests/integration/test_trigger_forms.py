"""The manual DAGs' trigger forms as ops use them: headless Chromium against a real `airflow standalone`.

Each case opens the DAG's Trigger form, changes only what the case needs, clicks Trigger and follows the
run through the REST API. Runs share the session's standalone (tests/standalone.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.browser import Chromium
from tests.conftest import PRIMARY, ROOT, UI_REVIEW, UI_SOURCE, Stack
from tests.standalone import PASSWORDS, Airflow

ARTIFACTS = ROOT / "tests" / "artifacts"
OBJECTS = {f"invoices/{i}.pdf": f"invoice {i} of a customer".encode() for i in range(3)}


@pytest.fixture(scope="module")
def source_point(stack: Stack, ledger: Path) -> str:
    """The object source of the standalone's configuration, backed up once: its point's time."""
    from strongroom import objects
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config

    existing = {b["Name"] for b in stack.client.list_buckets()["Buckets"]}
    if UI_SOURCE not in existing:
        stack.servers[PRIMARY].create_bucket(UI_SOURCE, PRIMARY)
    for key, body in OBJECTS.items():
        stack.client.put_object(Bucket=UI_SOURCE, Key=key, Body=body)
    objects.backup_pass(load_config(ledger), UI_SOURCE, connections())
    _, index = objects.point_at(load_config(ledger), connections(), UI_SOURCE, None)
    return index.taken_at.isoformat()


@pytest.fixture(scope="module")
def browser(airflow_ui: Airflow) -> Iterator[Chromium]:
    """Chromium logged in as alice (op)."""
    chromium = Chromium().start()
    try:
        chromium.goto(f"{airflow_ui.base}/auth/login?next=/dags")
        chromium.wait_for("!!document.querySelector('input[name=username]')")
        chromium.type_into("input[name=username]", "alice")
        chromium.type_into("input[name=password]", PASSWORDS["alice"])
        chromium.evaluate("document.querySelector('button[type=submit]').click()")
        chromium.wait_for("location.pathname === '/dags'")
        yield chromium
    finally:
        chromium.stop()


def _runs(airflow: Airflow, dag_id: str) -> set[str]:
    return {r["dag_run_id"] for r in airflow.api("alice", f"/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]}


def open_form(browser: Chromium, airflow: Airflow, dag_id: str) -> None:
    airflow.wait_for_dag(dag_id)
    browser.goto(f"{airflow.base}/dags/{dag_id}")
    browser.wait_for("!!document.querySelector('[data-testid=trigger-dag-button]')", timeout=60)
    browser.evaluate("document.querySelector('[data-testid=trigger-dag-button]').click()")
    browser.wait_for("!!document.querySelector('[data-testid=trigger-dag-submit]')")
    browser.wait_for("!!document.querySelector('[name=element_region]')")  # the params are rendered


def submit_enabled(browser: Chromium) -> bool:
    return not browser.evaluate("document.querySelector('[data-testid=trigger-dag-submit]').disabled")


def trigger(browser: Chromium, airflow: Airflow, dag_id: str, shot: str) -> str:
    """Click Trigger; the id of the run it created."""
    before = _runs(airflow, dag_id)
    browser.wait_for("!document.querySelector('[data-testid=trigger-dag-submit]').disabled")
    browser.screenshot(ARTIFACTS / f"{shot}.png")
    browser.evaluate("document.querySelector('[data-testid=trigger-dag-submit]').click()")
    deadline = time.monotonic() + 60
    while not (new := _runs(airflow, dag_id) - before):
        if time.monotonic() > deadline:
            browser.screenshot(ARTIFACTS / f"{shot}-failure.png")
            raise AssertionError(f"no run created; page: {browser.text()[:800]}")
        time.sleep(0.5)
    assert len(new) == 1, new
    return new.pop()


def finished(airflow: Airflow, dag_id: str, run_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = airflow.api("alice", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            return str(state)
        time.sleep(1)
    raise AssertionError(f"{dag_id} {run_id} did not finish\n{airflow.log_tail()}")


def states(airflow: Airflow, dag_id: str, run_id: str) -> dict[str, Any]:
    tis = airflow.api("alice", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in tis}


def xcom(airflow: Airflow, dag_id: str, run_id: str, task_id: str) -> Any:
    return airflow.api("alice", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
                       "return_value")["value"]


def test_restore_database_form_with_its_defaults_restores_into_a_new_sandbox_each_time(
    airflow_ui: Airflow, browser: Chromium, stack: Stack
) -> None:
    from strongroom import restore

    made = []
    for attempt in range(2):  # the same snapshot twice: two sandboxes, no "exists already"
        open_form(browser, airflow_ui, "restore_database")
        run_id = trigger(browser, airflow_ui, "restore_database", f"form-restore-database-{attempt}")
        assert finished(airflow_ui, "restore_database", run_id) == "success", states(
            airflow_ui, "restore_database", run_id)
        made.append(xcom(airflow_ui, "restore_database", run_id, "restore"))
        name = made[-1]["target"].rsplit("/", 1)[-1]
        assert name.endswith("_" + restore.run_suffix(run_id))  # named after the run too (its result says so)
    names = [m["target"].rsplit("/", 1)[-1] for m in made]
    assert names[0] != names[1] and all(n.startswith("shop_") for n in names), names
    assert made[0]["snapshot_id"] == made[1]["snapshot_id"]
    for name in names:
        assert stack.database_exists(name)
        stack.pg.execute(f'DROP DATABASE "{name}"')


def test_restore_objects_form_with_its_defaults_restores_the_newest_point_into_the_review_bucket(
    airflow_ui: Airflow, browser: Chromium, stack: Stack, source_point: str
) -> None:
    assert UI_REVIEW not in {b["Name"] for b in stack.client.list_buckets()["Buckets"]}  # created on demand
    open_form(browser, airflow_ui, "restore_objects")
    run_id = trigger(browser, airflow_ui, "restore_objects", "form-restore-objects")
    assert finished(airflow_ui, "restore_objects", run_id) == "success", states(airflow_ui, "restore_objects", run_id)
    done = xcom(airflow_ui, "restore_objects", run_id, "restore")
    assert done["target"] == UI_REVIEW and done["point"] == source_point and done["objects"] == len(OBJECTS)
    assert done["prefix"].startswith(f"{UI_SOURCE}/") and done["prefix"].endswith("/")
    for key, body in OBJECTS.items():
        got = stack.client.get_object(Bucket=UI_REVIEW, Key=done["prefix"] + key)["Body"].read()
        assert got == body
    assert states(airflow_ui, "restore_objects", run_id)["approve_in_place_restore"] == "skipped"


def test_an_invalid_entry_shows_its_message_in_the_form_and_creates_no_run(
    airflow_ui: Airflow, browser: Chromium
) -> None:
    open_form(browser, airflow_ui, "restore_database")
    before = _runs(airflow_ui, "restore_database")
    browser.evaluate("document.querySelector('#element_snapshot').select()")
    browser.type_into("#element_snapshot", "yesterday")
    browser.evaluate("document.querySelector('[data-testid=trigger-dag-submit]').click()")
    try:  # Airflow checks the schema (the pattern) when Trigger is clicked and shows the error in the form
        message = browser.wait_for(
            "document.querySelector('[data-testid=error-alert]')?.innerText")
    except TimeoutError:
        (ARTIFACTS / "form-invalid-failure.html").write_text(browser.evaluate("document.body.outerHTML"))
        browser.screenshot(ARTIFACTS / "form-invalid-failure.png")
        raise
    browser.screenshot(ARTIFACTS / "form-invalid-entry.png")
    assert "Invalid input for param snapshot: 'yesterday' does not match" in message, message
    assert browser.evaluate("!!document.querySelector('[data-testid=trigger-dag-submit]')")  # the form stays open
    time.sleep(3)
    assert _runs(airflow_ui, "restore_database") == before


def test_recover_platform_form_checks_the_point_and_refuses_before_anything_is_touched(
    airflow_ui: Airflow, browser: Chromium
) -> None:
    """The recovery's form: a point that is not a point id is refused in the form (no run); a well-formed
    point that was never recorded fails `plan` with one line, before any target is looked at."""
    open_form(browser, airflow_ui, "recover_platform")
    for name in ("point", "confirm_production"):
        assert browser.evaluate(f"!!document.querySelector('[name=element_{name}]')"), name
    assert "Point in time" in browser.text()  # `at`: a date-time picker
    before = _runs(airflow_ui, "recover_platform")
    browser.type_into("#element_point", "newest")
    browser.evaluate("document.querySelector('[data-testid=trigger-dag-submit]').click()")
    message = browser.wait_for("document.querySelector('[data-testid=error-alert]')?.innerText")
    browser.screenshot(ARTIFACTS / "form-recover-platform-invalid.png")
    assert "Invalid input for param point: 'newest' does not match" in message, message
    time.sleep(3)
    assert _runs(airflow_ui, "recover_platform") == before

    open_form(browser, airflow_ui, "recover_platform")
    browser.type_into("#element_point", "20010101T000000Z-abcdef")
    run_id = trigger(browser, airflow_ui, "recover_platform", "form-recover-platform-unknown-point")
    assert finished(airflow_ui, "recover_platform", run_id) == "failed"
    tasks = states(airflow_ui, "recover_platform", run_id)
    assert tasks["plan"] == "failed" and tasks["recover"] in ("upstream_failed", "skipped", None), tasks
    log = airflow_ui.task_log("recover_platform", run_id, "plan")
    assert "platform point 20010101T000000Z-abcdef" in log, log[-2000:]


def test_a_choice_that_does_not_exist_fails_the_first_task_listing_the_choices(
    airflow_ui: Airflow, browser: Chromium
) -> None:
    open_form(browser, airflow_ui, "restore_database")
    browser.evaluate("document.querySelector('#element_snapshot').select()")
    browser.type_into("#element_snapshot", "2001-01-01T00:00:00+00:00")  # valid in shape, before any snapshot
    run_id = trigger(browser, airflow_ui, "restore_database", "form-restore-database-too-early")
    assert finished(airflow_ui, "restore_database", run_id) == "failed"
    tasks = states(airflow_ui, "restore_database", run_id)
    assert tasks["plan"] == "failed" and tasks["restore"] in ("upstream_failed", "skipped", None), tasks
    log = airflow_ui.task_log("restore_database", run_id, "plan")
    line = next(x for x in log.splitlines() if "no snapshot of shop taken at or before 2001-01-01" in x)
    assert "choose from: " in line and line.count("Z-") >= 1, line  # the snapshot ids, in the same line


def choose(browser: Chromium, name: str, option: str) -> None:
    """Pick ``option`` in the form's drop-down ``name`` as a person does: type it, press Enter."""
    browser.evaluate(f"document.querySelector('#element_{name} input').focus()")
    browser.send("Input.insertText", text=option)
    browser.wait_for(f"[...document.querySelectorAll('[id^=react-select][id*=option]')]"
                     f".some(e => e.innerText.trim() === {json.dumps(option)})")
    for kind in ("keyDown", "keyUp"):
        browser.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
    browser.wait_for(f"document.querySelector('[name=element_{name}]').value === {json.dumps(option)}")


def respond(airflow: Airflow, user: str, dag_id: str, run_id: str, task_id: str, option: str) -> None:
    deadline = time.monotonic() + 180
    while states(airflow, dag_id, run_id).get(task_id) not in ("awaiting_input", "deferred"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{task_id} never waited for an answer: {states(airflow, dag_id, run_id)}")
        time.sleep(1)
    time.sleep(6)  # Airflow 3.3.2 race on an instant answer (see test_restore_approval.py)
    airflow.api(user, f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
                {"chosen_options": [option], "params_input": {}}, method="PATCH")


def test_only_configured_object_targets_can_be_chosen(airflow_ui: Airflow, stack: Stack, source_point: str) -> None:
    from tests.standalone import request

    airflow_ui.wait_for_dag("restore_objects")
    before = _runs(airflow_ui, "restore_objects")
    for bucket in ("sr-test-eu-central-1", UI_SOURCE, "someone-elses-bucket"):  # backup, source, foreign
        status, body = request(f"{airflow_ui.base}/api/v2/dags/restore_objects/dagRuns",
                               token=airflow_ui.token("alice"), body={"logical_date": None, "conf": {"target": bucket}})
        assert status == 400 and b"Invalid input for param target" in body, (bucket, body)
    # the old free-text field is gone: a bucket given under its name is not a target
    status, body = request(f"{airflow_ui.base}/api/v2/dags/restore_objects/dagRuns", token=airflow_ui.token("alice"),
                           body={"logical_date": None, "conf": {"target_bucket": "sr-test-eu-central-1"}})
    run_id = json.loads(body).get("dag_run_id") if status < 300 else None
    if run_id:  # Airflow keeps unknown conf keys; the run must still restore into the review bucket
        assert finished(airflow_ui, "restore_objects", run_id) == "success"
        assert xcom(airflow_ui, "restore_objects", run_id, "restore")["target"] == UI_REVIEW
        before.add(run_id)
    assert _runs(airflow_ui, "restore_objects") == before


def test_in_place_object_restore_needs_the_name_typed_and_an_approvers_approval(
    airflow_ui: Airflow, browser: Chromium, stack: Stack, source_point: str
) -> None:
    lost = "invoices/1.pdf"
    stack.client.delete_object(Bucket=UI_SOURCE, Key=lost)  # the live object deleted by mistake
    # in place without the name typed: the first task fails, naming the field; nothing is written
    open_form(browser, airflow_ui, "restore_objects")
    choose(browser, "target", "in_place")
    refused = trigger(browser, airflow_ui, "restore_objects", "form-restore-objects-in-place-unconfirmed")
    assert finished(airflow_ui, "restore_objects", refused) == "failed"
    assert states(airflow_ui, "restore_objects", refused)["plan"] == "failed"
    assert f"confirm_source: restoring in place overwrites the live bucket {UI_SOURCE}" in airflow_ui.task_log(
        "restore_objects", refused, "plan")
    assert "Contents" not in stack.client.list_objects_v2(Bucket=UI_SOURCE, Prefix=lost)

    # with the name typed, the run waits for one of restore.approvers (not alice, who triggered it)
    open_form(browser, airflow_ui, "restore_objects")
    choose(browser, "target", "in_place")
    browser.type_into("#element_confirm_source", UI_SOURCE)
    run_id = trigger(browser, airflow_ui, "restore_objects", "form-restore-objects-in-place")
    respond(airflow_ui, "bob", "restore_objects", run_id, "approve_in_place_restore", "Approve")
    assert finished(airflow_ui, "restore_objects", run_id) == "success", states(airflow_ui, "restore_objects", run_id)
    done = xcom(airflow_ui, "restore_objects", run_id, "restore")
    assert done["target"] == UI_SOURCE and done["prefix"] == ""
    assert stack.client.get_object(Bucket=UI_SOURCE, Key=lost)["Body"].read() == OBJECTS[lost]


def test_the_library_refuses_a_backup_bucket_or_another_source_as_an_object_target(
    stack: Stack, ledger: Path, source_point: str, tmp_path: Path
) -> None:
    """What the CLI (break-glass, free-text --target-bucket) and any caller of restore_point get."""
    from strongroom import objects
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.errors import NotFoundError, RefusedError
    from tests.conftest import BUCKET, conn_id, write_config

    config = load_config(write_config(tmp_path / "two-sources.yaml", object_storage=[
        {"bucket": UI_SOURCE, "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY},
        {"bucket": "sr-ui-other-source", "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}]))
    conns = connections()
    before = stack.list_keys()
    for bucket, message in ((BUCKET, "is the backup bucket of region eu-central-1"),
                            ("sr-ui-other-source", "is the live source bucket sr-ui-other-source"),
                            (UI_SOURCE, "the target is the live source bucket")):
        target = conns.bucket_store(conn_id(PRIMARY), bucket, PRIMARY, config.transfer)
        with pytest.raises(RefusedError, match=message):
            objects.restore_point(config, conns, UI_SOURCE, None, target)
    assert stack.list_keys() == before  # nothing written into the backup bucket
    with pytest.raises(RefusedError, match=r"'nosuch' is not a configured object restore target \(choose from: "):
        objects.choose_target(load_config(ledger), UI_SOURCE, "nosuch", None)
    with pytest.raises(NotFoundError, match=r"no point of sr-ui-uploads at or before 2001-01-01.*\(choose from: 20"):
        objects.point_at(load_config(ledger), conns, UI_SOURCE, datetime(2001, 1, 1, tzinfo=UTC), PRIMARY)
