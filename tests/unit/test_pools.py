"""The pools that protect source servers: which pools, of what size, and what differs from Airflow's."""

from __future__ import annotations

from strongroom.config import DatabaseConfig, parse_config
from strongroom.monitor import find_conditions
from strongroom.pools import OBJECT_POOL, PRUNE_POOL, default_server, dump_pool, pool_drift, required_pools, slug

BASE = {
    "regions": [{"name": "eu-central-1", "bucket": "b-one", "aws_conn_id": "s3"}],
    "encryption": {"keyring_conn_id": "kr"},
}


def test_a_server_is_its_setting_else_the_connections_host_and_port() -> None:
    named = DatabaseConfig(name="shop", postgres_conn_id="pg_shop", server="pg-main")
    plain = DatabaseConfig(name="crm", postgres_conn_id="pg_crm")
    assert default_server(named, "10.0.0.5", 5433) == "pg-main"
    assert default_server(plain, "db.internal", 5433) == "db.internal:5433"
    assert default_server(plain, "db.internal", None) == "db.internal:5432"
    assert default_server(plain, None, None) == "conn:pg_crm"  # unresolvable: one pool per connection
    assert slug("db-1.Internal:5432") == "db_1_internal_5432"
    assert dump_pool("db-1.internal:5432") == "strongroom_dumps_db_1_internal_5432"


def test_one_pool_per_server_sized_from_the_configuration() -> None:
    config = parse_config({
        **BASE,
        "databases": [{"name": n, "postgres_conn_id": f"pg_{n}"} for n in ("a", "b", "c")],
        "object_storage": [{"bucket": "uploads", "aws_conn_id": "s3"}],
        "pools": {"dumps_per_server": 1, "servers": {"big:5432": 3}, "object_passes": 4},
    })
    specs = required_pools(config, {"a": "small:5432", "b": "big:5432", "c": "big:5432"})
    assert [(s.name, s.slots) for s in specs] == [
        ("strongroom_dumps_big_5432", 3), ("strongroom_dumps_small_5432", 1), (OBJECT_POOL, 4), (PRUNE_POOL, 1)]
    assert "b, c" in specs[0].description


def test_drift_names_missing_and_resized_pools_and_the_monitor_alerts_on_them() -> None:
    config = parse_config({**BASE, "databases": [{"name": "a", "postgres_conn_id": "pg_a"}]})
    [spec, prune] = required_pools(config, {"a": "h:1"})
    assert prune.name == PRUNE_POOL and prune.slots == 1
    assert pool_drift([spec], {spec.name: 1}).ok
    missing = pool_drift([spec], {"default_pool": 128})
    assert not missing.ok and missing.missing == [spec] and spec.name in missing.summary()
    resized = pool_drift([spec], {spec.name: 5})
    assert resized.resized == [(spec, 5)] and "has 5 slot(s)" in resized.summary()

    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    common = {"databases": [], "status": [], "keys": None, "restore_tests": {}, "threshold": timedelta(hours=1),
              "restore_overdue": timedelta(days=1), "now": now}
    [condition] = find_conditions(**common, pools=missing)
    assert condition.kind == "pools" and spec.name in condition.message and "init-airflow" in condition.message
    [unknown] = find_conditions(**common, pools="ConfigError: connection 'airflow_api' is not defined")
    assert "could not run" in unknown.message
    assert find_conditions(**common, pools=None) == []
