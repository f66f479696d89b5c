"""
### Backup monitor: is every database backed up, restorable and restore-tested?

**What:** every 10 minutes, first removes expired plaintext copies (sandbox databases, review copies),
then reads the buckets themselves and alerts on-call about stale or missing snapshots, unreachable
regions, missing keys, failed or overdue restore tests and overdue plaintext copies. A condition that
persists alerts again at most once an hour.

**When it fails:** it could not check or not deliver the alert; the next run retries. By hand:
`strongroom status`, `strongroom keys check`.

Details (every condition and what to do first): `docs/operations.md`, section "backup_monitor".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, task

from strongroom.tasks import task_defaults


@dag(
    dag_id="backup_monitor",
    schedule=CronTriggerTimetable("*/10 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=9),
    doc_md=__doc__,
    tags=["strongroom", "monitoring"],
    default_args=task_defaults(retries=1, retry_delay=timedelta(seconds=30),
                               execution_timeout=timedelta(minutes=8)),
)
def backup_monitor() -> None:
    @task
    def expire_plaintext_copies() -> dict[str, Any]:
        """Drop sandbox databases and erase review copies whose snapshot is older than the retention."""
        from strongroom import airflow_adapter, expiry
        from strongroom.config import load_config

        done = airflow_adapter.run_task(expiry.remove_due, load_config(), airflow_adapter.connections())
        print(f"removed {len(done['removed'])} expired plaintext copies, {done['kept']} kept: "
              + ("; ".join(done["removed"]) or "none due"))
        return done

    @task(trigger_rule="all_done")  # the monitor runs (and alerts on what is overdue) even when expiry failed
    def check_backups() -> dict[str, Any]:
        """Read the buckets, alert on what is stale, missing or failed (rate-limited), record the state."""
        from functools import partial

        from strongroom import airflow_adapter, monitor
        from strongroom.config import load_config

        config = load_config()
        return airflow_adapter.run_task(monitor.run_monitor, config, airflow_adapter.connections(),
                                        partial(airflow_adapter.send_alert, config),
                                        observe=airflow_adapter.emit_metrics,
                                        check_pools=partial(airflow_adapter.check_pools, config))

    expire_plaintext_copies() >> check_backups()


backup_monitor()
