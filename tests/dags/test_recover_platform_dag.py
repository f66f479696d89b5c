"""recover_platform: its trigger form, its shape, and real runs through Airflow's task runner.

A platform point of `ledger` and one source bucket is recorded; the DAG recovers it into the targets of the
`recovery` section: into new targets without any approval, and over production (`ledger` through another
host name) only with the name typed AND a second person's sealed approval: a run whose approval task was
merely marked successful is refused before anything is touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PRIMARY, ROOT, Stack, conn_id, write_config
from tests.dags import assert_time_field_needs_an_offset, returned
from tests.integration.helpers import fingerprints

DAGS = ROOT / "dags"
SOURCE, TARGET, TARGET_2 = "sr-rec-uploads", "sr-rec-uploads-recovered", "sr-rec-uploads-refused"
RECOVERED_DB = "ledger_recovered"
OBJECTS = {f"scans/{i}.txt": f"scan {i} of a contract".encode() for i in range(4)}


@dataclass
class Recorded:
    config: Path
    production_config: Path
    point_id: str
    ledger: dict[str, tuple[int, str]]


def _dag(monkeypatch: pytest.MonkeyPatch, config: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    bag = DagBag(dag_folder=str(DAGS / "recover_platform.py"))
    assert bag.import_errors == {}
    return bag.dags["recover_platform"]


def _config(path: Path, databases: dict[str, str], bucket: str) -> Path:
    return write_config(
        path,
        databases=[{"name": "ledger", "postgres_conn_id": "pg_ledger"}],
        object_storage=[{"bucket": SOURCE, "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}],
        restore={"approvers": ["alice", "bob"], "approval_timeout": "10m"},
        recovery={"databases": databases, "buckets": {SOURCE: {"bucket": bucket, "aws_conn_id": conn_id(PRIMARY)}}},
    )


@pytest.fixture(scope="module")
def recorded(stack: Stack, ledger: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """ledger snapshotted, the source bucket backed up, a platform point recorded; then both change."""
    from strongroom import objects, recovery
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database

    folder = tmp_path_factory.mktemp("recover-platform")
    os.environ["AIRFLOW_CONN_PG_REC_LEDGER"] = stack.pg.airflow_uri(RECOVERED_DB)
    path = _config(folder / "recovery.yaml", {"ledger": "pg_rec_ledger"}, TARGET)
    production = _config(folder / "production.yaml", {"ledger": "pg_ledger_alias"}, TARGET_2)
    for bucket in (SOURCE, TARGET, TARGET_2):
        stack.servers[PRIMARY].create_bucket(bucket, PRIMARY)
    for key, body in OBJECTS.items():
        stack.client.put_object(Bucket=SOURCE, Key=key, Body=body)
    config, conns = load_config(path), connections()
    at_point = fingerprints(stack.pg.connect_kwargs("ledger"))
    snapshot_database(config, "ledger", conns)
    objects.backup_pass(config, SOURCE, conns)
    point = recovery.record_point(config, conns)
    assert all(r["complete"] for r in point["regions"].values()), point
    # after the point: a row and an object that a recovery of the point does not bring back
    stack.pg.execute("INSERT INTO accounts VALUES (4343, 'opened after the point')", "ledger")
    stack.client.put_object(Bucket=SOURCE, Key="scans/late.txt", Body=b"written after the point")
    try:
        yield Recorded(path, production, str(point["point_id"]), at_point)
    finally:
        stack.pg.execute("DELETE FROM accounts WHERE id = 4343", "ledger")
        stack.pg.execute(f'DROP DATABASE IF EXISTS "{RECOVERED_DB}"')


def _bucket(stack: Stack, bucket: str) -> dict[str, bytes]:
    listed = stack.client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: stack.client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_trigger_form_and_shape(monkeypatch: pytest.MonkeyPatch, recorded: Recorded) -> None:
    from airflow.providers.standard.operators.hitl import ApprovalOperator
    from airflow.sdk.exceptions import ParamValidationError

    dag = _dag(monkeypatch, recorded.config)
    assert type(dag.timetable).__name__ == "NullTimetable" and dag.max_active_runs == 1
    params = dag.params
    assert params.get_param("region").schema["enum"] == ["automatic", "eu-central-1", "eu-west-1", "eu-north-1"]
    for name in ("point", "at", "confirm_production"):  # optional: empty by default
        assert "null" in params.get_param(name).schema["type"] and params[name] is None, name
    for name in ("point", "at", "region", "confirm_production"):
        assert params.get_param(name).description, name
    for name, bad in (("point", "newest"), ("point", "20261126T140000Z"), ("region", "us-east-1"),
                      ("confirm_production", "ledger; drop")):
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(bad)
    assert params.get_param("point").resolve(recorded.point_id) == recorded.point_id
    assert_time_field_needs_an_offset(params.get_param("at"))
    assert params.get_param("confirm_production").resolve("ledger, shop") == "ledger, shop"
    approve = dag.get_task("approve_production_recovery")
    assert isinstance(approve, ApprovalOperator) and approve.ignore_downstream_trigger_rules
    assert approve.assigned_users == [{"id": "alice", "name": "alice"}, {"id": "bob", "name": "bob"}]
    assert dag.get_task("route").downstream_task_ids == {"approve_production_recovery", "no_approval_needed"}
    recover = dag.get_task("recover")
    assert recover.upstream_task_ids == {"plan", "approve_production_recovery", "no_approval_needed"}
    assert recover.trigger_rule == "none_failed_min_one_success"


def test_a_recorded_point_is_recovered_into_new_targets_without_approval(
    stack: Stack, recorded: Recorded, airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState

    run = _dag(monkeypatch, recorded.config).test(logical_date=None, run_conf={"point": recorded.point_id})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, states
    assert states == {"plan": "success", "route": "success", "no_approval_needed": "success",
                      "approve_production_recovery": "skipped", "recover": "success"}
    assert fingerprints(stack.pg.connect_kwargs(RECOVERED_DB)) == recorded.ledger  # the point's rows, not 4343
    assert _bucket(stack, TARGET) == OBJECTS  # the point's objects, not the late one
    summary = returned(run, "recover")
    assert summary["point_id"] == recorded.point_id and summary["failed"] == [] and summary["within_rto"] is True
    assert summary["total_seconds"] > 0 and summary["report_key"].startswith("platform/recoveries/")


def test_a_production_target_needs_its_name_and_a_second_persons_approval(
    stack: Stack, recorded: Recorded, airflow_db: None, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from airflow.utils.state import DagRunState

    before = fingerprints(stack.pg.connect_kwargs("ledger"))
    dag = _dag(monkeypatch, recorded.production_config)
    # the name not typed: plan refuses, naming the form's field
    with caplog.at_level(logging.ERROR, logger="strongroom.airflow_adapter"):
        refused = dag.test(logical_date=None, run_conf={"point": recorded.point_id})
    assert refused.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in refused.get_task_instances()}
    assert states["plan"] == "failed" and states["recover"] == "upstream_failed"
    lines = [r.getMessage() for r in caplog.records if r.name == "strongroom.airflow_adapter"]
    assert any("is the production database ledger: confirm with confirm_production ledger" in x for x in lines), lines

    # typed, and the approval task marked successful by hand instead of answered: recover refuses
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="strongroom.airflow_adapter"):
        unapproved = dag.test(logical_date=None, run_conf={"point": recorded.point_id, "confirm_production": "ledger"},
                              mark_success_pattern="approve_production_recovery")
    assert unapproved.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in unapproved.get_task_instances()}
    assert states["plan"] == "success" and states["approve_production_recovery"] == "success", states
    assert states["no_approval_needed"] == "skipped" and states["recover"] == "failed", states
    lines = [r.getMessage() for r in caplog.records if r.name == "strongroom.airflow_adapter"]
    assert any("no approval on record for platform recovery over production ledger" in x for x in lines), lines

    assert fingerprints(stack.pg.connect_kwargs("ledger")) == before  # untouched, 4343 still there
    assert _bucket(stack, TARGET_2) == {}
