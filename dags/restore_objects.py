"""
### Restore objects as they were at a point in time (manual)

Trigger this DAG with the form to bring back files, for example a customer's attachments deleted by
mistake. It writes the objects of **source bucket** as they were at **point in time** (the newest backup
point at or before it), optionally only those under **prefix**, into **target bucket**.

* Every object is fetched, decrypted and checked against its content id before the first write.
* The live source bucket is never the target unless **confirm source** repeats its name.
* The region is the primary, or the next region that holds a point (or the one you name).

The same restore from a shell: `strongroom objects restore --bucket SOURCE --at ISO-TIME --target-bucket NAME`.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from strongroom.alerts import task_defaults
from strongroom.config import load_config

CONFIG = load_config()
SOURCES = [s.bucket for s in CONFIG.object_storage] or ["(none configured)"]
REGIONS = ["automatic", *(r.name for r in CONFIG.regions)]


@dag(
    dag_id="restore_objects",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    doc_md=__doc__,
    tags=["strongroom", "restore", "object-storage"],
    default_args=task_defaults(),
    params={
        "source_bucket": Param(SOURCES[0], type="string", enum=SOURCES, title="Source bucket",
                               description="The backed-up bucket whose objects to restore."),
        "at": Param(pendulum.now("UTC").start_of("hour").isoformat(), type="string", format="date-time",
                    title="Point in time", description="Restore the objects as they were at this time (UTC)."),
        "prefix": Param("", type="string", title="Prefix", description="Only keys starting with this (optional)."),
        "target_bucket": Param("", type="string", minLength=3, title="Target bucket",
                               description="Where the objects are written. Use a new bucket for review."),
        "target_conn_id": Param("", type="string", title="Target connection",
                                description="Airflow AWS connection of the target (empty: the source's)."),
        "region": Param("automatic", type="string", enum=REGIONS, title="Region"),
        "confirm_source": Param("", type="string", title="Confirm source",
                                description="Only to overwrite the live source bucket: type its name."),
    },
)
def restore_objects() -> None:
    @task
    def restore() -> dict[str, Any]:
        """Write the objects of the chosen point into the target bucket."""
        from datetime import datetime

        from strongroom import airflow_adapter, objects

        p = get_current_context()["params"]
        config, conns = load_config(), airflow_adapter.connections()
        source = config.source(p["source_bucket"])
        target = conns.bucket_store(p["target_conn_id"] or source.aws_conn_id, p["target_bucket"], source.region,
                                    config.transfer)
        return airflow_adapter.run_task(
            objects.restore_point, config, conns, source.bucket, datetime.fromisoformat(p["at"]), target,
            prefix_=p["prefix"], region=None if p["region"] == "automatic" else p["region"],
            allow_source=p["confirm_source"] or None,
        )

    restore()


restore_objects()
