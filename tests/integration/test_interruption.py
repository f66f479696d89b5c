"""A failed pg_dump, a killed run, or a stale upload never leaves a committed or half-written snapshot."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from strongroom.errors import SourceError
from strongroom.snapshot import snapshot_database
from tests.conftest import Stack, write_config
from tests.integration.helpers import run_cli, start_cli


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _cmdlines() -> list[bytes]:
    """Every process's command line (what anyone on the machine can read)."""
    lines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                lines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
    return lines


def _dumps_of(port: int) -> list[bytes]:
    """The command lines of the snapshot's pg_dump processes against the server on ``port`` (the tool gets its
    server from the environment): not another test session's dump."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"pg_dump" in cmdline and b"--snapshot=" in cmdline \
                    and f"PGPORT={port}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(cmdline)
    return found


def test_sigterm_aborts_the_upload_and_commits_nothing(stack: Stack) -> None:
    before = stack.list_keys()
    # hold a lock so pg_dump waits mid-run with the multipart upload already open
    with psycopg.connect(**stack.pg.connect_kwargs("bulk")) as blocker:
        blocker.execute("LOCK TABLE blobs IN ACCESS EXCLUSIVE MODE")
        proc = start_cli("snapshot", "--database", "bulk")
        try:
            _wait_for(lambda: stack.uploads() != [])
            _wait_for(lambda: _dumps_of(stack.pg.port) != [])
            for cmdline in _cmdlines():  # no secret on any command line while the dump runs
                assert stack.pg.password.encode() not in cmdline
                for key in stack.all_keys_material:
                    assert key.encode() not in cmdline
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        blocker.rollback()
    assert proc.returncode == 143
    assert [line for line in stderr.splitlines() if line.strip()] == [
        "strongroom: error: stopped by SIGTERM; unfinished uploads were aborted"
    ]
    assert stack.uploads() == []
    assert stack.list_keys() == before
    assert _dumps_of(stack.pg.port) == [], "pg_dump was left running"


def test_failed_pg_dump_leaves_nothing(stack: Stack, config, conns, monkeypatch: pytest.MonkeyPatch) -> None:
    """A role that may not read one table makes pg_dump fail part-way: nothing is committed."""
    stack.pg.execute("DROP ROLE IF EXISTS limited")
    stack.pg.execute("CREATE ROLE limited LOGIN PASSWORD 'limited-pw'")
    stack.pg.execute("CREATE TABLE IF NOT EXISTS zz_private (v text); "
                     "INSERT INTO zz_private VALUES ('x'); GRANT SELECT ON blobs TO limited", "bulk")
    monkeypatch.setenv("AIRFLOW_CONN_PG_BULK", stack.pg.airflow_uri("bulk", user="limited", password="limited-pw"))
    before = stack.list_keys()
    with pytest.raises(SourceError, match="permission denied"):
        snapshot_database(config, "bulk", conns)
    assert stack.list_keys() == before
    assert stack.uploads() == []


def test_next_run_aborts_stale_uploads(tmp_path: Path, stack: Stack) -> None:
    stale = stack.client.create_multipart_upload(Bucket="sr-test-eu-central-1", Key="databases/shop/data/x/dump")
    path = write_config(tmp_path / "c.yaml", snapshot={"run_timeout": "1s"})
    time.sleep(1.5)
    result = run_cli("--config", str(path), "snapshot", "--database", "shop")
    assert result.code == 0, result.stderr
    assert stale["UploadId"] not in [
        u["UploadId"] for u in stack.client.list_multipart_uploads(Bucket="sr-test-eu-central-1").get("Uploads", [])
    ]
    assert stack.uploads() == []


def test_a_table_lock_held_past_the_lock_wait_timeout_fails_the_snapshot(tmp_path: Path, stack: Stack) -> None:
    """pg_dump waits ``snapshot.lock_wait_timeout`` for a table's lock, then the snapshot fails and leaves
    nothing (a shorter wait than the default 60 s, so the setting is what stopped it)."""
    path = write_config(tmp_path / "c.yaml", snapshot={"lock_wait_timeout": "2s", "dump_stall_timeout": "5m"})
    before = stack.list_keys()
    with psycopg.connect(**stack.pg.connect_kwargs("bulk")) as blocker:
        blocker.execute("LOCK TABLE blobs IN ACCESS EXCLUSIVE MODE")
        result = run_cli("--config", str(path), "snapshot", "--database", "bulk", timeout=55)
        blocker.rollback()
    assert result.code != 0
    assert "canceling statement due to statement timeout" in result.error_lines[0], result.stderr
    assert stack.list_keys() == before
    assert stack.uploads() == []
