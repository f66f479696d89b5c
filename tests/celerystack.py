"""A distributed Airflow for the scale-out tests: CeleryExecutor, a Redis broker, the metadata database on
PostgreSQL, the API server, scheduler, DAG processor, triggerer and two Celery workers.

Each worker has its own ``HOME``, ``TMPDIR`` and ``AIRFLOW_HOME`` (logs, configuration), its own log-server
port and its own Celery hostname, so nothing one worker writes is visible to the other: what two machines
share in production (the metadata database, the broker, the buckets, the deployed code) is all they share
here. Everything listens on random loopback ports.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devstack import LocalPostgres, free_port, stop_group
from tests.standalone import PASSWORDS, ROLES, Airflow, init_pools, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(ROOT / ".venv" / "bin" / "airflow")
DAGS = ("snapshot_databases", "restore_database", "restore_test")
SNAPSHOT_DAG = "snapshot_databases"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it, from /proc (parent links, not process groups)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


@dataclass
class Worker:
    name: str
    home: Path
    proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.home / "worker.log"

    def kill(self) -> None:
        """SIGKILL the worker and every process it started, in whatever session (Airflow's task supervisor
        starts the task in a session of its own): what a dead machine looks like."""
        assert self.proc is not None
        doomed = _descendants(self.proc.pid)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.kill(pid, signal.SIGKILL)
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def files(self) -> list[Path]:
        return [p for p in self.home.rglob("*") if p.is_file()]


@dataclass
class CeleryAirflow(Airflow):
    env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for log in sorted(self.home.rglob("*.log")):
            if log.parent == self.home or log.name == "worker.log":
                parts.append(f"--- {log.relative_to(self.home)}\n" + log.read_text(errors="replace")[-chars:])
        return "\n".join(parts)

    def start_worker(self, name: str, extra_env: dict[str, str] | None = None) -> Worker:
        # a home of its own outside pytest's folders: the throwaway PostgreSQL of a restore test runs as the
        # postgres OS user and must pass through the worker's home and temp directory, as on a real worker
        # host (pytest keeps its folders 0700, and resets them whenever another session starts)
        worker = self.workers.get(name) or Worker(name, Path(tempfile.mkdtemp(prefix=f"strongroom-{name}-")))
        (worker.home / "tmp").mkdir(parents=True, exist_ok=True)
        for folder in (worker.home, worker.home / "tmp"):
            folder.chmod(0o711)
        # the host name Airflow records on the task instances: one per worker, as on two machines
        (worker.home / "workerhost.py").write_text(f"def hostname():\n    return {name!r}\n")
        path = os.pathsep.join(p for p in (str(worker.home), self.env.get("PYTHONPATH", "")) if p)
        env = dict(self.env, HOME=str(worker.home), TMPDIR=str(worker.home / "tmp"),
                   AIRFLOW_HOME=str(worker.home), PYTHONPATH=path,
                   AIRFLOW__CORE__HOSTNAME_CALLABLE="workerhost.hostname",
                   AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",  # each delivery is logged: tests count them
                   AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()), **(extra_env or {}))
        log = worker.log.open("ab")
        worker.proc = subprocess.Popen(
            [AIRFLOW, "celery", "worker", "--celery-hostname", f"{name}@strongroom-test", "--concurrency", "1",
             "--without-gossip", "--without-mingle"],
            env=env, cwd=worker.home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.workers[name] = worker
        return worker

    def restart_workers(self, extra_env: dict[str, str] | None = None, names: list[str] | None = None) -> None:
        """Stop the named workers (default: every one; warm shutdown) and start them again with ``extra_env``."""
        names = list(self.workers) if names is None else names
        for name in names:
            worker = self.workers[name]
            if worker.proc is not None and worker.proc.poll() is None:
                stop_group(worker.proc)
        for name in names:
            self.start_worker(name, extra_env)
        self.wait_for_workers(names)

    def deliveries(self, run_id: str, task_id: str, map_index: int, try_number: int) -> dict[str, int]:
        """How often each worker was handed the workload of one try of one task instance (its log)."""
        needle = f"task_id='{task_id}', dag_id='{SNAPSHOT_DAG}', run_id='{run_id}'"
        found = {}
        for name, worker in self.workers.items():
            lines = worker.log.read_text(errors="replace").splitlines() if worker.log.exists() else []
            found[name] = sum(1 for line in lines if "Executing workload in Celery" in line and needle in line
                              and f"map_index={map_index}," in line and f"try_number={try_number}," in line)
        return found

    def wait_for_workers(self, names: list[str], timeout: float = 180) -> None:
        """Until every named worker answers Celery's ping (it then takes tasks)."""
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run([AIRFLOW, "celery", "list-workers", "-o", "json"], env=self.env,
                                  capture_output=True, text=True, timeout=120)
            up = done.stdout if done.returncode == 0 else ""
            if all(f"{n}@strongroom-test" in up for n in names):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {names} not up: {done.stdout[-500:]} {done.stderr[-500:]}\n"
                                     + self.log_tail())
            time.sleep(2)

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        run = self.api("alice", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def scheduled_run(self, dag_id: str, timeout: float = 120) -> str:
        """Unpause ``dag_id`` and return the run the scheduler creates for its latest interval (a paused
        DAG's runs are never scheduled, so the tests run the DAG as ops would: unpaused)."""
        self.wait_for_dag(dag_id, unpause=True)
        deadline = time.monotonic() + timeout
        while not (runs := self.api("alice", f"/dags/{dag_id}/dagRuns")["dag_runs"]):
            if time.monotonic() > deadline:
                raise AssertionError(f"no run of {dag_id} was scheduled\n{self.log_tail()}")
            time.sleep(1)
        return str(runs[0]["dag_run_id"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.api("alice", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return str(state)
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} {run_id} still {state}\n{self.log_tail()}")
            time.sleep(2)

    def errors(self, dag_id: str, run_id: str) -> str:
        """The error lines of the run's task logs, wherever a worker wrote them (for failure messages)."""
        lines = []
        for worker in self.workers.values():
            for log in sorted(worker.home.glob(f"logs/dag_id={dag_id}/run_id={run_id}/**/*.log")):
                for line in log.read_text(errors="replace").splitlines():
                    if '"level":"error"' in line:
                        lines.append(f"{worker.name} {log.parent.name}/{log.name}: {line[:1500]}")
        return "\n".join(lines) or "(no error in the task logs)"

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return list(self.api("alice", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")["task_instances"])

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries"
        return list(self.api("alice", path)["task_instances"])


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def start(
    config: Path, home: Path, meta: LocalPostgres, extra_env: dict[str, str] | None = None,
    workers: tuple[str, ...] = ("worker-a", "worker-b"),
) -> Iterator[CeleryAirflow]:
    """Start the stack; ``meta`` holds the metadata database (a database ``airflow_<n>`` is created there)."""
    name = f"airflow_{free_port()}"
    meta.execute(f"CREATE DATABASE {name}")
    core = home / "core"
    (core / "dags").mkdir(parents=True)
    for dag in DAGS:
        shutil.copy(ROOT / "dags" / f"{dag}.py", core / "dags" / f"{dag}.py")
    (core / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(PASSWORDS))
    redis_port, port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    sql = meta.airflow_uri(name).replace("postgresql://", "postgresql+psycopg2://", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update({
        "PATH": f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(core),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql,
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + sql,
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        # the setting docs/deployment.md asks for: above the longest task (snapshot.run_timeout)
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
        "AIRFLOW__API_AUTH__JWT_SECRET": base64.b64encode(os.urandom(64)).decode(),
        "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
        "AIRFLOW__CORE__DAGS_FOLDER": str(core / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        # a dead worker's task is noticed this soon (default 300 s)
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in ROLES.items()),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("CELERY_STACK_LOG_LEVEL", "WARNING"),
        "STRONGROOM_CONFIG": str(config),
        **(extra_env or {}),
    })
    airflow = CeleryAirflow(base, home, env=env)
    redis_log = (home / "redis.log").open("wb")
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=redis_log, stderr=subprocess.STDOUT, start_new_session=True)
    airflow.procs["redis"] = redis
    try:
        migrated = subprocess.run([AIRFLOW, "db", "migrate"], env=env, cwd=core, capture_output=True, text=True,
                                  timeout=600)
        assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
        for component in COMPONENTS:
            log = (home / f"{component}.log").open("wb")
            airflow.procs[component] = subprocess.Popen(
                [AIRFLOW, *component.split()], env=env, cwd=core, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
            log.close()
        for worker in workers:
            airflow.start_worker(worker)
        wait_healthy(base, 240, lambda: [n for n, p in airflow.procs.items() if p.poll() is not None],
                     airflow.log_tail, "the Celery stack")
        init_pools(base, config, env)
        airflow.wait_for_workers(list(workers))
        yield airflow
    finally:
        for worker in airflow.workers.values():
            if worker.proc is not None and worker.proc.poll() is None:
                stop_group(worker.proc)
        for proc in reversed(list(airflow.procs.values())):
            stop_group(proc)
        redis_log.close()
        for worker in airflow.workers.values():  # keep the logs beside the others for a failed run's reader
            if (worker.home / "logs").exists():
                shutil.copytree(worker.home / "logs", home / worker.name / "logs", dirs_exist_ok=True)
            shutil.copy2(worker.log, home / f"{worker.name}.log") if worker.log.exists() else None
            shutil.rmtree(worker.home, ignore_errors=True)
