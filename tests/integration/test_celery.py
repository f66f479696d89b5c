"""The same DAGs on the CeleryExecutor: two workers that share nothing but the metadata database, the
broker and the buckets (tests/celerystack.py), pools that keep one dump per source server at a time, and
tasks that survive a worker dying under them."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack import LocalPostgres
from tests.conftest import PRIMARY, REGIONS, Stack, write_config

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
        # a dump blocked by a test's table lock waits for it (kombu may take minutes to redeliver a message);
        # a schedule that ticks once a year: unpausing the DAG creates the run of its latest tick once, and
        # the tests' manual runs never queue behind a scheduled one created when the module spans an hour
        snapshot={"schedule": "0 0 1 1 *", "run_timeout": "50m", "retries": 1, "retry_delay": "1s",
                  "deadline": "off", "lock_wait_timeout": "10m", "dump_stall_timeout": "10m"},
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
        assert celery.wait_run(SNAPSHOT, run_id) == "success", celery.errors(SNAPSHOT, run_id)
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
            assert celery.wait_run(dag_id, run_id, timeout=500) == "success", celery.errors(dag_id, run_id)
            ran = [t for t in celery.task_instances(dag_id, run_id) if t["state"] == "success"]
            hosts = {t["hostname"] for t in ran if t["operator"] != "EmptyOperator"}  # those never reach a worker
            assert hosts and hosts <= {"worker-a", "worker-b"}, [(t["task_id"], t["hostname"]) for t in ran]
    finally:
        celery.pause("restore_test")


def _crm_task(second_server: LocalPostgres) -> str:
    return f"snapshot_and_encrypt.127_0_0_1_{second_server.port}"


def _blocked_crm_dump(second_server: LocalPostgres):
    """Hold a lock that pg_dump of ``crm`` waits for: its task runs (upload begun) until the lock goes."""
    import psycopg

    conn = psycopg.connect(**second_server.connect_kwargs("crm"))
    conn.execute("LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE")
    return conn


def _wait_running(celery, run_id: str, task_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        [ti] = [t for t in celery.task_instances(SNAPSHOT, run_id) if t["task_id"] == task_id]
        if ti["state"] == "running" and ti["hostname"]:
            return ti
        assert time.monotonic() < deadline, f"{task_id} is {ti['state']}\n{celery.log_tail()}"
        time.sleep(1)


def _crm_manifests(stack: Stack) -> dict[str, set[str]]:
    return {r: {k for k in stack.list_keys(r) if k.startswith("databases/crm/manifests/")} for r in REGIONS}


def test_a_worker_killed_mid_snapshot_loses_nothing(celery, stack: Stack, second_server: LocalPostgres) -> None:
    """SIGKILL the worker that runs a dump (its upload begun): the scheduler notices the dead task, the retry
    runs on the other worker, the snapshot is committed exactly once in every region, and the dead try's
    unfinished upload does not survive the run. With the documented visibility timeout, the dead try's
    message is never handed to the other worker as well."""
    task_id = _crm_task(second_server)
    before = _crm_manifests(stack)
    lock = _blocked_crm_dump(second_server)
    try:
        celery.wait_for_dag(SNAPSHOT)  # unpause
        run_id = celery.trigger(SNAPSHOT)
        ti = _wait_running(celery, run_id, task_id)
        deadline = time.monotonic() + 120
        while not [k for k in stack.uploads(PRIMARY) if k.startswith("databases/crm/")]:
            assert time.monotonic() < deadline, "the dump's upload never began"
            time.sleep(0.5)
        victim = celery.workers[ti["hostname"]]
        victim.kill()
    finally:
        lock.close()
    try:
        assert celery.wait_run(SNAPSHOT, run_id) == "success", celery.errors(SNAPSHOT, run_id)
    finally:
        celery.pause(SNAPSHOT)
        celery.start_worker(victim.name)
    tries = celery.tries(SNAPSHOT, run_id, task_id, 0)
    assert [t["hostname"] for t in tries][:1] == [victim.name]
    assert tries[-1]["state"] == "success" and tries[-1]["hostname"] != victim.name
    for region, names in _crm_manifests(stack).items():  # committed once, everywhere, nothing left over
        assert len(names - before[region]) == 1, region
        assert [k for k in stack.list_keys(region) if "/pending/" in k] == [], region
        assert stack.uploads(region) == [], region
    # the first try was handed out once: a retry is the scheduler's decision, not a broker redelivery
    assert sum(celery.deliveries(run_id, task_id, 0, 1).values()) == 1


def test_a_visibility_timeout_shorter_than_a_task_delivers_it_twice(celery, stack: Stack,
                                                                     second_server: LocalPostgres) -> None:
    """Why docs/deployment.md sets the broker's visibility timeout above the longest task: below it, Redis
    hands a running task's message to a second worker (Airflow then refuses the duplicate)."""
    task_id = _crm_task(second_server)
    short = {"AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3"}
    celery.restart_workers(short)
    lock = _blocked_crm_dump(second_server)
    try:
        celery.wait_for_dag(SNAPSHOT)
        run_id = celery.trigger(SNAPSHOT)
        ti = _wait_running(celery, run_id, task_id)
        # kombu's Redis transport puts back the unacknowledged messages older than the visibility timeout
        # when a worker starts polling, and then every 100 s: the other worker is restarted (a deploy, a
        # crashed worker coming back) once the running try's message is older than 3 s, so it puts the
        # message back at once instead of after up to 100 s. The dump stays blocked until the second
        # worker has been refused: released earlier, the first try could finish before the second asks to
        # start, and the refusal would then be about a finished task instead of a running one
        time.sleep(4)
        celery.restart_workers(short, names=[name for name in celery.workers if name != ti["hostname"]])
        deadline = time.monotonic() + 150
        while not _refused_redelivery(celery, run_id):
            assert time.monotonic() < deadline, (celery.deliveries(run_id, task_id, 0, ti["try_number"]),
                                                 celery.log_tail())
            time.sleep(1)
    finally:
        lock.close()
    try:
        assert celery.wait_run(SNAPSHOT, run_id) == "success", celery.errors(SNAPSHOT, run_id)
    finally:
        celery.pause(SNAPSHOT)
        celery.restart_workers()
    assert sum(celery.deliveries(run_id, task_id, 0, ti["try_number"]).values()) >= 2
    tries = celery.tries(SNAPSHOT, run_id, task_id, 0)
    assert [t["state"] for t in tries] == ["success"], tries  # the duplicate never became a try of its own


def _refused_redelivery(celery, run_id: str) -> bool:
    """A worker logged that it refused a message of this run because the task is running elsewhere."""
    lines = [line for w in celery.workers.values() if w.log.exists()
             for line in w.log.read_text(errors="replace").splitlines()]
    ours = {m.group(1) for line in lines if run_id in line and "Executing workload in Celery" in line
            for m in [re.search(r"\[([0-9a-f-]{36})\] Executing", line)] if m}
    return any(f"[{celery_id}] Task already running elsewhere, ignoring redelivered message" in line
               for line in lines for celery_id in ours)


def test_a_missing_pool_is_named_by_init_airflow_check_and_the_monitor(celery, stack: Stack,
                                                                       second_server: LocalPostgres) -> None:
    """Airflow never fails a task whose pool is missing, it never schedules it: the check names it."""
    import subprocess
    from urllib.parse import quote

    from strongroom.airflow_adapter import check_pools
    from strongroom.config import load_config
    from strongroom.monitor import find_conditions
    from tests.standalone import api_conn

    pool = f"strongroom_dumps_127_0_0_1_{second_server.port}"
    config_path = celery.env["STRONGROOM_CONFIG"]
    env = {**celery.env, "AIRFLOW_CONN_AIRFLOW_API": api_conn(celery.base)}
    cli = [str(ROOT / ".venv" / "bin" / "strongroom"), "--config", config_path, "init-airflow"]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *extra], env=env, capture_output=True, text=True, timeout=120)

    assert run("--check").returncode == 0
    celery.api("alice", f"/pools/{quote(pool, safe='')}", method="DELETE")
    checked = run("--check")
    assert checked.returncode == 1 and checked.stderr.count("\n") == 1  # one line, naming the pool
    assert f"pool {pool} is missing" in checked.stderr
    # the monitor's check (what backup_monitor calls, through the same connection) names it too
    os.environ["AIRFLOW_CONN_AIRFLOW_API"] = api_conn(celery.base)
    try:
        drift = check_pools(load_config(config_path))
    finally:
        del os.environ["AIRFLOW_CONN_AIRFLOW_API"]
    [condition] = [c for c in find_conditions(databases=[], status=[], keys=None, restore_tests={},
                                              threshold=timedelta(hours=1), restore_overdue=timedelta(days=1),
                                              now=datetime.now(UTC), pools=drift)]
    assert pool in condition.message and "never scheduled" in condition.message
    fixed = run()
    assert fixed.returncode == 0 and f"created pool {pool}" in fixed.stdout
    assert run("--check").returncode == 0
