"""What the local S3 server costs to read one large object, by the size of the ranges it is read in.

Every restore of a whole snapshot reads its dump object in ranges (``transfer.part_size``, up to
``transfer.download_concurrency`` at a time: :meth:`strongroom.storage.ObjectStore.iter_chunks`), as a client
of S3 should. This measures the server's CPU seconds and the wall time to read one object of ``--mb`` MB
through that same verb, for each range size of ``--ranges`` and as one GET (a range as large as the object),
on two local servers in turn: moto as shipped (``python -m moto.server``), whose cost grows with the number
of requests times the object's size (each ranged GET re-reads the whole object), and ``scripts/s3server.py``
(what the tests and the other benchmarks run), which reads only the range, as S3 does. docs/benchmarks.md
says how the difference weighs on the restore's ratio.

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
from bench.harness import REGIONS, MiB
from devstack import MotoServer

BUCKET = "bench-s3-ranges"


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
    data = os.urandom(size)
    cases = [(f"{r} MiB ranges", int(r) * MiB) for r in args.ranges.split(",")] + [("one GET", size)]
    results: dict[str, dict[str, dict[str, object]]] = {}
    for label, as_shipped in (("moto as shipped", True), ("scripts/s3server.py", False)):
        server = MotoServer(as_shipped=as_shipped).start()
        try:
            assert server.process is not None
            server.create_bucket(BUCKET, region)
            client = server.client(region)
            store = ObjectStore(client, BUCKET, region=region)
            key = "bench/object"
            harness.say(f"{label}: writing a {args.mb} MB object")
            client.upload_fileobj(io.BytesIO(data), BUCKET, key)  # multipart, as a dump is stored
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
        finally:
            server.stop()
        results[label] = {}
        for name, range_size in cases:
            wall, moto = statistics.median(walls[name]), statistics.median(motos[name])
            requests = -(-size // range_size)
            results[label][name] = {"range_bytes": range_size, "requests": requests, "wall_s": wall,
                                    "moto_cpu_s": moto, "wall_s_all": walls[name], "moto_cpu_s_all": motos[name]}
            harness.say(f"{label:>20} {name:>16}: {requests:>4} requests, wall {wall:.2f} s, server {moto:.2f} cpu-s")
    report = {"benchmark": "the local S3 server's CPU to serve one object in ranges", "command": " ".join(sys.argv),
              "object_bytes": size, "concurrency": args.concurrency, "results": results,
              "machine": harness.machine_info(Path("/usr/lib/postgresql/15/bin")), "code": harness.code_state()}
    harness.write_report(Path(args.out), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
