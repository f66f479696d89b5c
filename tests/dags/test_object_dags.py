"""The object-storage DAGs: shape, trigger form, and a real backup run through Airflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PRIMARY, ROOT, Stack, conn_id, write_config
from tests.dags import assert_time_field_needs_an_offset

DAGS = ROOT / "dags"
EXAMPLE = ROOT / "include" / "config" / "strongroom.example.yaml"


def _dags(monkeypatch: pytest.MonkeyPatch, config: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags


def test_backup_object_storage_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _dags(monkeypatch, EXAMPLE)["backup_object_storage"]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.timetable.expression == "0 * * * *"
    assert {t.task_id for t in dag.tasks} == {"backup_pass", "prune"}
    assert dag.get_task("prune").upstream_task_ids == set()  # both leaves: a failed pass fails the run


def test_backup_object_storage_reads_its_own_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """object_backup, not snapshot: schedule, run timeout and retries of one DAG never move the other's."""
    from datetime import timedelta

    path = write_config(tmp_path / "own.yaml", object_backup={
        "schedule": "30 */2 * * *", "run_timeout": "110m", "retries": 4, "retry_delay": "5m"})
    dags = _dags(monkeypatch, path)
    dag = dags["backup_object_storage"]
    assert dag.timetable.expression == "30 */2 * * *"
    assert dag.dagrun_timeout == timedelta(minutes=110)
    task = dag.get_task("backup_pass")
    assert (task.retries, task.retry_delay, task.execution_timeout) == (4, timedelta(minutes=5),
                                                                        timedelta(minutes=110))
    snapshots = dags["snapshot_databases"]
    assert snapshots.timetable.expression == "0 * * * *" and snapshots.dagrun_timeout == timedelta(minutes=50)


def test_restore_objects_trigger_form(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _dags(monkeypatch, EXAMPLE)["restore_objects"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual only
    params = dag.params
    assert params.get_param("source_bucket").schema["enum"] == ["shop-uploads"]
    assert params.get_param("at").schema["format"] == "date-time"
    assert {"prefix", "target", "region", "confirm_source"} <= set(params.keys())
    assert_time_field_needs_an_offset(params.get_param("at"))



def test_backup_object_storage_run_commits_a_point(
    stack: Stack, airflow_db: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow.utils.state import DagRunState

    stack.servers[PRIMARY].create_bucket("sr-dag-uploads", PRIMARY)
    stack.client_for(PRIMARY).put_object(Bucket="sr-dag-uploads", Key="hello.txt", Body=b"hello")
    path = write_config(tmp_path / "o.yaml", object_storage=[
        {"bucket": "sr-dag-uploads", "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}])
    run = _dags(monkeypatch, path)["backup_object_storage"].test(logical_date=None)
    assert run.state == DagRunState.SUCCESS
    for region in ("eu-central-1", "eu-west-1", "eu-north-1"):
        assert any(k.startswith("objects/sr-dag-uploads/points/") for k in stack.list_keys(region))
    from tests.dags import returned

    done = returned(run, "backup_pass")  # every region had the point: the repair after the pass copied nothing
    done = done[0] if isinstance(done, list) else done
    assert done["repaired"] == {} and "repair_failed" not in done and "failed" not in done, done
