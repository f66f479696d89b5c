"""
### Restore objects as they were at a point in time (manual)

Brings back files (e.g. attachments deleted by mistake). **Trigger with the defaults** for the common
case: the newest backup point of the first source, all of it, into the **review bucket** (the first of
`object_restore_targets`, created when absent), under `<source>/<point time>-<run suffix>/`; the
`restore` summary line names it. Review copies are deleted by `backup_monitor` at the point's time +
retention.

**When it fails:** the failed task's last line names the wrong field (and lists the points there are);
nothing was written. Overwriting the live source (`in_place`) needs its name typed into *confirm source*
and one of `restore.approvers` (not you) to approve under *Required actions*.

Details (every field, in place, approvals): `docs/operations.md`, section "Restoring objects".
CLI (Airflow down): `strongroom objects restore --bucket SOURCE --at ISO-TIME --target-bucket NAME`.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, dag, get_current_context, task

from strongroom import airflow_adapter
from strongroom.config import load_config
from strongroom.tasks import PICKED_TIME, task_defaults

CONFIG = load_config()
SOURCES = [s.bucket for s in CONFIG.object_storage] or ["(none configured)"]
REGIONS = ["automatic", *(r.name for r in CONFIG.regions)]
TARGETS = [*(t.name for t in CONFIG.object_restore_targets), "in_place"]
PLAN = "ti.xcom_pull(task_ids='plan')"
# the settings the library's messages name (strongroom.errors.worded), as this form's fields
FORM_WORDS = {"confirm_source": "confirm_source"}


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
        "at": Param(None, type=["null", "string"], format="date-time", title="Point in time",
                    description="Empty: the newest backup point. Else the newest point at or before this time. "
                                + PICKED_TIME),
        "prefix": Param(None, type=["null", "string"], maxLength=1024, title="Prefix",
                        description="Optional: only keys starting with this."),
        "target": Param(TARGETS[0], type="string", enum=TARGETS, title="Target",
                        description="A configured review bucket (object_restore_targets), or in_place: "
                                    "overwrite the source itself (needs confirm source and an approval)."),
        "region": Param("automatic", type="string", enum=REGIONS, title="Region",
                        description="Where to read from; automatic: the primary, then the next region."),
        "confirm_source": Param(None, type=["null", "string"], title="Confirm source",
                                description="Leave empty, except for in_place: type the source bucket's name."),
    },
)
def restore_objects() -> None:
    @task
    def plan() -> dict[str, Any]:
        """Check the form, the target and the point in time; nothing is written."""
        from strongroom import objects, restore
        from strongroom.config import parse_time

        ctx = get_current_context()
        p = ctx["params"]
        config, conns = load_config(), airflow_adapter.connections()
        source = airflow_adapter.run_task(config.source, p["source_bucket"])
        target = airflow_adapter.run_task(
            objects.choose_target, config, source.bucket, p["target"], (p["confirm_source"] or "").strip() or None)
        at = airflow_adapter.run_task(parse_time, p["at"], "at", words=FORM_WORDS) if p["at"] else None
        region = None if p["region"] == "automatic" else p["region"]
        where, index = airflow_adapter.run_task(objects.point_at, config, conns, source.bucket, at, region)
        if target.in_place and not config.restore.approvers:
            airflow_adapter.run_task(_refuse, "target: in_place needs an approval, and no approvers are configured "
                                              "(restore.approvers)")
        made = {"source": source.bucket, "point": index.taken_at.isoformat(), "found_in": where.name,
                "region": region, "prefix": p["prefix"] or "", "target": target.name, "bucket": target.bucket,
                "aws_conn_id": target.aws_conn_id, "in_place": target.in_place,
                "suffix": restore.run_suffix(ctx["dag_run"].run_id)}
        print(f"restore {source.bucket} point {made['point']} (found in {where.name}) into s3://{target.bucket}"
              + (" IN PLACE (needs approval)" if target.in_place else ""))
        return made

    @task.branch
    def route(made: dict[str, Any]) -> str:
        """Overwriting the live source waits for an approver's answer."""
        return "approve_in_place_restore" if made["in_place"] else "no_approval_needed"

    approve = airflow_adapter.approval_task(
        task_id="approve_in_place_restore",
        subject="Restore objects IN PLACE over the live bucket {{ params.source_bucket }} (run {{ run_id }})",
        approved=f"bucket {{{{ {PLAN}['bucket'] }}}}",
        approvers=CONFIG.restore.approvers,
        body=(
            "**{{ dag_run.triggering_user_name }}** asks to overwrite the live bucket "
            f"**{{{{ {PLAN}['bucket'] }}}}** with its backup point `{{{{ {PLAN}['point'] }}}}`"
            f" (prefix `{{{{ {PLAN}['prefix'] }}}}`).\n\nApprove only if you are not the person who triggered the run."
        ),
        response_timeout=CONFIG.restore.approval_timeout,
    )
    skip_approval = EmptyOperator(task_id="no_approval_needed")

    @task(trigger_rule="none_failed_min_one_success")
    def restore(made: dict[str, Any]) -> dict[str, Any]:
        """Fetch and verify every object of the point, then write them into the target."""
        from datetime import datetime

        from strongroom import approval, objects

        ctx = get_current_context()
        config, conns = load_config(), airflow_adapter.connections()
        if made["in_place"]:  # never on the trigger rules alone: the approval is proven
            airflow_adapter.run_task(
                approval.verify, ctx["ti"].xcom_pull(task_ids="approve_in_place_restore"),
                airflow_adapter.clearance_run(ctx), conns.keyring(config.encryption.keyring_conn_id),
                f"bucket {made['bucket']}",
            )
        else:
            again = airflow_adapter.run_task(objects.choose_target, config, made["source"], made["target"], None)
            if again.bucket != made["bucket"]:
                airflow_adapter.run_task(_refuse, f"target {made['target']} changed since the plan")
        source = config.source(made["source"])
        target = conns.bucket_store(made["aws_conn_id"], made["bucket"], source.region, config.transfer)
        if not made["in_place"] and airflow_adapter.run_task(target.ensure_bucket):
            print(f"created the review bucket s3://{made['bucket']}")
        done = airflow_adapter.run_task(
            objects.restore_point, config, conns, made["source"], datetime.fromisoformat(made["point"]), target,
            prefix_=made["prefix"], region=made["region"], allow_source=made["source"] if made["in_place"] else None,
            review_suffix=None if made["in_place"] else made["suffix"], words=FORM_WORDS,
        )
        print(f"restored {done['objects']} objects ({done['bytes']} bytes) of {done['source']} at {done['point']} "
              f"into s3://{done['target']}/{done['prefix']}")
        return done

    made = plan()
    branch = route(made)
    branch >> [approve, skip_approval]
    restore(made).set_upstream([approve, skip_approval])


def _refuse(message: str) -> None:
    from strongroom.errors import RefusedError

    raise RefusedError(message)


restore_objects()
