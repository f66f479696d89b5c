"""
### Backup monitor: is every database backed up, restorable and restore-tested?

Every 10 minutes this DAG reads the catalog **from the buckets themselves** (not from Airflow's database,
which may be what broke) and emails on-call (`alerts.email_to`; Slack too when `alerts.slack_conn_id` is
set) when:

| condition | means | first thing to do |
|---|---|---|
| **stale** | a database's newest *committed* snapshot in a region is older than `alerts.staleness_threshold` (default 75m), or there is none | open `snapshot_databases`' latest run: `check_regions` names the missing database/region and why |
| **unreachable** | a region's bucket could not be read | check that region's S3 endpoint/credentials; the other regions still hold the snapshots |
| **missing key** | a committed snapshot needs a key id the keyring no longer holds | restore the key from escrow (`docs/keys.md`) before that snapshot is needed; `strongroom keys check` lists them |
| **pools** | an Airflow pool the DAGs use is missing (its tasks are never scheduled) or sized unlike the configuration | run `strongroom init-airflow` (it needs the `pools.api_conn_id` connection) |
| **restore failed / overdue** | the newest restore test failed, or none ran within a day plus `restore_test.rto` | read the `restore_test` run's log and the result under `restore-tests/<database>/` (Backups page links its Data Docs) |

One email lists every condition due. A condition that persists alerts again **at most once an hour**
(the last-alert times live in the primary bucket, `status/monitor.json`); a cleared one is forgotten, so a
recurrence alerts at once. The task itself succeeds after alerting: it fails (and alerts through the
failure notifier) only when it cannot check or cannot deliver the alert, and then the next run retries.

Same view by hand, without Airflow: `strongroom status` and `strongroom keys check`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, task

from strongroom.alerts import task_defaults


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

    check_backups()


backup_monitor()
