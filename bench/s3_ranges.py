"""What the local S3 server costs to read one large object, by the size of the ranges it is read in.

Every restore of a whole snapshot reads its dump object in ranges (``transfer.part_size``, up to
``transfer.download_concurrency`` at a time: :meth:`strongroom.storage.ObjectStore.iter_chunks`), as a client
of S3 should. This measures, on the local moto server the other benchmarks use, the server's CPU seconds and
the wall time to read one object of ``--mb`` MB through that same verb, for each range size of
``--ranges``, and as one GET (a range as large as the object). If the server's cost grows with the number of
requests times the object's size (each ranged GET re-reading the whole object), that cost is the test
server's, not the product's: docs/benchmarks.md says how it weighs on the restore's ratio.

    .venv/bin/python bench/s3_ranges.py --mb 400 --ranges 16,64 --repeat 3    # bench/results/s3_ranges.json
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`python bench/s3_ranges.py`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness
from bench.harness import REGIONS, MiB, Services


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400, help="object size in MB (default 400)")
    parser.add_argument("--ranges", default="16,64", help="range sizes in MiB, comma-separated (default 16,64)")
    parser.add_argument("--concurrency", type=int, default=4, help="ranges in flight (default 4, the example's)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(harness.RESULTS / "s3_ranges.json"))
    args = parser.parse_args(argv)

    from strongroom.storage import ObjectStore

    size = args.mb * 10**6
    region = REGIONS[0]
    with Services(regions=(region,), postgres=0) as services:
        server = services.s3[region]
        assert server.process is not None
        client = server.client(region)
        store = ObjectStore(client, services.bucket(region), region=region)
        key = "bench/object"
        harness.say(f"writing a {args.mb} MB object")
        client.upload_fileobj(io.BytesIO(os.urandom(size)), store.bucket, key)  # multipart, as a dump is stored
        cases = [(f"{r} MiB ranges", int(r) * MiB) for r in args.ranges.split(",")] + [("one GET", size)]
        walls: dict[str, list[float]] = {name: [] for name, _ in cases}
        motos: dict[str, list[float]] = {name: [] for name, _ in cases}
        for _ in range(args.repeat):
            for name, range_size in cases:
                moto_before = harness.cpu_seconds(server.process.pid)
                started = time.monotonic()
                read = sum(len(b) for b in store.iter_chunks(key, size, chunk_size=range_size,
                                                             concurrency=args.concurrency))
                walls[name].append(round(time.monotonic() - started, 3))
                motos[name].append(round(harness.cpu_seconds(server.process.pid) - moto_before, 3))
                assert read == size
        results: dict[str, dict[str, object]] = {}
        for name, range_size in cases:
            wall, moto = statistics.median(walls[name]), statistics.median(motos[name])
            requests = -(-size // range_size)
            results[name] = {"range_bytes": range_size, "requests": requests, "wall_s": wall,
                             "moto_cpu_s": moto, "wall_s_all": walls[name], "moto_cpu_s_all": motos[name]}
            harness.say(f"{name:>16}: {requests:>4} requests, wall {wall:.2f} s, moto {moto:.2f} cpu-s")
    report = {"benchmark": "moto's CPU to serve one object in ranges", "command": " ".join(sys.argv),
              "object_bytes": size, "concurrency": args.concurrency, "results": results,
              "machine": harness.machine_info(Path("/usr/lib/postgresql/15/bin")), "code": harness.code_state()}
    harness.write_report(Path(args.out), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
