"""Benchmark: Strongroom snapshot and restore of a >1 GB database against pg_dump -Fc and pg_restore.

Run from the repository root::

    .venv/bin/python bench/snapshot.py [--scale N] [--repeat N] [--out bench/results/snapshot.json] [--keep]

One run starts a throwaway PostgreSQL 15 cluster and one moto S3 server per region on loopback (all stopped
at the end, also on error; ``--s3-servers 1`` shares one server, which then copies server-side), creates the
``shop`` sample database, then measures, each as a fresh subprocess:

* ``pg_dump_fc``        ``pg_dump -Fc`` (default compression) of shop to a local file: the snapshot baseline;
* ``pg_dump_raw``       ``pg_dump -Fc --compress=0`` to /dev/null: what pg_dump alone costs (the floor);
* ``snapshot``          ``strongroom snapshot --database shop`` into the local S3 server (the real CLI: the
                        dump lands in the primary region, then is copied, verified and committed in every
                        configured region);
* ``null_sink``         the same pipeline (snapshot_session + start_dump + envelope.seal_stream) into a sink
                        that discards the bytes, so the store's own cost is visible;
* ``null_sink_counted`` the same, with the exact row count running concurrently as ``take_snapshot`` does;
* ``pg_restore_j1/j2``  ``pg_restore`` of the pg_dump -Fc file into a fresh database: the restore baseline;
* ``restore``           ``strongroom restore --target-dsn ...`` from the local S3 server into a fresh
                        database;
* ``list``              ``strongroom list --json`` (the CLI's fixed start-up cost, and the stored size);
* ``snapshot_no_inventory`` the same snapshot with the schema inventory switched off (the CLI's own
                        ``main`` with ``strongroom.inventory.read_inventory`` replaced by a no-op, in this
                        benchmark only): with ``snapshot`` in the same rounds, what the inventory adds;
* ``inventory_read``    ``read_inventory`` alone, in a REPEATABLE READ transaction on the benchmark
                        database, timed in-process (the inventory's own cost, free of the snapshot's noise).

Every measurement runs once as a warm-up, then ``--repeat`` times, interleaved; medians are reported.
Wall time comes from the parent; CPU time and the tree's peak RSS from ``wait4``; each process's own peak
RSS from sampling ``VmHWM`` in /proc; the moto server's and the PostgreSQL server's CPU from /proc deltas.
Results go to ``--out`` as JSON, and a summary to stdout. This is a benchmark only: nothing asserts on time.
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
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "include" / "config" / "strongroom.example.yaml"
VENV_BIN = Path(sys.executable).parent
REGIONS = ("eu-central-1", "eu-west-1", "eu-north-1")
DATABASE = "shop"
DEFAULT_SCALE = 360  # ~3.4 MiB per scale unit: ~1.2 GiB
MIN_DB_SIZE = 1 << 30
TIME = "/usr/bin/time"  # GNU time
MiB = 1 << 20
MB = 10**6

SNAPSHOT_RATIO_LIMIT = 1.0
SNAPSHOT_RATIO_AIM = 0.6
RESTORE_RATIO_LIMIT = 1.3
REPLICATION_RATIO_LIMIT = 0.5  # replication to two more regions adds at most 0.5x the snapshot's own time
RSS_LIMIT = 300 * MB
QUIET_BUSY = 0.15  # fraction of all cores others may keep busy while we wait to measure
DISTURBED = 0.1  # a run during which others used more than this share of all cores (and 0.5 cpu-s) is flagged

_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------- /proc probes


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the ``comm`` field (index 0 is the state), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _comm(pid: int) -> str:
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
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _vm_hwm(pid: int) -> int:
    """Peak resident set size of one process, in bytes (0 when it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _CLK_TCK


def _tree_cpu_seconds(root: int) -> float:
    """CPU of ``root``, its reaped children and its live descendants (the postmaster and its backends).

    A child reaped while its siblings are read would be counted nowhere (gone from /proc, not yet in the
    parent's total when that was read), so the read is repeated until the parent's total holds still.
    """
    for _ in range(20):
        reaped = _cpu_seconds(root, reaped_children=True)
        live = sum(_cpu_seconds(pid) for pid in _descendants(root))
        if _cpu_seconds(root, reaped_children=True) == reaped:
            break
    return reaped + live


def _system_busy_seconds() -> float:
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
            role = self.root_role if pid in direct else _comm(pid)
            self.peaks[role] = max(self.peaks.get(role, 0), _vm_hwm(pid))

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
            sum(_cpu_seconds(pid, reaped_children=True) for pid in self.moto_pids),
            _tree_cpu_seconds(self.postmaster_pid),
            _system_busy_seconds(),
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


# --------------------------------------------------------------------------------------------- null sink


def inventory_worker(dsn: str) -> int:
    """Time ``read_inventory`` in a REPEATABLE READ transaction; prints seconds and the JSON size."""
    import psycopg

    from strongroom.inventory import read_inventory

    with psycopg.connect(dsn, password=os.environ.get("PGPASSWORD")) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        started = time.perf_counter()
        found = read_inventory(conn)
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": round(seconds, 4), "json_bytes": len(json.dumps(found)),
                      "relations": len(found["relations"])}))
    return 0


def null_sink_worker(dsn: str, count_rows: bool) -> int:
    """The snapshot pipeline into a sink that discards bytes; prints its stream statistics as JSON."""
    from strongroom import envelope, postgres
    from strongroom.config import load_config

    config = load_config(None)
    settings = postgres.PgSettings.from_dsn(dsn)
    started = time.monotonic()
    counts: dict[str, int] = {}

    def discard(block: bytes) -> None:
        del block

    with postgres.snapshot_session(settings) as session:
        counter = threading.Thread(target=lambda: counts.update(session.count_rows()), daemon=True)
        if count_rows:
            counter.start()
        dump = postgres.start_dump(settings, session.snapshot_name, config.snapshot.pg_bin_dir,
                                   lock_wait_timeout=config.snapshot.lock_wait_timeout)
        stats = envelope.seal_stream(
            dump.stdout,
            discard,
            data_key=envelope.new_data_key(),
            identity=envelope.object_identity("dump", settings.dbname, "bench"),
            level=config.snapshot.zstd_level,
            threads=config.snapshot.zstd_threads,
            label="null sink",
        )
        if dump.wait() != 0:
            sys.stderr.write(f"pg_dump failed: {dump.error_line()}\n")
            return 1
        if count_rows:
            counter.join()
    result = asdict(stats) | {"seconds": round(time.monotonic() - started, 3), "tables_counted": len(counts)}
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------- the benchmark


@dataclass
class Bench:
    scale: int
    repeat: int
    workdir: Path
    pg: Any = None  # devstack.LocalPostgres
    s3: dict[str, Any] = field(default_factory=dict)  # region -> devstack.MotoServer
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
    _counter: int = 0

    @property
    def dump_file(self) -> Path:
        return self.workdir / "shop.pgdump"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def start(self) -> None:
        sys.path.insert(0, str(REPO / "scripts"))
        from devstack import LocalPostgres, MotoServer
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
        _say(f"starting PostgreSQL and {self.s3_servers} moto S3 server(s)")
        self.pg = LocalPostgres().start()
        shared = MotoServer().start() if self.s3_servers == 1 else None
        for region in REGIONS:
            self.s3[region] = shared or MotoServer().start()
            self.s3[region].create_bucket(f"strongroom-{region}", region)
        self.info["s3_servers"] = self.s3_servers
        keyring = {"active": "bench", "keys": {"bench": base64.b64encode(os.urandom(32)).decode()}}
        self.env = dict(os.environ)
        self.env.update({f"AIRFLOW_CONN_S3_{r.upper().replace('-', '_')}": self.s3[r].airflow_conn(r) for r in REGIONS})
        self.env.update(
            {
                "AIRFLOW_CONN_PG_SHOP": self.pg.airflow_uri(DATABASE),
                "AIRFLOW_CONN_STRONGROOM_KEYRING": json.dumps({"conn_type": "generic", "extra": keyring}),
                "STRONGROOM_CONFIG": str(CONFIG),
                "PGPASSWORD": self.pg.password,
            }
        )
        # the baseline tools find the server the libpq way; the CLI gets it from its connections only
        self.tool_env = self.env | {"PGHOST": "127.0.0.1", "PGPORT": str(self.pg.port), "PGUSER": "postgres"}

    def stop(self) -> None:
        servers = list({id(s): s for s in self.s3.values()}.values())
        if servers:
            self.info["moto_server_peak_rss"] = max(_vm_hwm(s.process.pid) if s.process else 0 for s in servers)
        for server in servers:
            server.stop()
        if self.pg is not None:
            self.pg.stop()

    @property
    def probes(self) -> Probes:
        postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        pids = sorted({s.process.pid for s in self.s3.values() if s.process})
        return Probes(moto_pids=pids, postmaster_pid=postmaster)

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(autocommit=True, **self.pg.connect_kwargs(dbname)) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def create_database(self) -> None:
        from sample_data import create_sample

        _say(f"creating database {DATABASE} at scale {self.scale} (this takes a while)")
        started = time.monotonic()
        self.sql(f"CREATE DATABASE {DATABASE}")
        create_sample(self.pg.connect_kwargs(DATABASE), self.scale)
        self.sql("VACUUM", DATABASE)  # set hint bits now, so no measured run pays for them
        size = int(self.sql("SELECT pg_database_size(current_database())", DATABASE)[0][0])
        tables = self.sql(
            "SELECT schemaname || '.' || relname, n_live_tup, pg_total_relation_size(relid)"
            " FROM pg_stat_user_tables ORDER BY 1",
            DATABASE,
        )
        self.info["database"] = {
            "name": DATABASE,
            "scale": self.scale,
            "size_bytes": size,
            "at_least_1_gib": size >= MIN_DB_SIZE,
            "create_seconds": round(time.monotonic() - started, 1),
            "tables": {name: {"rows": int(rows), "bytes": int(nbytes)} for name, rows, nbytes in tables},
        }
        _say(f"database {DATABASE}: {size / MiB:.0f} MiB ({size / 1e9:.2f} GB)")
        if size < MIN_DB_SIZE:
            _say(f"WARNING: {DATABASE} is smaller than 1 GiB; raise --scale for a representative run")

    def settle(self) -> float:
        """Flush dirty pages, then wait for the machine to be quiet; returns the seconds waited.

        One run's writeback must not land in the next one's time, and on a shared machine someone else's
        work (a test suite, a build) must not land in ours: each run waits, up to ``quiet_timeout``, until
        everything else together keeps less than ``QUIET_BUSY`` of the cores busy for two seconds.
        """
        self.check_services()
        self.sql("CHECKPOINT")
        os.sync()
        started = time.monotonic()
        cores = os.cpu_count() or 1
        calm = 0
        while time.monotonic() - started < self.quiet_timeout:
            before = _system_busy_seconds()
            time.sleep(1)
            calm = calm + 1 if (_system_busy_seconds() - before) / cores < QUIET_BUSY else 0
            if calm >= 2:
                break
        else:
            _say(f"  (machine still busy after {self.quiet_timeout:.0f}s: measuring anyway)")
        return round(time.monotonic() - started, 1)

    def check_services(self) -> None:
        for region, server in self.s3.items():
            if server.process is None or server.process.poll() is not None:
                code = server.process.returncode if server.process else None
                raise RuntimeError(f"the moto S3 server of {region} is gone (exit {code}); no result can be trusted")
        if not (self.pg.data / "postmaster.pid").exists():
            raise RuntimeError("the PostgreSQL server is gone; no result can be trusted")

    def _run(
        self,
        name: str,
        round_no: int,
        argv: list[str],
        root_role: str,
        *,
        stdout_to_null: bool = False,
        env: dict[str, str] | None = None,
    ) -> tuple[Sample, str]:
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
        _say(f"  {name:<18} round {round_no}: {sample.wall_s:8.2f} s  cpu {sample.cpu_s:7.1f} s  rss {rss}{others}")
        return sample, stdout

    def fresh_name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    # ---- the measurements

    def pg_dump_fc(self, r: int) -> None:
        argv = [str(self.pg_bin / "pg_dump"), "--format=custom", "--no-password", f"--file={self.dump_file}"]
        sample, _ = self._run("pg_dump_fc", r, [*argv, DATABASE], "pg_dump", env=self.tool_env)
        sample.extra["file_bytes"] = self.dump_file.stat().st_size

    def pg_dump_raw(self, r: int) -> None:
        argv = [str(self.pg_bin / "pg_dump"), "--format=custom", "--compress=0", "--no-password", DATABASE]
        self._run("pg_dump_raw", r, argv, "pg_dump", stdout_to_null=True, env=self.tool_env)

    def snapshot(self, r: int) -> None:
        argv = [str(VENV_BIN / "strongroom"), "snapshot", "--database", DATABASE, "--json"]
        sample, stdout = self._run("snapshot", r, argv, "strongroom")
        result = json.loads(stdout)[0]
        keys = ("snapshot_id", "seconds", "replication_seconds", "stored_bytes", "plain_bytes", "regions")
        sample.extra = {k: result[k] for k in keys if k in result}

    def null_sink(self, r: int, count_rows: bool = False) -> None:
        dsn = f"host=127.0.0.1 port={self.pg.port} user=postgres dbname={DATABASE}"
        argv = [sys.executable, str(Path(__file__).resolve()), "--null-sink-worker", dsn]
        name = "null_sink_counted" if count_rows else "null_sink"
        sample, stdout = self._run(name, r, [*argv, "--count-rows"] if count_rows else argv, "python")
        sample.extra = json.loads(stdout)

    def pg_restore(self, r: int, jobs: int) -> None:
        target = self.fresh_name(f"restored_pgr_j{jobs}")
        self.sql(f"CREATE DATABASE {target}")
        # the options strongroom.postgres.restore_dump uses for a new database
        argv = [str(self.pg_bin / "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error"]
        argv += ["--no-password", f"--jobs={jobs}", f"--dbname={target}", str(self.dump_file)]
        try:
            self._run(f"pg_restore_j{jobs}", r, argv, "pg_restore", env=self.tool_env)
        finally:
            self.sql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")

    def restore(self, r: int) -> None:
        target = self.fresh_name("restored_sr")
        dsn = f"host=127.0.0.1 port={self.pg.port} user=postgres dbname={target}"
        argv = [
            str(VENV_BIN / "strongroom"),
            "restore",
            "--database",
            DATABASE,
            "--target-dsn",
            dsn,
            "--json",
        ]
        # the spool goes to the default temporary directory, as in production with restore.spool_dir unset
        try:
            sample, stdout = self._run("restore", r, argv, "strongroom")
        finally:
            self.sql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")
        result = json.loads(stdout)
        sample.extra = {k: result[k] for k in ("snapshot_id", "download_seconds", "restore_seconds", "rows")}

    def list_snapshots(self, r: int) -> None:
        argv = [str(VENV_BIN / "strongroom"), "list", "--database", DATABASE, "--json"]
        sample, stdout = self._run("list", r, argv, "strongroom")
        rows = json.loads(stdout)
        newest = max(rows, key=lambda row: row["taken_at"])
        sample.extra = {
            "snapshots": len(rows),
            "stored_bytes": newest["stored_bytes"],
            "plain_bytes": newest["plain_bytes"],
        }

    def snapshot_no_inventory(self, r: int) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--snapshot-without-inventory"]
        sample, stdout = self._run("snapshot_no_inventory", r, argv, "python")
        result = json.loads(stdout)[0]
        sample.extra = {k: result[k] for k in ("snapshot_id", "seconds", "replication_seconds") if k in result}

    def inventory_read(self, r: int) -> None:
        dsn = f"host=127.0.0.1 port={self.pg.port} user=postgres dbname={DATABASE}"
        argv = [sys.executable, str(Path(__file__).resolve()), "--inventory-worker", dsn]
        sample, stdout = self._run("inventory_read", r, argv, "python")
        sample.extra = json.loads(stdout)

    def measurements(self) -> list[tuple[str, Callable[[int], None]]]:
        jobs = sorted({1, 2, self.restore_jobs})
        return [
            ("pg_dump_fc", self.pg_dump_fc),
            ("snapshot", self.snapshot),
            ("snapshot_no_inventory", self.snapshot_no_inventory),
            ("inventory_read", self.inventory_read),
            ("null_sink", self.null_sink),
            ("null_sink_counted", lambda r: self.null_sink(r, count_rows=True)),
            ("pg_dump_raw", self.pg_dump_raw),
            *[(f"pg_restore_j{j}", lambda r, j=j: self.pg_restore(r, j)) for j in jobs],
            ("restore", self.restore),
            ("list", self.list_snapshots),
        ]

    def run(self) -> None:
        cores = os.cpu_count() or 1
        chosen = [(name, f) for name, f in self.measurements() if not self.only or name in self.only]
        for round_no in range(self.repeat + 1):
            _say("warm-up round" if round_no == 0 else f"round {round_no} of {self.repeat}")
            for name, function in chosen:
                for attempt in range(1, self.retries + 2):
                    function(round_no)
                    sample = self.samples[-1]
                    sample.disturbed = sample.other_cpu_s > max(0.5, DISTURBED * sample.wall_s * cores)
                    if not sample.disturbed or round_no == 0 or attempt > self.retries:
                        break
                    sample.discarded = True  # kept in the JSON, left out of every figure
                    _say(f"  {name}: disturbed by other work on the machine, measuring again")


# --------------------------------------------------------------------------------------------- report


def _counted(samples: list[Sample]) -> list[Sample]:
    """The samples every figure is computed from: measured rounds, not discarded as disturbed."""
    return [s for s in samples if s.round > 0 and not s.discarded]


def _median(samples: list[Sample], name: str, pick: Callable[[Sample], float]) -> float:
    values = [pick(s) for s in _counted(samples) if s.name == name]
    return statistics.median(values) if values else float("nan")


FULL = ("pg_dump_fc", "snapshot", "null_sink", "null_sink_counted", "pg_dump_raw", "restore", "list")


def replication_target(samples: list[Sample]) -> dict[str, Any]:
    """Replication to the other regions against the snapshot's own time, both from the CLI's own timers:
    ``replication_seconds`` (copy, read-back verify and commit everywhere, and the run check) after
    ``seconds`` (take_snapshot: dump, compress, encrypt, land in the first region)."""
    taken = [s for s in _counted(samples) if s.name == "snapshot"]
    if not taken or "replication_seconds" not in taken[0].extra:
        return {"measured": False, "note": "this strongroom does not report replication_seconds"}
    ratios = [s.extra["replication_seconds"] / s.extra["seconds"] for s in taken]
    ratio = statistics.median(ratios)
    return {
        "measured": True,
        "replication_s": statistics.median(s.extra["replication_seconds"] for s in taken),
        "snapshot_s": statistics.median(s.extra["seconds"] for s in taken),
        "ratio": round(ratio, 3),
        "ratios_all": [round(r, 3) for r in ratios],
        "limit": REPLICATION_RATIO_LIMIT,
        "pass": ratio <= REPLICATION_RATIO_LIMIT,
        "peak_rss_bytes": max(s.peak_rss.get("strongroom", 0) for s in taken),
    }


INVENTORY_LIMIT = 0.05  # the schema inventory adds less than 5% to a snapshot


def inventory_target(samples: list[Sample]) -> dict[str, Any]:
    """What the schema inventory adds to a snapshot: ``snapshot`` against ``snapshot_no_inventory`` measured
    in the same rounds (take_snapshot's own timer, and wall time), and ``read_inventory``'s own time."""
    with_inv = {s.round: s for s in _counted(samples) if s.name == "snapshot"}
    without = {s.round: s for s in _counted(samples) if s.name == "snapshot_no_inventory"}
    rounds = sorted(set(with_inv) & set(without))
    if not rounds:
        return {"measured": False}
    pairs = [(with_inv[r].extra["seconds"], without[r].extra["seconds"]) for r in rounds]
    take_with = statistics.median(a for a, _ in pairs)
    take_without = statistics.median(b for _, b in pairs)
    reads = [s.extra for s in _counted(samples) if s.name == "inventory_read"]
    read_s = statistics.median(x["seconds"] for x in reads) if reads else None
    own = read_s / take_without if read_s is not None else None
    return {
        "measured": True,
        "take_seconds_with": take_with,
        "take_seconds_without": take_without,
        "take_overhead": round(take_with / take_without - 1, 4),
        "take_overhead_per_round": [round(a / b - 1, 4) for a, b in pairs],
        "wall_with": statistics.median(with_inv[r].wall_s for r in rounds),
        "wall_without": statistics.median(without[r].wall_s for r in rounds),
        "read_inventory_seconds": read_s,
        "read_inventory_share_of_take": round(own, 5) if own is not None else None,
        "inventory_json_bytes": reads[0]["json_bytes"] if reads else None,
        "limit": INVENTORY_LIMIT,
        "pass": own is not None and own < INVENTORY_LIMIT,
        "note": "pass is judged on read_inventory's own time against the snapshot; the with/without difference "
                "of whole snapshots is dominated by the machine's noise (see take_overhead_per_round)",
    }


def summarize(bench: Bench) -> dict[str, Any]:
    samples = bench.samples
    names = list(dict.fromkeys(s.name for s in samples))
    medians: dict[str, dict[str, Any]] = {}
    for name in names:
        measured = [s for s in _counted(samples) if s.name == name]
        roles = sorted({role for s in measured for role in s.peak_rss})
        medians[name] = {
            "runs": len(measured),
            "wall_s": _median(samples, name, lambda s: s.wall_s),
            "wall_s_all": [s.wall_s for s in measured],
            "cpu_s": _median(samples, name, lambda s: s.cpu_s),
            "moto_cpu_s": _median(samples, name, lambda s: s.moto_cpu_s),
            "postgres_cpu_s": _median(samples, name, lambda s: s.postgres_cpu_s),
            "system_busy_s": _median(samples, name, lambda s: s.system_busy_s),
            "other_cpu_s_max": max(s.other_cpu_s for s in measured),
            "peak_rss_max": {role: max(s.peak_rss.get(role, 0) for s in measured) for role in roles},
            "tree_maxrss_max": max(s.tree_maxrss for s in measured),
        }
    wall = {name: m["wall_s"] for name, m in medians.items()}
    replication = replication_target(samples)
    inventory_cost = inventory_target(samples)
    if set(FULL) - set(names):
        return {
            "medians": medians,
            "targets": {"replication_vs_snapshot": replication, "inventory_vs_snapshot": inventory_cost},
            "partial": True,
            "disturbed_runs": [f"{s.name} round {s.round}" for s in _counted(samples) if s.disturbed],
        }
    jobs = bench.restore_jobs
    strongroom_rss = max(
        s.peak_rss.get("strongroom", 0) for s in _counted(samples) if s.name in ("snapshot", "restore")
    )
    last = {s.name: s for s in samples}
    snapshot_ratio = wall["snapshot"] / wall["pg_dump_fc"]
    landing = _median(samples, "snapshot", lambda s: s.extra["seconds"])
    restore_ratio = wall["restore"] / wall[f"pg_restore_j{jobs}"]
    targets = {
        "snapshot_vs_pg_dump_fc": {
            "ratio": round(snapshot_ratio, 3),
            "limit": SNAPSHOT_RATIO_LIMIT,
            "aim": SNAPSHOT_RATIO_AIM,
            "pass": snapshot_ratio <= SNAPSHOT_RATIO_LIMIT,
            "meets_aim": snapshot_ratio <= SNAPSHOT_RATIO_AIM,
            "landing_only_ratio": round(landing / wall["pg_dump_fc"], 3),
            "landing_only_note": "take_snapshot's own timer (dump, compress, encrypt, upload to the first "
            "region, pending manifest), without CLI start-up and without replication to the other regions",
            "null_sink_ratio": round(wall["null_sink"] / wall["pg_dump_fc"], 3),
        },
        "restore_vs_pg_restore": {
            "ratio": round(restore_ratio, 3),
            "baseline": f"pg_restore_j{jobs} (strongroom restores with --jobs={jobs} on this machine)",
            "limit": RESTORE_RATIO_LIMIT,
            "pass": restore_ratio <= RESTORE_RATIO_LIMIT,
            "ratio_vs_pg_restore_j1": round(wall["restore"] / wall["pg_restore_j1"], 3),
        },
        "strongroom_peak_rss": {
            "bytes": strongroom_rss,
            "mib": round(strongroom_rss / MiB, 1),
            "limit_bytes": RSS_LIMIT,
            "pass": strongroom_rss < RSS_LIMIT,
            "snapshot_bytes": medians["snapshot"]["peak_rss_max"].get("strongroom", 0),
            "restore_bytes": medians["restore"]["peak_rss_max"].get("strongroom", 0),
        },
        "replication_vs_snapshot": replication,
        "inventory_vs_snapshot": inventory_cost,
    }
    sizes = {
        "database_bytes": bench.info["database"]["size_bytes"],
        "pg_dump_fc_bytes": last["pg_dump_fc"].extra["file_bytes"],
        "stored_object_bytes": last["list"].extra["stored_bytes"],
        "plain_dump_bytes": last["list"].extra["plain_bytes"],
    }
    sizes["stored_vs_pg_dump_fc"] = round(sizes["stored_object_bytes"] / sizes["pg_dump_fc_bytes"], 3)
    breakdown = {
        "snapshot_minus_null_sink_s": round(wall["snapshot"] - wall["null_sink"], 2),
        "snapshot_minus_null_sink_counted_s": round(wall["snapshot"] - wall["null_sink_counted"], 2),
        "row_count_cost_s": round(wall["null_sink_counted"] - wall["null_sink"], 2),
        "null_sink_minus_pg_dump_raw_s": round(wall["null_sink"] - wall["pg_dump_raw"], 2),
        "snapshot_take_seconds": landing,
        "snapshot_replicate_and_start_s": _median(samples, "snapshot", lambda s: s.wall_s - s.extra["seconds"]),
        "restore_download_seconds": _median(samples, "restore", lambda s: s.extra["download_seconds"]),
        "restore_pg_restore_seconds": _median(samples, "restore", lambda s: s.extra["restore_seconds"]),
        "restore_start_select_and_check_s": _median(
            samples, "restore", lambda s: s.wall_s - s.extra["download_seconds"] - s.extra["restore_seconds"]
        ),
        "cli_start_and_list_s": wall["list"],
    }
    disturbed = [
        f"{s.name} round {s.round}: others used {s.other_cpu_s} cpu-s in {s.wall_s} s"
        for s in _counted(samples)
        if s.disturbed
    ]
    return {
        "medians": medians,
        "targets": targets,
        "sizes": sizes,
        "breakdown": breakdown,
        "disturbed_runs": disturbed,
    }


def machine_info(bench: Bench) -> dict[str, Any]:
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
    pg_dump = subprocess.run([str(bench.pg_bin / "pg_dump"), "--version"], capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_total_kib": int(mem.split()[1]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres_server": bench.sql("SELECT version()")[0][0],
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


def report_head(title: str, script: str, argv: list[str] | None, bench: Bench,
                machine: dict[str, Any], code_before: dict[str, Any], code_after: dict[str, Any]) -> dict[str, Any]:
    """The fields every benchmark's JSON starts with: what ran, when, where, on which code and data."""
    return {
        "benchmark": title,
        "command": f"python bench/{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "code": {k: v for k, v in code_before.items() if k != "files"},
        "code_changed_during_run": changed_files(code_before, code_after),
        "database": bench.info["database"],
        "config": bench.info["config"],
    }


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def print_summary(report: dict[str, Any]) -> None:
    res = report["results"]
    db = report["database"]
    print()
    print(
        f"Strongroom snapshot benchmark  {report['date']}  nproc={report['machine']['nproc']}  "
        f"scale={db['scale']}  database {db['size_bytes'] / MiB:.0f} MiB"
    )
    header = f"{'measurement':<19}{'wall s':>9}{'cpu s':>8}{'moto cpu':>10}{'pg cpu':>8}{'busy':>7}{'others':>8}"
    print(f"{header}  peak RSS (MiB)")
    for name, m in res["medians"].items():
        rss = ", ".join(f"{role} {peak / MiB:.0f}" for role, peak in m["peak_rss_max"].items())
        busy = m["system_busy_s"] / max(m["wall_s"], 1e-9) / (report["machine"]["nproc"] or 1)
        print(
            f"{name:<19}{m['wall_s']:>9.2f}{m['cpu_s']:>8.1f}{m['moto_cpu_s']:>10.1f}"
            f"{m['postgres_cpu_s']:>8.1f}{busy:>6.0%}{m['other_cpu_s_max']:>8.1f}  {rss}"
        )
    rep = res["targets"]["replication_vs_snapshot"]
    if rep["measured"]:
        print(
            f"replication {rep['replication_s']:.2f} s / snapshot {rep['snapshot_s']:.2f} s = {rep['ratio']:.2f}  "
            f"(limit {rep['limit']}): {'PASS' if rep['pass'] else 'FAIL'}  {rep['ratios_all']}"
        )
    if res.get("partial"):
        return
    sizes = res["sizes"]
    mib = {key: value / MiB for key, value in sizes.items() if key.endswith("_bytes")}
    print(
        f"\nsizes: database {mib['database_bytes']:.0f} MiB, pg_dump -Fc {mib['pg_dump_fc_bytes']:.0f} MiB, "
        f"stored object {mib['stored_object_bytes']:.0f} MiB "
        f"({sizes['stored_vs_pg_dump_fc']:.2f} x pg_dump -Fc), "
        f"plain dump {mib['plain_dump_bytes']:.0f} MiB"
    )
    t = res["targets"]
    snap, rest, rss = t["snapshot_vs_pg_dump_fc"], t["restore_vs_pg_restore"], t["strongroom_peak_rss"]
    verdict = {True: "PASS", False: "FAIL"}
    print(
        f"snapshot / pg_dump -Fc = {snap['ratio']:.2f}  (limit {snap['limit']}, aim {snap['aim']}): "
        f"{verdict[snap['pass']]}{'' if snap['meets_aim'] else ', aim missed'}  "
        f"[landing only: {snap['landing_only_ratio']:.2f}, null sink: {snap['null_sink_ratio']:.2f}]"
    )
    print(
        f"restore / {rest['baseline'].split()[0]} = {rest['ratio']:.2f}  (limit {rest['limit']}): "
        f"{verdict[rest['pass']]}  [vs single-job pg_restore: {rest['ratio_vs_pg_restore_j1']:.2f}]"
    )
    print(f"strongroom peak RSS = {rss['mib']:.0f} MiB  (limit {RSS_LIMIT // MB} MB): {verdict[rss['pass']]}")
    print("breakdown: " + ", ".join(f"{k}={round(v, 2)}" for k, v in res["breakdown"].items()))
    for line in res["disturbed_runs"]:
        print(f"disturbed: {line}")
    if report["code_changed_during_run"]:
        changed = ", ".join(report["code_changed_during_run"])
        print(f"WARNING: changed under include/ during the run (the results may mix code versions): {changed}")


# --------------------------------------------------------------------------------------------- main


def _say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        _say(f"stopped by signal {signum}: stopping the servers, no results written")
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--scale", type=int, default=DEFAULT_SCALE, help="sample_data scale (default: %(default)s)")
    add("--repeat", type=int, default=2, help="measured rounds after the warm-up (default: %(default)s)")
    add("--out", default="bench/results/snapshot.json", help="JSON results (default: %(default)s)")
    add("--keep", action="store_true", help="keep the work directory (dump file, per-run logs)")
    add("--quiet-timeout", type=float, default=300.0, help="max seconds to wait for a quiet machine per run")
    add("--retries", type=int, default=3, help="times to measure a disturbed run again (default: 3)")
    add(
        "--s3-servers",
        type=int,
        choices=(1, 3),
        default=3,
        help="3: one moto server per region, so copies stream through strongroom as between providers; "
        "1: one shared server, whose server-side copy moves the bytes (default: %(default)s)",
    )
    add(
        "--only",
        default="",
        help="comma-separated measurements to run (default: all); a partial run reports "
        "only the medians and the replication target",
    )
    parser.add_argument("--null-sink-worker", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--count-rows", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot-without-inventory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inventory-worker", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.null_sink_worker:
        return null_sink_worker(args.null_sink_worker, args.count_rows)
    if args.snapshot_without_inventory:
        from strongroom import cli, inventory

        inventory.read_inventory = lambda conn: {}  # benchmark only: the same snapshot, no inventory
        return cli.main(["snapshot", "--database", DATABASE, "--json"])
    if args.inventory_worker:
        return inventory_worker(args.inventory_worker)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    workdir = Path(tempfile.mkdtemp(prefix="strongroom-bench-"))
    bench = Bench(
        scale=args.scale,
        repeat=args.repeat,
        workdir=workdir,
        quiet_timeout=args.quiet_timeout,
        retries=args.retries,
        s3_servers=args.s3_servers,
        only=tuple(name for name in args.only.split(",") if name),
    )
    started = time.monotonic()
    code_before = code_state()
    try:
        with _sigterm_as_exit():
            bench.start()
            bench.create_database()
            bench.run()
            machine = machine_info(bench)
            code_after = code_state()
    finally:
        bench.stop()
        if args.keep:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        **report_head("strongroom snapshot/restore vs pg_dump -Fc/pg_restore", "snapshot.py", argv, bench,
                      machine, code_before, code_after),
        "s3_servers": bench.s3_servers,
        "only": list(bench.only),
        "repeat": args.repeat,
        "total_seconds": round(time.monotonic() - started, 1),
        "moto_server_peak_rss": bench.info.get("moto_server_peak_rss"),
        "results": summarize(bench),
        "samples": [asdict(s) for s in bench.samples],
    }
    out = Path(args.out)
    write_report(out, report)
    print_summary(report)
    _say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
