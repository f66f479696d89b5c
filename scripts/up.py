"""`make up`: the Airflow UI (airflow standalone) on http://localhost:8080 against the local stack.

Starts the same local PostgreSQL "production" server and S3 server as the demo and a local SMTP sink for
alerts (each alert it receives is printed with its subject), defines every connection the example
configuration names through AIRFLOW_CONN_* variables, and runs one snapshot, one object pass, one restore
test and then the backup monitor at start-up, so every page has data and every scheduled DAG is green.
Prints the login, and stops everything on Ctrl-C (or SIGTERM).

Options (the tests start it on random loopback ports): ``--port``, ``--home`` (Airflow's home and the
configuration), ``--scale`` (sample database size), ``--no-first-runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from demo import stack_env, start_stack, write_demo_config  # noqa: E402
from devstack import SmtpSink, free_port, stop_group  # noqa: E402

USER, PASSWORD = "admin", "admin"  # a local UI on loopback only
# the start-up runs, stage by stage: restore tests need a snapshot and a point; the monitor reads them all
FIRST_RUNS = (
    ("snapshot_databases", "backup_object_storage"), ("restore_test",), ("platform_drill",), ("backup_monitor",)
)
RUN_DEADLINE = 1200.0  # seconds a start-up run may take on a busy laptop


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def say(text: str) -> None:
    print(f"up: {text}", flush=True)


def named_connections(config: Any) -> list[str]:
    """Every connection id the configuration names (any field called ``*conn_id`` or ``*conn_ids``)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        fields = getattr(type(value), "model_fields", None)
        if fields is not None:
            for name in fields:
                item = getattr(value, name)
                if name.endswith("conn_id") and isinstance(item, str):
                    found.append(item)
                elif name.endswith("conn_ids") and isinstance(item, list | tuple):
                    found.extend(str(i) for i in item)
                else:
                    walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(config)
    if not config.alerts.email_to and config.alerts.smtp_conn_id in found:
        found.remove(config.alerts.smtp_conn_id)  # not used without recipients
    return sorted(set(found))


class Api:
    def __init__(self, base: str) -> None:
        self.base = base
        self._token: str | None = None

    def call(self, path: str, body: dict | None = None, method: str | None = None) -> Any:
        if self._token is None:
            self._token = str(self._send("/auth/token", {"username": USER, "password": PASSWORD})["access_token"])
        return self._send(f"/api/v2{path}", body, method, self._token)

    def _send(self, path: str, body: dict | None = None, method: str | None = None, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers,  # noqa: S310 - loopback
                                         method=method or ("POST" if data else "GET"))
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None

    def healthy(self) -> bool:
        try:
            return bool(self._send("/api/v2/monitor/health"))
        except (OSError, ValueError):
            return False


def _poll(what: str, probe: Any, timeout: float, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except (OSError, ValueError):
            value = None
        if value:
            return value
        if proc.poll() is not None:
            raise RuntimeError(f"airflow standalone exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(2)


def _runs(api: Api, dag_id: str) -> list[dict[str, Any]]:
    return list(api.call(f"/dags/{dag_id}/dagRuns?order_by=-run_after&limit=20")["dag_runs"])


def _parsed(api: Api, dag_id: str) -> bool:
    try:
        return bool(api.call(f"/dags/{dag_id}"))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


def first_runs(api: Api, proc: subprocess.Popen[bytes]) -> Iterator[tuple[str, str]]:
    """Unpause the scheduled DAGs stage by stage; each stage's runs finish before the next starts.
    Unpausing makes the scheduler start the latest scheduled run; a manual run is triggered only when
    none appeared. Yields (dag_id, final state)."""
    for stage in FIRST_RUNS:
        for dag_id in stage:
            _poll(f"{dag_id} to be parsed", lambda d=dag_id: _parsed(api, d), 300, proc)
            api.call(f"/dags/{dag_id}", {"is_paused": False}, method="PATCH")
        for dag_id in stage:
            try:
                _poll(f"a run of {dag_id}", lambda d=dag_id: _runs(api, d), 45, proc)
            except TimeoutError:
                api.call(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": {}})
            say(f"start-up run of {dag_id} started")
            done = _poll(f"{dag_id} to finish", lambda d=dag_id: [r for r in _runs(api, d) if r["state"] in (
                "success", "failed")], RUN_DEADLINE, proc)
            state = "success" if any(r["state"] == "success" for r in done) else "failed"
            say(f"start-up run of {dag_id}: {state}" + ("" if state == "success" else " (open it in the UI)"))
            yield dag_id, state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--home", type=Path, default=ROOT / ".airflow")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--no-first-runs", action="store_true", help="leave every DAG paused, run nothing")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop everything on SIGTERM as on Ctrl-C
    home: Path = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({USER: PASSWORD}))
    config_path = home / "strongroom.yaml"
    write_demo_config(config_path, deadline=True)
    from strongroom.config import load_config

    config = load_config(config_path)
    stopping: list[Any] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        mail = SmtpSink(lambda to, subject: say(f"alert received by {', '.join(to)}: {subject}")).start()
        stopping.append(mail)
        say("starting PostgreSQL, the S3 server and an SMTP sink, creating the sample database ...")
        pg, s3 = start_stack(scale=args.scale, config_path=config_path)
        stopping += [s3, pg]
        base = f"http://127.0.0.1:{args.port}"
        env = {
            **os.environ,
            **stack_env(pg, s3, home, config_path),
            f"AIRFLOW_CONN_{config.alerts.smtp_conn_id.upper()}": mail.airflow_conn(),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(args.port),
            "AIRFLOW__API__BASE_URL": base,
            # the task log servers on free ports, not 8793/8794: another Airflow on this machine keeps its own
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
            "PGPASSWORD": pg.password,
            # Airflow's REST API for `strongroom init-airflow` and backup_monitor (pools.api_conn_id)
            f"AIRFLOW_CONN_{config.pools.api_conn_id.upper()}": json.dumps(
                {"conn_type": "http", "host": base, "login": USER, "password": PASSWORD}),
        }
        missing = [c for c in named_connections(config) if f"AIRFLOW_CONN_{c.upper()}" not in env]
        if missing:
            raise SystemExit(f"up: the example configuration names connections up does not define: {missing}")
        say(f"PostgreSQL 'production' server on 127.0.0.1:{pg.port} (database shop), S3 on {s3.endpoint}, "
            f"alerts to the SMTP sink on 127.0.0.1:{mail.port} (printed here)")
        say(f"Airflow UI on {base} - log in as {USER} / {PASSWORD}; Ctrl-C stops everything")
        log = (home / "standalone.log").open("ab")
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "airflow"), "standalone"], env=env, cwd=home,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        say(f"Airflow's own output goes to {home / 'standalone.log'}")
        api = Api(base)
        _poll("the Airflow API", api.healthy, 300, proc)
        # the pools that protect the source servers: a task whose pool is missing is never scheduled
        pools = subprocess.run([str(ROOT / ".venv" / "bin" / "strongroom"), "--config", str(config_path),
                                "init-airflow"], env=env, capture_output=True, text=True, timeout=300)
        if pools.returncode != 0:
            raise SystemExit(f"up: strongroom init-airflow failed: {pools.stderr.strip()}")
        say(f"pools: {'; '.join(pools.stdout.strip().splitlines())}")
        if not args.no_first_runs:
            say("start-up runs: one snapshot, one object pass, one restore test, one platform drill, "
                "then the monitor ...")
            results = dict(first_runs(api, proc))
            for dag in api.call("/dags?limit=100")["dags"]:
                if dag["is_paused"]:  # the manual DAGs: unpaused, or a triggered run would wait forever
                    api.call(f"/dags/{dag['dag_id']}", {"is_paused": False}, method="PATCH")
            failed = sorted(d for d, state in results.items() if state != "success")
            say("ready" + (f" (start-up runs failed: {', '.join(failed)})" if failed else ": every DAG is green"))
        else:
            say("ready (no start-up runs)")
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc is not None:
            stop_group(proc)
        for service in stopping:
            service.stop()


if __name__ == "__main__":
    raise SystemExit(main())
