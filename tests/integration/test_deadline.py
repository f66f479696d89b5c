"""The DeadlineAlert of snapshot_databases, fired for real: a running Airflow (standalone, LocalExecutor
runs the SyncCallback), a deadline of 3 s, and the alert received by the SMTP sink on loopback."""

from __future__ import annotations

import time

from tests.mailsink import MailSink
from tests.standalone import Airflow

DAG = "snapshot_databases"


def test_a_run_past_its_deadline_alerts_once_while_it_runs(airflow_ui: Airflow, mail: MailSink) -> None:
    mail.clear()
    airflow_ui.wait_for_dag(DAG)  # unpausing creates the run of the latest hour (catchup is off)
    try:
        runs: list = []
        deadline = time.monotonic() + 60
        while not runs:
            assert time.monotonic() < deadline, airflow_ui.log_tail()
            runs = airflow_ui.api("alice", f"/dags/{DAG}/dagRuns")["dag_runs"]
            time.sleep(1)
        [run] = runs
        run_id = run["dag_run_id"]
        state = None
        deadline = time.monotonic() + 300
        while state not in ("success", "failed"):
            assert time.monotonic() < deadline, airflow_ui.log_tail()
            time.sleep(1)
            state = airflow_ui.api("alice", f"/dags/{DAG}/dagRuns/{run_id}")["state"]
    finally:
        airflow_ui.pause(DAG)

    found = [m for _, m in mail.received(at_least=1, timeout=30) if "DEADLINE MISSED" in m["Subject"]]
    assert len(found) == 1, [m["Subject"] for _, m in mail.received()]
    subject, body = found[0]["Subject"], MailSink.body(found[0])
    assert subject.startswith(f"[strongroom] DEADLINE MISSED {DAG}: run ")
    assert run_id in subject and "within 3s" in subject
    assert run_id in body and "deadline" in body
    assert f"{airflow_ui.base}/dags/{DAG}/runs/" in body
    # the run itself still did its work: the deadline only alerts
    tis = airflow_ui.api("alice", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert {ti["state"] for ti in tis if ti["task_id"] == "region.commit"} == {"success"}
    # and its task processes sent the snapshot metrics through Airflow's StatsD
    for database in ("shop", "bulk", "ledger"):
        [(size, kind)] = airflow_ui.statsd.values(f"airflow.strongroom.snapshot.stored_bytes.{database}")
        assert kind == "g" and size > 0
