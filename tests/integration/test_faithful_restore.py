"""Faithful, safe restores (issue 14): owners, privileges and roles come back; the restore test proves the
schema and runs nothing production wrote as a superuser; plaintext never outlives its owner; evidence and
listings survive a region.

Real PostgreSQL (the session's server, plus fresh servers that lack the roles) and the S3 API over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from strongroom import catalog, drill, layout, restore, sandbox
from strongroom.catalog import Manifest
from strongroom.config import load_config
from strongroom.keyring import Keyring
from strongroom.snapshot import snapshot_database
from tests.conftest import BUCKETS, PRIMARY, REGIONS, Stack, conn_id, region_entries, write_config
from tests.integration.helpers import fingerprints, run_cli, start_cli

PG_BIN = "/usr/lib/postgresql/15/bin"
OWNER, READER, MALLORY = "faith_owner", "faith_reader", "faith_mallory"
OWNER_PASSWORD = "faith-owner-pw-93b1"  # in the globals as a SCRAM hash; never given to created roles

FIXTURE_SQL = f"""
CREATE ROLE {OWNER} LOGIN PASSWORD '{OWNER_PASSWORD}';
CREATE ROLE {READER} NOLOGIN;
CREATE ROLE {MALLORY} NOLOGIN;
"""

# run in database "faithful", owned by OWNER, as the superuser
FAITHFUL_SQL = f"""
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {READER};
CREATE TABLE public.audit_log (id int PRIMARY KEY, note text);   -- owned by the superuser postgres
INSERT INTO public.audit_log SELECT g, 'note ' || g FROM generate_series(1, 20) g;
SET ROLE {OWNER};
CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'the application';
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.positive AS int CHECK (VALUE > 0);
CREATE TABLE app.customers (id bigserial PRIMARY KEY, name text NOT NULL, mood app.mood NOT NULL,
                            score app.positive NOT NULL);
COMMENT ON TABLE app.customers IS 'who buys';
CREATE FUNCTION app.trim_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.name := btrim(NEW.name); RETURN NEW; END $$;
CREATE TRIGGER customers_trim BEFORE INSERT OR UPDATE ON app.customers
  FOR EACH ROW EXECUTE FUNCTION app.trim_name();
CREATE TABLE app.events (id bigint NOT NULL, at date NOT NULL, payload text) PARTITION BY RANGE (at);
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX events_at ON app.events (at);
CREATE SEQUENCE app.tickets INCREMENT 7 START 100;
SELECT nextval('app.tickets') FROM generate_series(1, 5);
ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO {READER};
INSERT INTO app.customers (name, mood, score)
  SELECT '  customer ' || g || '  ', (ARRAY['sad','ok','happy'])[1 + g % 3]::app.mood, g FROM generate_series(1, 300) g;
INSERT INTO app.events SELECT g, DATE '2025-06-01' + g, 'payload ' || g FROM generate_series(1, 400) g;
CREATE MATERIALIZED VIEW app.moods AS SELECT mood, count(*) AS n FROM app.customers GROUP BY mood;
GRANT USAGE ON SCHEMA app TO {READER};
GRANT SELECT ON app.customers, app.moods TO {READER};
GRANT UPDATE (name) ON app.customers TO {READER};
RESET ROLE;
"""

# a non-superuser's table whose rows, as they are loaded, call that role's functions: they write a marker
# through COPY ... TO PROGRAM whenever the caller is a superuser
EXPLOIT_SQL = """
SET ROLE {role};
CREATE FUNCTION public.probe(x int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('is_superuser') = 'on' THEN
    EXECUTE format('COPY (SELECT %s) TO PROGRAM %L', x, 'touch {marker}');
  END IF;
  RETURN true;
END $$;
CREATE FUNCTION public.probe_value(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.probe(x); RETURN x * 2; END $$;
CREATE TABLE public.victim (x int CHECK (public.probe(x)), y int GENERATED ALWAYS AS (public.probe_value(x)) STORED);
INSERT INTO public.victim (x) SELECT generate_series(1, 3);
RESET ROLE;
"""


def full_schema(port: int, dbname: str, password: str) -> str:
    """``pg_dump --schema-only`` with owners and privileges; comments and the random restrict token aside."""
    result = subprocess.run([f"{PG_BIN}/pg_dump", "--schema-only", "-h", "127.0.0.1", "-p", str(port), "-U",
                             "postgres", dbname], capture_output=True, text=True, check=True,
                            env={**os.environ, "PGPASSWORD": password})
    skip = ("--", "\\restrict", "\\unrestrict")
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith(skip))


def sequences(kwargs: dict) -> dict[str, int | None]:
    with psycopg.connect(**kwargs) as conn:
        rows = conn.execute("SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences").fetchall()
    return dict(rows)


def query(kwargs: dict, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(**kwargs) as conn:
        return conn.execute(statement, params).fetchall()


def dsn(pg, dbname: str) -> str:
    return f"host=127.0.0.1 port={pg.port} user=postgres dbname={dbname}"


@pytest.fixture(scope="module")
def marker_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="i14-marker-"))
    path.chmod(0o777)  # the server writes here as the postgres OS user
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


@pytest.fixture(scope="module")
def faithful(stack: Stack, marker_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The databases ``faithful`` (owned by an application role) and ``exploit``; a config with both."""
    stack.pg.execute(FIXTURE_SQL)
    stack.pg.execute(f"CREATE DATABASE faithful OWNER {OWNER}")
    stack.pg.execute(FAITHFUL_SQL, "faithful")
    stack.pg.execute("CREATE DATABASE exploit")
    stack.pg.execute(f"GRANT CREATE ON SCHEMA public TO {MALLORY}", "exploit")
    stack.pg.execute(EXPLOIT_SQL.format(role=MALLORY, marker=marker_dir / "pwned"), "exploit")
    assert not (marker_dir / "pwned").exists()  # loaded by mallory herself: nothing happened
    os.environ["AIRFLOW_CONN_PG_FAITHFUL"] = stack.pg.airflow_uri("faithful")
    os.environ["AIRFLOW_CONN_PG_EXPLOIT"] = stack.pg.airflow_uri("exploit")
    return write_config(tmp_path_factory.mktemp("faithful") / "strongroom.yaml",
                        databases=[{"name": "faithful", "postgres_conn_id": "pg_faithful"},
                                   {"name": "exploit", "postgres_conn_id": "pg_exploit"}],
                        restore_test={"expectations_dir": str(tmp_path_factory.mktemp("no-suites"))})


@pytest.fixture(scope="module")
def taken(faithful: Path, conns) -> dict[str, str]:
    config = load_config(faithful)
    return {name: snapshot_database(config, name, conns)["snapshot_id"] for name in ("faithful", "exploit")}


@pytest.fixture(scope="module")
def bare_server() -> Iterator[object]:
    """A second PostgreSQL server that has none of the application's roles."""
    from devstack import LocalPostgres

    pg = LocalPostgres().start()
    try:
        yield pg
    finally:
        pg.stop()


def test_restore_on_a_server_with_the_roles_is_identical(stack: Stack, faithful: Path, taken) -> None:
    manifest_inventory = json.loads(stack.read(layout.manifest_key("faithful", taken["faithful"])))["inventory"]
    assert manifest_inventory["relations"]["app.customers"]["owner"] == OWNER
    assert manifest_inventory["relations"]["app.events_2025"]["partition_of"] == "app.events"
    assert manifest_inventory["sequences"]["app.tickets"] == 128
    result = run_cli("--config", str(faithful), "restore", "--database", "faithful",
                     "--target-dsn", dsn(stack.pg, "faithful_copy"), env={"PGPASSWORD": stack.pg.password})
    assert result.code == 0, result.stderr
    try:
        source, copy = stack.pg.connect_kwargs("faithful"), stack.pg.connect_kwargs("faithful_copy")
        assert full_schema(stack.pg.port, "faithful_copy", stack.pg.password) == \
            full_schema(stack.pg.port, "faithful", stack.pg.password)
        assert fingerprints(copy) == fingerprints(source)
        assert sequences(copy) == sequences(source) and sequences(copy)["app.tickets"] == 128
        assert query(copy, "SELECT count(*) FROM app.moods") == [(3,)]
    finally:
        stack.pg.execute("DROP DATABASE faithful_copy WITH (FORCE)")


def test_missing_roles_are_refused_before_anything_then_created_nologin(
    stack: Stack, faithful: Path, taken, bare_server
) -> None:
    env = {"PGPASSWORD": bare_server.password}
    refused = run_cli("--config", str(faithful), "restore", "--database", "faithful",
                      "--target-dsn", dsn(bare_server, "faithful"), env=env)
    assert refused.code == 1
    assert len(refused.error_lines) == 1, refused.stderr
    assert refused.error_lines[0] == (
        f"strongroom: error: postgres@127.0.0.1:{bare_server.port}/faithful lacks the role(s) the snapshot needs: "
        f"{OWNER}, {READER}; restore with --create-roles to create them from the snapshot's globals (NOLOGIN, no "
        "passwords), or with --no-owner to restore without owners and privileges")
    assert query(bare_server.connect_kwargs(), "SELECT count(*) FROM pg_database WHERE datname = 'faithful'") == [(0,)]
    assert query(bare_server.connect_kwargs(), "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'faith%%'") == [(0,)]

    created = run_cli("--config", str(faithful), "restore", "--database", "faithful", "--create-roles",
                      "--target-dsn", dsn(bare_server, "faithful"), env=env)
    assert created.code == 0, created.stderr
    assert f"strongroom: warning: roles created (NOLOGIN, no passwords): {OWNER}, {READER}" in created.error_lines
    assert full_schema(bare_server.port, "faithful", bare_server.password) == \
        full_schema(stack.pg.port, "faithful", stack.pg.password)
    assert fingerprints(bare_server.connect_kwargs("faithful")) == fingerprints(stack.pg.connect_kwargs("faithful"))
    roles = query(bare_server.connect_kwargs(), "SELECT rolname, rolcanlogin, rolsuper, rolpassword IS NULL "
                                                "FROM pg_authid WHERE rolname IN (%s, %s) ORDER BY 1", (OWNER, READER))
    assert roles == [(OWNER, False, False, True), (READER, False, False, True)]


def test_globals_only_creates_the_roles_and_never_alters_one(stack: Stack, faithful: Path, taken) -> None:
    from devstack import LocalPostgres

    pg = LocalPostgres().start()
    try:
        pg.execute(f"CREATE ROLE {READER} LOGIN CREATEDB")  # exists already: must stay as it is
        env = {"PGPASSWORD": pg.password}
        args = ("--config", str(faithful), "restore", "--database", "faithful", "--globals-only",
                "--target-dsn", dsn(pg, "postgres"))
        result = run_cli(*args, env=env)
        assert result.code == 0, result.stderr
        assert "existed (left as they are)" in result.stdout
        rows = dict((r[0], r[1:]) for r in query(pg.connect_kwargs(), "SELECT rolname, rolcanlogin, rolcreatedb, "
                                                                       "rolpassword IS NULL FROM pg_authid"))
        assert rows[OWNER] == (False, False, True) and rows[MALLORY] == (False, False, True)
        assert rows[READER] == (True, True, True)  # untouched
        assert rows["postgres"][0] is True  # the bootstrap superuser, untouched
        pg.execute(f"DROP ROLE {OWNER}")
        again = run_cli(*args, "--with-passwords", env=env)
        assert again.code == 0, again.stderr
        assert f"roles created with LOGIN and their password from the snapshot: {OWNER}" in again.stdout.splitlines()
        login = query(pg.connect_kwargs(), "SELECT rolcanlogin, rolsuper, rolpassword LIKE 'SCRAM-SHA-256$%%' "
                                           "FROM pg_authid WHERE rolname = %s", (OWNER,))
        assert login == [(True, False, True)]
        with psycopg.connect(**pg.connect_kwargs("postgres", user=OWNER, password=OWNER_PASSWORD)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (OWNER,)
    finally:
        pg.stop()


def test_restore_test_of_a_faithful_database_passes_with_a_stand_in_owner(
    stack: Stack, faithful: Path, taken, conns
) -> None:
    config = load_config(faithful)
    result = drill.check_snapshot(config, conns, "faithful", taken["faithful"], config.region(PRIMARY))
    assert result.success, result.headline()
    assert result.schema_differences == []
    assert result.roles and result.roles["stand_ins"] == ["postgres"]
    assert sorted(result.roles["created"]) == sorted([OWNER, READER, "postgres"])
    schema = [e for e in result.expectations if e["suite"] == "schema"]
    assert schema and all(e["success"] for e in schema)
    for region in REGIONS:  # the evidence is in every region
        doc = json.loads(stack.read(result.result_key, region))
        assert doc["success"] is True and doc["stored_in"] == region
        page = stack.read(result.result_key.rsplit("/", 1)[0] + "/docs/schema.html", region)
        assert b"Stand-in owners (superusers in production, ordinary roles here): postgres" in page


def test_the_restore_test_runs_nothing_production_wrote_as_a_superuser(
    stack: Stack, faithful: Path, taken, conns, marker_dir: Path, tmp_path: Path
) -> None:
    config = load_config(faithful)
    marker = marker_dir / "pwned"
    # first: the exploit works against a superuser pg_restore of the same dump
    store, keyring = conns.store(config.primary, config.transfer), conns.keyring(config.keyring_conn_id(config.primary))
    manifest = catalog.load_manifest(store, keyring, "exploit", taken["exploit"])
    key = manifest.data_key(keyring)
    dump = tmp_path / "exploit.dump"
    restore.fetch_dump(store, manifest, key, str(dump), config.transfer)
    stack.pg.execute("CREATE DATABASE exploit_superuser")
    try:
        loaded = subprocess.run([f"{PG_BIN}/pg_restore", "--exit-on-error", "-h", "127.0.0.1", "-p",
                                 str(stack.pg.port), "-U", "postgres", "-d", "exploit_superuser", str(dump)],
                                capture_output=True, text=True, env={**os.environ, "PGPASSWORD": stack.pg.password})
        assert loaded.returncode == 0, loaded.stderr
    finally:
        stack.pg.execute("DROP DATABASE exploit_superuser WITH (FORCE)")
    assert marker.exists(), "the exploit must work against a superuser restore, or this test proves nothing"
    marker.unlink()

    result = drill.check_snapshot(config, conns, "exploit", taken["exploit"], config.region(PRIMARY))
    assert result.success, result.headline()
    assert not marker.exists()
    assert result.tables["public.victim"] == {"expected": 3, "restored": 3}
    assert MALLORY in result.roles["created"]


def test_roles_or_grants_that_differ_from_the_inventory_fail_naming_the_object(
    stack: Stack, faithful: Path, conns
) -> None:
    config = load_config(faithful)
    snapshot_id = snapshot_database(config, "faithful", conns)["snapshot_id"]
    keyring = Keyring.from_extra(stack.primary_keyring_extra)
    key = layout.manifest_key("faithful", snapshot_id)
    manifest = Manifest.from_json(stack.read(key), keyring, key)
    inventory = json.loads(json.dumps(manifest.inventory))
    inventory["relations"]["app.events"]["owner"] = READER
    acl = inventory["relations"]["app.moods"]["acl"]
    inventory["relations"]["app.moods"]["acl"] = acl.replace(f"{READER}=r/", f"{READER}=rw/")
    stack.write(key, replace(manifest, inventory=inventory).to_json(keyring))
    result = drill.check_snapshot(config, conns, "faithful", snapshot_id, config.region(PRIMARY))
    assert not result.success
    assert f"schema: relation app.events: owner is '{OWNER}', the snapshot recorded '{READER}'" in result.failures
    assert any(f.startswith("schema: relation app.moods: acl is ") for f in result.failures), result.failures
    assert len(result.schema_differences) == 2, result.schema_differences
    assert "restore test FAILED" in result.headline() and "app.events" in result.headline()


WRAPPER = """#!/bin/sh
cat /proc/$$/environ > {envdir}/{tool}.$$
case "$*" in
  *--list*|*--file=-*|*--version*) ;;
  *) if [ -e {slow} ]; then echo $$ > {envdir}/sleeping.{tool}.$$; exec sleep 300; fi ;;
esac
exec {real}/{tool} "$@"
"""


def _wait(condition, what: str, deadline: float = 120) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else ""
    return state != "Z"


def _environ(path: Path) -> dict[str, str]:
    items = [p for p in path.read_bytes().split(b"\0") if p]
    return dict(item.decode(errors="replace").split("=", 1) for item in items)


def test_sigkill_mid_spool_is_cleaned_by_the_next_run_and_children_hold_no_credentials(
    stack: Stack, faithful: Path, taken, tmp_path: Path
) -> None:
    spool_dir = Path(tempfile.mkdtemp(prefix="i14-spool-"))
    spool_dir.chmod(0o755)  # the throwaway server (postgres OS user) lives under it
    envdir, bindir, slow = tmp_path / "env", tmp_path / "bin", tmp_path / "slow"
    envdir.mkdir(), bindir.mkdir()
    for tool in ("pg_dump", "pg_dumpall", "pg_restore"):
        (bindir / tool).write_text(WRAPPER.format(envdir=envdir, tool=tool, slow=slow, real=PG_BIN))
        (bindir / tool).chmod(0o755)
    config = write_config(tmp_path / "kill.yaml", databases=[{"name": "faithful", "postgres_conn_id": "pg_faithful"}],
                          snapshot={"run_timeout": "50m", "retries": 0, "retry_delay": "1s", "deadline": "off",
                                    "pg_bin_dir": str(bindir)},
                          restore={"spool_dir": str(spool_dir)},
                          restore_test={"expectations_dir": str(tmp_path / "none")})
    secret_env = {"AWS_SECRET_ACCESS_KEY": "aws-canary-4417", "STRONGROOM_TEST_SECRET": "sr-canary-0071"}
    snap = run_cli("--config", str(config), "snapshot", "--database", "faithful", "--json", env=secret_env)
    assert snap.code == 0, snap.stderr
    snapshot_id = json.loads(snap.stdout)[0]["snapshot_id"]
    slow.touch()
    killed_pids: list[int] = []
    started: list[subprocess.Popen] = []
    try:
        restoring = start_cli("--config", str(config), "restore", "--database", "faithful",
                              "--target-dsn", dsn(stack.pg, "faithful_killed"),
                              env={**secret_env, "PGPASSWORD": stack.pg.password})
        started.append(restoring)
        _wait(lambda: any(envdir.glob("sleeping.pg_restore.*")), "the restore to reach pg_restore")
        restoring.send_signal(signal.SIGKILL)
        restoring.wait()
        spooled = next(spool_dir.glob("strongroom-restore-*")) / "dump"
        assert spooled.stat().st_size > 0  # the decrypted dump, left behind by the killed restore
        testing = start_cli("--config", str(config), "restore-test", "--database", "faithful",
                            "--snapshot", snapshot_id, "--region", PRIMARY, env=secret_env)
        started.append(testing)
        _wait(lambda: len(list(envdir.glob("sleeping.pg_restore.*"))) == 2, "the restore test to reach pg_restore")
        sandboxes = list(spool_dir.glob("strongroom-sandbox-*"))
        assert len(sandboxes) == 1
        postmaster = int((sandboxes[0] / "data" / "postmaster.pid").read_text().split()[0])
        server_env = dict(_environ(Path(f"/proc/{postmaster}/environ")))
        testing.send_signal(signal.SIGKILL)
        testing.wait()
        for sleeper in envdir.glob("sleeping.*"):  # the orphaned pg_restore stand-ins: ours, stop them
            pid = int(sleeper.read_text())
            killed_pids.append(pid)
            os.kill(pid, signal.SIGKILL)
        # the restore test's start removed the killed restore's spool; its own plaintext and server are left
        assert not spooled.parent.exists()
        left = sorted(p.name.split("-")[1] for p in spool_dir.iterdir())
        assert left == ["rt", "sandbox"], left
        assert (next(spool_dir.glob("strongroom-rt-*")) / "dump").stat().st_size > 0
        assert _alive(postmaster)
        slow.unlink()

        # the next run removes the plaintext spool, the data directory and the server left running
        after = run_cli("--config", str(config), "restore-test", "--database", "faithful", "--snapshot", snapshot_id,
                        "--region", PRIMARY, env=secret_env)
        assert after.code == 0, after.stderr[-2000:]
        _wait(lambda: not _alive(postmaster), "the dead run's server to stop")
        assert list(spool_dir.iterdir()) == []
    finally:  # after a failure, leave nothing of ours behind for the next tests
        slow.unlink(missing_ok=True)
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for sleeper in envdir.glob("sleeping.*"):
            pid = int(sleeper.read_text())
            if pid not in killed_pids and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        sandbox.clean_leftovers(str(spool_dir))
        shutil.rmtree(spool_dir, ignore_errors=True)
        stack.pg.execute("DROP DATABASE IF EXISTS faithful_killed WITH (FORCE)")

    # no child (pg_dump, pg_dumpall, pg_restore) nor the throwaway server got a credential of ours
    captured = {p.name: _environ(p) for p in envdir.glob("pg_*")}
    assert {name.split(".")[0] for name in captured} == {"pg_dump", "pg_dumpall", "pg_restore"}
    captured["postmaster"] = server_env
    secrets_ = [*stack.all_keys_material, *secret_env.values(), "testing-secret"]
    for name, env in captured.items():
        leaked = [k for k in env if k.startswith(("AIRFLOW", "AWS_", "STRONGROOM"))]
        assert not leaked, (name, leaked)
        assert not [s for s in secrets_ if any(s in v for v in env.values())], name
        assert set(env) - {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"} <= {
            "PGDATABASE", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGCONNECT_TIMEOUT", "PGOPTIONS",
            "HOME", "USER", "LOGNAME", "SHELL", "PGDATA", "PG_GRANDPARENT_PID", "PGSYSCONFDIR", "PGLOCALEDIR",
            "PWD", "OLDPWD", "SHLVL", "_"}, (name, sorted(env))
    dumps = [env for name, env in captured.items() if name.startswith("pg_dump.") and "PGDATABASE" in env]
    assert dumps and all(env.get("PGPASSWORD") == stack.pg.password for env in dumps)  # its own connection's


def test_an_emptied_primary_is_an_error_and_list_answers_from_the_next_region(
    stack: Stack, faithful: Path, conns, tmp_path: Path
) -> None:
    buckets = {region: f"sr-i14-{region}" for region in REGIONS}
    for region, bucket in buckets.items():
        stack.servers[region].create_bucket(bucket, region)
    entries = region_entries()
    for entry in entries:
        entry["bucket"] = buckets[entry["name"]]
    path = write_config(tmp_path / "regions.yaml", regions=entries,
                        databases=[{"name": "faithful", "postgres_conn_id": "pg_faithful"}])
    snapshot_id = snapshot_database(load_config(path), "faithful", conns)["snapshot_id"]
    client = stack.client_for(PRIMARY)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=buckets[PRIMARY]):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=buckets[PRIMARY], Key=obj["Key"])

    listed = run_cli("--config", str(path), "list")
    assert listed.code == 1
    assert snapshot_id in listed.stdout and "(listed from region eu-west-1)" in listed.stdout
    assert f"{PRIMARY} holds no snapshots" in listed.stderr
    assert listed.error_lines[-1].startswith(f"strongroom: error: the primary region {PRIMARY} holds no snapshots")

    status = run_cli("--config", str(path), "status")
    assert status.code == 1
    rows_by_region = {line.split()[1]: line for line in status.stdout.splitlines() if line.startswith("faithful ")}
    primary_row = rows_by_region[PRIMARY]
    assert "FAILED: the primary holds no snapshot of faithful" in primary_row
    west_row = rows_by_region["eu-west-1"]
    assert snapshot_id in west_row and "FAILED" not in west_row
    board = json.loads(run_cli("--config", str(path), "status", "--json").stdout)
    rows = {r["region"]: r for r in board["databases"][0]["regions"]}
    assert rows[PRIMARY]["last_error"].startswith("FAILED") and rows[PRIMARY]["rag"] != "green"
    assert BUCKETS[PRIMARY] != buckets[PRIMARY] and conn_id(PRIMARY)
