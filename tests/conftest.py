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

if _worker := os.environ.get("PYTEST_XDIST_WORKER"):
    # each pytest-xdist worker (and every process it starts) its own temporary directory: sandboxes, spools
    # and their leftover checks are per session
    # (a short name: a throwaway server's socket path below it must stay under the 107-byte limit)
    os.environ["TMPDIR"] = tempfile.mkdtemp(prefix=f"sr-{_worker}-")
    os.chmod(os.environ["TMPDIR"], 0o1777)  # noqa: S103 - as /tmp itself: PostgreSQL runs as the postgres user
    tempfile.tempdir = None
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="strongroom-af-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from devstack import LocalPostgres, MotoServer  # noqa: E402
from sample_data import create_sample  # noqa: E402

REGIONS = ["eu-central-1", "eu-west-1", "eu-north-1"]
PRIMARY = REGIONS[0]
BUCKETS = {region: f"sr-test-{region}" for region in REGIONS}
BUCKET = BUCKETS[PRIMARY]
KEY_ID = "k-test-1"
PRIMARY_KEY_ID = "k-primary-1"
CANARY = "CANARY-7f3a9c-do-not-leak"
ROLE_CANARY_PASSWORD = "canary-role-pw-51d2e8"


def conn_id(region: str) -> str:
    return "s3_" + region.replace("-", "_")


def env_name(conn: str) -> str:
    return "AIRFLOW_CONN_" + conn.upper()


@dataclass
class Stack:
    pg: LocalPostgres
    servers: dict[str, MotoServer]  # one S3 server per region: nothing passes by sharing a process
    config_path: Path
    keyring_extra: dict
    primary_keyring_extra: dict

    @property
    def client(self):
        return self.servers[PRIMARY].client(PRIMARY)

    def client_for(self, region: str):
        return self.servers[region].client(region)

    def list_keys(self, region: str = PRIMARY) -> list[str]:
        pages = self.client_for(region).get_paginator("list_objects_v2").paginate(Bucket=BUCKETS[region])
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def uploads(self, region: str = PRIMARY) -> list[str]:
        found = self.client_for(region).list_multipart_uploads(Bucket=BUCKETS[region]).get("Uploads", [])
        return [u["Key"] for u in found]

    def read(self, key: str, region: str = PRIMARY) -> bytes:
        return self.client_for(region).get_object(Bucket=BUCKETS[region], Key=key)["Body"].read()

    def write(self, key: str, data: bytes, region: str = PRIMARY) -> None:
        self.client_for(region).put_object(Bucket=BUCKETS[region], Key=key, Body=data)

    @property
    def all_keys_material(self) -> list[str]:
        return [*self.keyring_extra["keys"].values(), *self.primary_keyring_extra["keys"].values()]

    def database_exists(self, name: str) -> bool:
        import psycopg

        with psycopg.connect(**self.pg.connect_kwargs()) as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def region_entries() -> list[dict]:
    entries = [{"name": r, "bucket": BUCKETS[r], "aws_conn_id": conn_id(r)} for r in REGIONS]
    entries[0]["keyring_conn_id"] = "kr_primary"  # the primary region keeps its own keyring
    return entries


def write_config(path: Path, **overrides: object) -> Path:
    config = {
        "retention": "30d",
        "regions": region_entries(),
        "encryption": {"keyring_conn_id": "strongroom_keyring"},
        "databases": [
            {"name": "shop", "postgres_conn_id": "pg_shop"},
            {"name": "bulk", "postgres_conn_id": "pg_bulk"},
        ],
        "transfer": {"part_size": "5MiB", "upload_concurrency": 2, "connect_timeout": "2s", "read_timeout": "10s",
                     "max_attempts": 2},
        # no DeadlineAlert: Airflow 3.3.2's dag.test() fails a successful run of a DAG that has one
        # (tests/integration/test_deadline.py fires it under a real scheduler)
        "snapshot": {"run_timeout": "50m", "retries": 0, "retry_delay": "1s", "deadline": "off"},
        "object_backup": {"run_timeout": "50m", "retries": 0, "retry_delay": "1s"},
    }
    config.update(overrides)
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def keyring_conn(extra: dict) -> str:
    return json.dumps({"conn_type": "generic", "extra": extra})


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    pg = LocalPostgres().start()
    servers: dict[str, MotoServer] = {}
    try:
        for region in REGIONS:
            servers[region] = MotoServer().start()
            servers[region].create_bucket(BUCKETS[region], region)
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
        primary_keyring = {"active": PRIMARY_KEY_ID,
                           "keys": {PRIMARY_KEY_ID: base64.b64encode(os.urandom(32)).decode()}}
        os.environ.update({
            **{env_name(conn_id(r)): servers[r].airflow_conn(r) for r in REGIONS},
            "AIRFLOW_CONN_PG_SHOP": pg.airflow_uri("shop"),
            "AIRFLOW_CONN_PG_BULK": pg.airflow_uri("bulk"),
            "AIRFLOW_CONN_STRONGROOM_KEYRING": keyring_conn(keyring),
            "AIRFLOW_CONN_KR_PRIMARY": keyring_conn(primary_keyring),
        })
        config_path = write_config(tmp_path_factory.mktemp("config") / "strongroom.yaml")
        os.environ["STRONGROOM_CONFIG"] = str(config_path)
        yield Stack(pg, servers, config_path, keyring, primary_keyring)
    finally:
        for server in servers.values():
            server.stop()
        pg.stop()


@pytest.fixture(scope="session")
def config(stack: Stack):
    from strongroom.config import load_config

    return load_config(stack.config_path)


@pytest.fixture(scope="session")
def conns(stack: Stack):
    from strongroom.airflow_adapter import connections

    return connections()


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database (SQLite under the test AIRFLOW_HOME), for real DAG runs."""
    from airflow.utils import db

    db.resetdb()


@pytest.fixture(scope="session")
def mail() -> Iterator[object]:
    """A real SMTP server on loopback; its Airflow connection is ``smtp_alerts``."""
    from tests.mailsink import MailSink

    sink = MailSink().start()
    os.environ["AIRFLOW_CONN_SMTP_ALERTS"] = sink.airflow_conn()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="session")
def slack() -> Iterator[object]:
    """A real HTTP server on loopback in Slack's place; its Airflow connection is ``slack_alerts``."""
    from tests.webhooksink import WebhookSink

    sink = WebhookSink().start()
    os.environ["AIRFLOW_CONN_SLACK_ALERTS"] = sink.airflow_conn()
    try:
        yield sink
    finally:
        sink.stop()


LEDGER_TABLES = ("public.accounts", "public.entries")
UI_SOURCE, UI_REVIEW = "sr-ui-uploads", "sr-ui-review"


@pytest.fixture(scope="session")
def ledger(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A third source, ``ledger``, that restore tests may overwrite; the config offers it as a target.

    ``pg_ledger_alias`` reaches the same database by another host name (only the server's system
    identifier can tell it is production), ``pg_sandbox`` is the sandbox server (the same PostgreSQL).
    """
    stack.pg.execute("CREATE DATABASE ledger")
    stack.pg.execute("CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL)", "ledger")
    stack.pg.execute("INSERT INTO accounts SELECT g, 'customer-' || g FROM generate_series(1, 50) g", "ledger")
    stack.pg.execute("CREATE TABLE entries (id int PRIMARY KEY, account int NOT NULL REFERENCES accounts, "
                     "cents bigint NOT NULL)", "ledger")
    stack.pg.execute("INSERT INTO entries SELECT g, 1 + g % 50, g * 7 FROM generate_series(1, 2000) g", "ledger")
    os.environ["AIRFLOW_CONN_PG_LEDGER"] = stack.pg.airflow_uri("ledger")
    os.environ["AIRFLOW_CONN_PG_LEDGER_ALIAS"] = stack.pg.airflow_uri("ledger").replace("127.0.0.1", "localhost")
    os.environ["AIRFLOW_CONN_PG_SANDBOX"] = stack.pg.airflow_uri("postgres")
    return write_config(
        tmp_path_factory.mktemp("ledger") / "strongroom.yaml",
        databases=[{"name": "shop", "postgres_conn_id": "pg_shop"}, {"name": "bulk", "postgres_conn_id": "pg_bulk"},
                   {"name": "ledger", "postgres_conn_id": "pg_ledger"}],
        restore={"sandbox_conn_id": "pg_sandbox", "target_conn_ids": ["pg_ledger_alias"], "approval_timeout": "10m",
                 "approvers": ["alice", "bob"]},
        # restore_objects under standalone: one source, its review bucket (created by the first restore)
        object_storage=[{"bucket": UI_SOURCE, "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}],
        object_restore_targets=[{"name": "review", "bucket": UI_REVIEW, "aws_conn_id": conn_id(PRIMARY)}],
        snapshot={"run_timeout": "50m", "retries": 0, "retry_delay": "1s", "deadline": "3s"},  # the deadline fires
        alerts={"email_to": ["oncall@example.test"], "smtp_conn_id": "smtp_alerts"},
    )


@pytest.fixture(scope="session")
def airflow_ui(stack: Stack, ledger: Path, mail: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A running `airflow standalone` (see tests/standalone.py), shared by the UI and approval tests."""
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database
    from tests.standalone import start
    from tests.statsd_sink import StatsdSink

    snapshot_database(load_config(stack.config_path), "shop", connections())  # something to show
    sink = StatsdSink().start()
    try:
        for airflow in start(ledger, tmp_path_factory.mktemp("standalone"), sink.env()):
            airflow.statsd = sink
            yield airflow
    finally:
        sink.stop()


@pytest.fixture()
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A StatsD server on loopback, and Airflow's metrics pointed at it for this test."""
    from tests.statsd_sink import StatsdSink

    sink = StatsdSink().start()
    for name, value in sink.env().items():
        monkeypatch.setenv(name, value)
    try:
        yield sink
    finally:
        sink.stop()
