"""
### Restore a database snapshot (manual)

Brings a database back from a snapshot. **Trigger with the defaults** for the common case: the newest
snapshot into a **new sandbox database** named `<database>_<snapshot time>_<run suffix>` (the `restore`
summary line names it; it is dropped by `backup_monitor` at the snapshot's `taken_at` + retention).

**When it fails:** the failed task's last line says which field is wrong (choices listed) or why the
target was refused; nothing was changed. Over a production source: type its name into *confirm
production*; one of `restore.approvers` (not you) must approve under *Required actions*.

Details (every field, production, approvals): `docs/operations.md`, section "Restoring a database by hand".
CLI (Airflow down): `strongroom restore --database NAME --sandbox`.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, dag, get_current_context, task

from strongroom import airflow_adapter
from strongroom.config import load_config
from strongroom.tasks import task_defaults

CONFIG = load_config()
DATABASES = [db.name for db in CONFIG.databases] or ["(none configured)"]
REGIONS = ["automatic", *(r.name for r in CONFIG.regions)]
TARGETS = ["sandbox", *CONFIG.restore.target_conn_ids]
PLAN = "ti.xcom_pull(task_ids='plan')"
# the settings the library's messages name (strongroom.errors.worded), as this form's fields
FORM_WORDS = {"clean": "replace_contents", "missing_roles": "missing_roles"}
# newest, a snapshot id, or a time with a UTC offset (the form checks the shape; plan checks the rest)
SNAPSHOT_CHOICE = (r"^\s*(newest|latest|\d{8}T\d{6}Z-[0-9a-f]{6}|"
                   r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2}))\s*$")


@dag(
    dag_id="restore_database",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    doc_md=__doc__,
    tags=["strongroom", "restore"],
    default_args=task_defaults(),
    params={
        "database": Param(DATABASES[0], type="string", enum=DATABASES, title="Database",
                          description="The source database whose snapshot to restore."),
        "snapshot": Param("newest", type="string", pattern=SNAPSHOT_CHOICE, title="Snapshot",
                          description="'newest', a snapshot id, or a time with a UTC offset "
                                      "(the newest snapshot taken at or before it)."),
        "region": Param("automatic", type="string", enum=REGIONS, title="Region",
                        description="Where to download from; automatic: the primary, then the next region."),
        "target": Param("sandbox", type="string", enum=TARGETS, title="Target",
                        description="sandbox: a new database on the sandbox server, named after the source "
                                    "and the snapshot time; or a configured target connection."),
        "tables": Param(None, type=["null", "array"], items={"type": "string", "pattern": r"^[^\s]+$"},
                        title="Tables",
                        description="Optional: only these tables (schema.table, one a line), into a new database."),
        "replace_contents": Param(False, type="boolean", title="Replace contents",
                                  description="Replace the tables of a target that is not empty."),
        "missing_roles": Param("refuse", type="string", enum=["refuse", "create", "no_owner"], title="Missing roles",
                               description="When the target lacks roles the snapshot needs: refuse, create them "
                                           "(NOLOGIN, no passwords), or restore without owners and privileges."),
        "confirm_production": Param(None, type=["null", "string"], pattern=r"^\s*[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\s*$",
                                    title="Confirm production",
                                    description="Leave empty, except to restore over a production source: type "
                                                "its name. An approver (not you) must then approve the run."),
    },
)
def restore_database() -> None:
    @task
    def plan() -> dict[str, Any]:
        """Check the form, find the snapshot and the target; nothing is changed."""
        from strongroom import restore

        ctx = get_current_context()
        p = ctx["params"]
        snapshot_id, at = airflow_adapter.run_task(restore.parse_snapshot_choice, p["snapshot"])
        config, conns = load_config(), airflow_adapter.connections()
        airflow_adapter.run_task(restore.check_target_choice, config, p["target"])
        made = airflow_adapter.run_task(
            restore.plan_restore, config, conns, p["database"], target_conn_id=p["target"],
            snapshot_id=snapshot_id, at=at, region=None if p["region"] == "automatic" else p["region"],
            tables=p["tables"] or (), clean=p["replace_contents"],
            confirm_production=(p["confirm_production"] or "").strip() or None,
            run_suffix=restore.run_suffix(ctx["dag_run"].run_id), approval_required=True,
            missing_roles=p["missing_roles"], words=FORM_WORDS,
        )
        print(f"restore {made.database} snapshot {made.snapshot_id} (taken {made.taken_at}, found in "
              f"{made.found_in}) into {made.target}" + (" (PRODUCTION)" if made.production else ""))
        return made.to_dict()

    @task.branch
    def route(made: dict[str, Any]) -> str:
        """A production target waits for a second person's approval."""
        return "approve_production_restore" if made["production"] else "no_approval_needed"

    approve = airflow_adapter.approval_task(
        task_id="approve_production_restore",
        subject="Restore over PRODUCTION: {{ params.database }} (run {{ run_id }})",
        approved=f"{{{{ {PLAN}['target'] }}}}",
        approvers=CONFIG.restore.approvers,
        body=(
            "**{{ dag_run.triggering_user_name }}** asks to restore over the production database "
            f"**{{{{ {PLAN}['production'] }}}}** at `{{{{ {PLAN}['target'] }}}}`: snapshot "
            f"`{{{{ {PLAN}['snapshot_id'] }}}}` (taken {{{{ {PLAN}['taken_at'] }}}}).\n\n"
            "Approve only if you are not the person who triggered the run. A safety snapshot of the target "
            "is taken first, then its contents are replaced."
        ),
        response_timeout=CONFIG.restore.approval_timeout,
    )
    skip_approval = EmptyOperator(task_id="no_approval_needed")

    @task
    def safety_snapshot(made: dict[str, Any]) -> dict[str, Any]:
        """Check the sealed approval, then snapshot the production database before it is overwritten."""
        from strongroom import approval, restore

        ctx = get_current_context()
        config, conns = load_config(), airflow_adapter.connections()
        approver = airflow_adapter.run_task(
            approval.verify, ctx["ti"].xcom_pull(task_ids="approve_production_restore"),
            airflow_adapter.clearance_run(ctx), conns.keyring(config.encryption.keyring_conn_id), made["target"],
        )
        taken = airflow_adapter.run_task(
            restore.take_safety_snapshot, config, conns, restore.RestorePlan.from_dict(made)
        )
        return {"approved_by": approver, "safety_snapshot": taken}

    @task(trigger_rule="none_failed_min_one_success")
    def restore_task(made: dict[str, Any]) -> dict[str, Any]:
        """Download, verify, decrypt and restore as planned."""
        from strongroom import restore

        ctx = get_current_context()
        planned = restore.RestorePlan.from_dict(made)
        config, conns = load_config(), airflow_adapter.connections()
        # never on the trigger rules alone: for a production target, approval and safety snapshot are proven
        airflow_adapter.run_task(
            restore.check_clearance, planned, ctx["ti"].xcom_pull(task_ids="approve_production_restore"),
            airflow_adapter.clearance_run(ctx), conns.keyring(config.encryption.keyring_conn_id),
            ctx["ti"].xcom_pull(task_ids="safety_snapshot"),
        )
        result = airflow_adapter.run_task(
            restore.execute_plan, config, conns, planned, restore.planned_target(conns, planned), words=FORM_WORDS
        )
        print(f"restored into {result.target}: {result.tables} tables, {result.rows} rows verified")
        return result.to_dict()

    made = plan()
    branch = route(made)
    safety = safety_snapshot(made)
    branch >> [approve, skip_approval]
    approve >> safety
    restore_task.override(task_id="restore")(made).set_upstream([safety, skip_approval])


restore_database()
