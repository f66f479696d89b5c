"""A DAG for the alert tests: one mapped task that always fails (labelled like a region task), one that
succeeds. Loaded by tests/dags/test_alerts.py only (it is not in the dags folder)."""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task

from strongroom.tasks import on_task_failure


@dag(dag_id="alert_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
     default_args={"retries": int(os.environ.get("PROBE_RETRIES", "1")), "retry_delay": timedelta(seconds=0),
                   "on_failure_callback": [on_task_failure]})
def alert_probe() -> None:
    @task(map_index_template="{{ label }}")
    def copy(target: dict[str, str]) -> None:
        from strongroom.errors import StorageError

        get_current_context()["label"] = f"{target['database']} → {target['region']}"  # type: ignore[typeddict-unknown-key]
        raise StorageError("bucket sr-x unreachable: connect timeout\nsecond line that must not be in the subject")

    @task
    def fine() -> str:
        return "ok"

    copy.expand(target=[{"database": "shop", "region": "eu-west-1"}])
    fine()


alert_probe()
