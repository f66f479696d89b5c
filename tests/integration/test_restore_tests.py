"""Restore testing: isolated restore, Great Expectations validation, RTO and RPO evidence."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom import catalog, drill, layout, records, sandbox
from strongroom.catalog import Manifest
from strongroom.config import load_config
from strongroom.errors import IntegrityError, RestoreTestError
from strongroom.keyring import Keyring
from strongroom.snapshot import snapshot_database
from tests.conftest import BUCKETS, CANARY, PRIMARY, Stack, write_config

ROOT = Path(__file__).resolve().parents[2]


def leftovers() -> tuple[list[str], list[str]]:
    """Sandbox directories in this session's temporary directory, and processes running from one of them
    (the session's own: another session's sandboxes live under its own temporary directory)."""
    tmp = tempfile.gettempdir()
    dirs = [p for p in os.listdir(tmp) if p.startswith("strongroom-sandbox-")]
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.path.join(tmp, "strongroom-sandbox-").encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                procs.append(pid)
        except OSError:
            pass
    return dirs, procs


@pytest.fixture(scope="module")
def shop_snapshot(stack: Stack, config, conns) -> dict:
    return snapshot_database(config, "shop", conns)


def config_at(tmp_path: Path, **restore_test: object):
    rt = {"expectations_dir": str(ROOT / "include" / "expectations"), **restore_test}
    return load_config(write_config(tmp_path / "rt.yaml", restore_test=rt))


def test_a_healthy_snapshot_passes_with_evidence_and_no_row_values(
    stack: Stack, conns, shop_snapshot, tmp_path
) -> None:
    config = config_at(tmp_path)
    result = drill.check_snapshot(config, conns, "shop", shop_snapshot["snapshot_id"], config.region(PRIMARY))
    assert result.success, result.headline()
    assert leftovers() == ([], [])
    doc = json.loads(stack.read(result.result_key))
    assert doc["success"] is True and doc["region"] == PRIMARY
    assert set(doc["phases"]) >= {"provision", "download", "decrypt", "restore", "validate", "teardown"}
    assert doc["tables"]["public.orders"] == {"expected": 10000 // 5 * 1, "restored": 2000} or \
        doc["tables"]["public.orders"]["expected"] == doc["tables"]["public.orders"]["restored"]
    assert 0 <= doc["snapshot_age_seconds"] < 3600
    kinds = {(e["suite"], e["expectation"]) for e in doc["expectations"]}
    assert ("baseline.public.orders", "expect_table_row_count_to_equal") in kinds
    assert ("baseline.public.orders", "unexpected_rows_expectation") in kinds  # the content checksum
    assert ("user.events_fresh", "expect_column_max_to_be_between") in kinds
    docs = [k for k in stack.list_keys() if k.startswith(result.result_key.rsplit("/", 1)[0] + "/docs/")]
    assert result.docs_key in docs
    for key in [result.result_key, *docs]:  # neither the result nor the Data Docs hold row values
        data = stack.read(key)
        assert CANARY.encode() not in data
        assert b"canary@example.com" not in data


def _forged(stack: Stack, config, snapshot_id: str, change) -> None:
    """Rewrite the primary's manifest with different facts, correctly authenticated, as a buggy snapshot
    pipeline could: the restored data then disagrees with what the snapshot recorded."""
    keyring = Keyring.from_extra(stack.primary_keyring_extra)
    key = layout.manifest_key("shop", snapshot_id)
    manifest = Manifest.from_json(stack.read(key), keyring, key)
    stack.write(key, change(manifest).to_json(keyring))


def test_counts_that_differ_from_the_manifest_fail_the_baseline(stack: Stack, conns, tmp_path) -> None:
    config = config_at(tmp_path)
    taken = snapshot_database(config, "shop", conns)
    from dataclasses import replace

    key = layout.manifest_key("shop", taken["snapshot_id"])
    original = stack.read(key)
    _forged(stack, config, taken["snapshot_id"],
            lambda m: replace(m, tables=dict(m.tables, **{"public.orders": m.tables["public.orders"] + 1})))
    try:
        result = drill.check_snapshot(config, conns, "shop", taken["snapshot_id"], config.region(PRIMARY))
    finally:
        stack.write(key, original)
    assert not result.success
    assert "baseline.public.orders: expect_table_row_count_to_equal on public.orders" in result.failures
    assert all("orders" in f for f in result.failures if f.startswith("baseline."))
    assert leftovers() == ([], [])


def test_a_user_suite_the_data_breaks_fails_and_names_the_expectation(stack: Stack, conns, shop_snapshot,
                                                                      tmp_path) -> None:
    suites = tmp_path / "suites"
    shutil.copytree(ROOT / "include" / "expectations", suites)
    (suites / "shop" / "strict.json").write_text(json.dumps({
        "name": "only_paid", "meta": {"table": "orders"},
        "expectations": [{"type": "expect_column_values_to_be_in_set",
                          "kwargs": {"column": "status", "value_set": ["paid"]}}]}))
    config = config_at(tmp_path, expectations_dir=str(suites))
    with pytest.raises(RestoreTestError, match=r"user\.only_paid: expect_column_values_to_be_in_set\(status\)"):
        drill.require_success([drill.check_snapshot(config, conns, "shop", shop_snapshot["snapshot_id"],
                                                    config.region(PRIMARY))])


def test_stale_data_fails_the_freshness_rule(stack: Stack, conns, shop_snapshot, tmp_path) -> None:
    config = config_at(tmp_path, freshness_lag="1s")
    result = drill.check_snapshot(config, conns, "shop", shop_snapshot["snapshot_id"], config.region(PRIMARY))
    assert "user.events_fresh: expect_column_max_to_be_between(occurred_at) on public.events" in result.failures


def test_a_corrupt_copy_fails_the_test_of_that_region_without_switching(stack: Stack, conns, shop_snapshot,
                                                                        tmp_path) -> None:
    config = config_at(tmp_path)
    region = "eu-west-1"
    key = layout.data_key("shop", shop_snapshot["snapshot_id"], "dump.zst.srenc")
    good = stack.read(key, region)
    stack.write(key, good[:100] + bytes([good[100] ^ 1]) + good[101:], region)
    try:
        result = drill.check_snapshot(config, conns, "shop", shop_snapshot["snapshot_id"], config.region(region))
    finally:
        stack.write(key, good, region)
    assert not result.success and result.region == region
    assert result.error and "IntegrityError" in result.error
    assert leftovers() == ([], [])
    recorded = json.loads(stack.read(result.result_key))
    assert recorded["success"] is False and recorded["region"] == region


def test_a_dead_workers_server_is_torn_down_by_its_lease(stack: Stack, conns, config) -> None:
    """A worker killed mid-test (SIGKILL: no finally runs) leaves a running server and its data directory."""
    store = conns.store(config.primary, config.transfer)
    base = Path(tempfile.gettempdir()) / "strongroom-sandbox-deadworker"
    base.mkdir()
    sandbox._start(base, "15")
    lease = sandbox.Lease("dead-1", os.uname().nodename, str(base), datetime.now(UTC).isoformat(),
                          (datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    keyring = conns.keyring(config.keyring_conn_id(config.primary))
    records.write(store, keyring, lease.key, lease.__dict__, kind=sandbox.LEASE_KIND)
    assert leftovers()[1]
    assert sandbox.teardown_stale(store, keyring) == ["dead-1"]
    assert leftovers() == ([], [])
    assert store.head(lease.key) is None


def test_a_forged_lease_deletes_nothing_and_is_named(stack: Stack, conns, config, tmp_path: Path) -> None:
    """Someone with write access to the bucket writes expired leases naming another worker's live sandbox:
    one with no seal, one sealed under a key that is not in the keyring. Teardown removes nothing and
    fails naming both (the task failure is the alert); a genuine expired lease next to them is honoured."""
    store = conns.store(config.primary, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(config.primary))
    victim = Path(tempfile.mkdtemp(prefix="strongroom-sandbox-victim-"))
    (victim / "data").mkdir()
    (victim / "data" / "PG_VERSION").write_text("15\n")
    genuine = Path(tempfile.mkdtemp(prefix="strongroom-sandbox-genuine-"))
    expired = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    started = datetime.now(UTC).isoformat()
    forged = sandbox.Lease("forged-plain", os.uname().nodename, str(victim), started, expired)
    foreign = sandbox.Lease("forged-foreign", os.uname().nodename, str(victim), started, expired)
    honest = sandbox.Lease("honest-1", os.uname().nodename, str(genuine), started, expired)
    other_key = Keyring.from_extra({"active": "evil", "keys": {"evil": base64.b64encode(os.urandom(32)).decode()}})
    try:
        store.put_bytes(forged.key, json.dumps(forged.__dict__).encode())
        records.write(store, other_key, foreign.key, foreign.__dict__, kind=sandbox.LEASE_KIND)
        records.write(store, keyring, honest.key, honest.__dict__, kind=sandbox.LEASE_KIND)
        with pytest.raises(IntegrityError) as caught:
            sandbox.teardown_stale(store, keyring)
        message = str(caught.value)
        assert "2 lease(s) that do not authenticate" in message
        assert forged.key in message and foreign.key in message and "\n" not in message
        assert (victim / "data" / "PG_VERSION").exists()  # nothing deleted on a forged lease
        assert store.head(forged.key) is not None and store.head(foreign.key) is not None  # kept as evidence
        assert not genuine.exists() and store.head(honest.key) is None  # the genuine lease was honoured
    finally:
        shutil.rmtree(victim, ignore_errors=True)
        shutil.rmtree(genuine, ignore_errors=True)
        for lease in (forged, foreign, honest):
            store.delete(lease.key)


def test_cli_restore_test_and_status(stack: Stack, shop_snapshot, tmp_path) -> None:
    from tests.integration.helpers import run_cli

    only_shop = [{"name": "shop", "postgres_conn_id": "pg_shop"}]
    path = write_config(tmp_path / "cli.yaml", databases=only_shop, restore_test={
        "expectations_dir": str(ROOT / "include" / "expectations"), "rto": "1h"})
    ok = run_cli("--config", str(path), "restore-test", "--database", "shop", "--region", PRIMARY, "--json")
    assert ok.code == 0, ok.stderr[-2000:]
    assert ok.stdout.lstrip().startswith("["), ok.stdout[:500]
    results = json.loads(ok.stdout)
    assert 1 <= len(results) <= 2 and all(r["success"] and r["region"] == PRIMARY for r in results)
    assert results[0]["snapshot_id"] == catalog.snapshot_ids(
        load_config(path) and _store(stack), "shop")[-1]
    # status --json covers the newest restore test and the size trend of every committed snapshot
    board = json.loads(run_cli("--config", str(path), "status", "--json").stdout)
    shop = board["databases"][0]
    assert shop["restore_test"]["success"] is True and shop["restore_test"]["region"] == PRIMARY
    by_snapshot = {r["snapshot_id"]: r for r in results}  # the newest of the (up to two) tests of this run
    assert shop["restore_test"]["restore_seconds"] == by_snapshot[shop["restore_test"]["snapshot_id"]][
        "restore_seconds"]
    listed = json.loads(run_cli("--config", str(path), "list", "--database", "shop", "--json").stdout)
    assert [(p["snapshot_id"], p["stored_bytes"]) for p in shop["size_trend"]] == \
        [(m["snapshot_id"], m["stored_bytes"]) for m in listed]
    assert leftovers() == ([], [])


def _store(stack: Stack):
    from strongroom.storage import ObjectStore

    return ObjectStore(stack.client, BUCKETS[PRIMARY], region=PRIMARY)
