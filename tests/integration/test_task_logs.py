"""Task logs read by a person at 3 a.m.: a refused production restore, run by a real `airflow standalone`,
ends its task log (the log file) with the refusal's one line and no traceback, and is not retried.

(A restore test's log without Great Expectations chatter, and the summary lines: tests/integration/test_make_up.py.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import Stack
from tests.standalone import Airflow

DAG = "restore_database"


def _log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


def _has_traceback(entry: dict) -> bool:
    text = json.dumps(entry)
    return "Traceback" in text or any(k in entry for k in ("exception", "error_detail", "exc_info"))


def test_refused_production_restore_ends_with_the_refusal_line_and_no_traceback(
    airflow_ui: Airflow, stack: Stack, ledger: Path,
) -> None:
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database

    snapshot_database(load_config(ledger), "ledger", connections())
    airflow_ui.wait_for_dag(DAG)
    conf = {"database": "ledger", "target": "pg_ledger_alias", "replace_contents": True}  # no confirmation
    run = airflow_ui.api("alice", f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + 180
    while (state := airflow_ui.api("alice", f"/dags/{DAG}/dagRuns/{run_id}")["state"]) not in ("failed", "success"):
        assert time.monotonic() < deadline, airflow_ui.log_tail()
        time.sleep(1)
    assert state == "failed"
    plan = airflow_ui.api("alice", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/plan")
    assert plan["state"] == "failed" and plan["try_number"] == 1  # refused, not retried

    files = list((airflow_ui.home / "logs").glob(f"dag_id={DAG}/run_id={run_id}/task_id=plan/attempt=1.log"))
    assert len(files) == 1, list((airflow_ui.home / "logs").rglob("*.log"))
    entries = _log_lines(files[0])
    refusal = "RefusedError: target "
    ours = [i for i, e in enumerate(entries) if str(e.get("event", "")).startswith(refusal)
            and e.get("logger", "").startswith("strongroom")]
    assert ours, [e.get("event") for e in entries]
    line = entries[ours[0]]["event"]
    assert "is the production database ledger: type 'ledger' to confirm" in line and "\n" not in line
    assert not [e for e in entries if _has_traceback(e)], [e for e in entries if _has_traceback(e)][:1]
    # what follows the refusal only repeats it (the runner's exit line, the alert's subject), at most a few lines
    after = entries[ours[0] + 1:]
    problems = [e for e in after if e.get("level") in ("error", "critical") and line not in json.dumps(e)]
    assert not problems, problems
    assert len(after) <= 8, [e.get("event") for e in after]
