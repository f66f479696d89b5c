"""Benchmark: the schema inventory's own cost on a database with many objects.

    .venv/bin/python bench/inventory.py [--tables 5000] [--repeat 3] [--out bench/results/inventory_objects.json]

(or ``python -m bench.inventory``; a smoke run: ``--tables 50 --repeat 1 --out /tmp/inventory.json``).

The inventory's cost grows with the number of catalog objects, not with the data: the 1.2 GB benchmark
database (bench/snapshot.py) has a dozen relations. This starts a throwaway PostgreSQL 15, creates
``--tables`` small tables (each with a primary key, a sequence, a CHECK constraint, a trigger and a GRANT),
and times, in one REPEATABLE READ transaction each, ``read_inventory`` against the exact row count the
snapshot already does for every table (``SnapshotSession.count_rows``), so the two compare on one
database. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`python bench/inventory.py`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tables", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "inventory_objects.json")
    args = parser.parse_args(argv)

    import psycopg

    from strongroom.inventory import read_inventory
    from strongroom.postgres import SnapshotSession

    with harness.Services(postgres=1, regions=()) as services:
        pg = services.pg
        pg.execute("CREATE ROLE bench_reader NOLOGIN")
        pg.execute("CREATE DATABASE many")
        pg.execute("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$", "many")
        started = time.monotonic()
        with psycopg.connect(autocommit=True, **pg.connect_kwargs("many")) as conn:
            for i in range(args.tables):
                conn.execute(
                    f"CREATE TABLE t{i} (id serial PRIMARY KEY, v int CHECK (v >= 0));"
                    f"CREATE TRIGGER t{i}_touch BEFORE INSERT ON t{i} FOR EACH ROW EXECUTE FUNCTION touch();"
                    f"GRANT SELECT ON t{i} TO bench_reader; INSERT INTO t{i} (v) VALUES (1), (2);"
                )
        created = time.monotonic() - started
        samples: dict[str, list[float]] = {"read_inventory": [], "count_rows": []}
        size = 0
        for _ in range(args.repeat + 1):  # the first round warms the catalog caches: left out
            for name in samples:
                with psycopg.connect(**pg.connect_kwargs("many")) as conn:
                    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                    mark = time.perf_counter()
                    if name == "read_inventory":
                        size = len(json.dumps(read_inventory(conn)))
                    else:
                        SnapshotSession(conn, "", datetime.now(UTC), "", 0).count_rows()
                    samples[name].append(round(time.perf_counter() - mark, 4))
        medians = {name: statistics.median(values[1:]) for name, values in samples.items()}
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "tables": args.tables,
            "create_seconds": round(created, 1),
            "samples": samples,
            "median_seconds": medians,
            "inventory_json_bytes": size,
            "inventory_vs_count_rows": round(medians["read_inventory"] / medians["count_rows"], 3),
        }
    harness.write_report(args.out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
