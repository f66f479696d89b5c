"""The platform drill: its DAG run for real on a healthy stack (evidence in every region, shown by `status`),
and, through the CLI, a drill over a tiny RTO that fails naming the slowest part.

Two databases (shop, ledger) and one source bucket; a platform point is recorded, then recovered from one
region into throwaway servers and a throwaway bucket, all of which are gone afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PRIMARY, REGIONS, ROOT, Stack, conn_id, write_config
from tests.dags import returned
from tests.integration.helpers import run_cli

SOURCE = "sr-drill-uploads"
OBJECTS = {f"photos/{i}.jpg": bytes([i]) * (1000 + i) for i in range(5)}


def _config(path: Path, **recovery: object) -> Path:
    return write_config(
        path,
        databases=[{"name": "shop", "postgres_conn_id": "pg_shop"},
                   {"name": "ledger", "postgres_conn_id": "pg_ledger"}],
        object_storage=[{"bucket": SOURCE, "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}],
        restore_test={"expectations_dir": str(ROOT / "include" / "expectations")},
        recovery=recovery,
    )


def _buckets(stack: Stack) -> set[str]:
    return {b["Name"] for b in stack.client.list_buckets()["Buckets"]}


def _drills(stack: Stack, region: str) -> list[str]:
    pages = stack.client_for(region).get_paginator("list_objects_v2").paginate(
        Bucket=f"sr-test-{region}", Prefix="platform/drills/")
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="module")
def point(stack: Stack, ledger: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """shop and ledger snapshotted, the source backed up, a platform point recorded (the newest)."""
    from strongroom import objects, recovery
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database

    path = _config(tmp_path_factory.mktemp("drill") / "drill.yaml")
    stack.servers[PRIMARY].create_bucket(SOURCE, PRIMARY)
    for key, body in OBJECTS.items():
        stack.client.put_object(Bucket=SOURCE, Key=key, Body=body)
    config, conns = load_config(path), connections()
    for name in ("shop", "ledger"):
        snapshot_database(config, name, conns)
    objects.backup_pass(config, SOURCE, conns)
    recorded = recovery.record_point(config, conns)
    assert all(r["complete"] for r in recorded["regions"].values()), recorded
    return path, str(recorded["point_id"])


def test_the_drill_dag_recovers_the_newest_point_and_stores_the_evidence_everywhere(
    stack: Stack, point: tuple[Path, str], airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from strongroom import drill, records
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config

    path, point_id = point
    monkeypatch.setenv("STRONGROOM_CONFIG", str(path))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "platform_drill.py"))
    assert bag.import_errors == {}
    dag = bag.dags["platform_drill"]
    assert dag.timetable.expression == "0 2 * * 0"  # recovery.drill_schedule: weekly
    buckets, before = _buckets(stack), {r: _drills(stack, r) for r in REGIONS}

    run = dag.test(logical_date=None)
    assert run.state == DagRunState.SUCCESS
    summary = returned(run, "drill")
    assert summary["success"] is True and summary["point_id"] == point_id and summary["within_rto"] is True
    assert summary["stored_in"] == REGIONS and 0 < summary["total_seconds"] < summary["rto_seconds"]
    config, conns = load_config(path), connections()
    for region in REGIONS:  # the evidence, authenticated, in every region
        [key] = sorted(set(_drills(stack, region)) - set(before[region]))
        where = config.region(region)
        evidence = records.read(conns.store(where, config.transfer), conns.keyring(config.keyring_conn_id(where)),
                                key, kind=drill.DRILL_KIND)
        assert evidence is not None and evidence["success"] is True and evidence["region"] == summary["region"]
        parts = {p["name"]: p for p in evidence["parts"]}
        assert set(parts) == {"shop", "ledger", SOURCE} and all(p["result"] == "passed" for p in parts.values())
        assert parts["shop"]["checks"] > 5 and parts[SOURCE]["checks"] == 1  # GX, schema; objects by content
    assert _buckets(stack) == buckets  # the throwaway bucket is gone

    # status shows the last drill: when, where from, how long against the RTO, passed
    board = json.loads(run_cli("--config", str(path), "status", "--json").stdout)
    last = board["platform_drill"]
    assert last["success"] is True and last["region"] == summary["region"] and last["drill_id"] == summary["drill_id"]
    assert last["total_seconds"] == summary["total_seconds"] and last["rto_seconds"] == 4 * 3600
    text = run_cli("--config", str(path), "status").stdout
    line = next(x for x in text.splitlines() if x.startswith("platform: last drill"))
    assert f"platform drill from {summary['region']} passed" in line and "within the RTO of 4h" in line, line

    # the next drill recovers from the next region in configured order
    assert drill.drill_region(config, summary["region"], run.run_after).name == REGIONS[
        (REGIONS.index(summary["region"]) + 1) % len(REGIONS)]


def test_a_drill_over_its_rto_fails_and_names_the_slowest_part(
    stack: Stack, point: tuple[Path, str], tmp_path: Path
) -> None:
    _, point_id = point
    tight = _config(tmp_path / "tight.yaml", rto="1s")
    buckets = _buckets(stack)
    result = run_cli("--config", str(tight), "drill", "--region", "eu-north-1", "--json")
    assert result.code == 1, result.stderr[-2000:]
    [error] = result.error_lines
    assert error.startswith("strongroom: error: platform drill from eu-north-1 FAILED: recovered point " + point_id)
    assert "OVER the RTO of 1s" in error and "; slowest part: database " in error, error
    evidence = json.loads(result.stdout)
    assert evidence["success"] is False and evidence["within_rto"] is False and evidence["total_seconds"] > 1
    slowest = max(evidence["parts"], key=lambda p: p["seconds"])
    assert evidence["slowest"].startswith(f"{slowest['kind']} {slowest['name']} ")
    assert all(p["result"] == "passed" for p in evidence["parts"])  # every part fine: only the time failed
    assert evidence["stored_in"] == REGIONS
    assert _buckets(stack) == buckets
    board = json.loads(run_cli("--config", str(tight), "status", "--json").stdout)
    assert board["platform_drill"]["success"] is False and board["platform_drill"]["region"] == "eu-north-1"


def test_a_forged_drill_record_is_not_shown_as_passed(stack: Stack, point: tuple[Path, str]) -> None:
    """Someone with write access to the primary bucket writes a newer 'passed' drill: status ignores it and
    names it as unauthenticated (the Backups page reads the same data)."""
    from datetime import UTC, datetime

    from strongroom import layout

    path, _ = point
    key = layout.platform_drill_key(layout.new_platform_id(datetime.now(UTC)))
    stack.write(key, json.dumps({"drilled_at": datetime.now(UTC).isoformat(), "region": "eu-west-1",
                                 "success": True, "within_rto": True, "headline": "platform drill passed"}).encode())
    try:
        last = json.loads(run_cli("--config", str(path), "status", "--json").stdout)["platform_drill"]
        assert last["key"] != key and last["unauthenticated"] == [
            f"platform-drill record {key} is not authenticated (no valid seal)"]
        text = run_cli("--config", str(path), "status").stdout
        assert f"platform: UNAUTHENTICATED: platform-drill record {key} is not authenticated" in text, text
    finally:
        stack.client.delete_object(Bucket=f"sr-test-{PRIMARY}", Key=key)


def test_a_killed_drills_throwaway_bucket_is_removed_by_the_next_drill(
    stack: Stack, point: tuple[Path, str], tmp_path: Path
) -> None:
    """`strongroom drill` killed (SIGKILL) once its throwaway bucket exists leaves the bucket and its lease.
    The bucket is kept while it is younger than the drill timeout, and while a live lease names it; the next
    drill removes it (one line) and passes."""
    import os
    import signal
    import time
    from datetime import UTC, datetime, timedelta

    from strongroom import drill, layout, records
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from tests.integration.helpers import start_cli

    short = _config(tmp_path / "short.yaml", drill_timeout="3s")
    config, conns = load_config(short), connections()
    before = _buckets(stack)
    killed = start_cli("--config", str(short), "drill", "--region", PRIMARY)
    deadline = time.monotonic() + 120
    while not (left := {b for b in _buckets(stack) - before if b.startswith("strongroom-drill-")}):
        assert killed.poll() is None and time.monotonic() < deadline, "the drill never created its bucket"
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    [leftover] = left
    lease = layout.drill_lease_key(leftover)
    assert all(lease in stack.list_keys(r) for r in REGIONS)  # written before the bucket was created

    # younger than the (default) drill timeout of rto + 2h: a running drill may still use it
    assert drill.remove_leftover_buckets(load_config(point[0]), conns) == [] and leftover in _buckets(stack)
    time.sleep(3.5)
    # older than 3s, but a live lease names it (as a drill with a longer timeout would have written)
    where = config.primary
    records.write(conns.store(where, config.transfer), conns.keyring(config.keyring_conn_id(where)), lease,
                  {"bucket": leftover, "source": SOURCE, "created_at": datetime.now(UTC).isoformat(),
                   "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, kind=drill.DRILL_LEASE_KIND)
    assert drill.remove_leftover_buckets(config, conns) == [] and leftover in _buckets(stack)
    conns.store(where, config.transfer).delete(lease)  # the other regions' leases have expired

    result = run_cli("--config", str(short), "drill", "--region", PRIMARY, "--json")
    assert result.code == 0, result.stderr[-2000:]
    evidence = json.loads(result.stdout)
    assert evidence["success"] is True and evidence["leftovers_removed"] == [leftover]
    assert _buckets(stack) == before  # the leftover and the new drill's own bucket are gone
    assert not any(k.startswith(layout.DRILL_LEASE_PREFIX) for r in REGIONS for k in stack.list_keys(r))
    text = run_cli("--config", str(short), "drill", "--region", PRIMARY)
    assert text.code == 0 and "removed s3://" not in text.stdout, text.stdout  # nothing left this time
