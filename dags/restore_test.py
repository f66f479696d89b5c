"""
### Restore tests: is every backup really restorable?

"A backup you've never restored from is a hope, not a backup." Every day (see `restore_test.schedule`),
for every configured database, this DAG restores the **newest** snapshot and a **random** one within the
retention window from one region (a different region each day, so every region is exercised) into an
**isolated** PostgreSQL server that the task starts and tears down itself, then proves the data intact
with Great Expectations:

* the **baseline**, generated from the snapshot's manifest: every table present, row counts exactly those
  recorded in the snapshot's own transaction, content checksums of small tables;
* the **user suites** in `include/expectations/<database>/`.

| task | what it does | if it fails |
|---|---|---|
| `teardown_stale_sandboxes` | removes throwaway servers that a dead worker left on this host (by their lease records) | cleanup only; the tests still run. Fails naming any lease that does not authenticate (nothing is removed for it) |
| `restore_objects_sample` (one per source bucket) | restores a random sample of objects of the newest point from the same region and checks each against the point index (keyed content hash, size) | names the bucket, point and region |
| `restore_and_validate` (one per database) | provision → download from that region only → verify → decrypt → restore → validate → teardown, all in one task; records the time of each phase (RTO evidence) and the snapshot's age (RPO evidence) | the alert names the database, snapshot, region and the failing expectations |

A restore test never switches regions: a corrupt copy in the tested region fails the test, on purpose.
Results (JSON) and Data Docs (HTML, no row values) are stored in the primary region under
`restore-tests/<database>/`; `strongroom restore-test` runs the same code by hand.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from strongroom.alerts import task_defaults
from strongroom.config import load_config

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
