"""The restore_test DAG: shape, and a real run through Airflow's task runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.snapshot import snapshot_database
from tests.conftest import ROOT, Stack, write_config

DAGS = ROOT / "dags"
EXAMPLE = ROOT / "include" / "config" / "strongroom.example.yaml"


def _dag(monkeypatch: pytest.MonkeyPatch, config: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["restore_test"]


def test_restore_test_dag_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _dag(monkeypatch, EXAMPLE)
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.doc_md and "never switches regions" in dag.doc_md
    assert {t.task_id for t in dag.tasks} == {"teardown_stale_sandboxes", "restore_and_validate",
                                             "restore_objects_sample"}
    assert dag.get_task("restore_and_validate").trigger_rule == "all_done"


def test_restore_test_dag_run_passes_on_healthy_snapshots(
    stack: Stack, config, conns, airflow_db: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, statsd
) -> None:
    from airflow.utils.state import DagRunState

    only_shop = [{"name": "shop", "postgres_conn_id": "pg_shop"}]
    path = write_config(tmp_path / "rt.yaml", databases=only_shop,
                        restore_test={"expectations_dir": str(ROOT / "include" / "expectations")})
    snapshot_database(config, "shop", conns)
    run = _dag(monkeypatch, path).test(logical_date=None)
    assert run.state == DagRunState.SUCCESS
    tests = [ti for ti in run.get_task_instances() if ti.task_id == "restore_and_validate"]
    assert len(tests) == 1 and tests[0].state == "success"
    # result and measured restore time through Airflow's StatsD, one of each per snapshot tested
    successes = statsd.values("airflow.strongroom.restore_test.success.shop")
    assert successes and successes == [(1.0, "g")] * len(successes)
    durations = statsd.values("airflow.strongroom.restore_test.duration.shop")
    assert len(durations) == len(successes) and all(kind == "ms" and value > 0 for value, kind in durations)
    assert statsd.values("airflow.strongroom.restore_test.failed.shop", timeout=0) == []
