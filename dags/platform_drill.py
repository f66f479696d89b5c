"""
### Platform drill: could we recover everything from one region, within the RTO?

**What:** every week (`recovery.drill_schedule`), the newest complete platform point is recovered from
one region (the next one each time) by the recovery pipeline itself, into throwaway targets (databases
on isolated servers, buckets into new buckets; all removed afterwards). Each database gets the restore
test's checks, each bucket is compared object by object; the total time is measured against `recovery.rto`.

**When it fails:** the last line says which part failed its checks, or that the recovery took longer
than `recovery.rto` and which part was slowest. The evidence is in every region (`platform/drills/`);
the Backups page and `strongroom status` show the last drill. By hand: `strongroom drill`.

Details (what is checked, the evidence): `docs/operations.md`, section "platform_drill".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task

from strongroom.config import load_config
from strongroom.tasks import task_defaults

CONFIG = load_config()


@dag(
    dag_id="platform_drill",
    schedule=CONFIG.recovery.drill_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=CONFIG.recovery.drill_run_timeout,  # also how old a leftover throwaway bucket must be
    doc_md=__doc__,
    tags=["strongroom", "restore-test", "recovery"],
    # a drill over its RTO by an hour is stopped (and alerts); the record of a finished one says by how much
    default_args=task_defaults(execution_timeout=min(CONFIG.recovery.rto + timedelta(hours=1),
                                                     CONFIG.recovery.drill_run_timeout)),
)
def platform_drill() -> None:
    @task
    def drill() -> dict[str, Any]:
        """Recover the newest complete point into throwaway targets, check every part, time it."""
        from datetime import UTC, datetime

        from strongroom import airflow_adapter
        from strongroom import drill as drills

        evidence = airflow_adapter.run_task(drills.run_platform_drill, load_config(), airflow_adapter.connections(),
                                            datetime.now(UTC))
        print(evidence["headline"])
        return airflow_adapter.run_task(drills.require_drill_success, evidence)

    drill()


platform_drill()
