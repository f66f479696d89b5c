"""How long each DAG file takes to parse, as the dag-processor sees it.

Each file is parsed in a fresh interpreter in which Airflow is already imported (the dag-processor has
it loaded), so the figure is the DAG file's own cost: its imports, reading the config file, building the
DAG. Writes JSON to bench/results/dag_parse.json.

    .venv/bin/python bench/dag_parse.py [--runs 5] [--out bench/results/dag_parse.json]

(or ``python -m bench.dag_parse``; a smoke run: ``--runs 1 --out /tmp/dag_parse.json``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`python bench/dag_parse.py`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness
from bench.harness import REPO

PROBE = r"""
import importlib.util, sys, time
import airflow.sdk  # loaded in the dag-processor already
from airflow.dag_processing.dagbag import DagBag  # noqa: F401
path = sys.argv[1]
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(time.perf_counter() - start)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="parses of each DAG file (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "dag_parse.json")
    args = parser.parse_args(argv)
    env = {**os.environ, "STRONGROOM_CONFIG": str(REPO / "include/config/strongroom.example.yaml"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}
    results = {}
    for path in sorted((REPO / "dags").glob("*.py")):
        times = [
            float(subprocess.run([sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1])
            for _ in range(args.runs)
        ]
        results[path.name] = {"median_seconds": round(statistics.median(times), 4), "max_seconds": round(max(times), 4)}
        print(f"{path.name:<32} median {statistics.median(times) * 1000:7.1f} ms   max {max(times) * 1000:7.1f} ms")
    harness.write_report(args.out, {"runs": args.runs, "files": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
