"""DAG integrity and a real run of snapshot_databases through Airflow's task runner."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import BUCKET, REGIONS, ROOT, Stack

DAGS = ROOT / "dags"
EXAMPLE = ROOT / "include" / "config" / "strongroom.example.yaml"


def _dagbag(monkeypatch: pytest.MonkeyPatch, config: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRONGROOM_CONFIG", str(config))
    return DagBag(dag_folder=str(DAGS))


def test_dags_import_without_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = _dagbag(monkeypatch, EXAMPLE)
    assert bag.import_errors == {}
    for path in DAGS.glob("*.py"):
        assert path.stem in bag.dags, f"{path.name} must define the DAG named after it"


def test_snapshot_dag_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _dagbag(monkeypatch, EXAMPLE).dags["snapshot_databases"]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.dagrun_timeout is not None and dag.dagrun_timeout < timedelta(hours=1)
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.timetable.expression == "0 * * * *"
    assert dag.doc_md and "3 a.m." in dag.doc_md
    # one dump task per source server, in that server's pool (the example has one database: one server)
    [dump] = [t.task_id for t in dag.tasks if t.task_id.startswith("snapshot_and_encrypt.")]
    assert {t.task_id for t in dag.tasks} == {
        dump, "region.replicate", "region.verify", "region.commit", "check_regions", "prune", "record_platform_point"
    }
    assert dag.get_task(dump).pool.startswith("strongroom_dumps_")
    # prune runs whatever happened upstream: deletion never waits for an outage elsewhere to end
    assert dag.get_task("prune").trigger_rule == "all_done"
    assert dag.get_task("prune").upstream_task_ids == {"region.commit"}
    assert dag.get_task("check_regions").downstream_task_ids == set()  # a leaf: its failure fails the run
    # the point is recorded after the commits, whatever failed: it records what IS there (a leaf too)
    point = dag.get_task("record_platform_point")
    assert point.trigger_rule == "all_done" and point.upstream_task_ids == {"region.commit"}
    assert point.downstream_task_ids == set()
    snapshot = dag.get_task(dump)
    assert snapshot.retries >= 1 and snapshot.retry_exponential_backoff
    assert dag.get_task("region.replicate").upstream_task_ids == {dump}
    assert dag.get_task("region.verify").upstream_task_ids == {"region.replicate"}
    assert dag.get_task("region.commit").upstream_task_ids == {"region.verify"}
    # one region's failure must not stop the others, nor the final check that names it
    assert dag.get_task("region.replicate").trigger_rule == "all_done"
    assert dag.get_task("check_regions").trigger_rule == "all_done"
    assert dag.get_task("check_regions").upstream_task_ids == {"region.commit"}
    # a run still unfinished at its deadline alerts (before dagrun_timeout ends it)
    [alert] = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert alert.interval == timedelta(minutes=40) < dag.dagrun_timeout
    assert type(alert.reference).__name__ == "DagRunQueuedAtDeadline"
    assert alert.callback.path == "strongroom.airflow_adapter.notify_deadline_missed"
    assert type(alert.callback).__name__ == "SyncCallback" and alert.callback.kwargs == {"budget": "40m"}


def test_invalid_config_is_a_clear_import_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("retension: 30d\n")
    bag = _dagbag(monkeypatch, bad)
    errors = "\n".join(bag.import_errors.values())
    assert "retension: unknown key" in errors


def test_dag_run_commits_a_snapshot_per_database(stack: Stack, airflow_db: None, monkeypatch, statsd) -> None:
    from airflow.utils.state import DagRunState

    from strongroom import layout
    from strongroom.snapshot import DUMP_OBJECT

    dag = _dagbag(monkeypatch, stack.config_path).dags["snapshot_databases"]
    before = {k for k in stack.list_keys() if "/manifests/" in k}
    run = dag.test(logical_date=None)  # as when ops trigger it from the UI
    assert run.state == DagRunState.SUCCESS

    new = {k for k in stack.list_keys() if "/manifests/" in k} - before
    assert sorted(k.split("/")[1] for k in new) == ["bulk", "shop"]
    for region in REGIONS:  # committed everywhere, nothing left pending
        assert new <= set(stack.list_keys(region)), region
        assert [k for k in stack.list_keys(region) if "/pending/" in k] == []
    commits = [ti for ti in run.get_task_instances() if ti.task_id == "region.commit"]
    assert len(commits) == 2 * len(REGIONS) and all(ti.state == "success" for ti in commits)
    # metrics through Airflow's StatsD client: the stored size is the dump object's size in the bucket
    for key in new:
        database, snapshot_id = key.split("/")[1], key.rsplit("/", 1)[1].removesuffix(".json")
        dump = stack.client.head_object(Bucket=BUCKET, Key=layout.data_key(database, snapshot_id, DUMP_OBJECT))
        assert statsd.values(f"airflow.strongroom.snapshot.stored_bytes.{database}") == [
            (dump["ContentLength"], "g")]
        [(duration, kind)] = statsd.values(f"airflow.strongroom.snapshot.duration.{database}")
        assert kind == "ms" and 0 < duration < 600_000

    # the run's platform point, in every region, names exactly the snapshots it committed
    from strongroom import recovery
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config

    [point_ti] = [ti for ti in run.get_task_instances() if ti.task_id == "record_platform_point"]
    assert point_ti.state == "success"
    listed = recovery.list_points(load_config(stack.config_path), connections())
    points = [p for p in listed if p.point_id == listed[0].point_id]  # the newest: this run's
    assert sorted(p.region for p in points) == sorted(REGIONS) and all(p.complete for p in points)
    assert {part.ref for part in points[0].parts if part.kind == "database"} == {
        key.rsplit("/", 1)[1].removesuffix(".json") for key in new}

    instances = [ti for ti in run.get_task_instances() if ti.task_id.startswith("snapshot_and_encrypt.")]
    assert len(instances) == 2
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        values = [json.dumps(x.value) for x in session.query(XComModel).filter(XComModel.run_id == run.run_id)]
    assert values
    for value in values:
        assert stack.pg.password not in value
        for key in stack.all_keys_material:
            assert key not in value
        assert "wrapped_key" not in value


def test_dag_runs_commit_chunked_snapshots_and_the_second_copies_only_what_changed(
        stack: Stack, airflow_db: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The DAG's per-region tasks on chunked snapshots (snapshot.format: chunked): the first run commits every
    chunk in every region, the second, of an unchanged database, writes one or two chunk versions per region."""
    from airflow.utils.state import DagRunState

    from strongroom import catalog, layout
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from tests.conftest import BUCKETS, write_config

    doc = json.loads(stack.config_path.read_text())
    config = write_config(tmp_path / "chunked.yaml", **{
        **doc, "databases": [{"name": "bulk", "postgres_conn_id": "pg_bulk"}],
        "snapshot": {**doc["snapshot"], "format": "chunked", "chunk_size": "256KiB"}})

    def chunk_versions(region: str) -> set[str]:
        pages = stack.client_for(region).get_paginator("list_object_versions").paginate(
            Bucket=BUCKETS[region], Prefix=layout.chunks_prefix("bulk"))
        return {v["VersionId"] for page in pages for v in page.get("Versions", [])}

    dag = _dagbag(monkeypatch, config).dags["snapshot_databases"]
    loaded, conns = load_config(config), connections()
    newest = {}
    for run_no in range(2):
        before = {region: chunk_versions(region) for region in REGIONS}
        run = dag.test(logical_date=None)
        assert run.state == DagRunState.SUCCESS
        for region in REGIONS:
            where = loaded.region(region)
            store, keyring = conns.store(where, loaded.transfer), conns.keyring(loaded.keyring_conn_id(where))
            manifest = catalog.select_snapshot(store, keyring, "bulk")
            assert manifest.chunked and manifest.snapshot_id != newest.get(region), region
            newest[region] = manifest.snapshot_id
            written = chunk_versions(region) - before[region]
            if run_no == 0:
                assert len(written) >= len({c.name for c in manifest.chunks}) > 5, region
            else:
                assert 1 <= len(written) <= 2, (region, len(written))
