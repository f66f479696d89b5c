"""Shared fixtures: real services, started once per session and only when a test asks for them.

Airflow reads its settings from the environment at import time, so the environment is set here,
before anything imports Airflow.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="strongroom-af-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from devstack import LocalPostgres, MotoServer  # noqa: E402
from sample_data import create_sample  # noqa: E402

PRIMARY = "eu-central-1"
BUCKET = "sr-test-eu-central-1"
KEY_ID = "k-test-1"
CANARY = "CANARY-7f3a9c-do-not-leak"
ROLE_CANARY_PASSWORD = "canary-role-pw-51d2e8"


@dataclass
class Stack:
    pg: LocalPostgres
    s3: MotoServer
    config_path: Path
    keyring_extra: dict

    @property
    def client(self):
        return self.s3.client(PRIMARY)

    def list_keys(self, bucket: str = BUCKET) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def uploads(self, bucket: str = BUCKET) -> list[str]:
        return [u["Key"] for u in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    def read(self, key: str, bucket: str = BUCKET) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def write(self, key: str, data: bytes, bucket: str = BUCKET) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def database_exists(self, name: str) -> bool:
        import psycopg

        with psycopg.connect(**self.pg.connect_kwargs()) as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def write_config(path: Path, **overrides: object) -> Path:
    config = {
        "retention": "30d",
        "regions": [{"name": PRIMARY, "bucket": BUCKET, "aws_conn_id": "s3_primary"}],
        "encryption": {"keyring_conn_id": "strongroom_keyring"},
        "databases": [
            {"name": "shop", "postgres_conn_id": "pg_shop"},
            {"name": "bulk", "postgres_conn_id": "pg_bulk"},
        ],
        "transfer": {"part_size": "5MiB", "upload_concurrency": 2, "read_timeout": "30s", "max_attempts": 2},
        "snapshot": {"run_timeout": "50m"},
    }
    config.update(overrides)
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    pg = LocalPostgres().start()
    s3 = MotoServer().start()
    try:
        s3.create_bucket(BUCKET, PRIMARY)
        pg.execute("CREATE DATABASE shop")
        create_sample(pg.connect_kwargs("shop"), scale=1)
        pg.execute(f"INSERT INTO customers (email, name, country, created_at, profile) "
                   f"VALUES ('canary@example.com', '{CANARY}', 'DE', now(), '{{\"note\": \"{CANARY}\"}}')", "shop")
        pg.execute(f"CREATE ROLE app_user LOGIN PASSWORD '{ROLE_CANARY_PASSWORD}'")
        pg.execute("CREATE DATABASE bulk")
        # ~6 MB of incompressible-ish text: several 1 MiB encryption segments after zstd
        pg.execute("CREATE TABLE blobs (id int PRIMARY KEY, body text NOT NULL)", "bulk")
        pg.execute("INSERT INTO blobs SELECT g, string_agg(md5(random()::text || g || i), '') "
                   "FROM generate_series(1, 3000) g, generate_series(1, 60) i GROUP BY g", "bulk")
        keyring = {"active": KEY_ID, "keys": {KEY_ID: base64.b64encode(os.urandom(32)).decode()}}
        os.environ.update({
            "AIRFLOW_CONN_S3_PRIMARY": s3.airflow_conn(PRIMARY),
            "AIRFLOW_CONN_PG_SHOP": pg.airflow_uri("shop"),
            "AIRFLOW_CONN_PG_BULK": pg.airflow_uri("bulk"),
            "AIRFLOW_CONN_STRONGROOM_KEYRING": json.dumps({"conn_type": "generic", "extra": keyring}),
        })
        config_path = write_config(tmp_path_factory.mktemp("config") / "strongroom.yaml")
        os.environ["STRONGROOM_CONFIG"] = str(config_path)
        yield Stack(pg, s3, config_path, keyring)
    finally:
        s3.stop()
        pg.stop()


@pytest.fixture(scope="session")
def config(stack: Stack):
    from strongroom.config import load_config

    return load_config(stack.config_path)


@pytest.fixture(scope="session")
def conns(stack: Stack):
    from strongroom.airflow_adapter import connections

    return connections()
