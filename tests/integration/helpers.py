"""Helpers for integration tests: table fingerprints and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strongroom.postgres import PgSettings, table_fingerprints

ROOT = Path(__file__).resolve().parents[2]


def fingerprints(conn_kwargs: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """Per user table: (row count, md5 of all rows in a stable order)."""
    return table_fingerprints(PgSettings(**conn_kwargs))


def schema_dump(port: int, dbname: str, password: str) -> str:
    result = subprocess.run(
        ["/usr/lib/postgresql/15/bin/pg_dump", "--schema-only", "--no-owner", "--no-privileges",
         "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", dbname],
        capture_output=True, text=True, check=True, env={**os.environ, "PGPASSWORD": password},
    )
    # comments and the random \restrict token (PostgreSQL 15.14+) differ between any two dumps
    skip = ("--", "\\restrict", "\\unrestrict")
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith(skip))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def cli_env(env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> dict[str, str]:
    merged = {**os.environ, **(env or {})}
    for name in unset:
        merged.pop(name, None)
    return merged


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "strongroom.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(env), cwd=ROOT,
    )


def run_cli(
    *args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = (), timeout: float = 300
) -> CliResult:
    result = subprocess.run(
        [sys.executable, "-m", "strongroom.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=cli_env(env, unset), cwd=ROOT,
    )
    return CliResult(result.returncode, result.stdout, result.stderr)
