"""`make up`: the Airflow UI (airflow standalone) on http://localhost:8080 against the local stack.

Starts the same local PostgreSQL "production" server and S3 server as the demo, preconfigures every
connection through AIRFLOW_CONN_* variables, prints the login, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from demo import stack_env, start_stack  # noqa: E402
from devstack import stop_group  # noqa: E402

HOME = ROOT / ".airflow"
USER, PASSWORD = "admin", "admin"  # a local UI on loopback only


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # stop everything on SIGTERM as on Ctrl-C
    HOME.mkdir(exist_ok=True)
    (HOME / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({USER: PASSWORD}))
    print("up: starting PostgreSQL and the S3 server, creating the sample database ...", flush=True)
    pg, s3 = start_stack(scale=2)
    env = {
        **os.environ,
        **stack_env(pg, s3, HOME),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "PGPASSWORD": pg.password,
    }
    print(f"up: PostgreSQL 'production' server on 127.0.0.1:{pg.port} (database shop), S3 on {s3.endpoint}")
    print(f"up: Airflow UI on http://localhost:8080 - log in as {USER} / {PASSWORD}; Ctrl-C stops everything")
    print("up: try it: unpause snapshot_databases, then `strongroom list` in another shell with the same env")
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "airflow"), "standalone"], env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_group(proc)
        s3.stop()
        pg.stop()


if __name__ == "__main__":
    raise SystemExit(main())
