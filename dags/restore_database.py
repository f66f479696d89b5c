"""
### Restore a database snapshot (manual)

Trigger this DAG with the form to bring a database back, for example after a customer deleted data by
mistake. Every field is checked before anything is touched; a bad value fails `plan` with one line that
says what is wrong.

| field | meaning |
|---|---|
| **database** | the configured source database whose snapshot to restore |
| **snapshot** | `newest`, a snapshot id (`strongroom list` or the Backups page shows them), or a time with a UTC offset: the newest snapshot taken at or before it |
| **region** | `automatic`: the primary, then the next region that holds the snapshot; or one region |
| **target** | `sandbox`: a **new** database on the sandbox server named `<database>_<snapshot time>` (its location is printed in the `plan` log, without credentials); or one of the configured target connections |
| **tables** | optional `schema.table` names: only those tables (definitions and rows) into a new database, for recovering one customer's rows |
| **replace contents** | needed when the target database already holds tables |
| **missing roles** | owners and privileges are restored as they were; when the target lacks roles the snapshot needs: `refuse` (the plan fails naming them), `create` (from the snapshot's globals, NOLOGIN, no passwords; existing roles untouched) or `no_owner` (no owners, no privileges) |
| **confirm production** | only to restore **over a production source**: type the source's name |

Restoring over a production source (the target is the same server, by its system identifier, and the same
database as a configured source) needs three things: the source's name typed into **confirm production**,
an **approval by a second person** (the task `approve_production_restore` waits under *Required actions*;
the person who triggered the run cannot approve it), and a fresh **safety snapshot** of the target, taken
before anything is restored. A rejection, no answer within `restore.approval_timeout`, or an approval by
the triggering user leave the target untouched.

| task | what it does |
|---|---|
| `plan` | checks the form, finds the snapshot, resolves the target, decides whether it is production |
| `route` | production → approval; anything else → straight to the restore |
| `approve_production_restore` | waits for a second person's Approve or Reject |
| `safety_snapshot` | checks the approver is not the triggering user, then snapshots the production database into every region |
| `restore` | download (one region, or falling back), verify, decrypt, then `pg_restore`; row counts checked against the snapshot |

The same restore from a shell (break-glass, Airflow down):
`strongroom restore --database NAME --sandbox` or `--target-conn CONN [--clean] [--confirm-production NAME]`.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, get_current_context, task

from strongroom.alerts import task_defaults
from strongroom.config import load_config

CONFIG = load_config()
DATABASES = [db.name for db in CONFIG.databases] or ["(none configured)"]
REGIONS = ["automatic", *(r.name for r in CONFIG.regions)]
TARGETS = ["sandbox", *CONFIG.restore.target_conn_ids]
PLAN = "ti.xcom_pull(task_ids='plan')"


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
        "snapshot": Param("newest", type="string", minLength=1, title="Snapshot",
                          description="'newest', a snapshot id, or a time with a UTC offset "
                                      "(the newest snapshot taken at or before it)."),
        "region": Param("automatic", type="string", enum=REGIONS, title="Region",
                        description="Where to download from; automatic: the primary, then the next region."),
        "target": Param("sandbox", type="string", enum=TARGETS, title="Target",
                        description="sandbox: a new database on the sandbox server, named after the source "
                                    "and the snapshot time; or a configured target connection."),
        "tables": Param([], type="array", items={"type": "string", "minLength": 1}, title="Tables",
                        description="Optional: only these tables (schema.table), into a new database."),
        "replace_contents": Param(False, type="boolean", title="Replace contents",
                                  description="Replace the tables of a target that is not empty."),
        "missing_roles": Param("refuse", type="string", enum=["refuse", "create", "no_owner"], title="Missing roles",
                               description="When the target lacks roles the snapshot needs: refuse, create them "
                                           "(NOLOGIN, no passwords), or restore without owners and privileges."),
        "confirm_production": Param("", type="string", title="Confirm production",
                                    description="Only to restore over a production source: type its name. "
                                                "A second person must then approve the run."),
    },
)
def restore_database() -> None:
    @task
    def plan() -> dict[str, Any]:
        """Check the form, find the snapshot and the target; nothing is changed."""
        from strongroom import airflow_adapter, restore

        p = get_current_context()["params"]
        snapshot_id, at = restore.parse_snapshot_choice(p["snapshot"])
        config, conns = load_config(), airflow_adapter.connections()
        airflow_adapter.run_task(restore.check_target_choice, config, p["target"])
        made = airflow_adapter.run_task(
            restore.plan_restore, config, conns, p["database"], target_conn_id=p["target"],
            snapshot_id=snapshot_id, at=at, region=None if p["region"] == "automatic" else p["region"],
            tables=p["tables"], clean=p["replace_contents"], confirm_production=p["confirm_production"] or None,
            missing_roles=p["missing_roles"],
        )
        print(f"restore {made.database} snapshot {made.snapshot_id} (taken {made.taken_at}, found in "
              f"{made.found_in}) into {made.target}" + (" (PRODUCTION)" if made.production else ""))
        return made.to_dict()

    @task.branch
    def route(made: dict[str, Any]) -> str:
        """A production target waits for a second person's approval."""
        return "approve_production_restore" if made["production"] else "no_approval_needed"

    approve = ApprovalOperator(
        task_id="approve_production_restore",
        subject="Restore over PRODUCTION: {{ params.database }} (run {{ run_id }})",
        body=(
            "**{{ dag_run.triggering_user_name }}** asks to restore over the production database "
            f"**{{{{ {PLAN}['production'] }}}}** at `{{{{ {PLAN}['target'] }}}}`: snapshot "
            f"`{{{{ {PLAN}['snapshot_id'] }}}}` (taken {{{{ {PLAN}['taken_at'] }}}}).\n\n"
            "Approve only if you are not the person who triggered the run. A safety snapshot of the target "
            "is taken first, then its contents are replaced."
        ),
        ignore_downstream_trigger_rules=True,  # a rejection skips everything after it, the restore too
        response_timeout=CONFIG.restore.approval_timeout,
    )
    skip_approval = EmptyOperator(task_id="no_approval_needed")

    @task
    def safety_snapshot(made: dict[str, Any]) -> dict[str, Any]:
        """Check who approved, then snapshot the production database before it is overwritten."""
        from strongroom import airflow_adapter, restore

        ctx = get_current_context()
        approver = airflow_adapter.run_task(
            restore.check_approval, ctx["ti"].xcom_pull(task_ids="approve_production_restore"),
            ctx["dag_run"].triggering_user_name,
        )
        config, conns = load_config(), airflow_adapter.connections()
        taken = airflow_adapter.run_task(
            restore.take_safety_snapshot, config, conns, restore.RestorePlan.from_dict(made)
        )
        return {"approved_by": approver, "safety_snapshot": taken}

    @task(trigger_rule="none_failed_min_one_success")
    def restore_task(made: dict[str, Any]) -> dict[str, Any]:
        """Download, verify, decrypt and restore as planned."""
        from strongroom import airflow_adapter, restore

        ctx = get_current_context()
        planned = restore.RestorePlan.from_dict(made)
        # never on the trigger rules alone: for a production target, approval and safety snapshot are proven
        airflow_adapter.run_task(
            restore.check_clearance, planned, ctx["ti"].xcom_pull(task_ids="approve_production_restore"),
            ctx["dag_run"].triggering_user_name, ctx["ti"].xcom_pull(task_ids="safety_snapshot"),
        )
        config, conns = load_config(), airflow_adapter.connections()
        result = airflow_adapter.run_task(
            restore.execute_plan, config, conns, planned, restore.planned_target(conns, planned)
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
