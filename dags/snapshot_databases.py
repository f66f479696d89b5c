"""
### Hourly database snapshots, in every EU region

**What:** every hour, one consistent, encrypted snapshot of each configured database, copied to every
region, verified there and committed region by region; then snapshots past the retention are deleted.

**Platform point:** `record_platform_point` records in every region which snapshot of each database and
which object point of each bucket belong to this hour (`strongroom points`; `strongroom recover` restores
one), naming what a region lacks.

**When it fails:** read `check_regions`' log: it names each missing database and region and why. The next
run repairs gaps from a healthy region. Errors a retry cannot fix (configuration, key, integrity) fail at
once. At 3 a.m.: `strongroom status`. A run still going after `snapshot.deadline` sends "DEADLINE MISSED".

Details (every task, deadline, retries): `docs/operations.md`, section "snapshot_databases".
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import (
    CronTriggerTimetable,
    DeadlineAlert,
    DeadlineReference,
    SyncCallback,
    TaskGroup,
    dag,
    get_current_context,
    task,
    task_group,
)

from strongroom.airflow_adapter import database_servers
from strongroom.config import load_config
from strongroom.pools import PRUNE_POOL, dump_pool, slug
from strongroom.progress import duration_text
from strongroom.tasks import task_defaults

CONFIG = load_config()  # a local file read at parse time: an invalid file shows as an import error
DATABASES = [db.name for db in CONFIG.databases]
# one dump task per source server, each in that server's pool (a mapped task has one pool for all its
# map indexes): no more than `pools.dumps_per_server` dumps against one server, whatever the worker count
SERVERS: dict[str, list[str]] = {}
for _db, _server in database_servers(CONFIG).items():
    SERVERS.setdefault(_server, []).append(_db)
DUMPS = {  # database -> where its snapshot_and_encrypt result is: (task id, map index)
    db: (f"snapshot_and_encrypt.{slug(server)}", index)
    for server, dbs in SERVERS.items()
    for index, db in enumerate(dbs)
}
TARGETS = [
    {"database": db, "dump_task": DUMPS[db][0], "dump_index": DUMPS[db][1], "region": region.name}
    for db in DATABASES
    for region in CONFIG.regions
]


def _label(**values: str) -> None:
    """Values for map_index_template, so the UI shows 'shop' or 'shop → eu-west-1' per instance."""
    get_current_context().update(values)  # type: ignore[typeddict-item]


@dag(
    dag_id="snapshot_databases",
    schedule=CronTriggerTimetable(CONFIG.snapshot.schedule, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=CONFIG.snapshot.run_timeout,
    doc_md=__doc__,
    tags=["strongroom", "backup", "postgres"],
    # alerts while the run is still going, before dagrun_timeout kills it (runs on the executor)
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=CONFIG.snapshot.deadline_interval,
        callback=SyncCallback("strongroom.airflow_adapter.notify_deadline_missed",
                              kwargs={"budget": duration_text(CONFIG.snapshot.deadline_interval)}),
    ) if CONFIG.snapshot.deadline_interval else None,
    default_args=task_defaults(retries=CONFIG.snapshot.retries, retry_delay=CONFIG.snapshot.retry_delay,
                               backoff=True, execution_timeout=CONFIG.snapshot.run_timeout),
)
def snapshot_databases() -> None:
    @task(map_index_template="{{ database }}")
    def snapshot_and_encrypt(database: str) -> dict[str, Any]:
        """Dump, compress, encrypt and upload one database; returns the snapshot id (not yet committed)."""
        from strongroom import airflow_adapter, metrics, snapshot

        _label(database=database)
        retry = get_current_context()["ti"].try_number > 1  # an earlier try may have died mid-upload
        result = airflow_adapter.run_task(
            snapshot.take_snapshot, load_config(), database, airflow_adapter.connections(), retry=retry
        ).to_dict()
        airflow_adapter.emit_metrics(metrics.snapshot_metrics(result))
        return result

    @task_group(group_id="region")
    def region_chain(target: dict[str, Any]) -> None:
        @task(trigger_rule="all_done", map_index_template="{{ label }}")
        def replicate(target: dict[str, Any]) -> dict[str, Any]:
            """Copy this run's snapshot (and any gap) into the region."""
            from strongroom import airflow_adapter, replication

            _label(label=f"{target['database']} → {target['region']}")
            ti = get_current_context()["ti"]
            landed = ti.xcom_pull(task_ids=target["dump_task"], map_indexes=target["dump_index"])
            this_run = replication.SnapshotRef(landed["snapshot_id"], landed["region"]) if landed else None
            refs = airflow_adapter.run_task(
                replication.replicate_region, load_config(), target["database"], target["region"],
                airflow_adapter.connections(), this_run,
            )
            return dict(target, snapshots=[ref.to_dict() for ref in refs])

        @task(map_index_template="{{ label }}")
        def verify(copied: dict[str, Any]) -> dict[str, Any]:
            """Read the region's bytes back and check them against the manifest."""
            from strongroom import airflow_adapter, replication

            _label(label=f"{copied['database']} → {copied['region']}")
            refs = [replication.SnapshotRef.from_dict(r) for r in copied["snapshots"]]
            airflow_adapter.run_task(
                replication.verify_region, load_config(), copied["database"], copied["region"],
                airflow_adapter.connections(), refs,
            )
            return copied

        @task(map_index_template="{{ label }}")
        def commit(verified: dict[str, Any]) -> dict[str, Any]:
            """Write the region's own manifest: the snapshot now exists in this region."""
            from strongroom import airflow_adapter, replication

            _label(label=f"{verified['database']} → {verified['region']}")
            refs = [replication.SnapshotRef.from_dict(r) for r in verified["snapshots"]]
            committed = airflow_adapter.run_task(
                replication.commit_region, load_config(), verified["database"], verified["region"],
                airflow_adapter.connections(), refs,
            )
            return {"database": verified["database"], "region": verified["region"], "committed": committed}

        commit(verify(replicate(target)))

    @task(trigger_rule="all_done")
    def check_regions() -> dict[str, Any]:
        """Fail the run naming every database and region that did not commit this run's snapshot."""
        from strongroom import airflow_adapter, replication

        ti = get_current_context()["ti"]
        runs = {}
        for database, (task_id, index) in DUMPS.items():
            landed = ti.xcom_pull(task_ids=task_id, map_indexes=index)
            runs[database] = replication.SnapshotRef(landed["snapshot_id"], landed["region"]) if landed else None
        report = replication.check_run(load_config(), airflow_adapter.connections(), runs)
        if not report.ok:  # no retry: the region tasks already had theirs; one line, no traceback
            airflow_adapter.fail_task(report.summary())
        return {"results": report.results}

    @task(trigger_rule="all_done", pool=PRUNE_POOL)  # one prune at a time, with backup_object_storage's
    def prune() -> dict[str, Any]:
        """Delete every snapshot older than the retention, in every region, each region on its own."""
        from strongroom import airflow_adapter, retention

        results = airflow_adapter.run_task(retention.prune_all, load_config(), airflow_adapter.connections())
        return {"regions": [{"region": r["region"], "summary": r["summary"], "removed": r["removed"]}
                            for r in results]}

    @task(trigger_rule="all_done")
    def record_platform_point() -> dict[str, Any]:
        """Record in every region which snapshot of each database and which object point of each bucket belong
        to this hour (a platform point), and what each region lacks; it records what IS there, whatever failed."""
        from strongroom import airflow_adapter, recovery

        result = airflow_adapter.run_task(recovery.record_point, load_config(), airflow_adapter.connections())
        return {"point_id": result["point_id"], "spread_seconds": result["spread_seconds"],
                "complete_in": [r for r, s in result["regions"].items() if s["complete"]],
                "incomplete_in": [r for r, s in result["regions"].items() if not s["complete"]],
                "unreachable": sorted(result["unreachable"]),
                "repaired": {region: len(ids) for region, ids in result["repaired"].items()},
                "repair_failed": result["repair_failed"]}

    with TaskGroup("snapshot_and_encrypt", tooltip="one dump task per source server, in its pool") as snapshots:
        for server, databases in SERVERS.items():
            snapshot_and_encrypt.override(task_id=slug(server), pool=dump_pool(server)).expand(database=databases)
    chains = region_chain.expand(target=TARGETS)
    # three leaves: check_regions fails the run when a region missed it, even though prune (which runs whatever
    # happened upstream: deletion never waits for an outage elsewhere) and record_platform_point (which records
    # what the commits left, whatever failed) succeed. The point does not wait for check_regions: a task
    # downstream of it would be the leaf that decides the run's state, and would hide the missing region
    snapshots >> chains >> [check_regions(), prune(), record_platform_point()]


snapshot_databases()
