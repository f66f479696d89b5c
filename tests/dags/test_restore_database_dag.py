"""restore_database: its trigger form, its shape, and a real run through Airflow into the sandbox.

The production path (second-person approval under a running Airflow) is in
tests/integration/test_restore_approval.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, Stack
from tests.integration.helpers import fingerprints

DAGS = ROOT / "dags"


def _dag(monkeypatch: pytest.MonkeyPatch, config: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    bag = DagBag(dag_folder=str(DAGS / "restore_database.py"))
    assert bag.import_errors == {}
    return bag.dags["restore_database"]


def test_trigger_form_and_shape(monkeypatch: pytest.MonkeyPatch, ledger: Path) -> None:
    dag = _dag(monkeypatch, ledger)
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual only
    params = dag.params
    assert params.get_param("database").schema["enum"] == ["shop", "bulk", "ledger"]
    assert params.get_param("region").schema["enum"] == ["automatic", "eu-central-1", "eu-west-1", "eu-north-1"]
    assert params.get_param("target").schema["enum"] == ["sandbox", "pg_ledger_alias"]
    assert params.get_param("tables").schema["type"] == ["null", "array"]  # optional: nullable
    assert params.get_param("confirm_production").schema["type"] == ["null", "string"]
    assert params.get_param("missing_roles").schema["enum"] == ["refuse", "create", "no_owner"]
    assert params["missing_roles"] == "refuse"  # identical by default: missing roles are refused
    for name in ("database", "snapshot", "region", "target", "tables", "replace_contents", "confirm_production",
                 "missing_roles"):
        assert params.get_param(name).description, name
    approve = dag.get_task("approve_production_restore")
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    assert isinstance(approve, ApprovalOperator) and approve.ignore_downstream_trigger_rules
    assert approve.assigned_users == [{"id": "alice", "name": "alice"}, {"id": "bob", "name": "bob"}]
    assert dag.get_task("route").downstream_task_ids == {"approve_production_restore", "no_approval_needed"}
    assert dag.get_task("safety_snapshot").upstream_task_ids == {"plan", "approve_production_restore"}
    restore = dag.get_task("restore")
    assert restore.upstream_task_ids == {"plan", "safety_snapshot", "no_approval_needed"}
    assert restore.trigger_rule == "none_failed_min_one_success"


def test_form_values_are_checked_before_the_run(monkeypatch: pytest.MonkeyPatch, ledger: Path) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = _dag(monkeypatch, ledger).params
    for name, bad in (("database", "nosuch"), ("region", "us-east-1"), ("target", "pg_shop"), ("tables", "entries"),
                      ("snapshot", ""), ("snapshot", "last tuesday"), ("replace_contents", "yes"),
                      ("confirm_production", "ledger; drop"), ("missing_roles", "ignore")):
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(bad)
    assert params.get_param("target").resolve("pg_ledger_alias") == "pg_ledger_alias"


def test_sandbox_restore_of_one_table_runs_without_approval(
    stack: Stack, ledger: Path, airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg
    from airflow.utils.state import DagRunState

    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database

    at_snapshot = fingerprints(stack.pg.connect_kwargs("ledger"))["public.accounts"]
    taken = snapshot_database(load_config(ledger), "ledger", connections())
    dag = _dag(monkeypatch, ledger)
    run = dag.test(logical_date=None, run_conf={"database": "ledger", "snapshot": taken["snapshot_id"],
                                                 "region": "eu-west-1", "tables": ["public.accounts"]})
    assert run.state == DagRunState.SUCCESS
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"plan": "success", "route": "success", "no_approval_needed": "success",
                      "approve_production_restore": "skipped", "safety_snapshot": "skipped", "restore": "success"}
    prefix = "ledger_" + taken["snapshot_id"][:8] + "_" + taken["snapshot_id"][9:15] + "_"
    with psycopg.connect(**stack.pg.connect_kwargs()) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                            (prefix + "%",))]
    assert len(names) == 1 and len(names[0]) == len(prefix) + 6, names  # the run's suffix
    name = names[0]
    restored = fingerprints(stack.pg.connect_kwargs(name))
    assert list(restored) == ["public.accounts"]
    assert restored["public.accounts"] == at_snapshot


def test_bad_form_value_fails_in_plan_and_changes_nothing(
    stack: Stack, ledger: Path, airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState

    before = fingerprints(stack.pg.connect_kwargs("ledger"))
    dag = _dag(monkeypatch, ledger)
    run = dag.test(logical_date=None, run_conf={"database": "ledger", "snapshot": "20010101T000000Z-abcdef",
                                                 "target": "pg_ledger_alias", "replace_contents": True,
                                                 "confirm_production": "ledger"})
    assert run.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["plan"] == "failed" and states["restore"] == "upstream_failed"
    assert fingerprints(stack.pg.connect_kwargs("ledger")) == before


def test_a_refusal_names_the_forms_own_field(
    stack: Stack, ledger: Path, airflow_db: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The library names its setting (`clean`), the CLI its flag (--clean), this form its field."""
    import logging
    import re

    from airflow.utils.state import DagRunState

    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database

    taken = snapshot_database(load_config(ledger), "ledger", connections())
    dag = _dag(monkeypatch, ledger)
    with caplog.at_level(logging.ERROR, logger="strongroom.airflow_adapter"):
        run = dag.test(logical_date=None, run_conf={"database": "ledger", "snapshot": taken["snapshot_id"],
                                                     "target": "pg_ledger_alias"})
    assert run.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["plan"] == "failed" and states["restore"] == "upstream_failed"
    lines = [r.getMessage() for r in caplog.records if r.name == "strongroom.airflow_adapter"]
    target = f"postgres@localhost:{stack.pg.port}/ledger"
    assert re.fullmatch(rf"RestoreError: target {target} is not empty \(\d+ relations\): restore into a new "
                        "database, or restore with replace_contents to replace its contents", lines[0]), lines
