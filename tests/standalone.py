"""A real `airflow standalone` for the tests that need a running Airflow: the UI, the REST API, HITL.

One instance per test session (it takes ~40 s to come up on two cores). Its DAGs folder holds only
``restore_database``, ``restore_objects`` and ``snapshot_databases`` (parsing costs time), its plugins folder is the
repository's, and it reads the ``ledger`` configuration (alerts go to the test's SMTP sink).
Users: ``ops`` (viewer), ``alice``, ``bob`` and ``carol`` (op; alice and bob are the configured approvers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import free_port, listens, stop_group

ROOT = Path(__file__).resolve().parents[1]
PASSWORDS = {"ops": "ops-password-1", "alice": "alice-password-1", "bob": "bob-password-1",
             "carol": "carol-password-1"}
ROLES = {"ops": "viewer", "alice": "op", "bob": "op", "carol": "op"}  # carol is not in restore.approvers
DAGS = ("restore_database", "snapshot_databases", "restore_objects", "recover_platform")


def request(
    url: str, *, token: str | None = None, body: dict | None = None, method: str | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers,  # noqa: S310
                                 method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310 - loopback http
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Airflow:
    base: str
    home: Path
    statsd: Any = None  # the StatsD sink Airflow's metrics go to, when the fixture set one

    def token(self, user: str) -> str:
        status, body = request(f"{self.base}/auth/token", body={"username": user, "password": PASSWORDS[user]})
        assert status == 201, body
        return str(json.loads(body)["access_token"])

    def api(self, user: str, path: str, body: dict | None = None, method: str | None = None) -> Any:
        status, raw = request(f"{self.base}/api/v2{path}", token=self.token(user), body=body, method=method)
        if status >= 300:
            raise AssertionError(f"{method or ('POST' if body else 'GET')} {path} as {user}: {status} {raw[:500]!r}")
        return json.loads(raw) if raw else None

    def wait_for_dag(self, dag_id: str, *, unpause: bool = True, timeout: float = 120) -> None:
        """Wait until the dag-processor has parsed ``dag_id``; then unpause it."""
        deadline = time.monotonic() + timeout
        while not [d for d in self.api("alice", f"/dags?dag_id_pattern={dag_id}")["dags"] if d["dag_id"] == dag_id]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} was not parsed\n{self.log_tail()}")
            time.sleep(1)
        if unpause:
            self.api("alice", f"/dags/{dag_id}", {"is_paused": False}, method="PATCH")

    def pause(self, dag_id: str) -> None:
        self.api("alice", f"/dags/{dag_id}", {"is_paused": True}, method="PATCH")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A task's log as text, one event a line."""
        raw = self.api("alice", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
                       "?full_content=true")
        content = raw.get("content", raw) if isinstance(raw, dict) else raw
        if isinstance(content, list):
            return "\n".join(str(e.get("event", e)) if isinstance(e, dict) else str(e) for e in content)
        return str(content)

    def log_tail(self, chars: int = 3000) -> str:
        return (self.home / "standalone.log").read_text(errors="replace")[-chars:]


def wait_healthy(base: str, timeout: float, dead: Callable[[], list[str]], log_tail: Callable[[], str],
                 what: str, ours: Callable[[], bool] = lambda: True) -> None:
    """Until Airflow's API at ``base`` answers its health check; fails early when ``dead`` names a process
    that has exited. ``ours``: the port is held by our own process (another session's server could hold a
    reused port and answer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ours() and request(f"{base}/api/v2/monitor/health")[0] == 200:
                return
        except OSError:
            pass
        gone = dead()
        if gone or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up ({', '.join(gone) or 'timeout'}):\n{log_tail()}")
        time.sleep(1)


def api_conn(base: str, user: str = "alice") -> str:
    """The ``airflow_api`` connection (pools.api_conn_id): Airflow's REST API as an op user."""
    return json.dumps({"conn_type": "http", "host": base, "login": user, "password": PASSWORDS[user]})


def init_pools(base: str, config: Path, env: dict[str, str]) -> None:
    """What ops run once after deploying (and `make up` does): `strongroom init-airflow` creates the pools;
    a task whose pool is missing would never be scheduled."""
    env = {**env, "AIRFLOW_CONN_AIRFLOW_API": api_conn(base)}
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "strongroom"), "--config", str(config), "init-airflow"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def start(config: Path, home: Path, extra_env: dict[str, str] | None = None) -> Iterator[Airflow]:
    (home / "dags").mkdir()
    for dag in DAGS:
        shutil.copy(ROOT / "dags" / f"{dag}.py", home / "dags" / f"{dag}.py")
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(PASSWORDS))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update({
        "PATH": f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # a test unpauses what it runs
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in ROLES.items()),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        # not the fixed 8793/8794: another test session (or pytest-xdist worker) may run its own Airflow
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "STRONGROOM_CONFIG": str(config),
        **(extra_env or {}),
    })
    log = (home / "standalone.log").open("wb")
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "airflow"), "standalone"], env=env, cwd=home,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    airflow = Airflow(base, home)
    try:
        wait_healthy(base, 300, lambda: ["standalone"] if proc.poll() is not None else [], airflow.log_tail,
                     "airflow standalone", ours=lambda: _group_listens(proc.pid, port))
        init_pools(base, config, env)
        yield airflow
    finally:
        stop_group(proc)
        log.close()


def _group_listens(pgid: int, port: int) -> bool:
    """Whether a process of the session ``pgid`` (airflow standalone and its children) listens on ``port``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and listens(int(entry), port):
            return True
    return False
