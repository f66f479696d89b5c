"""
### Recover the platform: every database and bucket back to one point (manual)

Restores every database and source bucket of one **platform point** into the targets of the `recovery`
section, in parallel, from one surviving region. **Trigger with the defaults** for the common case: the
newest complete point, from the first region that holds all of it. `plan` logs the point, the region
and the data-loss window; `recover` ends with the total time against `recovery.rto`.

**When it fails:** `plan`'s last line names the wrong field, the missing part or the refused target
(nothing was changed); `recover`'s names every part that failed (the others were restored). A target
that is a production source: type its name into *confirm production*; one of `restore.approvers` (not
you) must approve under *Required actions*.

Details (fields, production, the report): `docs/operations.md`, section "Recovering the platform".
CLI (Airflow down): `strongroom recover --dry-run`, then `strongroom recover`.
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
REGIONS = ["automatic", *(r.name for r in CONFIG.regions)]
PLAN = "ti.xcom_pull(task_ids='plan')"
# the settings the library's messages name (strongroom.errors.worded), as this form's fields
FORM_WORDS = {"confirm_production": "confirm_production", "point_id": "point", "at": "at"}
# empty, or a platform point id (the form checks the shape; plan checks that it exists)
POINT_CHOICE = r"^\s*(\d{8}T\d{6}Z-[0-9a-f]{6})?\s*$"
NAMES = r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]{0,62}\s*(,\s*[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\s*)*)?$"


@dag(
    dag_id="recover_platform",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two recoveries into the same targets would overwrite each other
    doc_md=__doc__,
    tags=["strongroom", "restore", "recovery"],
    default_args=task_defaults(),
    params={
        "point": Param(None, type=["null", "string"], pattern=POINT_CHOICE, title="Platform point",
                       description="Empty: the newest complete point. Else a recorded point's id "
                                   "(`strongroom points`, e.g. 20261126T140000Z-1a2b3c)."),
        "at": Param(None, type=["null", "string"], format="date-time", title="Point in time",
                    description="Instead of a point: each database's newest snapshot and each bucket's state "
                                "at or before this time, from the catalogs (snapshots taken by hand too). "
                                + PICKED_TIME),
        "region": Param("automatic", type="string", enum=REGIONS, title="Region",
                        description="Where to recover from; automatic: the first region, in configured order, "
                                    "that answers and holds every part."),
        "confirm_production": Param(None, type=["null", "string"], pattern=NAMES, title="Confirm production",
                                    description="Leave empty, except when a recovery target is a production "
                                                "source: type its name (several: comma separated). An "
                                                "approver (not you) must then approve the run."),
    },
)
def recover_platform() -> None:
    @task
    def plan() -> dict[str, Any]:
        """Choose the point and the region, check every target; nothing is changed."""
        from strongroom import recovery

        p = get_current_context()["params"]
        config, conns = load_config(), airflow_adapter.connections()
        point_id, at = airflow_adapter.run_task(recovery.parse_form_choice, p["point"], p["at"], words=FORM_WORDS)
        made = airflow_adapter.run_task(
            recovery.plan_recovery, config, conns, at=at, point_id=point_id,
            region=None if p["region"] == "automatic" else p["region"], words=FORM_WORDS,
        )
        targets = airflow_adapter.run_task(recovery.targets_from_config, config, conns)
        production = airflow_adapter.run_task(
            recovery.check_targets, config, conns, made, targets, recovery.confirmations(p["confirm_production"]),
            words=FORM_WORDS,
        )
        if production and not config.restore.approvers:
            airflow_adapter.run_task(_refuse, f"targets of {', '.join(sorted(production))} are production, and no "
                                              "approvers are configured (restore.approvers): nobody could approve it")
        for line in made.lines():
            print(line)
        return {"plan": made.to_dict(), "production": sorted(production),
                "approved": recovery.approval_subject(production)}

    @task.branch
    def route(made: dict[str, Any]) -> str:
        """A production target waits for a second person's approval."""
        return "approve_production_recovery" if made["production"] else "no_approval_needed"

    approve = airflow_adapter.approval_task(
        task_id="approve_production_recovery",
        subject="Platform recovery over PRODUCTION (run {{ run_id }})",
        approved=f"{{{{ {PLAN}['approved'] }}}}",
        approvers=CONFIG.restore.approvers,
        body=(
            "**{{ dag_run.triggering_user_name }}** asks to recover the platform over the production "
            f"source(s) **{{{{ {PLAN}['production'] | join(', ') }}}}**: point "
            f"`{{{{ {PLAN}['plan']['point_id'] or 'from the catalogs' }}}}` from region "
            f"`{{{{ {PLAN}['plan']['region'] }}}}` (back to {{{{ {PLAN}['plan']['point_time'] }}}}).\n\n"
            "Approve only if you are not the person who triggered the run. Their contents are replaced, "
            "after a safety snapshot of each (none taken: nothing is replaced)."
        ),
        response_timeout=CONFIG.restore.approval_timeout,
    )
    skip_approval = EmptyOperator(task_id="no_approval_needed")

    @task(trigger_rule="none_failed_min_one_success")
    def recover(made: dict[str, Any]) -> dict[str, Any]:
        """Restore every part in parallel; fail naming every part that failed."""
        from strongroom import recovery

        ctx = get_current_context()
        config, conns = load_config(), airflow_adapter.connections()
        # never on the plan's XCom alone: production is decided again from the targets themselves, and an
        # approval is proven by its seal
        targets = airflow_adapter.run_task(recovery.targets_from_config, config, conns)
        report = airflow_adapter.run_task(
            recovery.execute_approved, config, conns, recovery.RecoveryPlan.from_dict(made["plan"]),
            targets, recovery.confirmations(ctx["params"]["confirm_production"]),
            clearance=ctx["ti"].xcom_pull(task_ids="approve_production_recovery"),
            run=airflow_adapter.clearance_run(ctx), keyring=conns.keyring(config.encryption.keyring_conn_id),
            words=FORM_WORDS,
        )
        for line in report.lines():
            print(line)
        airflow_adapter.run_task(recovery.require_success, report)
        return report.summary()

    made = plan()
    branch = route(made)
    branch >> [approve, skip_approval]
    recover(made).set_upstream([approve, skip_approval])


def _refuse(message: str) -> None:
    from strongroom.errors import RefusedError

    raise RefusedError(message)


recover_platform()
