"""
### Hourly database snapshots

Takes one consistent, compressed, **AES-256 encrypted** snapshot of every configured PostgreSQL database
and commits it in the primary EU region. One task instance per database (the map index shows its name).

| task | what it does | if it fails |
|---|---|---|
| `snapshot_and_encrypt` | pg_dump at one exported snapshot → zstd → encryption → multipart upload; exact row counts from the same snapshot | no snapshot exists for that database this hour; nothing half-written is ever committed, and an unfinished upload is aborted (or by the next run) |
| `commit` | checks the stored object is complete, then writes the authenticated manifest: **the commit point** | the data object stays an orphan that retention removes; re-run the task to commit it |

Replication to the other regions, verification and retention pruning join this chain in later releases.

**When this fails at 3 a.m.:** the task log's last line names the database and the cause
(unreachable database, wrong password, missing bucket, missing key). Errors a retry cannot fix
(bad configuration, missing key, integrity failure) fail at once without retrying; network errors retry
with backoff. Check the newest committed snapshot with `strongroom list --database NAME`.

Configuration: `$STRONGROOM_CONFIG` (see `docs/configuration.md`). Credentials live only in Airflow
connections; nothing secret is written to XCom or the logs.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from strongroom.config import load_config

CONFIG = load_config()  # a local file read at parse time: an invalid file shows as an import error


@dag(
    dag_id="snapshot_databases",
    schedule=CronTriggerTimetable(CONFIG.snapshot.schedule, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=CONFIG.snapshot.run_timeout,
    doc_md=__doc__,
    tags=["strongroom", "backup", "postgres"],
    default_args={
        "owner": "strongroom",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": CONFIG.snapshot.run_timeout,
    },
)
def snapshot_databases() -> None:
    @task(map_index_template="{{ database }}")
    def snapshot_and_encrypt(database: str) -> dict[str, object]:
        """Dump, compress, encrypt and upload one database; returns the snapshot id (not yet committed)."""
        from strongroom import airflow_adapter, snapshot

        get_current_context()["database"] = database  # type: ignore[typeddict-unknown-key]
        config = load_config()
        conns = airflow_adapter.connections()
        return airflow_adapter.run_task(snapshot.take_snapshot, config, database, conns).to_dict()

    @task(map_index_template="{{ database }}")
    def commit(result: dict[str, object]) -> dict[str, object]:
        """Write the manifest in the primary region once the data object is complete."""
        from strongroom import airflow_adapter, snapshot

        database = str(result["database"])
        get_current_context()["database"] = database  # type: ignore[typeddict-unknown-key]
        config = load_config()
        conns = airflow_adapter.connections()
        return airflow_adapter.run_task(
            snapshot.commit_snapshot, config, database, str(result["snapshot_id"]), conns
        )

    snapshots = snapshot_and_encrypt.expand(database=[db.name for db in CONFIG.databases])
    commit.expand(result=snapshots)


snapshot_databases()
