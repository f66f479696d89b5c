"""What one small-object request costs on this machine: the local S3 server's CPU and the client's.

A platform recovery's bucket part makes about two requests per object (read the sealed object from the
backup region, write it into the target bucket; ``strongroom.objects.restore_point``), and a chunked
snapshot several per chunk. On a 2-core machine whose S3 server runs beside the restore, the CPU of those
requests is a floor under the recovery's time whatever the product does with it. This measures it:
``--objects`` PUTs, then as many GETs, of ``--size`` bytes each, through the product's own verbs
(:meth:`strongroom.storage.ObjectStore.put_data` and :meth:`~strongroom.storage.ObjectStore.get_data`, one
request each) and the S3 client the product builds (:class:`strongroom.airflow_adapter.AirflowConnections`,
from an ``AIRFLOW_CONN_*`` variable), ``--concurrency`` at a time, against ``scripts/s3server.py``; the
server's CPU is read from its process, the client's from this one.

    .venv/bin/python bench/s3_requests.py --objects 2000 --size 65536 --repeat 3   # bench/results/s3_requests.json
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`python bench/s3_requests.py`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness
from bench.harness import REGIONS
from devstack import PG_BIN, MotoServer

BUCKET = "bench-s3-requests"


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes per object (default 64 KiB)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16, an object "
                                                                    "source's default)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(harness.RESULTS / "s3_requests.json"))
    args = parser.parse_args(argv)

    from strongroom.airflow_adapter import AirflowConnections
    from strongroom.config import RegionConfig, TransferConfig

    region = REGIONS[0]
    server = MotoServer().start()
    rounds: dict[str, list[dict[str, float]]] = {"PUT": [], "GET": []}
    try:
        assert server.process is not None
        server.create_bucket(BUCKET, region)
        os.environ[harness.conn_var("bench_s3")] = server.airflow_conn(region)
        store = AirflowConnections(environment_first=True).store(
            RegionConfig(name=region, bucket=BUCKET, aws_conn_id="bench_s3"), TransferConfig())
        payload = os.urandom(args.size)
        keys = [f"objects/{i:06d}" for i in range(args.objects)]
        store.put_data("warm-up", payload)
        store.get_data("warm-up", len(payload))
        steps = {"PUT": lambda key: store.put_data(key, payload),
                 "GET": lambda key: store.get_data(key, len(payload))}
        with ThreadPoolExecutor(args.concurrency) as pool:
            for _ in range(args.repeat):
                for verb, step in steps.items():
                    server_before, client_before = harness.cpu_seconds(server.process.pid), _own_cpu()
                    started = time.monotonic()
                    list(pool.map(step, keys))
                    wall = time.monotonic() - started
                    server_cpu = harness.cpu_seconds(server.process.pid) - server_before
                    client_cpu = _own_cpu() - client_before
                    rounds[verb].append({"wall_s": round(wall, 3), "server_cpu_s": round(server_cpu, 3),
                                         "client_cpu_s": round(client_cpu, 3)})
                    harness.say(f"{verb}: {args.objects} requests in {wall:.2f} s, server {server_cpu:.2f} cpu-s, "
                                f"client {client_cpu:.2f} cpu-s")
    finally:
        server.stop()
    per_request = {
        verb: {field: round(statistics.median(r[field] for r in runs) / args.objects * 1000, 3)
               for field in ("server_cpu_s", "client_cpu_s")}
        for verb, runs in rounds.items()
    }
    report = {
        "benchmark": "CPU per small-object request, local S3 server and client",
        "command": " ".join(["python", "bench/s3_requests.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": harness.machine_info(PG_BIN),
        "code": harness.code_state(),
        "objects": args.objects, "object_bytes": args.size, "concurrency": args.concurrency,
        "repeat": args.repeat, "rounds": rounds,
        "per_request_ms": {verb: {k.removesuffix("_s"): v for k, v in figures.items()}
                           for verb, figures in per_request.items()},
    }
    harness.write_report(Path(args.out), report)
    for verb, figures in per_request.items():
        print(f"{verb}: server {figures['server_cpu_s']:.2f} ms, client {figures['client_cpu_s']:.2f} ms of CPU per "
              f"request (median of {args.repeat})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
