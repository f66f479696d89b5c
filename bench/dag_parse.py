"""How long each DAG file takes to parse, as the dag-processor sees it.

Each file is parsed in a fresh interpreter in which Airflow is already imported (the dag-processor has
it loaded), so the figure is the DAG file's own cost: its imports, reading the config file, building the
DAG. Writes JSON to bench/results/dag_parse.json.

    .venv/bin/python bench/dag_parse.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5
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


def main() -> int:
    env = {**os.environ, "STRONGROOM_CONFIG": str(ROOT / "include/config/strongroom.example.yaml"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}
    results = {}
    for path in sorted((ROOT / "dags").glob("*.py")):
        times = [
            float(subprocess.run([sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1])
            for _ in range(RUNS)
        ]
        results[path.name] = {"median_seconds": round(statistics.median(times), 4), "max_seconds": round(max(times), 4)}
        print(f"{path.name:<32} median {statistics.median(times) * 1000:7.1f} ms   max {max(times) * 1000:7.1f} ms")
    out = ROOT / "bench" / "results" / "dag_parse.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"runs": RUNS, "files": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
