"""Restore targets through the CLI: the sandbox, partial restores, and the production guard.

``ledger`` is a source database that these tests may overwrite; ``pg_ledger_alias`` reaches it through
another host name, so only the server's system identifier can tell that it is production.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.conftest import LEDGER_TABLES, Stack
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
