"""Platform recovery against real services: two databases on two PostgreSQL servers and one source bucket,
three hourly rounds (change, snapshot, object pass, platform point); every point recovers into fresh targets
exactly; a region that lacks a part is refused by name; the catalogs alone recover a time; a production
target is refused before anything is touched; a forged point is never listed nor used."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from strongroom import layout, objects, recovery, snapshot
from strongroom.config import Config, load_config
from strongroom.errors import NotFoundError
from strongroom.postgres import PgSettings
from tests.conftest import BUCKETS, PRIMARY, REGIONS, Stack, conn_id, env_name, write_config
from tests.integration.helpers import fingerprints, run_cli, schema_dump

SOURCE = "sr-rec-uploads"
BASE: dict[str, Any] = {
    "databases": [{"name": "alpha", "postgres_conn_id": "pg_alpha"}, {"name": "beta", "postgres_conn_id": "pg_beta"}],
    "object_storage": [{"bucket": SOURCE, "aws_conn_id": conn_id(PRIMARY), "region": PRIMARY}],
}


@dataclass
class World:
    stack: Stack  # with this module's own S3 servers
    beta_pg: Any  # the second PostgreSQL server
    config: Config
    config_path: Path
    tmp: Path


@dataclass
class Round:
    point_id: str
    at: datetime  # after this round's point, before the next round's changes
    alpha: dict[str, tuple[int, str]]
    beta: dict[str, tuple[int, str]]
    alpha_schema: str
    bucket: dict[str, bytes]


@pytest.fixture(scope="module")
def world(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Own S3 servers (one per region, the source bucket on the primary's), a second PostgreSQL server for
    beta; alpha lives on the session's server."""
    from devstack import LocalPostgres, MotoServer

    servers = {r: MotoServer().start() for r in REGIONS}
    beta_pg = LocalPostgres().start()
    environ = pytest.MonkeyPatch()  # the connections below, undone when the module ends
    try:
        for region, server in servers.items():
            server.create_bucket(BUCKETS[region], region)
            environ.setenv(env_name(conn_id(region)), server.airflow_conn(region))
        servers[PRIMARY].create_bucket(SOURCE, PRIMARY)
        stack.pg.execute("CREATE DATABASE alpha")
        stack.pg.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, doc jsonb)", "alpha")
        stack.pg.execute("CREATE INDEX items_name ON items (name)", "alpha")
        beta_pg.execute("CREATE DATABASE beta")
        beta_pg.execute("CREATE TABLE events (id bigserial PRIMARY KEY, body text NOT NULL, "
                        "at timestamptz NOT NULL DEFAULT now())", "beta")
        environ.setenv("AIRFLOW_CONN_PG_ALPHA", stack.pg.airflow_uri("alpha"))
        environ.setenv("AIRFLOW_CONN_PG_BETA", beta_pg.airflow_uri("beta"))
        tmp = tmp_path_factory.mktemp("recovery")
        path = write_config(tmp / "recovery.yaml", **BASE)
        yield World(dataclasses.replace(stack, servers=servers), beta_pg, load_config(path), path, tmp)
    finally:
        environ.undo()
        for server in servers.values():
            server.stop()
        beta_pg.stop()
        for i in range(8):
            stack.pg.execute(f"DROP DATABASE IF EXISTS alpha_rec_{i} WITH (FORCE)")
        stack.pg.execute("DROP DATABASE IF EXISTS alpha WITH (FORCE)")


def bucket_state(world: World, bucket: str) -> dict[str, bytes]:
    client = world.stack.client_for(PRIMARY)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def put(world: World, key: str, body: bytes) -> None:
    world.stack.client_for(PRIMARY).put_object(Bucket=SOURCE, Key=key, Body=body)


@pytest.fixture(scope="module")
def rounds(world: World, conns) -> list[Round]:
    """Three hourly runs with changes in between: data and objects change, both databases are snapshotted,
    the source gets an object pass, and a platform point is recorded; each round's state is kept."""
    pg, beta_pg, config = world.stack.pg, world.beta_pg, world.config
    done: list[Round] = []
    for i in range(3):
        pg.execute(f"INSERT INTO items SELECT g, 'item-{i}-' || g, jsonb_build_object('round', {i}, 'g', g) "
                   f"FROM generate_series({i * 200 + 1}, {i * 200 + 200}) g", "alpha")
        if i:
            pg.execute(f"UPDATE items SET name = name || '-r{i}' WHERE id % 7 = {i}", "alpha")
            beta_pg.execute(f"DELETE FROM events WHERE id % 5 = {i}", "beta")
        beta_pg.execute(f"INSERT INTO events (body) SELECT 'event-{i}-' || g FROM generate_series(1, 150) g", "beta")
        put(world, f"round-{i}.txt", f"written in round {i}".encode())
        put(world, "shared/overwritten.bin", os.urandom(2048))
        if i == 2:
            world.stack.client_for(PRIMARY).delete_object(Bucket=SOURCE, Key="round-0.txt")
        for name in ("alpha", "beta"):
            assert sorted(snapshot.snapshot_database(config, name, conns)["regions"]) == sorted(REGIONS)
        assert objects.backup_pass(config, SOURCE, conns).committed == REGIONS
        point = recovery.record_point(config, conns)
        assert point["parts"] == 3 and point["unreachable"] == {}
        assert point["regions"] == {r: {"complete": True, "missing": []} for r in REGIONS}
        done.append(Round(point["point_id"], datetime.now(UTC), fingerprints(pg.connect_kwargs("alpha")),
                          fingerprints(beta_pg.connect_kwargs("beta")),
                          schema_dump(pg.port, "alpha", pg.password), bucket_state(world, SOURCE)))
        time.sleep(1.1)  # the next object point is named after another second
    return done


def targets_config(world: World, i: int, *, alpha_conn: str | None = None) -> tuple[Path, dict[str, str]]:
    """A configuration whose recovery targets are fresh: alpha_rec_<i>, beta_rec_<i>, sr-rec-target-<i>."""
    world.stack.servers[PRIMARY].create_bucket(f"sr-rec-target-{i}", PRIMARY)
    env = {f"AIRFLOW_CONN_PG_ALPHA_REC_{i}": world.stack.pg.airflow_uri(f"alpha_rec_{i}"),
           f"AIRFLOW_CONN_PG_BETA_REC_{i}": world.beta_pg.airflow_uri(f"beta_rec_{i}")}
    path = write_config(world.tmp / f"targets-{i}.yaml", **BASE, recovery={
        "databases": {"alpha": alpha_conn or f"pg_alpha_rec_{i}", "beta": f"pg_beta_rec_{i}"},
        "buckets": {SOURCE: {"bucket": f"sr-rec-target-{i}", "aws_conn_id": conn_id(PRIMARY)}},
        "concurrency": 3, "rto": "1h"})
    return path, env


def assert_recovered(world: World, i: int, expected: Round) -> None:
    pg, beta_pg = world.stack.pg, world.beta_pg
    assert fingerprints(pg.connect_kwargs(f"alpha_rec_{i}")) == expected.alpha
    assert schema_dump(pg.port, f"alpha_rec_{i}", pg.password) == expected.alpha_schema
    assert fingerprints(beta_pg.connect_kwargs(f"beta_rec_{i}")) == expected.beta
    assert bucket_state(world, f"sr-rec-target-{i}") == expected.bucket  # the key set and every byte


def test_every_point_recovers_every_part_exactly(world: World, rounds: list[Round], conns) -> None:
    config = world.config
    assert rounds[0].alpha != rounds[1].alpha != rounds[2].alpha and rounds[0].bucket != rounds[2].bucket
    for i, expected in enumerate(rounds[:2]):  # through the library, as the DAG will (the plan through XCom)
        world.stack.servers[PRIMARY].create_bucket(f"sr-rec-target-{i}", PRIMARY)
        plan = recovery.plan_recovery(config, conns, point_id=expected.point_id)
        assert plan.region == PRIMARY and plan.point_id == expected.point_id
        assert sorted((p.kind, p.name) for p in plan.parts) == [("bucket", SOURCE), ("database", "alpha"),
                                                                ("database", "beta")]
        plan = recovery.RecoveryPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
        targets = recovery.RecoveryTargets(
            {"alpha": PgSettings(**world.stack.pg.connect_kwargs(f"alpha_rec_{i}")),
             "beta": PgSettings(**world.beta_pg.connect_kwargs(f"beta_rec_{i}"))},
            {SOURCE: conns.bucket_store(conn_id(PRIMARY), f"sr-rec-target-{i}", PRIMARY, config.transfer)})
        report = recovery.require_success(recovery.execute_recovery(config, conns, plan, targets))
        assert report.stored_in == tuple(REGIONS) and report.within_rto
        assert recovery.read_report(config, conns, report.recovery_id, region=REGIONS[2])["success"] is True
        assert_recovered(world, i, expected)

    path, env = targets_config(world, 2)  # the newest point through the CLI, Airflow nowhere
    result = run_cli("--config", str(path), "recover", "--json", env=env)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["point_id"] == rounds[2].point_id and report["region"] == PRIMARY
    assert report["success"] and report["within_rto"] and report["stored_in"] == REGIONS
    assert sorted(p["result"] for p in report["parts"]) == ["ok"] * 3 and report["slowest"]
    assert all(p["bytes"] > 0 and p["seconds"] > 0 for p in report["parts"])
    assert_recovered(world, 2, rounds[2])


def test_points_lists_every_point_newest_first_per_region(world: World, rounds: list[Round]) -> None:
    result = run_cli("--config", str(world.config_path), "points", "--json")
    assert result.code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [p["point_id"] for p in listed] == [r.point_id for r in reversed(rounds)]
    assert listed[0]["regions"] == {r: {"complete": True, "missing": []} for r in REGIONS}
    assert {p["kind"] for p in listed[0]["parts"]} == {"database", "bucket"} and listed[0]["spread_seconds"] >= 0
    text = run_cli("--config", str(world.config_path), "points")
    assert text.code == 0 and rounds[2].point_id in text.stdout and f"{PRIMARY}: complete" in text.stdout


def test_at_recovers_from_the_catalogs_alone(world: World, rounds: list[Round], conns) -> None:
    for region in world.config.regions:  # no recorded point anywhere: snapshots taken by hand, say
        conns.store(region, world.config.transfer).erase_prefix(layout.PLATFORM_POINTS)
    assert recovery.list_points(world.config, conns) == []
    with pytest.raises(NotFoundError, match="no complete platform point in any region"):
        recovery.plan_recovery(world.config, conns)

    path, env = targets_config(world, 3)
    result = run_cli("--config", str(path), "recover", "--at", rounds[1].at.isoformat(), "--json", env=env)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["point_id"] is None and report["requested_at"] == rounds[1].at.isoformat()
    assert report["data_loss_seconds"] > 0
    assert_recovered(world, 3, rounds[1])


def test_a_production_target_is_refused_and_nothing_is_touched(world: World, rounds: list[Round], conns) -> None:
    path, env = targets_config(world, 4, alpha_conn="pg_alpha")  # alpha's target is production alpha itself
    before = fingerprints(world.stack.pg.connect_kwargs("alpha"))
    reports = [k for k in world.stack.list_keys(PRIMARY) if k.startswith(layout.PLATFORM_RECOVERIES)]
    result = run_cli("--config", str(path), "recover", "--at", rounds[2].at.isoformat(), env=env)
    assert result.code == 1
    assert len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith("strongroom: error: recovery refused, nothing was restored: ")
    assert "is the production database alpha: confirm with --confirm-production alpha" in result.error_lines[0]
    assert fingerprints(world.stack.pg.connect_kwargs("alpha")) == before
    untouched(world, 4)
    assert [k for k in world.stack.list_keys(PRIMARY) if k.startswith(layout.PLATFORM_RECOVERIES)] == reports

    wrong = run_cli("--config", str(path), "recover", "--at", rounds[2].at.isoformat(), "--confirm-production",
                    "alpha,beta", env=env)
    assert wrong.code == 1 and "`confirm_production=beta`" not in wrong.error_lines[0]
    assert "--confirm-production beta names no production target of this recovery" in wrong.error_lines[0]
    assert fingerprints(world.stack.pg.connect_kwargs("alpha")) == before
    untouched(world, 4)


def untouched(world: World, i: int) -> None:
    """No target of targets_config(i) was created or written."""
    import psycopg

    assert not world.stack.database_exists(f"alpha_rec_{i}")
    with psycopg.connect(**world.beta_pg.connect_kwargs()) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (f"beta_rec_{i}",)).fetchone() is None
    assert bucket_state(world, f"sr-rec-target-{i}") == {}


def test_a_region_that_lacks_a_part_is_refused_by_name(world: World, rounds: list[Round], conns) -> None:
    config = world.config
    taken = snapshot.snapshot_database(config, "alpha", conns)["snapshot_id"]
    conns.store(config.primary, config.transfer).delete(layout.manifest_key("alpha", taken))  # lost there
    point = recovery.record_point(config, conns)
    assert point["regions"][PRIMARY] == {"complete": False, "missing": [f"database alpha snapshot {taken}"]}
    assert point["regions"][REGIONS[1]] == {"complete": True, "missing": []}
    pid = point["point_id"]

    refused = run_cli("--config", str(world.config_path), "recover", "--point", pid, "--region", PRIMARY,
                      "--dry-run")
    assert refused.code == 1
    assert refused.error_lines == [f"strongroom: error: platform point {pid} cannot be recovered from region "
                                   f"{PRIMARY}: it lacks database alpha snapshot {taken}"]
    chosen = run_cli("--config", str(world.config_path), "recover", "--dry-run", "--json")  # newest complete
    assert chosen.code == 0, chosen.stderr
    assert json.loads(chosen.stdout)["region"] == REGIONS[1] and json.loads(chosen.stdout)["point_id"] == pid

    path, env = targets_config(world, 5)
    done = run_cli("--config", str(path), "recover", "--point", pid, "--region", REGIONS[1], "--json", env=env)
    assert done.code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["region"] == REGIONS[1] and {p["region"] for p in report["parts"]} == {REGIONS[1]}
    assert taken in {p["ref"] for p in report["parts"]}
    assert fingerprints(world.stack.pg.connect_kwargs("alpha_rec_5")) == rounds[2].alpha  # unchanged since
    listed = json.loads(run_cli("--config", str(world.config_path), "points", "--json").stdout)
    assert listed[0]["regions"][PRIMARY]["missing"] == [f"database alpha snapshot {taken}"]


def test_a_forged_point_is_neither_listed_nor_used(
    world: World, rounds: list[Round], conns, caplog: pytest.LogCaptureFixture
) -> None:
    config = world.config
    recovery.record_point(config, conns)
    genuine = recovery.list_points(config, conns, region=PRIMARY)[0]
    raw = json.loads(world.stack.read(layout.platform_point_key(genuine.point_id), PRIMARY))
    forged_id, moved_id = "20991231T235959Z-f0f0f0", layout.new_platform_id(datetime.now(UTC))
    forged = dict(raw, point_id=forged_id, parts=[dict(p, ref="20261126T140000Z-000000") if p["kind"] == "database"
                                                  else p for p in raw["parts"]])
    forged["seal"] = dict(raw["seal"], key=layout.platform_point_key(forged_id))  # the MAC no longer fits
    world.stack.write(layout.platform_point_key(forged_id), json.dumps(forged).encode(), PRIMARY)
    world.stack.write(layout.platform_point_key(moved_id), json.dumps(raw).encode(), PRIMARY)  # sealed for another key
    with caplog.at_level(logging.WARNING, logger="strongroom.recovery"):
        listed = {p.point_id for p in recovery.list_points(config, conns)}
    assert genuine.point_id in listed and forged_id not in listed and moved_id not in listed
    warned = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any(f"platform point {forged_id} in {PRIMARY} skipped" in w for w in warned), warned
    assert any(f"platform point {moved_id} in {PRIMARY} skipped" in w for w in warned), warned
    with pytest.raises(NotFoundError, match=f"no authenticated platform point {forged_id} in region {PRIMARY}"):
        recovery.plan_recovery(config, conns, point_id=forged_id, region=PRIMARY)


def test_points_names_an_unreadable_region_and_lists_what_the_others_hold(
    world: World, rounds: list[Round], conns
) -> None:
    """A region whose endpoint refuses connections (a closed port): `points` still lists what the other regions
    hold, and says on stderr, in one line naming it and why, that it could not read that region. Only when
    no region can be read does it fail."""
    from devstack import free_port

    recorded = recovery.record_point(world.config, conns)["point_id"]  # (an earlier test erased the rounds')

    closed = json.dumps({"conn_type": "aws", "login": "testing", "password": "testing-secret",
                         "extra": {"region_name": REGIONS[1], "endpoint_url": f"http://127.0.0.1:{free_port()}"}})
    result = run_cli("--config", str(world.config_path), "points", "--json",
                     env={env_name(conn_id(REGIONS[1])): closed})
    assert result.code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert recorded in {p["point_id"] for p in listed}
    assert all(REGIONS[1] not in p["regions"] and PRIMARY in p["regions"] for p in listed), listed
    warnings = [line for line in result.stderr.splitlines() if line.startswith("strongroom: warning: ")]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"strongroom: warning: region {REGIONS[1]} could not be read, its points are "
                                  "not listed: "), warnings
    assert "127.0.0.1" in warnings[0] or "connect" in warnings[0].lower(), warnings  # the reason

    text = run_cli("--config", str(world.config_path), "points", env={env_name(conn_id(REGIONS[1])): closed})
    assert text.code == 0 and recorded in text.stdout, text.stderr
    assert f"region {REGIONS[1]} could not be read" in text.stderr

    every = {env_name(conn_id(r)): closed.replace(REGIONS[1], r) for r in REGIONS}
    none = run_cli("--config", str(world.config_path), "points", env=every)
    assert none.code == 1 and none.stdout == "", none.stdout
    assert len(none.error_lines) == 1, none.stderr
    assert none.error_lines[0].startswith("strongroom: error: no region could be read for the platform points: ")
    assert all(f"{r}: " in none.error_lines[0] for r in REGIONS), none.error_lines


def test_a_confirmed_production_recovery_takes_a_safety_snapshot_first_or_changes_nothing(
    world: World, rounds: list[Round], conns
) -> None:
    """alpha's recovery target is production alpha itself, confirmed. Before anything is restored, alpha
    gets a safety snapshot committed in every region (as a single restore over production takes one); its
    id is in the report. When it cannot be taken (a region refuses connections), the recovery is refused
    in one line and no target is touched."""
    from devstack import free_port
    from strongroom import catalog

    path, env = targets_config(world, 6, alpha_conn="pg_alpha")
    world.stack.pg.execute("INSERT INTO items VALUES (900001, 'written after the last point', NULL)", "alpha")
    now = fingerprints(world.stack.pg.connect_kwargs("alpha"))
    args = ("--config", str(path), "recover", "--at", rounds[0].at.isoformat(), "--region", PRIMARY,
            "--confirm-production", "alpha", "--json")

    def ids() -> dict[str, list[str]]:
        return {r.name: catalog.snapshot_ids(conns.store(r, world.config.transfer), "alpha")
                for r in world.config.regions}

    def reports() -> list[str]:
        return [k for k in world.stack.list_keys(PRIMARY) if k.startswith(layout.PLATFORM_RECOVERIES)]

    before, stored = ids(), reports()
    closed = json.dumps({"conn_type": "aws", "login": "testing", "password": "testing-secret",
                         "extra": {"region_name": REGIONS[2], "endpoint_url": f"http://127.0.0.1:{free_port()}"}})
    refused = run_cli(*args, env={**env, env_name(conn_id(REGIONS[2])): closed})
    assert refused.code == 1 and refused.stdout == "", refused.stdout
    assert len(refused.error_lines) == 1, refused.stderr
    assert refused.error_lines[0].startswith("strongroom: error: recovery refused, nothing was restored: the safety "
                                             "snapshot of the production database alpha could not be taken: ")
    assert REGIONS[2] in refused.error_lines[0]
    assert fingerprints(world.stack.pg.connect_kwargs("alpha")) == now
    untouched(world, 6)
    assert reports() == stored

    done = run_cli(*args, env=env)
    assert done.code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["success"] and set(report["safety_snapshots"]) == {"alpha"}
    safety = report["safety_snapshots"]["alpha"]
    after = ids()
    for region in REGIONS:  # committed in every region
        assert safety in after[region] and safety not in before[region], region
    manifest = catalog.load_manifest(conns.store(world.config.primary, world.config.transfer),
                                     conns.keyring(world.config.keyring_conn_id(world.config.primary)), "alpha", safety)
    assert manifest.summary()["rows"] == sum(n for n, _ in now.values())  # the row written after the point, kept
    assert fingerprints(world.stack.pg.connect_kwargs("alpha")) == rounds[0].alpha  # then overwritten
    stored_report = recovery.read_report(world.config, conns, report["recovery_id"], region=REGIONS[1])
    assert stored_report["safety_snapshots"] == {"alpha": safety}
    text = run_cli("--config", str(path), "recover", "--at", rounds[0].at.isoformat(), "--region", PRIMARY,
                   "--dry-run")
    assert text.code == 0  # a dry run takes no safety snapshot
    assert ids() == after
