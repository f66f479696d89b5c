"""Bad input gets one clear error line, a non-zero exit, and changes nothing."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from strongroom.snapshot import snapshot_database
from tests.conftest import Stack, write_config
from tests.integration.helpers import CliResult, run_cli

B64_32 = base64.b64encode(b"k" * 32).decode()
B64_16 = base64.b64encode(b"x" * 16).decode()


def keyring_env(extra: object) -> dict[str, str]:
    return {"AIRFLOW_CONN_STRONGROOM_KEYRING": json.dumps({"conn_type": "generic", "extra": extra})}


@pytest.fixture(scope="module")
def committed(stack: Stack, config, conns) -> dict:
    return snapshot_database(config, "shop", conns)


def assert_one_line_error(result: CliResult, fragment: str) -> None:
    assert result.code != 0
    assert len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith("strongroom: error: "), result.stderr
    assert fragment in result.error_lines[0], result.stderr


def bad_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


SNAPSHOT_CASES = {
    "unknown database": (["--database", "nope"], {}, (), "unknown database 'nope'"),
    "unreachable database": (
        ["--database", "shop"], {"AIRFLOW_CONN_PG_SHOP": "postgresql://postgres:x@127.0.0.1:9/shop"}, (),
        "cannot connect",
    ),
    "keyring connection missing": (["--database", "shop"], {}, ("AIRFLOW_CONN_STRONGROOM_KEYRING",),
                                   "connection 'strongroom_keyring' is not defined"),
    "short key": (["--database", "shop"], keyring_env({"active": "k", "keys": {"k": B64_16}}),
                  (), "is 16 bytes"),
    "malformed key": (["--database", "shop"], keyring_env({"active": "k", "keys": {"k": "not base64!"}}), (),
                      "not valid base64"),
    "keyring without its active id": (["--database", "shop"], keyring_env({"active": "k2", "keys": {"k1": B64_32}}),
                                      (), "active key id 'k2' is not in 'keys'"),
}


@pytest.mark.parametrize("case", list(SNAPSHOT_CASES))
def test_snapshot_bad_input_changes_nothing(case: str, stack: Stack, committed: dict) -> None:
    args, env, unset, fragment = SNAPSHOT_CASES[case]
    before = stack.list_keys()
    result = run_cli("snapshot", *args, env=env, unset=unset)
    assert_one_line_error(result, fragment)
    assert stack.list_keys() == before
    assert stack.uploads() == []


def test_wrong_password(stack: Stack, committed: dict) -> None:
    before = stack.list_keys()
    env = {"AIRFLOW_CONN_PG_SHOP": stack.pg.airflow_uri("shop", password="wrong-password")}
    result = run_cli("snapshot", "--database", "shop", env=env)
    assert_one_line_error(result, "password authentication failed")
    assert "wrong-password" not in result.stderr
    assert stack.list_keys() == before


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("regions: [\n  - name: x\n", "invalid YAML"),
        ("retension: 30d\n", "retension: unknown key"),
        ("regions: []\nencryption: {keyring_conn_id: k}\n", "regions"),
    ],
)
def test_invalid_config(tmp_path: Path, stack: Stack, text: str, fragment: str) -> None:
    before = stack.list_keys()
    result = run_cli("--config", bad_config(tmp_path, text), "snapshot")
    assert_one_line_error(result, fragment)
    assert stack.list_keys() == before


def test_missing_bucket(tmp_path: Path, stack: Stack) -> None:
    region = {"name": "eu-central-1", "bucket": "sr-no-such-bucket", "aws_conn_id": "s3_eu_central_1"}
    path = write_config(tmp_path / "c.yaml", regions=[region])
    result = run_cli("--config", str(path), "snapshot", "--database", "shop")
    assert_one_line_error(result, "bucket 'sr-no-such-bucket' does not exist")


def _dsn(stack: Stack, dbname: str) -> str:
    return f"host=127.0.0.1 port={stack.pg.port} user=postgres dbname={dbname}"


RESTORE_CASES = {
    "snapshot id that does not exist": (["--snapshot", "20200101T000000Z-abcdef"],
                                        "snapshot 20200101T000000Z-abcdef of shop is not in"),
    "malformed snapshot id": (["--snapshot", "latest-ish"], "is not a snapshot id"),
    "--at without a UTC offset": (["--at", "2026-11-26T14:00:00"], "explicit UTC offset"),
    "--at before the first snapshot": (["--at", "2001-01-01T00:00:00+00:00"], "no snapshot of shop taken at or before"),
    "--at that is not a time": (["--at", "yesterday"], "is not an ISO 8601 time"),
    "unknown database": (["--database", "nope"], "unknown database 'nope'"),
}


@pytest.mark.parametrize("case", list(RESTORE_CASES))
def test_restore_bad_input_creates_nothing(case: str, stack: Stack, committed: dict) -> None:
    args = RESTORE_CASES[case][0]
    base = [] if "--database" in args else ["--database", "shop"]
    result = run_cli("restore", *base, *args, "--target-dsn", _dsn(stack, "bad_input_target"),
                     env={"PGPASSWORD": stack.pg.password})
    assert_one_line_error(result, RESTORE_CASES[case][1])
    assert not stack.database_exists("bad_input_target")


@pytest.mark.parametrize(
    "dsn",
    ["host=127.0.0.1 port={port} user=postgres password=hunter22 dbname=t",
     "postgresql://postgres:hunter22@127.0.0.1:{port}/t"],
)
def test_target_dsn_with_password_is_refused(stack: Stack, committed: dict, dsn: str) -> None:
    result = run_cli("restore", "--database", "shop", "--target-dsn", dsn.format(port=stack.pg.port))
    assert_one_line_error(
        result, "strongroom: error: --target-dsn must not contain a password: set PGPASSWORD or PGPASSFILE instead")
    assert "hunter22" not in result.stderr
    assert not stack.database_exists("t")


def test_non_empty_target_needs_clean(stack: Stack, committed: dict) -> None:
    result = run_cli("restore", "--database", "shop", "--target-dsn", _dsn(stack, "shop"),
                     env={"PGPASSWORD": stack.pg.password})
    assert_one_line_error(result, f"strongroom: error: target postgres@127.0.0.1:{stack.pg.port}/shop is not empty (")
    assert result.error_lines[0].endswith(
        " relations): restore into a new database, or restore with --clean to replace its contents"), result.stderr


def test_errors_never_print_secrets(stack: Stack, committed: dict) -> None:
    """Even verbose logs of a successful run carry no password or key material."""
    result = run_cli("-v", "snapshot", "--database", "shop")
    assert result.code == 0, result.stderr
    for secret in [stack.pg.password, *stack.all_keys_material]:
        assert secret not in result.stdout + result.stderr
    assert os.environ["AIRFLOW_CONN_PG_SHOP"] not in result.stderr
