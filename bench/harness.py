"""What Strongroom's benchmarks share.

* the local services: throwaway PostgreSQL 15 clusters and moto S3 servers on loopback (:class:`Services`),
  the Airflow connections that point at them, a throwaway keyring;
* the ``shop`` sample database at a given scale (``Bench.create_database``), or in the ``wide`` shape: two
  wide text/JSON tables of about the same size under the same name (``scripts/sample_data.create_wide``);
* measuring a command as a fresh subprocess: wall time, CPU of its tree, peak RSS of each of its processes,
  the CPU the servers and everything else on the machine used meanwhile (:func:`measure`), after waiting for
  a quiet machine, with disturbed runs measured again (:class:`Bench`);
* the comparators: ``pg_dump -Fc``, ``pg_dump -Fc --compress=0``, ``pg_restore`` and ``pg_restore --jobs``;
* what a run measured on: the machine, the packages, the library code (:func:`machine_info`,
  :func:`code_state`); writing ``bench/results/*.json`` (:func:`write_report`).

Nothing here asserts on time: a benchmark reports, docs/benchmarks.md judges.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# A benchmark measures this checkout's library, in this process and in every command it starts (the venv's
# editable install may point at another checkout); scripts/ holds the local services and the sample data.
sys.path[:0] = [str(REPO / "include"), str(REPO / "scripts")]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "include"), os.environ.get("PYTHONPATH")) if p)

from devstack import LocalPostgres, MotoServer  # noqa: E402

RESULTS = REPO / "bench" / "results"
CONFIG = REPO / "include" / "config" / "strongroom.example.yaml"
VENV_BIN = Path(sys.executable).parent
REGIONS = ("eu-central-1", "eu-west-1", "eu-north-1")
DATABASE = "shop"
DEFAULT_SCALE = 360  # ~3.4 MiB per scale unit: ~1.2 GiB
MIN_DB_SIZE = 1 << 30
TIME = "/usr/bin/time"  # GNU time
MiB = 1 << 20
MB = 10**6

RESTORE_RATIO_LIMIT = 1.3  # the snapshot issue's restore target: restore <= 1.3x pg_restore
QUIET_BUSY = 0.15  # fraction of all cores others may keep busy while we wait to measure
DISTURBED = 0.1  # a run during which others used more than this share of all cores (and 0.5 cpu-s) is flagged

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def add_measuring_options(parser: argparse.ArgumentParser, out: str) -> None:
    """The options every measured benchmark takes: rounds, where the JSON goes, and how long to wait for a
    quiet machine and how often to measure a disturbed run again (:meth:`Bench.settle`)."""
    add = parser.add_argument
    add("--repeat", type=int, default=2, help="measured rounds after the warm-up (default: %(default)s)")
    add("--out", default=out, help="JSON results (default: %(default)s)")
    add("--quiet-timeout", type=float, default=300.0, help="max seconds to wait for a quiet machine per run")
    add("--retries", type=int, default=3, help="times to measure a disturbed run again (default: 3)")


def check_measuring_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------- services


def s3_conn_id(region: str) -> str:
    """The Airflow connection id of a region's S3 server, as the example config names it."""
    return "s3_" + region.replace("-", "_")


def conn_var(conn_id: str) -> str:
    """The environment variable an Airflow connection is read from."""
    return "AIRFLOW_CONN_" + conn_id.upper()


def keyring_conn(key_id: str = "bench") -> str:
    """An Airflow connection (JSON) holding a keyring with one fresh random key: benchmark data is throwaway."""
    keyring = {"active": key_id, "keys": {key_id: base64.b64encode(os.urandom(32)).decode()}}
    return json.dumps({"conn_type": "generic", "extra": keyring})


@dataclass
class Services:
    """Throwaway local services: ``postgres`` PostgreSQL 15 clusters, and a moto S3 server for each of
    ``regions`` (one shared by all with ``shared_s3``: it then copies between regions server-side) with the
    region's versioned bucket created. Use as a context manager: everything started is stopped on the way
    out, also on error."""

    regions: tuple[str, ...] = REGIONS
    postgres: int = 1
    shared_s3: bool = False
    bucket_prefix: str = "strongroom-"
    pgs: list[LocalPostgres] = field(default_factory=list, init=False)
    s3: dict[str, MotoServer] = field(default_factory=dict, init=False)  # region -> its server
    moto_peak_rss: int = field(default=0, init=False)  # bytes: the largest moto server's, recorded when stopped
    _servers: list[MotoServer] = field(default_factory=list, init=False, repr=False)

    @property
    def pg(self) -> LocalPostgres:
        return self.pgs[0]

    def bucket(self, region: str) -> str:
        return f"{self.bucket_prefix}{region}"

    def start(self) -> Services:
        try:
            for _ in range(self.postgres):
                self.pgs.append(LocalPostgres().start())
            for region in self.regions:
                if not self._servers or not self.shared_s3:
                    self._servers.append(MotoServer().start())
                self.s3[region] = self._servers[-1]
                self.s3[region].create_bucket(self.bucket(region), region)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._servers:
            self.moto_peak_rss = max(vm_hwm(s.process.pid) if s.process else 0 for s in self._servers)
        for server in self._servers:
            server.stop()
        for pg in self.pgs:
            pg.stop()

    def s3_env(self) -> dict[str, str]:
        """Each region's connection (``s3_<region>``) to its server, as environment variables."""
        return {conn_var(s3_conn_id(r)): server.airflow_conn(r) for r, server in self.s3.items()}

    def check(self) -> None:
        """Raise when a server died: no figure measured without it can be trusted."""
        for region, server in self.s3.items():
            if server.process is None or server.process.poll() is not None:
                code = server.process.returncode if server.process else None
                raise RuntimeError(f"the moto S3 server of {region} is gone (exit {code}); no result can be trusted")
        for pg in self.pgs:
            if not (pg.data / "postmaster.pid").exists():
                raise RuntimeError("the PostgreSQL server is gone; no result can be trusted")

    def __enter__(self) -> Services:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------- /proc probes


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the ``comm`` field (index 0 is the state), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def comm(pid: int) -> str:
    """A process's command name (``postgres``, ``pg_dump``), or ``?`` when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _descendants(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    children = _children_map() if children is None else children
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def vm_hwm(pid: int) -> int:
    """Peak resident set size of one process, in bytes (0 when it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """CPU of ``root``, its reaped children and its live descendants (the postmaster and its backends).

    A child reaped while its siblings are read would be counted nowhere (gone from /proc, not yet in the
    parent's total when that was read), so the read is repeated until the parent's total holds still.
    """
    for _ in range(20):
        reaped = cpu_seconds(root, reaped_children=True)
        live = sum(cpu_seconds(pid) for pid in _descendants(root))
        if cpu_seconds(root, reaped_children=True) == reaped:
            break
    return reaped + live


def system_busy_seconds() -> float:
    """Busy CPU seconds summed over all cores since boot (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / _CLK_TCK


class TreeMonitor(threading.Thread):
    """Samples the peak RSS (VmHWM) of every process under ``root``, keyed by role, until stopped.

    ``root`` is the /usr/bin/time wrapper: its child is the measured process (``root_role``); every
    deeper descendant is keyed by its command name (pg_dump, pg_restore, ...).
    """

    def __init__(self, root: int, root_role: str, interval: float = 0.05) -> None:
        super().__init__(name="rss-monitor", daemon=True)
        self.root, self.root_role, self.interval = root, root_role, interval
        self.peaks: dict[str, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        children = _children_map()
        direct = set(children.get(self.root, []))
        for pid in _descendants(self.root, children):
            role = self.root_role if pid in direct else comm(pid)
            self.peaks[role] = max(self.peaks.get(role, 0), vm_hwm(pid))

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        self.join()
        return {role: peak for role, peak in self.peaks.items() if peak}


# --------------------------------------------------------------------------------------------- measurement


@dataclass
class Sample:
    """One measured run of one command."""

    name: str
    round: int  # 0 is the warm-up
    wall_s: float
    cpu_s: float  # user + system of the process and every descendant it waited for (GNU time %U + %S)
    tree_maxrss: int  # bytes: GNU time's %M, the largest process in the tree
    peak_rss: dict[str, int]  # bytes per role: the measured process, then its children by name
    moto_cpu_s: float
    postgres_cpu_s: float
    system_busy_s: float  # all cores: cpu-seconds the whole machine was busy
    other_cpu_s: float  # busy cpu-seconds of everything else on the machine (other users, kernel threads)
    waited_s: float = 0.0  # how long the machine took to become quiet before this run
    disturbed: bool = False  # others used more than DISTURBED of the cores during the run
    discarded: bool = False  # disturbed, and measured again
    extra: dict[str, Any] = field(default_factory=dict)


class CommandFailed(RuntimeError):
    pass


@dataclass
class Probes:
    moto_pids: list[int]
    postmaster_pid: int

    def read(self) -> tuple[float, float, float, float]:
        own = os.times()
        return (
            sum(cpu_seconds(pid, reaped_children=True) for pid in self.moto_pids),
            tree_cpu_seconds(self.postmaster_pid),
            system_busy_seconds(),
            own.user + own.system,  # this process: the RSS monitor's sampling
        )


def measure(
    name: str,
    round_no: int,
    argv: list[str],
    *,
    env: dict[str, str],
    probes: Probes,
    logs: Path,
    root_role: str,
    stdout_to_null: bool = False,
) -> tuple[Sample, str]:
    """Run ``argv`` under /usr/bin/time in a new process group; returns the sample and its stdout.

    GNU time, a small C program, reports the tree's CPU and largest RSS from its own wait4 (wait4 in this
    Python process would count the pages a forked child shares with us before it execs).
    """
    out_path = logs / f"{name}.r{round_no}.out"
    err_path = logs / f"{name}.r{round_no}.err"
    usage_path = logs / f"{name}.r{round_no}.time"
    argv = [TIME, "--format=%M %U %S", f"--output={usage_path}", *argv]
    with open(err_path, "wb") as err, open(os.devnull if stdout_to_null else out_path, "wb") as out:
        before = probes.read()
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=REPO, start_new_session=True
        )
        monitor = TreeMonitor(proc.pid, root_role)
        monitor.start()
        try:
            proc.wait()
        except BaseException:
            _kill_group(proc.pid)
            raise
        finally:
            peaks = monitor.stop()
        wall = time.perf_counter() - started
        after = probes.read()
    if proc.returncode != 0:
        _kill_group(proc.pid)
        tail = err_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise CommandFailed(f"{name} exited with {proc.returncode}: {' | '.join(tail)}")
    stdout = "" if stdout_to_null else out_path.read_text(errors="replace")
    maxrss_kib, user, system = usage_path.read_text().split()[-3:]
    moto_cpu, postgres_cpu, busy, own_cpu = (a - b for a, b in zip(after, before, strict=True))
    tree_cpu = float(user) + float(system)
    sample = Sample(
        name=name,
        round=round_no,
        wall_s=round(wall, 3),
        cpu_s=round(tree_cpu, 2),
        tree_maxrss=int(maxrss_kib) * 1024,
        peak_rss=peaks,
        moto_cpu_s=round(moto_cpu, 2),
        postgres_cpu_s=round(postgres_cpu, 2),
        system_busy_s=round(busy, 2),
        other_cpu_s=round(max(0.0, busy - tree_cpu - moto_cpu - postgres_cpu - own_cpu), 2),
    )
    return sample, stdout


def _kill_group(pgid: int) -> None:
    """Kill the process group this benchmark started for one measured command (and only that)."""
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def counted(samples: list[Sample]) -> list[Sample]:
    """The samples every figure is computed from: measured rounds, not discarded as disturbed."""
    return [s for s in samples if s.round > 0 and not s.discarded]


def median(samples: list[Sample], name: str, pick: Callable[[Sample], float]) -> float:
    values = [pick(s) for s in counted(samples) if s.name == name]
    return statistics.median(values) if values else float("nan")


def disturbed_runs(samples: list[Sample]) -> list[str]:
    return [
        f"{s.name} round {s.round}: others used {s.other_cpu_s} cpu-s in {s.wall_s} s"
        for s in counted(samples)
        if s.disturbed
    ]


# --------------------------------------------------------------------------------------------- the bench


Measurement = Callable[[int], None]  # measures one round (0: the warm-up) and appends its sample


@dataclass
class Bench:
    """The services, the ``shop`` database at ``scale`` and the measured rounds a benchmark runs on.

    A benchmark subclasses it and lists its measurements in :meth:`measurements`; :meth:`run` runs each of
    them once as a warm-up, then ``repeat`` times, interleaved, each after :meth:`settle`.
    """

    scale: int
    repeat: int
    workdir: Path
    services: Services | None = None
    s3_servers: int = 3  # 3: one server per region (copies stream through us); 1: shared (server-side copies)
    env: dict[str, str] = field(default_factory=dict)
    tool_env: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    restore_jobs: int = 1
    only: tuple[str, ...] = ()  # measure only these (and report only what they allow); empty: everything
    quiet_timeout: float = 300.0
    retries: int = 3
    pg_bin: Path = Path("/usr/lib/postgresql/15/bin")
    shape: str = "shop"  # the database measured: "shop" (the sample database) or "wide" (two text/JSON tables)
    _counter: int = 0

    @property
    def pg(self) -> LocalPostgres:
        assert self.services is not None, "not started"
        return self.services.pg

    @property
    def dump_file(self) -> Path:
        return self.workdir / "shop.pgdump"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def start(self) -> None:
        from strongroom import postgres
        from strongroom.config import load_config

        config = load_config(CONFIG)
        self.pg_bin = Path(postgres.tool("pg_dump", config.snapshot.pg_bin_dir)).parent
        self.restore_jobs = config.restore.jobs or (os.cpu_count() or 1)
        self.info["config"] = {
            "file": str(CONFIG.relative_to(REPO)),
            "zstd_level": config.snapshot.zstd_level,
            "zstd_threads": config.snapshot.zstd_threads,
            "part_size": config.transfer.part_size,
            "upload_concurrency": config.transfer.upload_concurrency,
            "download_concurrency": config.transfer.download_concurrency,
            "restore_jobs": self.restore_jobs,
            "capture_globals": config.snapshot.capture_globals,
        }
        self.logs.mkdir(parents=True, exist_ok=True)
        say(f"starting PostgreSQL and {self.s3_servers} moto S3 server(s)")
        self.services = Services(shared_s3=self.s3_servers == 1)
        self.services.start()
        self.info["s3_servers"] = self.s3_servers
        self.env = dict(os.environ)
        self.env.update(self.services.s3_env())
        # the example config's object-storage buckets are not measured, but the CLI checks every connection the
        # config names: theirs point at the primary region's server
        primary = self.services.s3[REGIONS[0]]
        for source in config.object_storage:
            self.env[conn_var(source.aws_conn_id)] = primary.airflow_conn(source.region or REGIONS[0])
        for target in config.object_restore_targets:
            self.env.setdefault(conn_var(target.aws_conn_id), primary.airflow_conn(REGIONS[0]))
        self.env.update(
            {
                "AIRFLOW_CONN_PG_SHOP": self.pg.airflow_uri(DATABASE),
                "AIRFLOW_CONN_STRONGROOM_KEYRING": keyring_conn(),
                "STRONGROOM_CONFIG": str(CONFIG),
                "PGPASSWORD": self.pg.password,
            }
        )
        # the baseline tools find the server the libpq way; the CLI gets it from its connections only
        self.tool_env = self.env | {"PGHOST": "127.0.0.1", "PGPORT": str(self.pg.port), "PGUSER": "postgres"}

    def stop(self) -> None:
        if self.services is not None:
            self.services.stop()
            self.info["moto_server_peak_rss"] = self.services.moto_peak_rss

    @property
    def probes(self) -> Probes:
        assert self.services is not None, "not started"
        postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        pids = sorted({s.process.pid for s in self.services.s3.values() if s.process})
        return Probes(moto_pids=pids, postmaster_pid=postmaster)

    @property
    def dsn(self) -> str:
        """The benchmark database, for a worker that connects itself (PGPASSWORD is in its environment)."""
        return f"host=127.0.0.1 port={self.pg.port} user=postgres dbname={DATABASE}"

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(autocommit=True, **self.pg.connect_kwargs(dbname)) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def create_database(self) -> None:
        from sample_data import create_sample, create_wide

        say(f"creating database {DATABASE} ({self.shape}) at scale {self.scale} (this takes a while)")
        started = time.monotonic()
        self.sql(f"CREATE DATABASE {DATABASE}")
        (create_wide if self.shape == "wide" else create_sample)(self.pg.connect_kwargs(DATABASE), self.scale)
        self.sql("VACUUM", DATABASE)  # set hint bits now, so no measured run pays for them
        size = int(self.sql("SELECT pg_database_size(current_database())", DATABASE)[0][0])
        tables = self.sql(
            "SELECT schemaname || '.' || relname, n_live_tup, pg_total_relation_size(relid)"
            " FROM pg_stat_user_tables ORDER BY 1",
            DATABASE,
        )
        self.info["database"] = {
            "name": DATABASE,
            "shape": self.shape,
            "scale": self.scale,
            "size_bytes": size,
            "at_least_1_gib": size >= MIN_DB_SIZE,
            "create_seconds": round(time.monotonic() - started, 1),
            "tables": {name: {"rows": int(rows), "bytes": int(nbytes)} for name, rows, nbytes in tables},
        }
        say(f"database {DATABASE}: {size / MiB:.0f} MiB ({size / 1e9:.2f} GB)")
        if size < MIN_DB_SIZE:
            say(f"WARNING: {DATABASE} is smaller than 1 GiB; raise --scale for a representative run")

    def settle(self) -> float:
        """Flush dirty pages, then wait for the machine to be quiet; returns the seconds waited.

        One run's writeback must not land in the next one's time, and on a shared machine someone else's
        work (a test suite, a build) must not land in ours: each run waits, up to ``quiet_timeout``, until
        everything else together keeps less than ``QUIET_BUSY`` of the cores busy for two seconds.
        """
        assert self.services is not None, "not started"
        self.services.check()
        self.sql("CHECKPOINT")
        os.sync()
        started = time.monotonic()
        cores = os.cpu_count() or 1
        calm = 0
        while time.monotonic() - started < self.quiet_timeout:
            before = system_busy_seconds()
            time.sleep(1)
            calm = calm + 1 if (system_busy_seconds() - before) / cores < QUIET_BUSY else 0
            if calm >= 2:
                break
        else:
            say(f"  (machine still busy after {self.quiet_timeout:.0f}s: measuring anyway)")
        return round(time.monotonic() - started, 1)

    def run_measured(
        self,
        name: str,
        round_no: int,
        argv: list[str],
        root_role: str,
        *,
        stdout_to_null: bool = False,
        env: dict[str, str] | None = None,
    ) -> tuple[Sample, str]:
        """Wait for a quiet machine, measure ``argv`` and record the sample; returns it and the stdout."""
        waited = self.settle()
        sample, stdout = measure(
            name,
            round_no,
            argv,
            env=env or self.env,
            probes=self.probes,
            logs=self.logs,
            root_role=root_role,
            stdout_to_null=stdout_to_null,
        )
        sample.waited_s = waited
        self.samples.append(sample)
        rss = ", ".join(f"{role} {peak / MiB:.0f} MiB" for role, peak in sample.peak_rss.items())
        others = f"  [others used {sample.other_cpu_s:.1f} cpu-s]" if sample.other_cpu_s >= 1 else ""
        say(f"  {name:<18} round {round_no}: {sample.wall_s:8.2f} s  cpu {sample.cpu_s:7.1f} s  rss {rss}{others}")
        return sample, stdout

    def fresh_name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    # ---- the measurements every benchmark of the sample database may use

    def pg_dump_fc(self, r: int) -> None:
        """``pg_dump -Fc`` (default compression) to a local file: the snapshot baseline, and the file the
        restore baselines restore."""
        argv = [str(self.pg_bin / "pg_dump"), "--format=custom", "--no-password", f"--file={self.dump_file}"]
        sample, _ = self.run_measured("pg_dump_fc", r, [*argv, DATABASE], "pg_dump", env=self.tool_env)
        sample.extra["file_bytes"] = self.dump_file.stat().st_size

    def pg_dump_raw(self, r: int) -> None:
        """``pg_dump -Fc --compress=0`` to /dev/null: what pg_dump alone costs (the floor)."""
        argv = [str(self.pg_bin / "pg_dump"), "--format=custom", "--compress=0", "--no-password", DATABASE]
        self.run_measured("pg_dump_raw", r, argv, "pg_dump", stdout_to_null=True, env=self.tool_env)

    def pg_restore(self, r: int, jobs: int, name: str | None = None, path: Path | None = None) -> None:
        """``pg_restore --jobs`` of a dump file (default: the ``pg_dump -Fc`` file) into a fresh database,
        with the options ``strongroom.postgres.restore_dump`` uses for a new database."""
        name = name or f"pg_restore_j{jobs}"
        target = self.fresh_name(f"restored_{name}")
        self.sql(f"CREATE DATABASE {target}")
        argv = self.pg_restore_argv(target, jobs, path or self.dump_file)
        try:
            self.run_measured(name, r, argv, "pg_restore", env=self.tool_env)
        finally:
            self.sql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")

    def pg_restore_argv(self, target: str, jobs: int, path: Path) -> list[str]:
        argv = [str(self.pg_bin / "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error"]
        return [*argv, "--no-password", f"--jobs={jobs}", f"--dbname={target}", str(path)]

    def snapshot(self, r: int) -> None:
        """``strongroom snapshot --database shop``: the real CLI (the dump lands in the primary region, then
        is copied, verified and committed in every configured region)."""
        argv = [str(VENV_BIN / "strongroom"), "snapshot", "--database", DATABASE, "--json"]
        sample, stdout = self.run_measured("snapshot", r, argv, "strongroom")
        result = json.loads(stdout)[0]
        keys = ("snapshot_id", "seconds", "replication_seconds", "stored_bytes", "plain_bytes", "regions")
        sample.extra = {k: result[k] for k in keys if k in result}

    def measurements(self) -> list[tuple[str, Measurement]]:
        """The benchmark's measurements, in the order each round runs them."""
        return []

    def run(self) -> None:
        cores = os.cpu_count() or 1
        chosen = [(name, f) for name, f in self.measurements() if not self.only or name in self.only]
        for round_no in range(self.repeat + 1):
            say("warm-up round" if round_no == 0 else f"round {round_no} of {self.repeat}")
            for name, function in chosen:
                for attempt in range(1, self.retries + 2):
                    function(round_no)
                    sample = self.samples[-1]
                    sample.disturbed = sample.other_cpu_s > max(0.5, DISTURBED * sample.wall_s * cores)
                    if not sample.disturbed or round_no == 0 or attempt > self.retries:
                        break
                    sample.discarded = True  # kept in the JSON, left out of every figure
                    say(f"  {name}: disturbed by other work on the machine, measuring again")


# --------------------------------------------------------------------------------------------- a run


@dataclass(frozen=True)
class Executed:
    """What a finished run measured on: the machine, and the library code before and after."""

    machine: dict[str, Any]
    code_before: dict[str, Any]
    code_after: dict[str, Any]
    seconds: float


def execute(bench: Bench, *, keep: bool = False, prepare: Callable[[], None] | None = None) -> Executed:
    """Start the services, create the database, ``prepare`` (a benchmark's own set-up), run the measured
    rounds; stop the services and remove the work directory (unless ``keep``), also on error or SIGTERM."""
    started = time.monotonic()
    code_before = code_state()
    try:
        with sigterm_as_exit():
            bench.start()
            bench.create_database()
            if prepare is not None:
                prepare()
            bench.run()
            machine = machine_info(bench.pg_bin, bench.sql("SELECT version()")[0][0])
            code_after = code_state()
    finally:
        bench.stop()
        if keep:
            say(f"kept {bench.workdir}")
        else:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    return Executed(machine, code_before, code_after, round(time.monotonic() - started, 1))


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """A SIGTERM raises SystemExit, so the ``finally`` blocks stop the servers this run started."""

    def handler(signum: int, frame: Any) -> None:
        say(f"stopped by signal {signum}: stopping the servers, no results written")
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------- reporting


def machine_info(pg_bin: Path, server_version: str | None = None) -> dict[str, Any]:
    """The machine, the Python packages that do the work, and the PostgreSQL tools measured."""
    cpu_lines = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpu_lines if line.startswith("model name")]
    cpu_model = models[0] if models else platform.processor()
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    versions: dict[str, str | None] = {}
    for package in ("zstandard", "cryptography", "boto3", "moto", "apache-airflow-core", "psycopg"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    pg_dump = subprocess.run([str(pg_bin / "pg_dump"), "--version"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_total_kib": int(mem.split()[1]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres_server": server_version,
        "pg_dump": pg_dump.stdout.strip(),
        "packages": versions,
    }


def code_state() -> dict[str, Any]:
    """Which library code is measured: the commit, and a digest of each file under include/ as on disk now."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "include"], cwd=REPO, capture_output=True, text=True, check=False
    )
    files = {
        str(path.relative_to(REPO)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((REPO / "include").rglob("*.py"))
    }
    return {"git_commit": commit.stdout.strip() or None, "include_modified": bool(dirty.stdout.strip()), "files": files}


def changed_files(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Files under include/ that were added, removed or changed while the benchmark ran."""
    old, new = before["files"], after["files"]
    return sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))


def report_head(title: str, script: str, argv: list[str] | None, bench: Bench, run: Executed) -> dict[str, Any]:
    """The fields every sample-database benchmark's JSON starts with: what ran, when, where, on which code
    and data."""
    return {
        "benchmark": title,
        "command": f"python bench/{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": run.machine,
        "code": {k: v for k, v in run.code_before.items() if k != "files"},
        "code_changed_during_run": changed_files(run.code_before, run.code_after),
        "database": bench.info["database"],
        "config": bench.info["config"],
    }


def write_report(out: Path, report: dict[str, Any]) -> None:
    """Write a benchmark's results as indented JSON (bench/results/NAME.json by default)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
