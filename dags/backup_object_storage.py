"""
### Hourly object-storage backups

**What:** every hour, an incremental pass over each `object_storage` source bucket: new object versions
are encrypted into every region and a point index is committed; points past the retention are pruned.

**After each pass:** every region that answers gets each point of the window that another region holds
and it lacks (a pass it missed while down), with the contents that point references: the index last.

**When it fails:** the error names each region whose point was not committed or whose repair stopped; the
other regions committed. The next pass resumes where it stopped and copies the missed point into the
region once it answers. At 3 a.m.: `strongroom status`, `strongroom objects list --bucket NAME`.

Details (tasks, pruning): `docs/operations.md`, section "backup_object_storage".
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from strongroom.config import load_config
from strongroom.pools import OBJECT_POOL, PRUNE_POOL
from strongroom.tasks import task_defaults

CONFIG = load_config()
SOURCES = [s.bucket for s in CONFIG.object_storage]


@dag(
    dag_id="backup_object_storage",
    schedule=CronTriggerTimetable(CONFIG.object_backup.schedule, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=CONFIG.object_backup.run_timeout,
    doc_md=__doc__,
    tags=["strongroom", "backup", "object-storage"],
    default_args=task_defaults(retries=CONFIG.object_backup.retries, retry_delay=CONFIG.object_backup.retry_delay,
                               backoff=True, execution_timeout=CONFIG.object_backup.run_timeout),
)
def backup_object_storage() -> None:
    @task(map_index_template="{{ bucket }}", pool=OBJECT_POOL)  # `strongroom init-airflow` creates the pool
    def backup_pass(bucket: str) -> dict[str, Any]:
        """One incremental pass of one source bucket into every region."""
        from strongroom import airflow_adapter, objects
        from strongroom.errors import ReplicationError

        get_current_context()["bucket"] = bucket  # type: ignore[typeddict-unknown-key]
        result = airflow_adapter.run_task(objects.backup_pass, load_config(), bucket, airflow_adapter.connections())
        if result.failed or result.repair_failed:  # the other regions committed (and were repaired)
            raise ReplicationError(f"{bucket}: " + "; ".join(result.errors()))
        out = {k: v for k, v in result.to_dict().items() if k not in ("failed", "repair_failed")}
        out["repaired"] = {region: len(points) for region, points in result.repaired.items()}
        return out

    @task(pool=PRUNE_POOL)  # one prune at a time, with snapshot_databases'
    def prune() -> dict[str, Any]:
        """Delete points past the retention and the content nothing else references, in every region."""
        from strongroom import airflow_adapter, retention

        results = airflow_adapter.run_task(retention.prune_all, load_config(), airflow_adapter.connections())
        return {"regions": [{"region": r["region"], "summary": r["summary"]} for r in results]}

    # independent leaves: a failed pass fails the run even though prune succeeds (content a running pass has
    # stored but not yet indexed is protected by the object_backup.run_timeout grace)
    backup_pass.expand(bucket=SOURCES)
    prune()


backup_object_storage()
