"""Failure alerts: every task of every DAG has the notifier; a real run emails a real SMTP server once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strongroom.tasks import on_task_failure
from tests.conftest import ROOT, Stack, write_config
from tests.mailsink import MailSink
from tests.webhooksink import TOKEN as SLACK_TOKEN
from tests.webhooksink import WebhookSink

DAGS = ROOT / "dags"
PROBES = ROOT / "tests" / "dags" / "probes"
EXAMPLE = ROOT / "include" / "config" / "strongroom.example.yaml"
ONCALL = ["oncall@example.test", "backup-team@example.test"]


def _alerting_config(tmp_path: Path, **overrides: object) -> Path:
    return write_config(tmp_path / "alerts.yaml",
                        alerts={"email_to": ONCALL, "smtp_conn_id": "smtp_alerts"}, **overrides)


def test_every_task_of_every_dag_alerts_on_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRONGROOM_CONFIG", str(EXAMPLE))
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert len(bag.dags) == len(list(DAGS.glob("*.py")))
    for dag in bag.dags.values():
        assert dag.tasks, dag.dag_id
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert callbacks.count(on_task_failure) == 1, f"{dag.dag_id}.{task.task_id} has no failure alert"


def _probe_dag(monkeypatch: pytest.MonkeyPatch, retries: int):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("PROBE_RETRIES", str(retries))
    # dag.test() syncs the DAG's bundle to the metadata DB: the probe's folder is a second bundle
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": "dags-folder", "classpath": local, "kwargs": {"path": str(DAGS)}},
        {"name": "probes", "classpath": local, "kwargs": {"path": str(PROBES)}},
    ]))
    bag = DagBag(dag_folder=str(PROBES / "alert_probe.py"))
    assert bag.import_errors == {}
    return bag.dags["alert_probe"]


def test_task_failing_after_retries_alerts_exactly_once(
    stack: Stack, airflow_db: None, mail: MailSink, slack: WebhookSink, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.utils.state import DagRunState

    path = write_config(tmp_path / "alerts.yaml", alerts={"email_to": ONCALL, "smtp_conn_id": "smtp_alerts",
                                                          "slack_conn_id": "slack_alerts"})
    monkeypatch.setenv("STRONGROOM_CONFIG", str(path))
    mail.clear()
    slack.clear()
    run = _probe_dag(monkeypatch, retries=1).test(logical_date=None)
    assert run.state == DagRunState.FAILED
    [failed] = [ti for ti in run.get_task_instances() if ti.task_id == "copy"]
    assert failed.state == "failed" and failed.try_number == 2  # it did retry

    messages = mail.received(at_least=1)
    assert len(messages) == 1, [m["Subject"] for _, m in messages]  # not one per attempt, none for `fine`
    recipients, message = messages[0]
    assert sorted(recipients) == sorted(ONCALL)
    subject = message["Subject"]
    assert "alert_probe.copy" in subject and "shop" in subject and "eu-west-1" in subject
    assert "StorageError: bucket sr-x unreachable: connect timeout" in subject
    body = MailSink.body(message)
    for fact in ("alert_probe", "copy", "shop", "eu-west-1", "bucket sr-x unreachable", "attempts"):
        assert fact in body
    assert "second line" not in subject + body
    assert f"/dags/alert_probe/runs/{run.run_id.replace('+', '%2B').replace(':', '%3A')}" in body
    assert "/tasks/copy/mapped/0" in body

    # the same alert, once, through the slack provider's webhook notifier to the connection's endpoint
    posts = slack.received(at_least=1)
    assert len(posts) == 1, posts
    path, payload = posts[0]
    assert path == f"/services/{SLACK_TOKEN}"
    text = payload["text"]
    for fact in ("alert_probe", "copy", "shop", "eu-west-1", "bucket sr-x unreachable", "/tasks/copy/mapped/0"):
        assert fact in text
    assert "second line" not in text and SLACK_TOKEN not in text + body


def test_snapshot_dag_with_a_broken_connection_alerts(
    stack: Stack, airflow_db: None, mail: MailSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real DAG: a database whose server refuses connections alerts for its snapshot task and for
    check_regions (which names what is missing); nothing else alerts."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_PG_BROKEN", "postgresql://postgres:x@127.0.0.1:1/nowhere")
    path = _alerting_config(tmp_path, databases=[{"name": "broken", "postgres_conn_id": "pg_broken"}])
    monkeypatch.setenv("STRONGROOM_CONFIG", str(path))
    dag = DagBag(dag_folder=str(DAGS / "snapshot_databases.py")).dags["snapshot_databases"]
    mail.clear()
    run = dag.test(logical_date=None)
    # (the run itself ends "success": its leaf, prune, runs all_done and succeeds; the alerts carry it)
    failed = sorted(ti.task_id for ti in run.get_task_instances() if ti.state == "failed")
    subjects = sorted(m["Subject"] for _, m in mail.received(at_least=len(failed)))
    assert failed == ["check_regions", "snapshot_and_encrypt.127_0_0_1_1"]  # the dump task of its server
    assert len(subjects) == 2, subjects
    assert "snapshot_databases.snapshot_and_encrypt.127_0_0_1_1 [broken]" in subjects[1]
    assert "snapshot_databases.check_regions" in subjects[0] and "broken" in subjects[0]
    for _, message in mail.received():
        assert stack.pg.password not in MailSink.body(message) + message["Subject"]
