"""The CLI's connections read from AIRFLOW_CONN_* without importing Airflow: parsed as Airflow parses them,
S3 clients built as the amazon provider's hook builds them, and Airflow asked whenever it would answer
differently (a secrets backend, a connection the plain path does not cover)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from strongroom.airflow_adapter import AirflowConnections, EnvConnection, _from_environment
from strongroom.config import TransferConfig

ROOT = Path(__file__).resolve().parents[2]

VALUES = [
    "postgresql://postgres:p%40ss%2Fw%3Ard@127.0.0.1:5432/shop",
    "postgres://backup@DB.example.com/my%20db?sslmode=verify-full&application_name=strongroom",
    "postgresql://h:5433/db?__extra__=%7B%22sslmode%22%3A+%22disable%22%7D",
    "postgresql://h/",
    "aws://AKIAEXAMPLE:secret%2Bkey%2F1@/?region_name=eu-west-1&endpoint_url=http%3A%2F%2F127.0.0.1%3A5000",
    "my-type://host:1234/path",
    json.dumps({"conn_type": "aws", "login": "testing", "password": "testing-secret",
                "extra": {"region_name": "eu-central-1", "endpoint_url": "http://127.0.0.1:1"}}),
    json.dumps({"conn_type": "generic", "extra": {"active": "k1", "keys": {"k1": "c2VjcmV0"}}}),
    json.dumps({"conn_type": "postgresql", "host": "h", "port": "5433", "login": "u", "password": "p",
                "schema": "db", "extra": "{\"sslmode\": \"require\"}", "description": "a target"}),
]


def _fields(conn: object) -> tuple:
    names = ("conn_type", "host", "schema", "login", "password", "port", "extra_dejson")
    return tuple(getattr(conn, name) for name in names)


@pytest.mark.parametrize("value", VALUES)
def test_parsed_as_airflow_parses_it(value: str) -> None:
    from airflow.sdk import Connection

    theirs = Connection.from_json(value, conn_id="x") if value.startswith("{") else Connection.from_uri(value, "x")
    assert _fields(EnvConnection.parse(value)) == _fields(theirs)


@pytest.mark.parametrize("value", ["http://h://x", json.dumps({"conn_type": "aws", "unknown": 1}), "{not json"])
def test_what_the_plain_path_does_not_read_is_left_to_airflow(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ODD", value)
    assert _from_environment("odd") is None


def test_a_secrets_backend_is_asked_first_as_airflow_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PG_X", "postgresql://u:p@h/db")
    assert _from_environment("pg_x") is not None
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", "airflow.secrets.local_filesystem.LocalFilesystemBackend")
    assert _from_environment("pg_x") is None


S3 = json.dumps({"conn_type": "aws", "login": "testing", "password": "testing-secret",
                 "extra": {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9", "verify": False}})


def _client_facts(client: object) -> tuple:
    meta = client.meta  # type: ignore[attr-defined]
    creds = client._request_signer._credentials  # type: ignore[attr-defined]
    config = meta.config
    return (meta.endpoint_url, meta.region_name, creds.access_key, creds.secret_key, creds.token,
            client._endpoint.http_session._verify,  # type: ignore[attr-defined]
            config.read_timeout, config.connect_timeout, config.retries, config.max_pool_connections,
            config.request_checksum_calculation, config.response_checksum_validation)


@pytest.mark.parametrize("data", [False, True])
@pytest.mark.parametrize("region", [None, "eu-north-1"])
def test_s3_client_is_the_one_the_hook_builds(data: bool, region: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_S3_PLAIN", S3)
    transfer = TransferConfig()
    args = ("s3_plain", region, transfer, False, "region x")
    ours = AirflowConnections(environment_first=True)._client(*args, data=data)
    theirs = AirflowConnections()._client(*args, data=data)
    assert _client_facts(ours) == _client_facts(theirs)


def test_the_environment_path_does_not_import_airflow(tmp_path: Path) -> None:
    keyring = json.dumps({"conn_type": "generic", "extra": {"active": "k1", "keys": {"k1": "A" * 43 + "="}}})
    code = (
        "import sys\n"
        "from strongroom.airflow_adapter import connections\n"
        "from strongroom.config import RegionConfig, TransferConfig\n"
        "c = connections(environment_first=True)\n"
        "c.postgres('pg_shop'); c.keyring('kr')\n"
        "r = RegionConfig(name='eu-west-1', bucket='some-bucket', aws_conn_id='s3_plain')\n"
        "c.store(r, TransferConfig()).data_client\n"
        "assert 'airflow' not in sys.modules, sorted(m for m in sys.modules if m.startswith('airflow'))[:5]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__SECRETS")}
    env.update({"AIRFLOW_CONN_PG_SHOP": "postgresql://u:p@127.0.0.1/shop", "AIRFLOW_CONN_KR": keyring,
                "AIRFLOW_CONN_S3_PLAIN": S3, "PYTHONPATH": str(ROOT / "include")})
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                            check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("data", [False, True])
def test_every_thread_of_the_widest_object_pass_keeps_its_connection(data: bool,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An object source at its highest concurrency shares one client among that many threads: a pool
    smaller than that drops the surplus connections after each request and opens new ones (with TLS, a
    handshake per object)."""
    from strongroom.config import MAX_OBJECT_CONCURRENCY, ObjectSourceConfig

    monkeypatch.setenv("AIRFLOW_CONN_S3_PLAIN", S3)
    widest = ObjectSourceConfig(bucket="uploads", aws_conn_id="s3_plain", concurrency=MAX_OBJECT_CONCURRENCY)
    client = AirflowConnections(environment_first=True)._client("s3_plain", None, TransferConfig(), False, "x",
                                                                data=data)
    assert client.meta.config.max_pool_connections >= widest.concurrency
