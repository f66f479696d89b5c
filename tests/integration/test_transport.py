"""Transport security at configuration load (issue 15, item 6), through the real CLI.

An S3 endpoint over plain HTTP on a host other than loopback is refused with one line before anything is
read or written; a region that sets ``allow_insecure_transport: true`` is accepted and ``status`` shows a
warning, as it does for a PostgreSQL connection that lowers ``sslmode`` for a remote host.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REGIONS, Stack, region_entries, write_config
from tests.integration.helpers import run_cli

INSECURE = "http://s3.example.test:9000"


@pytest.fixture(scope="module")
def insecure_env(stack: Stack) -> dict[str, str]:
    return {
        "AIRFLOW_CONN_S3_INSECURE": json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing-secret",
            "extra": {"region_name": REGIONS[1], "endpoint_url": INSECURE}}),
        "AIRFLOW_CONN_PG_REMOTE_LOWERED": "postgresql://app:app-pw@db.example.test:5432/shop?sslmode=require",
    }


def _config(tmp_path: Path, allow: bool) -> Path:
    regions = region_entries()
    regions[1] = dict(regions[1], aws_conn_id="s3_insecure", **({"allow_insecure_transport": True} if allow else {}))
    return write_config(tmp_path / "transport.yaml", regions=regions,
                        databases=[{"name": "shop", "postgres_conn_id": "pg_remote_lowered"}])


@pytest.mark.parametrize("command", [["status"], ["snapshot", "--database", "shop"], ["prune", "--dry-run"]])
def test_a_plain_http_endpoint_on_a_remote_host_is_refused_at_load(
    stack: Stack, insecure_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    keys_before = {r: stack.list_keys(r) for r in REGIONS}
    result = run_cli("--config", str(_config(tmp_path, allow=False)), *command, env=insecure_env)
    assert result.code == 1, result.stdout
    assert result.error_lines == [
        f"strongroom: error: region {REGIONS[1]} (connection 's3_insecure'): plain HTTP endpoint {INSECURE} "
        "on a non-loopback host: use https with verification, or set allow_insecure_transport: true"
    ], result.stderr
    assert "testing-secret" not in result.stderr + result.stdout
    assert {r: stack.list_keys(r) for r in REGIONS} == keys_before  # nothing written anywhere


def test_allowed_insecure_transport_and_a_lowered_sslmode_are_shown_as_warnings(
    stack: Stack, insecure_env: dict[str, str], tmp_path: Path
) -> None:
    path = _config(tmp_path, allow=True)
    env = insecure_env
    result = run_cli("--config", str(path), "status", "--json", env=env, timeout=600)
    assert result.code == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    assert warnings == [
        "connection 'pg_remote_lowered': sslmode=require to db.example.test does not fully verify the server "
        "(the default for a remote host is verify-full)",
        f"region {REGIONS[1]} (connection 's3_insecure'): plain HTTP endpoint {INSECURE} on a non-loopback host "
        "(allowed by allow_insecure_transport)",
    ]
    text = run_cli("--config", str(path), "status", env=env, timeout=600)
    assert text.code == 0 and "WARNING: connection 'pg_remote_lowered': sslmode=require" in text.stdout
    assert "app-pw" not in text.stdout + text.stderr and os.environ.get("PGSSLMODE") is None


def test_tls_verification_turned_off_on_the_connection_is_refused_at_load(stack: Stack, tmp_path: Path) -> None:
    env = {"AIRFLOW_CONN_S3_UNVERIFIED": json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing-secret",
        "extra": {"region_name": REGIONS[2], "endpoint_url": "https://s3.example.test", "verify": False}})}
    regions = region_entries()
    regions[2] = dict(regions[2], aws_conn_id="s3_unverified")
    path = write_config(tmp_path / "unverified.yaml", regions=regions)
    result = run_cli("--config", str(path), "status", env=env)
    assert result.code == 1
    assert result.error_lines == [
        f"strongroom: error: region {REGIONS[2]} (connection 's3_unverified'): TLS certificate verification "
        "turned off on a non-loopback host: use https with verification, or set allow_insecure_transport: true"
    ], result.stderr
