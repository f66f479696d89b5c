"""Benchmark: a slow region must not slow the others (issue 16's performance target).

Run from the repository root::

    .venv/bin/python bench/slow_region.py [--mb 120] [--rate 40] [--repeat 2] [--out bench/results/slow_region.json]

(or ``python -m bench.slow_region``; a smoke run: ``--mb 4 --repeat 1 --out /tmp/slow_region.json``).

Starts a throwaway PostgreSQL 15 cluster and one moto S3 server per region, each region behind a
``tests/faultproxy.py`` proxy capped at ``--rate`` MB/s (both directions, all connections), and a database of
``--mb`` MB that zstd cannot shrink. Then, interleaved, ``--repeat`` times each after a warm-up:

* ``even``: ``strongroom snapshot`` with every region at ``--rate``;
* ``slow``: the same with eu-north-1 capped at a tenth of it.

For each run it records the wall time until both healthy regions (eu-central-1, eu-west-1) hold the committed
manifest (polled on the S3 servers directly, every 50 ms) and the CLI's own wall time. The target: the healthy
regions' commit time of ``slow`` within 1.2x that of ``even``. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`python bench/slow_region.py`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # first: it puts scripts/ and include/ on the path
from bench.harness import MB, REGIONS
from devstack import MotoServer
from strongroom import layout
from tests.faultproxy import FaultProxy

HEALTHY = REGIONS[:2]
SLOW = REGIONS[2]
DATABASE = "bench_slow"


def _conn(region: str, port: int) -> str:
    return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing-secret",
                       "extra": {"region_name": region, "endpoint_url": f"http://127.0.0.1:{port}"}})


def _config(path: Path) -> Path:
    path.write_text(json.dumps({
        "retention": "30d",
        "regions": [{"name": r, "bucket": f"bench-{r}", "aws_conn_id": harness.s3_conn_id(r)} for r in REGIONS],
        "encryption": {"keyring_conn_id": "strongroom_keyring"},
        "databases": [{"name": DATABASE, "postgres_conn_id": "pg_bench"}],
        "transfer": {"part_size": "16MiB", "upload_concurrency": 4, "download_concurrency": 4},
        "snapshot": {"capture_globals": False, "deadline": "off"},
    }))
    return path


def _committed(server: MotoServer, region: str) -> set[str]:
    client = server.client(region)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=f"bench-{region}",
                                                             Prefix=layout.manifest_prefix(DATABASE))
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def run_once(kind: str, env: dict[str, str], config: Path, servers: dict[str, MotoServer],
             proxies: dict[str, FaultProxy], rate: float) -> dict[str, Any]:
    for region in REGIONS:
        proxies[region].rate = rate * MB
    if kind == "slow":
        proxies[SLOW].rate = rate * MB / 10
    before = {r: _committed(servers[r], r) for r in REGIONS}
    healthy_at: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            if all(_committed(servers[r], r) - before[r] for r in HEALTHY):
                healthy_at.append(time.monotonic())
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    started = time.monotonic()
    watcher.start()
    result = subprocess.run([sys.executable, "-m", "strongroom.cli", "--config", str(config), "snapshot",
                             "--database", DATABASE, "--json"], env=env, capture_output=True, text=True,
                            check=False)
    ended = time.monotonic()
    watcher.join(timeout=5)
    done.set()
    if result.returncode != 0:
        raise RuntimeError(f"{kind}: snapshot failed: {result.stderr.strip()}")
    return {"kind": kind, "healthy_committed_s": round(healthy_at[0] - started, 2) if healthy_at else None,
            "cli_s": round(ended - started, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mb", type=int, default=120, help="database size in MB (incompressible)")
    parser.add_argument("--rate", type=float, default=40.0, help="each healthy region's bandwidth, MB/s")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "slow_region.json")
    args = parser.parse_args(argv)

    proxies: dict[str, FaultProxy] = {}
    with harness.Services(bucket_prefix="bench-") as services:
        pg, servers = services.pg, services.s3
        try:
            for region in REGIONS:
                proxies[region] = FaultProxy(servers[region].port, http=True).start()
            pg.execute(f"CREATE DATABASE {DATABASE}")
            pg.execute("CREATE TABLE noise (id int PRIMARY KEY, body bytea NOT NULL)", DATABASE)
            pg.execute("ALTER TABLE noise ALTER COLUMN body SET STORAGE EXTERNAL", DATABASE)
            rows = args.mb * 1000 // 16  # 16 kB of random bytes a row
            pg.execute(f"INSERT INTO noise SELECT g, decode(string_agg(md5(random()::text || g || i), ''), 'hex') "
                       f"FROM generate_series(1, {rows}) g, generate_series(1, 1000) i GROUP BY g", DATABASE)
            env = dict(os.environ)
            env.update({harness.conn_var(harness.s3_conn_id(r)): _conn(r, proxies[r].port) for r in REGIONS})
            env["AIRFLOW_CONN_PG_BENCH"] = pg.airflow_uri(DATABASE)
            env["AIRFLOW_CONN_STRONGROOM_KEYRING"] = harness.keyring_conn()
            config = _config(Path(tempfile.mkdtemp(prefix="bench-slow-")) / "strongroom.yaml")
            samples: list[dict[str, Any]] = []
            for i in range(args.repeat + 1):
                for kind in ("even", "slow"):
                    sample = run_once(kind, env, config, servers, proxies, args.rate)
                    print(json.dumps(sample), flush=True)
                    if i:  # the first round warms up
                        samples.append(sample)
        finally:
            for proxy in proxies.values():
                proxy.stop()

    def median(kind: str, what: str) -> float:
        return float(statistics.median(s[what] for s in samples if s["kind"] == kind))

    even, slow = median("even", "healthy_committed_s"), median("slow", "healthy_committed_s")
    report = {
        "mb": args.mb, "rate_mb_s": args.rate, "slow_rate_mb_s": args.rate / 10, "repeat": args.repeat,
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "samples": samples,
        "even_healthy_committed_s": even, "slow_healthy_committed_s": slow,
        "ratio": round(slow / even, 3), "target": 1.2,
        "even_cli_s": median("even", "cli_s"), "slow_cli_s": median("slow", "cli_s"),
    }
    harness.write_report(args.out, report)
    print(f"healthy regions committed: {even:.1f}s even, {slow:.1f}s with {SLOW} at a tenth: "
          f"{report['ratio']:.2f}x (target 1.2x); CLI {report['even_cli_s']:.1f}s / {report['slow_cli_s']:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
