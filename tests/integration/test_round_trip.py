"""A snapshot taken through the real pipeline restores to a database equal to the source."""

from __future__ import annotations

import json

import pytest

from strongroom import catalog, envelope, layout
from strongroom.postgres import PgSettings
from strongroom.restore import restore_snapshot
from strongroom.snapshot import snapshot_database
from tests.conftest import CANARY, ROLE_CANARY_PASSWORD, Stack
from tests.integration.helpers import fingerprints, run_cli, schema_dump


@pytest.fixture(scope="module")
def shop_snapshot(stack: Stack, config, conns) -> dict:
    return snapshot_database(config, "shop", conns)


def test_round_trip_restores_an_identical_database(stack: Stack, config, conns, shop_snapshot) -> None:
    target = PgSettings(dbname="shop_restored", host="127.0.0.1", port=stack.pg.port, user="postgres",
                        password=stack.pg.password)
    result = restore_snapshot(config, "shop", target, conns, snapshot_id=shop_snapshot["snapshot_id"])

    assert result.created_database
    source = fingerprints(stack.pg.connect_kwargs("shop"))
    restored = fingerprints(stack.pg.connect_kwargs("shop_restored"))
    assert set(source) == {"public.customers", "public.products", "public.orders", "public.order_items",
                           "public.events", "billing.invoices"}
    for table, fingerprint in source.items():
        assert restored[table] == fingerprint, table
    assert schema_dump(stack.pg.port, "shop", stack.pg.password) == schema_dump(
        stack.pg.port, "shop_restored", stack.pg.password
    )


def test_manifest_records_the_snapshot_exactly(stack: Stack, config, conns, shop_snapshot) -> None:
    keyring = conns.keyring(config.keyring_conn_id(config.primary))
    store = conns.store(config.primary, config.transfer)
    manifest = catalog.load_manifest(store, keyring, "shop", shop_snapshot["snapshot_id"])
    source = fingerprints(stack.pg.connect_kwargs("shop"))
    assert dict(manifest.tables) == {table: rows for table, (rows, _) in source.items()}
    assert manifest.key_id == "k-primary-1"  # the primary region has a keyring of its own
    assert manifest.server_version.startswith("15.")
    assert manifest.dump.stored_size == store.head(manifest.dump.key).size
    assert manifest.globals is not None  # the superuser may read roles
    assert manifest.snapshot_id.startswith(manifest.taken_at.strftime("%Y%m%dT%H%M%SZ"))
    assert store.head(layout.pending_key("shop", manifest.snapshot_id)) is None


def test_no_stored_byte_reveals_the_data(stack: Stack, shop_snapshot) -> None:
    keys = [k for k in stack.list_keys() if k.startswith(("databases/", "status/"))]  # what snapshots wrote
    assert any(k.endswith("dump.zst.srenc") for k in keys) and any(k.endswith("globals.sql.zst.srenc") for k in keys)
    secrets = [CANARY.encode(), ROLE_CANARY_PASSWORD.encode(), stack.pg.password.encode(),
               *(v.encode() for v in stack.all_keys_material)]
    for key in keys:
        data = stack.read(key)
        for secret in secrets:
            assert secret not in data, (key, secret)
        if key.endswith(".srenc"):
            assert data.startswith(envelope.MAGIC)
            assert b"PGDMP" not in data and b"\x28\xb5\x2f\xfd" not in data[: envelope.HEADER_SIZE + 64]
            assert b"CREATE ROLE" not in data


def test_cli_list_and_keys_check(stack: Stack, shop_snapshot) -> None:
    listed = run_cli("list", "--database", "shop", "--json")
    assert listed.code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert shop_snapshot["snapshot_id"] in [r["snapshot_id"] for r in rows]
    checked = run_cli("keys", "check")
    assert checked.code == 0, checked.stderr
    assert "checked" in checked.stdout


def test_keys_check_fails_when_a_needed_key_is_gone(stack: Stack, shop_snapshot) -> None:
    rotated = {"active": "k-new", "keys": {"k-new": stack.keyring_extra["keys"]["k-test-1"]}}
    env = {"AIRFLOW_CONN_STRONGROOM_KEYRING": json.dumps({"conn_type": "generic", "extra": rotated})}
    result = run_cli("keys", "check", env=env)
    assert result.code == 1
    assert "k-test-1" in result.stdout and "MISSING" in result.stdout
    assert result.error_lines == [result.error_lines[0]] and "k-test-1" in result.error_lines[0]


def test_cli_restore_at_a_point_in_time(stack: Stack, shop_snapshot) -> None:
    taken_at = shop_snapshot["taken_at"]
    env = {"PGPASSWORD": stack.pg.password}
    dsn = f"host=127.0.0.1 port={stack.pg.port} user=postgres dbname=shop_at"
    result = run_cli("restore", "--database", "shop", "--at", taken_at, "--target-dsn", dsn, env=env)
    assert result.code == 0, result.stderr
    assert shop_snapshot["snapshot_id"] in result.stdout
    assert fingerprints(stack.pg.connect_kwargs("shop_at")) == fingerprints(stack.pg.connect_kwargs("shop"))


def test_bucket_holds_only_committed_layout(stack: Stack, shop_snapshot) -> None:
    sid = shop_snapshot["snapshot_id"]
    keys = [k for k in stack.list_keys() if sid in k]
    assert sorted(keys) == sorted([
        f"databases/shop/data/{sid}/dump.zst.srenc",
        f"databases/shop/data/{sid}/globals.sql.zst.srenc",
        f"databases/shop/manifests/{sid}.json",
    ])
