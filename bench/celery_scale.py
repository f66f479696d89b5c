"""Scale-out: `snapshot_databases` over 8 databases of about 100 MB on two source servers, run by the
CeleryExecutor with one worker and with two, and with one or two dumps allowed per server (the pools).

The stack is the tests' distributed Airflow (tests/celerystack.py): API server, scheduler, DAG processor,
triggerer, Redis broker, metadata database on PostgreSQL, Celery workers with separate homes. Each case
is one scheduled run; the figures are its wall time (run start to end, from Airflow's record), the sum of
its dump tasks' durations, and the most dumps that ran against one server at once (from the task
instances' start and end times). Writes bench/results/celery_scale.json.

    .venv/bin/python bench/celery_scale.py [--databases 8] [--mb 100] [--out bench/results/celery_scale.json]

(or ``python -m bench.celery_scale``; a smoke run: ``--databases 2 --mb 2 --cases one-worker
--out /tmp/celery_scale.json``, a few minutes: the stack itself takes a while to start).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`python bench/celery_scale.py`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # first: it puts scripts/ and include/ on the path
from bench.harness import REGIONS
from devstack import LocalPostgres
from tests import celerystack

CASES = {  # name: (workers, dumps per server)
    "one-worker": (("worker-a",), 1),
    "two-workers": (("worker-a", "worker-b"), 1),
    "two-workers-pool-2": (("worker-a", "worker-b"), 2),
}


def _fill(pg: LocalPostgres, name: str, mb: int) -> None:
    pg.execute(f"CREATE DATABASE {name}")
    pg.execute("CREATE TABLE events (id bigint PRIMARY KEY, body text NOT NULL)", name)
    rows = mb * 1024 * 1024 // 1100  # ~1 KB of weakly compressible text a row
    pg.execute("INSERT INTO events SELECT g, repeat(md5(g::text), 8) || md5(random()::text) "
               f"|| repeat(md5((g * 7)::text), 24) FROM generate_series(1, {rows}) g", name)


def _overlap(tis: list[dict[str, Any]]) -> int:
    """The most task instances running at one moment."""
    edges = []
    for t in tis:
        edges += [(datetime.fromisoformat(t["start_date"]), 1), (datetime.fromisoformat(t["end_date"]), -1)]
    running = most = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        running += step
        most = max(most, running)
    return most


def _case(name: str, workers: tuple[str, ...], per_server: int, pgs: list[LocalPostgres], dbs: dict[str, int],
          base_env: dict[str, str], work: Path) -> dict[str, Any]:
    home = work / name
    home.mkdir()
    config = {
        "retention": "30d",
        "regions": [{"name": r, "bucket": f"bench-{r}", "aws_conn_id": harness.s3_conn_id(r)} for r in REGIONS],
        "encryption": {"keyring_conn_id": "strongroom_keyring"},
        "databases": [{"name": db, "postgres_conn_id": f"pg_{db}"} for db in dbs],
        "pools": {"dumps_per_server": per_server},
        "snapshot": {"run_timeout": "50m", "retries": 0, "deadline": "off"},
    }
    (home / "strongroom.yaml").write_text(json.dumps(config))
    os.environ.update(base_env)
    with contextmanager(celerystack.start)(home / "strongroom.yaml", home, pgs[0], workers=workers) as airflow:
        run_id = airflow.scheduled_run("snapshot_databases")
        state = airflow.wait_run("snapshot_databases", run_id, timeout=3600)
        airflow.pause("snapshot_databases")
        run = airflow.api("alice", f"/dags/snapshot_databases/dagRuns/{run_id}")
        tis = airflow.task_instances("snapshot_databases", run_id)
    dumps = [t for t in tis if t["task_id"].startswith("snapshot_and_encrypt.")]
    per_pool: dict[str, list[dict[str, Any]]] = {}
    for t in dumps:
        per_pool.setdefault(t["pool"], []).append(t)
    wall = (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds()
    return {
        "case": name, "workers": len(workers), "dumps_per_server": per_server, "state": state,
        "run_seconds": round(wall, 1),
        "dump_task_seconds": round(sum(float(t["duration"] or 0) for t in dumps), 1),
        "most_dumps_per_server_at_once": max(_overlap(v) for v in per_pool.values()),
        "hosts": sorted({t["hostname"] for t in tis if t["hostname"]}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--databases", type=int, default=8)
    parser.add_argument("--mb", type=int, default=100, help="size of each database, MB")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "celery_scale.json")
    args = parser.parse_args(argv)
    chosen = [name for name in args.cases.split(",") if name]
    if unknown := set(chosen) - set(CASES):
        parser.error(f"unknown cases: {', '.join(sorted(unknown))} (known: {', '.join(CASES)})")
    work = Path(tempfile.mkdtemp(prefix="strongroom-celery-bench-"))
    try:
        with harness.Services(postgres=2, bucket_prefix="bench-") as services:
            pgs = services.pgs
            dbs = {f"db{i}": i % 2 for i in range(args.databases)}  # alternate between the two servers
            for db, server in dbs.items():
                _fill(pgs[server], db, args.mb)
            base_env = {
                **services.s3_env(),
                **{harness.conn_var(f"pg_{db}"): pgs[s].airflow_uri(db) for db, s in dbs.items()},
                "AIRFLOW_CONN_STRONGROOM_KEYRING": harness.keyring_conn("k1"),
            }
            cases = [_case(name, *CASES[name], pgs, dbs, base_env, work) for name in chosen]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"benchmark": "celery_scale", "databases": args.databases, "mb_each": args.mb,
              "cpus": os.cpu_count(), "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
              "cases": cases}
    harness.write_report(args.out, report)
    for c in cases:
        print(f"{c['case']:20} {c['state']:8} run {c['run_seconds']:7.1f}s  dumps {c['dump_task_seconds']:7.1f}s  "
              f"max dumps/server at once {c['most_dumps_per_server_at_once']}  hosts {','.join(c['hosts'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
