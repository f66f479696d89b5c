"""
### Restore tests: is every backup really restorable?

**What:** every day (`restore_test.schedule`), the newest and one random snapshot of each database are
restored from one region (a different one each day) into a throwaway server and validated with Great
Expectations; a sample of each object source is restored and checked too.
A restore test never switches regions: a corrupt copy fails it, on purpose.

**When it fails:** the alert names the database, snapshot, region and failing expectations; the Backups
page links the Data Docs. By hand: `strongroom restore-test`.

Details (tasks, results, Data Docs): `docs/operations.md`, section "restore_test".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from strongroom.config import load_config
from strongroom.tasks import task_defaults

CONFIG = load_config()
DATABASES = [db.name for db in CONFIG.databases]
SOURCES = [s.bucket for s in CONFIG.object_storage]


@dag(
    dag_id="restore_test",
    schedule=CONFIG.restore_test.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=CONFIG.restore_test.rto + timedelta(hours=1),
    doc_md=__doc__,
    tags=["strongroom", "restore-test"],
    default_args=task_defaults(execution_timeout=CONFIG.restore_test.rto),
)
def restore_test() -> None:
    @task
    def teardown_stale_sandboxes() -> dict[str, Any]:
        """Remove throwaway servers left behind by workers that died mid-test."""
        from strongroom import airflow_adapter, sandbox
        from strongroom.errors import IntegrityError

        config, conns = load_config(), airflow_adapter.connections()
        removed, forged = [], []
        for region in config.regions:
            try:
                removed += airflow_adapter.run_task(sandbox.teardown_stale, conns.store(region, config.transfer),
                                                    conns.keyring(config.keyring_conn_id(region)))
            except IntegrityError as exc:  # a lease that does not authenticate: the other regions go on
                forged.append(exc)
        if forged:  # fails the task, which alerts; the restore tests still run
            def refuse() -> None:
                raise IntegrityError(" | ".join(str(e) for e in forged))

            airflow_adapter.run_task(refuse)
        return {"removed": removed}

    @task(map_index_template="{{ database }}", trigger_rule="all_done")
    def restore_and_validate(database: str) -> dict[str, Any]:
        """Restore the chosen snapshots into an isolated server and validate them."""
        from strongroom import airflow_adapter, drill, metrics

        get_current_context()["database"] = database  # type: ignore[typeddict-unknown-key]
        results = airflow_adapter.run_task(drill.run_restore_tests, load_config(), airflow_adapter.connections(),
                                           database=database)
        for result in results:
            airflow_adapter.emit_metrics(metrics.restore_test_metrics(result.to_dict()))
        summary = [{k: r.to_dict()[k] for k in ("snapshot_id", "region", "success", "restore_seconds",
                                                  "snapshot_age_seconds", "result_key")} for r in results]
        airflow_adapter.run_task(drill.require_success, results)
        return {"database": database, "tests": summary}

    @task(map_index_template="{{ bucket }}", trigger_rule="all_done")
    def restore_objects_sample(bucket: str) -> dict[str, Any]:
        """Restore a random sample of objects of the newest point and check them against the point index."""
        import random
        from datetime import UTC, datetime

        from strongroom import airflow_adapter, drill

        get_current_context()["bucket"] = bucket  # type: ignore[typeddict-unknown-key]
        config = load_config()
        region = drill.rotation_region(config, datetime.now(UTC))
        rng = random.Random()  # noqa: S311 - picks a sample to test, not a secret
        result = airflow_adapter.run_task(drill.check_objects, config, airflow_adapter.connections(), bucket,
                                          region, rng)
        airflow_adapter.run_task(drill.require_success, [result])
        return {"bucket": bucket, "region": result.region, "point": result.snapshot_id, "checked": len(result.expectations)}

    cleanup = teardown_stale_sandboxes()
    cleanup >> restore_and_validate.expand(database=DATABASES)
    cleanup >> restore_objects_sample.expand(bucket=SOURCES)


restore_test()
