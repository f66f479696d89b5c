"""The same DAGs on the CeleryExecutor: two workers that share nothing but the metadata database, the
broker and the buckets (tests/celerystack.py), pools that keep one dump per source server at a time, and
tasks that survive a worker dying under them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from devstack import LocalPostgres
from tests.conftest import REGIONS, Stack, write_config

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = "snapshot_databases"


@pytest.fixture(scope="module")
def second_server() -> Iterator[LocalPostgres]:
    """A second source server with its own database, ``crm``."""
    pg = LocalPostgres().start()
    try:
        pg.execute("CREATE DATABASE crm")
        pg.execute("CREATE TABLE contacts (id int PRIMARY KEY, name text NOT NULL)", "crm")
        pg.execute("INSERT INTO contacts SELECT g, 'contact-' || g FROM generate_series(1, 5000) g", "crm")
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def celery(stack: Stack, second_server: LocalPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests import celerystack

    home = tmp_path_factory.mktemp("celery")
    os.environ["AIRFLOW_CONN_PG_CRM"] = second_server.airflow_uri("crm")
    os.environ["AIRFLOW_CONN_PG_CELERY_SANDBOX"] = stack.pg.airflow_uri("postgres")
    config = write_config(
        home / "strongroom.yaml",
        databases=[{"name": "shop", "postgres_conn_id": "pg_shop"}, {"name": "bulk", "postgres_conn_id": "pg_bulk"},
                   {"name": "crm", "postgres_conn_id": "pg_crm"}],
        snapshot={"run_timeout": "50m", "retries": 1, "retry_delay": "1s", "deadline": "off"},
        restore={"sandbox_conn_id": "pg_celery_sandbox"},
        restore_test={"expectations_dir": str(ROOT / "include" / "expectations")},
    )
    yield from celerystack.start(config, home, stack.pg)


def _intervals(tis: list[dict]) -> list[tuple[datetime, datetime]]:
    return sorted((datetime.fromisoformat(t["start_date"]), datetime.fromisoformat(t["end_date"])) for t in tis)


def test_snapshot_databases_runs_across_both_workers_one_dump_per_server(celery, stack: Stack,
                                                                         second_server: LocalPostgres) -> None:
    before = {r: {k for k in stack.list_keys(r) if "/manifests/" in k} for r in REGIONS}
    run_id = celery.scheduled_run(SNAPSHOT)
    try:
        assert celery.wait_run(SNAPSHOT, run_id) == "success", celery.log_tail()
    finally:
        celery.pause(SNAPSHOT)

    for region in REGIONS:  # every database committed in every region
        new = {k for k in stack.list_keys(region) if "/manifests/" in k} - before[region]
        assert {k.split("/")[1] for k in new} == {"shop", "bulk", "crm"}, region
        assert [k for k in stack.list_keys(region) if "/pending/" in k] == []

    tis = celery.task_instances(SNAPSHOT, run_id)
    dumps = [t for t in tis if t["task_id"].startswith("snapshot_and_encrypt.")]
    regions = [t for t in tis if t["task_id"].startswith("region.")]
    # both workers ran dumps and region tasks: the run really was spread over two machines
    assert {t["hostname"] for t in dumps} == {"worker-a", "worker-b"}, [(t["task_id"], t["hostname"]) for t in dumps]
    assert {t["hostname"] for t in regions} == {"worker-a", "worker-b"}
    # one dump task per server, in that server's pool; never two dumps against one server at once
    by_pool: dict[str, list[dict]] = {}
    for t in dumps:
        by_pool.setdefault(t["pool"], []).append(t)
    first = f"strongroom_dumps_127_0_0_1_{stack.pg.port}"
    second = f"strongroom_dumps_127_0_0_1_{second_server.port}"
    assert sorted(by_pool) == sorted([first, second])
    assert len(by_pool[first]) == 2 and len(by_pool[second]) == 1
    (_, a_end), (b_start, _) = _intervals(by_pool[first])
    assert a_end <= b_start, "two dumps ran against one server at the same time"


def test_restore_database_and_restore_test_run_on_the_workers(celery) -> None:
    celery.wait_for_dag("restore_database")
    restore = celery.trigger("restore_database", {"database": "crm"})  # into the sandbox, as the form's default
    test = celery.scheduled_run("restore_test")
    try:
        for dag_id, run_id in (("restore_database", restore), ("restore_test", test)):
            assert celery.wait_run(dag_id, run_id, timeout=500) == "success", celery.log_tail()
            hosts = {t["hostname"] for t in celery.task_instances(dag_id, run_id) if t["state"] == "success"}
            assert hosts and hosts <= {"worker-a", "worker-b"}
    finally:
        celery.pause("restore_test")
