"""The region-failure runbook (docs/runbook-region-failure.md), executed: every ```sh block it holds runs, in
order, with bash, against a platform whose primary region's S3 server is stopped and whose Airflow home is
gone. The shell gets only what an operator's has: the configuration file, the connections as
``AIRFLOW_CONN_*`` variables and the two variables the runbook tells the operator to set.

The platform: two databases on two PostgreSQL servers and one source bucket, with hourly-style rounds
(change, snapshot, object pass, platform point) before the outage and one during it. Afterwards the recovery
targets hold exactly the chosen point's data. Then the primary comes back empty (a new S3 server) and the
runbook's last section brings it back to every committed snapshot.

The module has its own S3 server for the primary region (it is stopped here); the other two regions, the
source and the recovery target bucket live in their own buckets on the session's servers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devstack import LocalPostgres, MotoServer
from strongroom import objects, recovery
from strongroom.airflow_adapter import connections
from strongroom.config import Config, load_config
from strongroom.snapshot import snapshot_database
from tests.conftest import PRIMARY, REGIONS, Stack, env_name, keyring_conn
from tests.integration.helpers import fingerprints, schema_dump

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook-region-failure.md"
WEST, NORTH = REGIONS[1], REGIONS[2]
BUCKETS = {region: f"sr-rb-{region}" for region in REGIONS}
SOURCE, RECOVERED = "sr-rb-uploads", "sr-rb-recovered-uploads"
DATABASES = {"orders": "rb_orders", "accounts": "rb_accounts"}  # configured name -> database on its server
TARGETS = {name: f"{dbname}_recovered" for name, dbname in DATABASES.items()}
RETURNS = "when the region returns"  # the runbook's section run after the primary is back


def region_conn(region: str) -> str:
    return "rb_s3_" + region.replace("-", "_")


@dataclass
class Platform:
    config_path: Path
    servers: dict[str, MotoServer]  # per region; the primary's is this module's own
    pg: dict[str, LocalPostgres]  # configured database -> its server
    env: dict[str, str]  # the operator's connections: AIRFLOW_CONN_* only
    states: dict[str, dict[str, Any]] = field(default_factory=dict)  # point id -> the platform's state then
    outage_point: str = ""

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def source(self):
        return self.servers[NORTH].client(NORTH)

    def target_bucket(self):
        return self.servers[WEST].client(WEST)


def s3_conn(server: MotoServer, region: str) -> str:
    return server.airflow_conn(region)


def bucket_contents(client, bucket: str) -> dict[str, bytes]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def state(platform: Platform) -> dict[str, Any]:
    return {
        "databases": {name: fingerprints(platform.pg[name].connect_kwargs(dbname))
                      for name, dbname in DATABASES.items()},
        "objects": bucket_contents(platform.source(), SOURCE),
    }


def change(platform: Platform, round_: int) -> None:
    """One hour of activity: new and changed rows in both databases, new, overwritten and deleted objects."""
    orders, accounts = platform.pg["orders"], platform.pg["accounts"]
    orders.execute(f"INSERT INTO orders SELECT g, 'customer-' || (g % 17), {round_} * 100 + g % 7 "
                   f"FROM generate_series({round_ * 1000 + 1}, {round_ * 1000 + 200}) g", DATABASES["orders"])
    orders.execute(f"UPDATE orders SET cents = cents + 1 WHERE id % 5 = {round_ % 5}", DATABASES["orders"])
    accounts.execute(f"INSERT INTO ledger (account, cents, note) SELECT 1 + g % 40, g * {round_}, "
                     f"'round {round_}' FROM generate_series(1, 150) g", DATABASES["accounts"])
    accounts.execute(f"UPDATE accounts SET balance = balance + {round_}", DATABASES["accounts"])
    client = platform.source()
    client.put_object(Bucket=SOURCE, Key=f"uploads/round-{round_}.txt", Body=f"round {round_}\n".encode() * 50)
    client.put_object(Bucket=SOURCE, Key="uploads/current.json", Body=json.dumps({"round": round_}).encode())
    if round_ > 1:
        client.delete_object(Bucket=SOURCE, Key=f"uploads/round-{round_ - 1}.txt")


def write_config(path: Path) -> Path:
    config = {
        "retention": "30d",
        "regions": [{"name": r, "bucket": BUCKETS[r], "aws_conn_id": region_conn(r),
                     **({"keyring_conn_id": "rb_kr_primary"} if r == PRIMARY else {})} for r in REGIONS],
        "encryption": {"keyring_conn_id": "rb_keyring"},
        "databases": [{"name": name, "postgres_conn_id": f"rb_pg_{name}"} for name in DATABASES],
        "object_storage": [{"bucket": SOURCE, "aws_conn_id": "rb_source", "region": NORTH}],
        "recovery": {
            "databases": {name: f"rb_pg_{name}_recovered" for name in DATABASES},
            "buckets": {SOURCE: {"bucket": RECOVERED, "aws_conn_id": "rb_recovery"}},
        },
        # a lost region is refused at once: one short connect timeout, no retry
        "transfer": {"part_size": "5MiB", "upload_concurrency": 2, "connect_timeout": "1s", "read_timeout": "10s",
                     "max_attempts": 1},
        "snapshot": {"run_timeout": "50m", "retries": 0, "retry_delay": "1s", "deadline": "off"},
        "object_backup": {"run_timeout": "50m", "retries": 0, "retry_delay": "1s"},
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def platform(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    primary = MotoServer().start()
    second_pg = LocalPostgres().start()
    servers = {PRIMARY: primary, WEST: stack.servers[WEST], NORTH: stack.servers[NORTH]}
    pg = {"orders": stack.pg, "accounts": second_pg}
    env = {
        **{env_name(region_conn(r)): s3_conn(servers[r], r) for r in REGIONS},
        env_name("rb_source"): s3_conn(servers[NORTH], NORTH),
        env_name("rb_recovery"): s3_conn(servers[WEST], WEST),
        env_name("rb_keyring"): keyring_conn(stack.keyring_extra),
        env_name("rb_kr_primary"): keyring_conn(stack.primary_keyring_extra),
        **{env_name(f"rb_pg_{name}"): pg[name].airflow_uri(dbname) for name, dbname in DATABASES.items()},
        **{env_name(f"rb_pg_{name}_recovered"): pg[name].airflow_uri(TARGETS[name]) for name in DATABASES},
    }
    environ = pytest.MonkeyPatch()  # the library calls below read the same connections; undone at the end
    for name, value in env.items():
        environ.setenv(name, value)
    try:
        stack.pg.execute(f"CREATE DATABASE {DATABASES['orders']}")
        stack.pg.execute("CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, cents bigint NOT NULL)",
                         DATABASES["orders"])
        second_pg.execute(f"CREATE DATABASE {DATABASES['accounts']}")
        second_pg.execute("CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL)",
                          DATABASES["accounts"])
        second_pg.execute("INSERT INTO accounts SELECT g, 'owner-' || g, 0 FROM generate_series(1, 40) g",
                          DATABASES["accounts"])
        second_pg.execute("CREATE TABLE ledger (id serial PRIMARY KEY, account int NOT NULL REFERENCES accounts, "
                          "cents bigint NOT NULL, note text)", DATABASES["accounts"])
        servers[NORTH].create_bucket(SOURCE, NORTH)
        servers[WEST].create_bucket(RECOVERED, WEST)
        path = write_config(tmp_path_factory.mktemp("runbook") / "strongroom.yaml")
        made = run_strongroom(["init-buckets"], operator_env(path, env, tmp_path_factory.mktemp("af")))
        assert made.returncode == 0, made.stdout + made.stderr
        yield Platform(path, servers, pg, env)
    finally:
        environ.undo()
        servers[PRIMARY].stop()  # this module's own (the returned one, when the test got that far)
        second_pg.stop()
        for dbname in (DATABASES["orders"], TARGETS["orders"]):  # the session's server: leave it as it was
            stack.pg.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def operator_env(config_path: Path, conns: dict[str, str], airflow_home: Path, **variables: str) -> dict[str, str]:
    """The operator's shell: the configuration, the connections, an Airflow home that does not exist, and
    nothing else of this test session's environment (no AIRFLOW__* settings, no metadata database)."""
    shutil.rmtree(airflow_home, ignore_errors=True)
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(airflow_home.parent),
        "LANG": "C.UTF-8",
        "STRONGROOM_CONFIG": str(config_path),
        "AIRFLOW_HOME": str(airflow_home),
        **conns,
        **variables,
    }
    if os.environ.get("PYTHONPATH"):  # a worktree's code under test, not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if os.environ.get("TMPDIR"):
        env["TMPDIR"] = os.environ["TMPDIR"]
    return env


def run_strongroom(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["strongroom", *args], capture_output=True, text=True, env=env, timeout=600,
                          executable=shutil.which("strongroom", path=env["PATH"]))


@dataclass(frozen=True)
class Block:
    section: str
    code: str


def runbook_blocks(language: str) -> list[Block]:
    """The runbook's fenced blocks of one info string, in order, each with the ``## `` section it is in."""
    blocks, section = [], ""
    fence = re.compile(r"^```(\S*)\n(.*?)^```\s*$", re.M | re.S)
    heading = re.compile(r"^## (.+)$", re.M)
    text = RUNBOOK.read_text()
    marks = sorted([(m.start(), "h", m.group(1)) for m in heading.finditer(text)]
                   + [(m.start(), "b", m) for m in fence.finditer(text)], key=lambda x: x[0])
    for _, kind, value in marks:
        if kind == "h":
            section = str(value)
        elif isinstance(value, re.Match) and value.group(1) == language:
            blocks.append(Block(section, value.group(2)))
    return blocks


def run_block(block: Block, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=900)
    print(f"--- {block.section}\n$ {block.code}{result.stdout}{result.stderr}")  # the transcript, shown on failure
    assert result.returncode == 0, (
        f"runbook block in {block.section!r} exited {result.returncode}:\n{block.code}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def hourly_round(platform: Platform, round_: int) -> str:
    """What one hourly run of snapshot_databases and backup_object_storage does, through the library."""
    config, conns = platform.config, connections()
    change(platform, round_)
    for name in DATABASES:
        snapshot_database(config, name, conns)
    passed = objects.backup_pass(config, SOURCE, conns)
    assert sorted(passed.committed) == sorted(REGIONS), passed.failed
    point = recovery.record_point(config, conns)
    assert all(r["complete"] for r in point["regions"].values()), point
    platform.states[point["point_id"]] = state(platform)
    return str(point["point_id"])


def test_the_runbook_recovers_the_platform_without_the_primary_or_airflow_and_repairs_the_region(
    platform: Platform, tmp_path: Path
) -> None:
    blocks = runbook_blocks("sh")
    assert len(blocks) >= 8, f"the runbook lost its blocks: {len(blocks)} left"
    recovers = [b for b in blocks if re.search(r"^strongroom recover (?!.*--dry-run)", b.code, re.M)]
    assert recovers, "the runbook has no `strongroom recover` block"
    returning = [b for b in blocks if RETURNS in b.section.lower()]
    assert returning and any("strongroom status" in b.code for b in returning), "no convergence check"
    commands = [line for b in blocks for line in b.code.splitlines() if line.strip() and not line.startswith("#")]
    assert all(line.startswith("strongroom ") for line in commands), "a block runs something other than Strongroom"
    # the variables the runbook has the operator set: this test sets exactly those
    chosen = {m.group(1) for b in runbook_blocks("shell") for m in re.finditer(r"^export (\w+)=", b.code, re.M)}
    assert chosen == {"REGION", "POINT"}, chosen

    for round_ in (1, 2, 3):
        hourly_round(platform, round_)

    # the primary region is lost; the next hourly run commits in the other two and names it
    platform.servers[PRIMARY].stop()
    airflow_home = tmp_path / "airflow-home"
    down = operator_env(platform.config_path, platform.env, airflow_home)
    change(platform, 4)
    snap = run_strongroom(["snapshot"], down)  # Airflow is gone too: the hourly run by hand, as step 6 says
    [error] = snap.stderr.splitlines()
    assert snap.returncode == 1 and error.count(f"not committed in {PRIMARY}") == len(DATABASES), snap.stderr
    # a region down costs no database its snapshot in the others (the point below is complete with them)
    assert all(f"{name}: snapshot " in error for name in DATABASES), error
    passed = run_strongroom(["objects", "backup"], down)
    assert passed.returncode == 1 and PRIMARY in passed.stderr, passed.stdout + passed.stderr
    point = recovery.record_point(platform.config, connections())
    assert PRIMARY in point["unreachable"] and point["regions"][WEST]["complete"], point
    platform.outage_point = point["point_id"]
    expected = platform.states[point["point_id"]] = state(platform)
    change(platform, 5)  # after the point: none of this may come back

    # what the operator reads in step 2 and chooses: the first surviving region, the newest point complete there
    listed = run_strongroom(["points", "--json"], down)
    assert listed.returncode == 0, listed.stderr
    newest = next(p for p in json.loads(listed.stdout) if p["regions"].get(WEST, {}).get("complete"))
    assert newest["point_id"] == platform.outage_point
    operator = operator_env(platform.config_path, platform.env, airflow_home, REGION=WEST, POINT=newest["point_id"])

    before = [b for b in blocks if RETURNS not in b.section.lower()]
    outputs = [run_block(b, operator, tmp_path) for b in before]
    status_out = outputs[0].stdout
    assert "unreachable" in status_out and PRIMARY in status_out, status_out

    for name, dbname in DATABASES.items():
        got = fingerprints(platform.pg[name].connect_kwargs(TARGETS[name]))
        assert got == expected["databases"][name], name
        pg = platform.pg[name]
        assert schema_dump(pg.port, TARGETS[name], pg.password) == schema_dump(pg.port, dbname, pg.password)
    assert bucket_contents(platform.target_bucket(), RECOVERED) == expected["objects"]
    assert not (airflow_home / "airflow.db").exists(), "the CLI touched an Airflow metadata database"

    # the region returns, empty (a new server; its endpoint is where the connection points now)
    back = MotoServer().start()
    platform.servers[PRIMARY] = back
    platform.env[env_name(region_conn(PRIMARY))] = s3_conn(back, PRIMARY)
    os.environ[env_name(region_conn(PRIMARY))] = platform.env[env_name(region_conn(PRIMARY))]
    operator = operator_env(platform.config_path, platform.env, airflow_home, REGION=WEST, POINT=newest["point_id"])
    outputs = [run_block(b, operator, tmp_path) for b in returning]
    final = outputs[-1].stdout

    board = run_strongroom(["status", "--json"], operator)
    assert board.returncode == 0, board.stderr
    rows = json.loads(board.stdout)
    for db in rows["databases"]:
        newest_ids = {row["newest"] for row in db["regions"]}
        assert len(newest_ids) == 1 and None not in newest_ids, db
        for row in db["regions"]:
            assert row["gaps"] == [] and row["last_error"] is None, row
            assert row["snapshots"] == 5, row  # three rounds, the outage's, the runbook's
    for bucket in rows["buckets"]:
        assert len({row["newest"] for row in bucket["regions"]}) == 1, bucket
        for row in bucket["regions"]:  # the points of the outage were copied back to the returned region
            assert row["gaps"] == [] and row["last_error"] is None, row
    assert "unreachable" not in final and "FAILED" not in final, final
