"""Object-storage backup throughput and memory: one full pass, one incremental pass, one restore.

Local stack: three moto S3 servers (one per region) and a versioned source bucket with N objects of a
given size. Each step runs as the real CLI in a subprocess; wall time and the subprocess's peak RSS are
recorded. Writes bench/results/objects.json.

    .venv/bin/python bench/objects.py [--objects 2000] [--size 65536] [--out bench/results/objects.json]

(or ``python -m bench.objects``; a smoke run: ``--objects 50 --size 4096 --out /tmp/objects.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`python bench/objects.py`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness


def timed(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[3:6])} failed: {result.stderr[-500:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    # ru_maxrss of children is the largest finished child so far: each step is reported as "at most"
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mib": round(after.ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes per object")
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "objects.json")
    args = parser.parse_args(argv)
    regions = harness.REGIONS
    with harness.Services(postgres=0, bucket_prefix="bench-") as services:
        source = services.s3[regions[0]]
        source.create_bucket("bench-source", regions[0])
        source.create_bucket("bench-target", regions[0])
        client = source.client(regions[0])
        payload = os.urandom(args.size)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: client.put_object(Bucket="bench-source", Key=f"f/{i:06d}",
                                                      Body=payload[i % 97:] + i.to_bytes(4, "big")),
                          range(args.objects)))
        work = Path(tempfile.mkdtemp(prefix="strongroom-bench-objects-"))
        config = work / "c.yaml"
        config.write_text(json.dumps({
            "regions": [{"name": r, "bucket": services.bucket(r), "aws_conn_id": harness.s3_conn_id(r)}
                        for r in regions],
            "encryption": {"keyring_conn_id": "kr"}, "databases": [],
            "object_storage": [{"bucket": "bench-source", "aws_conn_id": harness.s3_conn_id(regions[0]),
                                "region": regions[0]}],
        }))
        env = {**os.environ, "AIRFLOW_HOME": str(work / "af"), **services.s3_env(),
               harness.conn_var("kr"): harness.keyring_conn()}
        cli = [sys.executable, "-m", "strongroom.cli", "--config", str(config)]
        full = timed([*cli, "objects", "backup"], env)
        for i in range(0, args.objects, 10):  # change 10% of the objects
            client.put_object(Bucket="bench-source", Key=f"f/{i:06d}", Body=b"changed" + payload[:1000])
        incremental = timed([*cli, "objects", "backup"], env)
        restore = timed([*cli, "objects", "restore", "--bucket", "bench-source", "--at",
                         datetime.now(UTC).isoformat(), "--target-bucket", "bench-target"], env)
    total = args.objects * args.size
    figures = {
        "benchmark": "object-storage backup", "date": datetime.now(UTC).isoformat(), "nproc": os.cpu_count(),
        "objects": args.objects, "object_bytes": args.size, "regions": len(regions),
        "full_pass": dict(full, mib_per_s=round(total / harness.MiB / full["wall_s"], 1),
                          objects_per_s=round(args.objects / full["wall_s"], 1)),
        "incremental_pass_10pct": incremental,
        "restore": dict(restore, objects_per_s=round(args.objects / restore["wall_s"], 1)),
        "command": f"make venv && .venv/bin/python bench/objects.py --objects {args.objects} --size {args.size}",
    }
    harness.write_report(args.out, figures)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
