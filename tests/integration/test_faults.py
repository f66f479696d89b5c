"""Faults through a proxy: a hung, slow or flaky region, or source, costs seconds, not the run.

Every region's S3 server and the source PostgreSQL sit behind a :class:`tests.faultproxy.FaultProxy`
that each test drives. Each scenario checks that the run ends within its deadline (a generous bound,
as a condition: the deadlines here are seconds, the bound is a minute or two, and before this work a
half-open region held the run for more than five minutes), that the healthy regions committed, that
the faulty region or source is named, and that the run after the fault clears converges: every region
holds the same committed snapshots, with no pending manifest and no unfinished upload left.
docs/reliability.md lists the scenarios.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from strongroom import layout, postgres
from strongroom.airflow_adapter import connections
from strongroom.config import load_config
from strongroom.snapshot import snapshot_database
from tests.conftest import PRIMARY, REGIONS, Stack, conn_id, env_name, write_config
from tests.faultproxy import FaultProxy
from tests.integration.helpers import CliResult, run_cli, start_cli

WEST, NORTH = REGIONS[1], REGIONS[2]
DB = "faults"
MB = 10**6
STALL = 3  # transfer.stall_timeout and snapshot.dump_stall_timeout, seconds
BOUND = 150.0  # generous: the deadlines add up to well under a minute on a quiet machine
PART = re.compile(r"^PUT .*[?&]partNumber=")


@dataclass
class Faults:
    stack: Stack
    s3: dict[str, FaultProxy]
    pg: FaultProxy
    config: Path
    spool: Path
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 400) -> tuple[CliResult, float]:
        started = time.monotonic()
        result = run_cli("--config", str(self.config), *args, env=self.env, timeout=timeout)
        return result, time.monotonic() - started

    def snapshot(self, config: Path | None = None) -> tuple[CliResult, float]:
        started = time.monotonic()
        result = run_cli("--config", str(config or self.config), "snapshot", "--database", DB, env=self.env,
                         timeout=400)
        return result, time.monotonic() - started

    def start(self, *args: str) -> subprocess.Popen[str]:
        return start_cli("--config", str(self.config), *args, env=self.env)

    def manifests(self, region: str) -> set[str]:
        prefix = f"databases/{DB}/manifests/"
        return {k[len(prefix):-5] for k in self.stack.list_keys(region) if k.startswith(prefix)}

    def pending(self, region: str) -> list[str]:
        return [k for k in self.stack.list_keys(region) if k.startswith(f"databases/{DB}/pending/")]

    def uploads(self, region: str) -> list[str]:
        return [k for k in self.stack.uploads(region) if k.startswith(f"databases/{DB}/")]

    def variant(self, path: Path, **transfer: object) -> Path:
        """This module's configuration with some transfer settings changed."""
        doc = json.loads(self.config.read_text())
        return write_config(path, **{**doc, "transfer": {**doc["transfer"], **transfer}})

    def clear(self) -> None:
        for proxy in [*self.s3.values(), self.pg]:
            proxy.clear()


def _proxied_s3(region: str, port: int) -> str:
    return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing-secret",
                       "extra": {"region_name": region, "endpoint_url": f"http://127.0.0.1:{port}"}})


@pytest.fixture(scope="module")
def faults(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    stack.pg.execute(f"DROP DATABASE IF EXISTS {DB}")
    stack.pg.execute(f"CREATE DATABASE {DB}")
    # ~6.5 MB that zstd cannot shrink: two parts per copy, seconds at 1 MB/s
    stack.pg.execute("CREATE TABLE noise (id int PRIMARY KEY, body bytea NOT NULL)", DB)
    stack.pg.execute("ALTER TABLE noise ALTER COLUMN body SET STORAGE EXTERNAL", DB)
    stack.pg.execute("INSERT INTO noise SELECT g, decode(string_agg(md5(random()::text), ''), 'hex') "
                     "FROM generate_series(1, 400) g, generate_series(1, 1000) i GROUP BY g", DB)
    s3 = {region: FaultProxy(stack.servers[region].port, http=True).start() for region in REGIONS}
    pg = FaultProxy(stack.pg.port).start()
    base = tmp_path_factory.mktemp("faults")
    spool = base / "spool"
    spool.mkdir()
    config = write_config(
        base / "faults.yaml",
        databases=[{"name": DB, "postgres_conn_id": "pg_faults"}],
        transfer={"part_size": "5MiB", "upload_concurrency": 2, "download_concurrency": 2, "connect_timeout": "1s",
                  "control_timeout": "2s", "max_attempts": 2, "stall_timeout": f"{STALL}s", "part_attempts": 8,
                  "retry_delay": "100ms"},
        snapshot={"run_timeout": "10s", "retries": 0, "retry_delay": "1s", "deadline": "off",
                  "dump_stall_timeout": f"{STALL}s"},
        restore={"spool_dir": str(spool)},
    )
    env = {env_name(conn_id(region)): _proxied_s3(region, s3[region].port) for region in REGIONS}
    env["AIRFLOW_CONN_PG_FAULTS"] = stack.pg.airflow_uri(DB).replace(f":{stack.pg.port}/", f":{pg.port}/")
    env["AIRFLOW_CONN_PG_FAULTS_DIRECT"] = stack.pg.airflow_uri(DB)
    found = Faults(stack, s3, pg, config, spool, env)
    try:
        yield found
    finally:
        for proxy in [*s3.values(), pg]:
            proxy.stop()


@pytest.fixture()
def f(faults: Faults, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    faults.clear()
    for name, value in faults.env.items():  # the in-process runs (convergence) go through the proxies too
        monkeypatch.setenv(name, value)
    try:
        yield faults
    finally:
        faults.clear()


def _snapshot_id(result: CliResult) -> str:
    match = re.search(r"snapshot (\d{8}T\d{6}Z-[0-9a-f]{6})", result.stderr + result.stdout)
    assert match, result.stderr
    return match.group(1)


def assert_dropped(f: Faults, result: CliResult, elapsed: float, faulty: str, healthy: tuple[str, ...]) -> str:
    """The run failed within the bound naming ``faulty``, after committing in every healthy region."""
    assert elapsed < BOUND, f"the run took {elapsed:.0f}s"
    assert result.code == 1, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert f"not committed in {faulty}" in line or f"; {faulty} (" in line, line
    snapshot_id = _snapshot_id(result)
    for region in healthy:
        assert snapshot_id in f.manifests(region), region
    assert snapshot_id not in f.manifests(faulty)
    return snapshot_id


def assert_converged(f: Faults) -> None:
    """After a run that succeeded under the fault: every region holds the same committed snapshots, with no
    pending manifest and no unfinished upload (no second run needed)."""
    held = {region: f.manifests(region) for region in REGIONS}
    assert held[PRIMARY] and held[PRIMARY] == held[WEST] == held[NORTH], held
    for region in REGIONS:
        assert f.pending(region) == [], region
        assert f.uploads(region) == [], region


def assert_converges(f: Faults, *, after: float = 0.0) -> None:
    """The next run, with the fault cleared, leaves every region identical: same committed snapshots, no
    pending manifest, no unfinished upload. ``after``: when an orphaned upload can only be told from a
    running one by its age (the run timeout, 10 s here), wait until that moment first."""
    f.clear()
    while time.time() < after:
        time.sleep(0.2)
    # in-process (the CLI's start-up costs seconds): the same function the CLI calls
    result = snapshot_database(load_config(f.config), DB, connections())
    assert set(result["regions"].values()) == {"committed"}, result
    held = {region: f.manifests(region) for region in REGIONS}
    assert held[PRIMARY] and held[PRIMARY] == held[WEST] == held[NORTH], held
    for region in REGIONS:
        assert f.pending(region) == [], region
        assert f.uploads(region) == [], region


def _when(proxy: FaultProxy, pattern: re.Pattern[str], then: object) -> None:
    """Apply a fault once a request matching ``pattern`` went through the proxy."""
    proxy.wait_for(lambda: any(pattern.search(line) for line in proxy.requests))
    then()  # type: ignore[operator]


# ---- a region that hangs, crawls or flakes -----------------------------------------------------------------


def test_half_open_region_is_dropped_named_in_the_error_and_status_and_repaired(f: Faults) -> None:
    f.s3[NORTH].stalled = True  # accepts connections, never answers
    result, elapsed = f.snapshot()
    snapshot_id = assert_dropped(f, result, elapsed, NORTH, (PRIMARY, WEST))
    status = run_cli("--config", str(f.config), "status", "--json", env=f.env)
    assert status.code == 0, status.stderr
    rows = {row["region"]: row for db in json.loads(status.stdout)["databases"] for row in db["regions"]
            if row["database"] == DB}
    assert rows[NORTH]["last_error"], rows[NORTH]
    f.s3[NORTH].clear()
    assert_converges(f)
    assert snapshot_id in f.manifests(NORTH)
    status = run_cli("--config", str(f.config), "status", "--json", env=f.env)
    rows = [row for db in json.loads(status.stdout)["databases"] for row in db["regions"] if row["database"] == DB]
    assert rows and all(row["gaps"] == [] and not row["last_error"] for row in rows), rows


def test_region_stalling_mid_transfer_is_dropped_at_the_stall_deadline(f: Faults) -> None:
    north = f.s3[NORTH]
    north.hold = PART  # its first part never gets an answer: the transfer stalls with the upload open
    result, elapsed = f.snapshot()
    assert north.held
    assert_dropped(f, result, elapsed, NORTH, (PRIMARY, WEST))
    assert "stalled" in result.error_lines[0]
    assert_converges(f)


def test_region_stalling_after_some_parts_is_dropped_and_its_upload_cleared_next_run(f: Faults) -> None:
    north = f.s3[NORTH]
    north.rate = 2 * MB
    started = time.monotonic()
    proc = f.start("snapshot", "--database", DB)
    try:
        _when(north, PART, lambda: setattr(north, "stalled", True))
        _, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_dropped(f, CliResult(proc.returncode, "", stderr), time.monotonic() - started, NORTH, (PRIMARY, WEST))
    assert_converges(f)


def test_region_capped_at_1_MBps_commits_and_the_others_do_not_wait_for_it(f: Faults, tmp_path: Path) -> None:
    # a part (5 MiB) takes over 5 s at 1 MB/s: the stall deadline must be longer than one part's transfer
    # at the slowest rate a region may have and still count as working (docs/reliability.md)
    slow_ok = f.variant(tmp_path / "slow.yaml", stall_timeout="15s")
    f.s3[NORTH].rate = 1 * MB
    started = time.monotonic()
    result = run_cli("--config", str(slow_ok), "snapshot", "--database", DB, env=f.env, timeout=400)
    elapsed = time.monotonic() - started
    assert result.code == 0, result.stderr
    assert elapsed < BOUND
    snapshot_id = _snapshot_id(result)
    for region in REGIONS:
        assert snapshot_id in f.manifests(region)
    assert_converged(f)


def test_resets_after_every_5_MB_are_retried_per_part(f: Faults) -> None:
    # a period just above one 5 MiB part plus its headers: a smaller period could never be crossed
    f.s3[NORTH].reset_every = 5_500_000
    result, elapsed = f.snapshot()
    assert result.code == 0, result.stderr
    assert elapsed < BOUND
    assert f.s3[NORTH].resets >= 1
    assert _snapshot_id(result) in f.manifests(NORTH)
    assert f.uploads(NORTH) == []
    assert_converged(f)


def test_503_slow_down_on_every_third_request_is_retried(f: Faults) -> None:
    f.s3[NORTH].fail_every = 3
    # the proxy forwards the next attempt of a refused request: this module's two attempts are enough
    result, elapsed = f.snapshot()
    assert result.code == 0, result.stderr
    assert elapsed < BOUND
    assert f.s3[NORTH].failures >= 1
    assert _snapshot_id(result) in f.manifests(NORTH)
    assert_converged(f)


def test_500_on_every_third_request_is_retried(f: Faults) -> None:
    f.s3[WEST].fail_every = 3
    f.s3[WEST].fail_status = 500
    # the proxy forwards the next attempt of a refused request: this module's two attempts are enough
    result, elapsed = f.snapshot()
    assert result.code == 0, result.stderr
    assert elapsed < BOUND
    assert f.s3[WEST].failures >= 1
    assert _snapshot_id(result) in f.manifests(WEST)
    assert_converged(f)


def test_a_part_that_keeps_failing_aborts_that_regions_upload(f: Faults) -> None:
    north = f.s3[NORTH]
    north.fail_every, north.fail_only = 1, PART  # every part upload is refused; the rest works
    result, elapsed = f.snapshot()
    assert_dropped(f, result, elapsed, NORTH, (PRIMARY, WEST))
    assert "SlowDown" in result.error_lines[0]  # what kept failing, after attempts or at the stall deadline
    assert f.uploads(NORTH) == []  # aborted by this run, not left for the next one
    assert_converges(f)


def test_latency_on_every_block_slows_but_does_not_fail_the_run(f: Faults) -> None:
    f.s3[WEST].latency = 0.01
    result, elapsed = f.snapshot()
    assert result.code == 0, result.stderr
    assert elapsed < BOUND
    assert_converged(f)


def test_throttling_and_resets_in_every_region_at_once(f: Faults) -> None:
    for region in REGIONS:
        f.s3[region].fail_every = 4
        f.s3[region].reset_every = 7_000_000
    # the proxy forwards the next attempt of a refused request: this module's two attempts are enough
    result, elapsed = f.snapshot()
    assert result.code == 0, result.stderr
    assert elapsed < BOUND
    assert all(f.s3[region].failures for region in REGIONS)
    assert_converged(f)


def test_half_open_primary_lands_the_snapshot_in_the_next_region(f: Faults) -> None:
    f.s3[PRIMARY].stalled = True
    result, elapsed = f.snapshot()
    snapshot_id = assert_dropped(f, result, elapsed, PRIMARY, (WEST, NORTH))
    assert f.pending(WEST)  # landed in west; its pending manifest is cleared once every region holds it
    assert_converges(f)
    assert snapshot_id in f.manifests(PRIMARY)


def test_two_half_open_regions_leave_the_primary_committed_and_both_named(f: Faults) -> None:
    f.s3[WEST].stalled = f.s3[NORTH].stalled = True
    result, elapsed = f.snapshot()
    assert elapsed < BOUND
    assert result.code == 1
    line = result.error_lines[0]
    assert WEST in line and NORTH in line, line
    assert _snapshot_id(result) in f.manifests(PRIMARY)
    assert_converges(f)


def test_landing_region_stalling_mid_dump_commits_nothing(f: Faults) -> None:
    before = {region: f.manifests(region) for region in REGIONS}
    started = time.time()
    f.s3[PRIMARY].hold = PART
    result, elapsed = f.snapshot()
    assert elapsed < BOUND
    assert result.code == 1 and len(result.error_lines) == 1, result.stderr
    assert "stalled" in result.error_lines[0] and PRIMARY in result.error_lines[0]
    assert {region: f.manifests(region) for region in REGIONS} == before
    assert f.pending(PRIMARY) == []
    assert_converges(f, after=started + 11)  # the unfinished upload is told from a running one by its age


def test_landing_region_stalling_before_replication_is_repaired_from_its_pending_manifest(f: Faults) -> None:
    primary = f.s3[PRIMARY]
    primary.hold = re.compile(r"^(GET|HEAD) .*/data/")  # the snapshot landed; reading it back hangs
    result, elapsed = f.snapshot()
    assert elapsed < BOUND
    assert result.code == 1, result.stderr
    snapshot_id = _snapshot_id(result)
    for region in REGIONS:
        assert snapshot_id not in f.manifests(region)  # nothing is committed that was not read back whole
        assert region in result.error_lines[0]
    assert f.pending(PRIMARY)
    assert_converges(f)  # the pending snapshot is whole: the next run commits it everywhere
    assert all(snapshot_id in f.manifests(region) for region in REGIONS)


def test_status_with_a_half_open_region_returns_promptly_naming_it(f: Faults) -> None:
    f.s3[NORTH].stalled = True
    result, elapsed = f.cli("status", "--json")
    assert elapsed < BOUND
    rows = {(row["database"], row["region"]): row
            for db in json.loads(result.stdout)["databases"] for row in db["regions"]}
    assert rows[(DB, NORTH)]["last_error"], rows[(DB, NORTH)]
    assert not rows[(DB, PRIMARY)]["last_error"] or "unreachable" not in rows[(DB, PRIMARY)]["last_error"]


def _fresh_target(f: Faults, name: str) -> str:
    f.stack.pg.execute(f"DROP DATABASE IF EXISTS {name}")
    f.stack.pg.execute(f"CREATE DATABASE {name}")
    return f"host=127.0.0.1 port={f.stack.pg.port} user=postgres dbname={name}"


def _tables(f: Faults, name: str) -> int:
    with psycopg.connect(**f.stack.pg.connect_kwargs(name)) as conn:
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        return int(row[0]) if row else 0


def test_restore_from_a_stalled_region_fails_within_the_deadline_and_leaves_the_target(f: Faults) -> None:
    assert_converges(f)
    dsn = _fresh_target(f, "faults_restore_stalled")
    f.s3[NORTH].hold = re.compile(r"^GET .*/data/")
    started = time.monotonic()
    result = run_cli("--config", str(f.config), "restore", "--database", DB, "--region", NORTH, "--target-dsn", dsn,
                     env={**f.env, "PGPASSWORD": f.stack.pg.password}, timeout=400)
    assert time.monotonic() - started < BOUND
    assert result.code == 1 and len(result.error_lines) == 1, result.stderr
    assert NORTH in result.error_lines[0] and "stalled" in result.error_lines[0]
    assert _tables(f, "faults_restore_stalled") == 0
    assert list(f.spool.iterdir()) == []  # no plaintext left behind
    f.clear()
    again = run_cli("--config", str(f.config), "restore", "--database", DB, "--region", NORTH, "--target-dsn", dsn,
                    env={**f.env, "PGPASSWORD": f.stack.pg.password}, timeout=400)
    assert again.code == 0, again.stderr
    assert _tables(f, "faults_restore_stalled") == 1


@contextlib.contextmanager
def _sigkilled(proc: subprocess.Popen[str]) -> Iterator[None]:
    """The block waits for the moment to kill ``proc``; then it is SIGKILLed (killed too if the block fails)."""
    try:
        yield
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def _sessions(f: Faults, name: str) -> int:
    with psycopg.connect(**f.stack.pg.connect_kwargs()) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()
        return int(row[0]) if row else 0


def test_sigkill_mid_restore_into_a_new_database_leaves_nothing_under_its_name(f: Faults) -> None:
    """A new database is loaded under a name of its own and renamed once every check has passed: a restore
    killed while the data streams in leaves no half-loaded database under the name asked for, and the next
    restore into that name drops what the killed one left and restores."""
    assert_converges(f)
    name = "faults_restore_killed"
    f.stack.pg.execute(f"DROP DATABASE IF EXISTS {name}")
    loading = postgres.loading_name(name)
    dsn = f"host=127.0.0.1 port={f.stack.pg.port} user=postgres dbname={name}"
    args = ("--config", str(f.config), "restore", "--database", DB, "--region", PRIMARY, "--target-dsn", dsn)
    env = {**f.env, "PGPASSWORD": f.stack.pg.password}
    f.s3[PRIMARY].hold = re.compile(r"^GET .*/data/.* Range: bytes=[1-9]")  # the dump's first range arrives
    proc = start_cli(*args, env=env)
    with _sigkilled(proc):
        f.s3[PRIMARY].wait_for(lambda: f.stack.database_exists(loading))  # definitions restored, the data streaming in
        f.s3[PRIMARY].wait_for(lambda: _sessions(f, loading) > 0)
        second = run_cli(*args, env=env, timeout=120)  # a second restore into the same name meanwhile
        assert second.code == 1 and len(second.error_lines) == 1, second.stderr
        assert "is running" in second.error_lines[0] and loading in second.error_lines[0], second.stderr
    assert proc.returncode == -9
    assert not f.stack.database_exists(name)  # nothing half-loaded under the name ops asked for
    assert f.stack.database_exists(loading)
    f.clear()
    f.s3[PRIMARY].wait_for(lambda: _sessions(f, loading) == 0)  # its pg_restore streams end at their input's end
    again = run_cli(*args, env=env, timeout=400)
    assert again.code == 0, again.stderr
    assert f"dropped {loading}, left behind by a restore into it that did not finish" in again.stderr
    assert not f.stack.database_exists(loading)
    assert _tables(f, name) == 1


def test_spool_filesystem_full_during_a_restore_fails_cleanly(f: Faults, tmp_path: Path) -> None:
    assert_converges(f)
    small = tmp_path / "small-spool"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        config = write_config(tmp_path / "small.yaml", **{
            **json.loads(f.config.read_text()), "restore": {"spool_dir": str(small)}})
        dsn = _fresh_target(f, "faults_restore_full")
        started = time.monotonic()
        result = run_cli("--config", str(config), "restore", "--database", DB, "--target-dsn", dsn,
                         env={**f.env, "PGPASSWORD": f.stack.pg.password}, timeout=400)
        assert time.monotonic() - started < BOUND
        assert result.code == 1 and len(result.error_lines) == 1, result.stderr
        assert "space" in result.error_lines[0].lower(), result.error_lines[0]
        assert _tables(f, "faults_restore_full") == 0
        assert list(small.iterdir()) == []  # no plaintext left on the full filesystem
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
    again = run_cli("--config", str(f.config), "restore", "--database", DB, "--target-dsn", dsn,
                    env={**f.env, "PGPASSWORD": f.stack.pg.password}, timeout=400)
    assert again.code == 0, again.stderr


# ---- the source ----------------------------------------------------------------------------------------------


def _dump_backend_pids(f: Faults) -> list[int]:
    with psycopg.connect(**f.stack.pg.connect_kwargs()) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'pg_dump'",
                            (DB,)).fetchall()
    return [int(r[0]) for r in rows]


def _no_new_snapshot(f: Faults, before: dict[str, set[str]], result: CliResult) -> None:
    assert {region: f.manifests(region) for region in REGIONS} == before
    for region in REGIONS:
        assert f.pending(region) == []
    assert DB in result.error_lines[0], result.error_lines


def test_source_backend_terminated_mid_dump(f: Faults) -> None:
    before = {region: f.manifests(region) for region in REGIONS}
    started = time.time()
    f.pg.rate = 1 * MB  # the dump takes seconds
    proc = f.start("snapshot", "--database", DB)
    try:
        f.pg.wait_for(lambda: bool(_dump_backend_pids(f)))
        with psycopg.connect(**f.stack.pg.connect_kwargs()) as conn:
            for pid in _dump_backend_pids(f):
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = CliResult(proc.returncode, "", stderr)
    assert time.time() - started < BOUND
    assert result.code == 1 and len(result.error_lines) == 1, stderr
    assert "pg_dump" in result.error_lines[0]
    _no_new_snapshot(f, before, result)
    for region in REGIONS:
        assert f.uploads(region) == []  # the landing region's upload was aborted
    assert_converges(f)


def test_source_stalling_mid_dump_is_stopped_by_the_dump_stall_deadline(f: Faults) -> None:
    before = {region: f.manifests(region) for region in REGIONS}
    f.pg.rate = 1 * MB
    started = time.monotonic()
    proc = f.start("snapshot", "--database", DB)
    try:
        # the dump's upload has begun (the dump has just started): the source stops answering
        _when(f.s3[PRIMARY], re.compile(r"^POST .*/data/.*[?&]uploads"), lambda: setattr(f.pg, "stalled", True))
        _, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = CliResult(proc.returncode, "", stderr)
    assert time.monotonic() - started < BOUND
    assert result.code == 1 and len(result.error_lines) == 1, stderr
    assert "stalled" in result.error_lines[0]
    _no_new_snapshot(f, before, result)
    assert_converges(f)


def test_source_connection_reset_mid_dump(f: Faults) -> None:
    before = {region: f.manifests(region) for region in REGIONS}
    f.pg.reset_every = 3 * MB
    result, elapsed = f.snapshot()
    assert elapsed < BOUND
    assert result.code == 1 and len(result.error_lines) == 1, result.stderr
    _no_new_snapshot(f, before, result)
    assert f.pg.resets >= 1
    assert_converges(f)


def test_source_half_open_at_connect_fails_within_the_connect_timeout(f: Faults) -> None:
    before = {region: f.manifests(region) for region in REGIONS}
    f.pg.stalled = True
    result, elapsed = f.snapshot()
    assert elapsed < BOUND
    assert result.code == 1 and len(result.error_lines) == 1, result.stderr
    _no_new_snapshot(f, before, result)
    assert_converges(f)


# ---- SIGKILL at each step ------------------------------------------------------------------------------------

KILL_POINTS = {
    # step: (region, request that hangs while the process is killed)
    "dump upload": (PRIMARY, PART),
    "pending manifest": (PRIMARY, re.compile(r"^PUT .*/pending/")),
    "replication": (NORTH, PART),
    "commit in one region": (WEST, re.compile(r"^PUT .*/manifests/")),
    "commit in the primary": (PRIMARY, re.compile(r"^PUT .*/manifests/")),
    "run record": (PRIMARY, re.compile(r"^PUT .*/status/last-run\.json")),
}


@pytest.mark.parametrize("step", list(KILL_POINTS))
def test_sigkill_at_each_step_commits_nothing_partial_and_the_next_run_converges(f: Faults, step: str) -> None:
    region, pattern = KILL_POINTS[step]
    committed = {r: f.manifests(r) for r in REGIONS}
    started = time.time()
    f.s3[region].hold = pattern
    proc = f.start("snapshot", "--database", DB)
    with _sigkilled(proc):
        f.s3[region].wait_for(lambda: bool(f.s3[region].held))
    assert proc.returncode == -9
    for r in REGIONS:
        assert committed[r] <= f.manifests(r), r  # nothing deleted
        for snapshot_id in f.manifests(r) - committed[r]:  # anything new is whole
            assert any(k.startswith(f"databases/{DB}/data/{snapshot_id}/") for k in f.stack.list_keys(r))
    assert_converges(f, after=started + 11)


def test_sigkill_during_prune_deletes_nothing_young_and_the_next_prune_finishes(
    f: Faults, tmp_path: Path
) -> None:
    assert_converges(f)
    old = {r: f.manifests(r) for r in REGIONS}
    ready = time.time() + 15  # the snapshots above end up past the retention below, the next one does not
    while time.time() < ready:
        time.sleep(0.5)
    doc = json.loads(f.config.read_text())
    # the kill, not the control deadline, is this test's subject: listing versions on an S3 server that has
    # served the whole suite can take over the module's 2 s, so the prunes here get the default's margin
    short = write_config(tmp_path / "prune.yaml", **{**doc, "retention": "10s",
                                                      "transfer": {**doc["transfer"], "control_timeout": "10s"}})
    young, _ = f.snapshot()
    assert young.code == 0, young.stderr
    keep = _snapshot_id(young)
    # the policy is evaluated 2 s after the young snapshot (an earlier `now` is allowed): young is kept
    # however long this machine takes, everything else is at least 15 s old
    now = (layout.snapshot_id_time(keep) + timedelta(seconds=2)).isoformat()
    f.s3[NORTH].hold = re.compile(r"^(DELETE|POST) ")
    proc = start_cli("--config", str(short), "prune", "--now", now, env=f.env)
    with _sigkilled(proc):
        f.s3[NORTH].wait_for(lambda: bool(f.s3[NORTH].held))
    f.clear()
    for r in REGIONS:
        assert keep in f.manifests(r), r  # nothing young was deleted
    again = run_cli("--config", str(short), "prune", "--now", now, env=f.env, timeout=400)
    assert again.code == 0, again.stderr
    for r in REGIONS:
        assert f.manifests(r) == {keep}, r  # the interrupted prune finished: every expired snapshot is gone
        assert f.uploads(r) == [] and f.pending(r) == []
    assert all(old.values())
