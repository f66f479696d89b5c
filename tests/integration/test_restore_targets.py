"""Restore targets through the CLI: the sandbox, partial restores, and the production guard.

``ledger`` is a source database that these tests may overwrite; ``pg_ledger_alias`` reaches it through
another host name, so only the server's system identifier can tell that it is production.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from tests.conftest import LEDGER_TABLES, ROOT, Stack, write_config
from tests.integration.helpers import fingerprints, run_cli


def _manifests(stack: Stack, database: str) -> set[str]:
    return {k for k in stack.list_keys() if k.startswith(f"databases/{database}/manifests/")}


def _databases(stack: Stack) -> set[str]:
    with psycopg.connect(**stack.pg.connect_kwargs()) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def _snapshot(config: Path) -> dict:
    result = run_cli("--config", str(config), "snapshot", "--database", "ledger", "--json")
    assert result.code == 0, result.stderr
    return dict(json.loads(result.stdout)[0])


@pytest.fixture(scope="module")
def snap(stack: Stack, ledger: Path) -> dict:
    return _snapshot(ledger)


def test_partial_restore_into_a_new_sandbox_database(stack: Stack, ledger: Path, snap: dict) -> None:
    result = run_cli("--config", str(ledger), "restore", "--database", "ledger", "--snapshot", snap["snapshot_id"],
                     "--sandbox", "--table", "entries", "--json")
    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    prefix = "ledger_" + snap["snapshot_id"][:8] + "_" + snap["snapshot_id"][9:15] + "_"
    name = out["target"].rsplit("/", 1)[-1]
    assert name.startswith(prefix) and len(name) == len(prefix) + 6, name  # source, snapshot time, run suffix
    assert stack.pg.password not in result.stdout + result.stderr
    assert out["tables"] == 1 and out["rows"] == 2000
    restored = fingerprints(stack.pg.connect_kwargs(name))
    assert list(restored) == ["public.entries"]  # only the table asked for: no accounts, no foreign key
    assert restored["public.entries"] == fingerprints(stack.pg.connect_kwargs("ledger"))["public.entries"]

    # the same snapshot again: a second sandbox of its own, the first left as it was
    again = run_cli("--config", str(ledger), "restore", "--database", "ledger", "--snapshot", snap["snapshot_id"],
                    "--sandbox", "--json")
    assert again.code == 0, again.stderr
    other = json.loads(again.stdout)["target"].rsplit("/", 1)[-1]
    assert other != name and other.startswith(prefix)
    assert list(fingerprints(stack.pg.connect_kwargs(name))) == ["public.entries"]
    for made in (name, other):
        stack.pg.execute(f'DROP DATABASE "{made}"')


@pytest.mark.parametrize(("args", "message"), [
    (["--sandbox", "--table", "public.nosuch"], "table 'public.nosuch' is not in it"),
    (["--target-conn", "pg_ledger_alias", "--table", "entries", "--confirm-production", "ledger"],
     "a partial restore (tables) goes into a new database"),
    (["--target-conn", "pg_sandbox", "--confirm-production", "ledger"], "is not a production database"),
    (["--target-conn", "pg_ledger_alias", "--clean"], "is the production database ledger: type 'ledger'"),
    (["--target-conn", "pg_ledger_alias", "--clean", "--confirm-production", "shop"], "(typed 'shop')"),
    (["--target-conn", "pg_ledger", "--clean"], "is the production database ledger"),
])
def test_refused_restores_change_nothing(
    stack: Stack, ledger: Path, snap: dict, args: list[str], message: str
) -> None:
    before = (fingerprints(stack.pg.connect_kwargs("ledger")), _databases(stack), _manifests(stack, "ledger"))
    result = run_cli("--config", str(ledger), "restore", "--database", "ledger", *args)
    assert result.code == 1, result.stdout
    assert len(result.error_lines) == 1 and message in result.error_lines[0], result.stderr
    after = (fingerprints(stack.pg.connect_kwargs("ledger")), _databases(stack), _manifests(stack, "ledger"))
    assert after == before  # no restore, no new database, no safety snapshot


def test_confirmed_production_restore_takes_a_safety_snapshot_first(stack: Stack, ledger: Path) -> None:
    taken = _snapshot(ledger)
    at_snapshot = fingerprints(stack.pg.connect_kwargs("ledger"))
    stack.pg.execute("INSERT INTO accounts VALUES (999, 'written after the snapshot')", "ledger")
    manifests = _manifests(stack, "ledger")

    result = run_cli("--config", str(ledger), "restore", "--database", "ledger", "--snapshot", taken["snapshot_id"],
                     "--target-conn", "pg_ledger_alias", "--clean", "--confirm-production", "ledger", "--json")
    assert result.code == 0, result.stderr
    safety = json.loads(result.stdout)["safety_snapshot"]
    assert safety and f"safety snapshot of ledger before the restore: {safety}" in result.stderr
    assert fingerprints(stack.pg.connect_kwargs("ledger")) == at_snapshot  # the row written later is gone
    # ... but kept in the safety snapshot, committed in every region before the restore began
    new = _manifests(stack, "ledger") - manifests
    assert [k.rsplit("/", 1)[1].removesuffix(".json") for k in new] == [safety]
    listed = run_cli("--config", str(ledger), "list", "--database", "ledger", "--json")
    rows = {s["snapshot_id"]: s for s in json.loads(listed.stdout)}
    assert rows[safety]["rows"] == sum(n for _, (n, _) in at_snapshot.items()) + 1
    assert set(LEDGER_TABLES) == set(at_snapshot)


# ---- production is a server identity (issue 15, item 3) ---------------------------------------------------

READER = "ledger_reader"
READER_PASSWORD = "reader-pw-3c9e1a"


@pytest.fixture(scope="module")
def other_ways_in(stack: Stack, ledger: Path) -> dict[str, str]:
    """Connections that reach the production database ``ledger`` other than the way its source connection
    does (``postgres`` at ``127.0.0.1``): another user, by address and by host name."""
    stack.pg.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN "
                     f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'; END IF; END $$")
    by_ip = stack.pg.airflow_uri("ledger", user=READER, password=READER_PASSWORD)
    conns = {
        "pg_ledger_reader": by_ip,  # another user, by address (the source connection is postgres@127.0.0.1)
        "pg_ledger_reader_by_name": by_ip.replace("127.0.0.1", "localhost"),  # another user, by name
    }
    for name, uri in conns.items():
        os.environ["AIRFLOW_CONN_" + name.upper()] = uri
    return conns


@pytest.mark.parametrize("target", ["pg_ledger_reader", "pg_ledger_reader_by_name"])
def test_production_reached_another_way_is_refused_without_confirmation(
    stack: Stack, ledger: Path, snap: dict, other_ways_in: dict[str, str], target: str
) -> None:
    """The target is compared by the cluster's system identifier and current_database(), read over the
    connection itself: another user, by address or by host name, is the production database ``ledger``,
    and nothing happens without its name typed."""
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.restore import production_source

    config = load_config(ledger)
    assert production_source(config, connections(), connections().postgres(target)) == "ledger"
    before = (fingerprints(stack.pg.connect_kwargs("ledger")), _databases(stack), _manifests(stack, "ledger"))
    result = run_cli("--config", str(ledger), "restore", "--database", "ledger", "--snapshot", snap["snapshot_id"],
                     "--target-conn", target, "--clean")
    assert result.code == 1, result.stdout
    assert len(result.error_lines) == 1, result.stderr
    assert "is the production database ledger: type 'ledger' to confirm" in result.error_lines[0]
    assert READER_PASSWORD not in result.stderr and stack.pg.password not in result.stderr
    after = (fingerprints(stack.pg.connect_kwargs("ledger")), _databases(stack), _manifests(stack, "ledger"))
    assert after == before


def test_a_new_database_on_a_source_server_is_not_production(stack: Stack, ledger: Path, other_ways_in) -> None:
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.restore import production_source

    target = connections().postgres("pg_ledger_reader").with_dbname("ledger_copy_never_created")
    assert production_source(load_config(ledger), connections(), target) is None


def test_a_restore_test_sandbox_on_a_source_cluster_is_refused(
    stack: Stack, ledger: Path, snap: dict, other_ways_in: dict[str, str], tmp_path: Path
) -> None:
    """restore_test.sandbox_conn_id reaching a source's cluster through another user, host name and
    database is refused before any database is created there."""
    from strongroom import drill
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config

    os.environ["AIRFLOW_CONN_PG_RT_SANDBOX_ELSEWHERE"] = stack.pg.airflow_uri(
        "postgres", user=READER, password=READER_PASSWORD).replace("127.0.0.1", "localhost")
    config = load_config(write_config(
        tmp_path / "rt.yaml", databases=[{"name": "ledger", "postgres_conn_id": "pg_ledger"}],
        restore_test={"sandbox_conn_id": "pg_rt_sandbox_elsewhere",
                      "expectations_dir": str(ROOT / "include" / "expectations")}))
    before = _databases(stack)
    result = drill.check_snapshot(config, connections(), "ledger", snap["snapshot_id"], config.primary,
                                  record=False)
    assert not result.success
    assert result.error == ("RestoreTestError: restore_test.sandbox_conn_id reaches the cluster of the "
                            "production source ledger (same system identifier); refusing")
    assert _databases(stack) == before  # no strongroom_rt_* database was created
