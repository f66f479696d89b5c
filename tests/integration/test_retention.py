"""Retention against real S3 servers (one per region) and the real clock: gone means gone, everywhere."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom import catalog, envelope, layout, retention
from strongroom.catalog import Manifest, StoredObject
from strongroom.config import Config, load_config
from strongroom.errors import PruneError
from strongroom.keyring import Keyring
from strongroom.snapshot import snapshot_database
from tests.conftest import REGIONS, Stack, env_name
from tests.integration.helpers import run_cli

RET_BUCKETS = {r: f"sr-ret-{r}" for r in REGIONS}


def ret_conn(region: str) -> str:
    return "ret_" + region.replace("-", "_")


def write_ret_config(path: Path, retention_: str = "30d", **region_extra: object) -> Path:
    regions = [{"name": r, "bucket": RET_BUCKETS[r], "aws_conn_id": ret_conn(r), **region_extra} for r in REGIONS]
    path.write_text(json.dumps({
        "retention": retention_, "regions": regions, "encryption": {"keyring_conn_id": "strongroom_keyring"},
        "databases": [{"name": "shop", "postgres_conn_id": "pg_shop"}],
        "transfer": {"part_size": "5MiB", "connect_timeout": "1s", "read_timeout": "5s", "max_attempts": 1},
        "snapshot": {"run_timeout": "50m"},
    }))
    return path


@pytest.fixture(scope="module")
def ret(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Three fresh S3 servers whose buckets `strongroom init-buckets` creates."""
    from devstack import MotoServer

    servers = {r: MotoServer().start() for r in REGIONS}
    saved = {k: os.environ.get(k) for k in (env_name(ret_conn(r)) for r in REGIONS)}
    os.environ.update({env_name(ret_conn(r)): servers[r].airflow_conn(r) for r in REGIONS})
    path = write_ret_config(tmp_path_factory.mktemp("ret") / "ret.yaml")
    try:
        result = run_cli("--config", str(path), "init-buckets")
        assert result.code == 0, result.stdout + result.stderr
        yield {"servers": servers, "config_path": path, "dir": path.parent}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
        for server in servers.values():
            server.stop()


def versions_under(ret: dict, region: str, prefix: str) -> list[tuple[str, bool]]:
    client = ret["servers"][region].client(region)
    out = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=RET_BUCKETS[region], Prefix=prefix):
        out += [(v["Key"], False) for v in page.get("Versions", [])]
        out += [(m["Key"], True) for m in page.get("DeleteMarkers", [])]
    return out


def config_with(ret: dict, name: str, retention_: str = "30d", **extra: object) -> Config:
    return load_config(write_ret_config(ret["dir"] / name, retention_, **extra))


def test_init_buckets_creates_the_expected_state(ret: dict) -> None:
    client = ret["servers"]["eu-west-1"].client("eu-west-1")
    bucket = RET_BUCKETS["eu-west-1"]
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert all(client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    assert client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    rules = {r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["strongroom-databases-backstop"]["Expiration"]["Days"] == 31  # retention plus one day
    assert rules["strongroom-databases-backstop"]["Filter"]["Prefix"] == "databases/"
    assert rules["strongroom-versions-and-uploads"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    assert rules["strongroom-versions-and-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    assert "Days" not in rules["strongroom-versions-and-uploads"].get("Expiration", {})  # never current objects
    again = run_cli("--config", str(ret["config_path"]), "init-buckets")
    assert again.code == 0 and again.stdout.count("as expected") == 3, again.stdout


def test_init_buckets_reports_drift_on_a_bucket_it_did_not_create(ret: dict, tmp_path: Path) -> None:
    foreign = ret["servers"]["eu-north-1"]
    foreign.client("eu-north-1").create_bucket(
        Bucket="sr-foreign", CreateBucketConfiguration={"LocationConstraint": "eu-north-1"})
    path = tmp_path / "foreign.yaml"
    doc = json.loads(ret["config_path"].read_text())
    doc["regions"] = [dict(doc["regions"][2], bucket="sr-foreign")]
    path.write_text(json.dumps(doc))
    result = run_cli("--config", str(path), "init-buckets")
    assert result.code == 1
    assert "DRIFT: versioning is not enabled" in result.stdout
    assert result.error_lines == ["strongroom: error: buckets drift from the expected state in: eu-north-1"]
    assert foreign.client("eu-north-1").get_bucket_versioning(Bucket="sr-foreign").get("Status") is None


def test_boundary_against_the_real_clock_in_every_region(ret: dict, conns) -> None:
    config = config_with(ret, "c30d.yaml")
    old = snapshot_database(config, "shop", conns)
    time.sleep(8)
    new = snapshot_database(config, "shop", conns)
    now = datetime.now(UTC)
    age_old = now - datetime.fromisoformat(old["taken_at"])
    age_new = now - datetime.fromisoformat(new["taken_at"])
    window = int(((age_old + age_new) / 2).total_seconds())
    assert age_new.total_seconds() + 2 < window < age_old.total_seconds() - 2
    # extra versions and a delete marker: a plain delete would only hide them
    client = ret["servers"]["eu-west-1"].client("eu-west-1")
    dump_key = layout.data_key("shop", old["snapshot_id"], "dump.zst.srenc")
    client.put_object(Bucket=RET_BUCKETS["eu-west-1"], Key=dump_key + ".extra", Body=b"x")
    client.delete_object(Bucket=RET_BUCKETS["eu-west-1"], Key=dump_key + ".extra")

    short = config_with(ret, "short.yaml", f"{window}s")
    results = retention.prune_all(short, conns)
    assert all(r["error"] is None for r in results)
    for region in REGIONS:
        assert versions_under(ret, region, f"databases/shop/data/{old['snapshot_id']}") == []
        assert versions_under(ret, region, layout.manifest_key("shop", old["snapshot_id"])) == []
        kept = {k for k, _ in versions_under(ret, region, f"databases/shop/manifests/{new['snapshot_id']}")}
        assert kept == {layout.manifest_key("shop", new["snapshot_id"])}, region
    audit = [k for k, marker in versions_under(ret, "eu-central-1", "audit/retention/") if not marker]
    assert audit
    record = json.loads(ret["servers"]["eu-central-1"].client("eu-central-1").get_object(
        Bucket=RET_BUCKETS["eu-central-1"], Key=audit[-1])["Body"].read())
    deleted = {(d["region"], d["snapshot_id"]) for d in record["deletions"] if d["kind"] == "snapshot"}
    assert deleted == {(r, old["snapshot_id"]) for r in REGIONS}
    assert "older than the retention" in record["deletions"][0]["reason"]


def test_dry_run_changes_nothing_and_a_future_now_needs_it(ret: dict) -> None:
    before = {r: versions_under(ret, r, "") for r in REGIONS}
    future = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    refused = run_cli("--config", str(ret["config_path"]), "prune", "--now", future)
    assert refused.code == 1 and len(refused.error_lines) == 1
    assert refused.error_lines[0] == (
        f"strongroom: error: --now {datetime.fromisoformat(future).isoformat()} is later than the real clock: "
        "only allowed with --dry-run")
    preview = run_cli("--config", str(ret["config_path"]), "prune", "--dry-run", "--now", future)
    assert preview.code == 0, preview.stderr
    assert "would delete snapshot shop/" in preview.stdout
    assert {r: versions_under(ret, r, "") for r in REGIONS} == before
    naive = run_cli("--config", str(ret["config_path"]), "prune", "--dry-run", "--now", "2026-01-01T00:00:00")
    assert naive.code != 0 and "explicit UTC offset" in naive.error_lines[0]


def test_a_region_that_cannot_be_read_is_not_pruned_and_is_named(ret: dict, conns, tmp_path: Path) -> None:
    config = config_with(ret, "c30d.yaml")
    taken = snapshot_database(config, "shop", conns)
    # eu-west-1: a manifest that does not authenticate (pruned by age all the same); eu-north-1: unreachable
    client = ret["servers"]["eu-west-1"].client("eu-west-1")
    bad_key = layout.manifest_key("shop", taken["snapshot_id"])
    doc = json.loads(client.get_object(Bucket=RET_BUCKETS["eu-west-1"], Key=bad_key)["Body"].read())
    doc["tables"]["public.orders"] = 1
    client.put_object(Bucket=RET_BUCKETS["eu-west-1"], Key=bad_key, Body=json.dumps(doc).encode())
    before = {r: versions_under(ret, r, "databases/") for r in REGIONS}
    os.environ[env_name(ret_conn("eu-north-1"))] = json.dumps({
        "conn_type": "aws", "login": "t", "password": "t",
        "extra": {"region_name": "eu-north-1", "endpoint_url": "http://127.0.0.1:9"}})
    # the snapshot must be past the 1 s retention: replication can finish within that second, so the policy
    # is evaluated two seconds on (prune allows up to five)
    later = datetime.now(UTC) + timedelta(seconds=2)
    try:
        results = retention.prune(config_with(ret, "tiny.yaml", "1s"), conns, now=later)
        with pytest.raises(PruneError, match="eu-north-1") as caught:
            retention.prune_all(config_with(ret, "tiny.yaml", "1s"), conns, now=later)
        assert "eu-west-1" not in str(caught.value)
    finally:
        os.environ[env_name(ret_conn("eu-north-1"))] = ret["servers"]["eu-north-1"].airflow_conn("eu-north-1")
    by_region = {r.region: r for r in results}
    # a manifest that does not authenticate is never fatal to its region (issue 15): past the window the
    # snapshot goes by the time in its id, as age alone is always a reason to erase
    assert by_region["eu-west-1"].error is None and by_region["eu-west-1"].plan is not None
    [tampered] = [d for d in by_region["eu-west-1"].plan.deletions if d.snapshot_id == taken["snapshot_id"]]
    assert tampered.kind == "uncommitted" and "past the retention" in tampered.reason
    assert by_region["eu-north-1"].error
    assert by_region["eu-central-1"].error is None and by_region["eu-central-1"].removed > 0
    assert versions_under(ret, "eu-central-1", "databases/") == []
    assert versions_under(ret, "eu-west-1", "databases/") == []
    assert versions_under(ret, "eu-north-1", "databases/") == before["eu-north-1"]


def _fake_snapshot(region_store, keyring: Keyring, taken: datetime, database: str = "bulkdb") -> None:
    snapshot_id = layout.new_snapshot_id(taken)
    key = layout.data_key(database, snapshot_id, "dump.zst.srenc")
    body = b"ciphertext"
    manifest = Manifest(
        snapshot_id=snapshot_id, database=database, taken_at=taken, server_version="15", pg_dump_version="15",
        key_id=keyring.active_id, wrapped_key=envelope.wrap_key(keyring.active_key, keyring.active_id, b"k" * 32, b"x"),
        dump=StoredObject(key, 10, 10, len(body), "0" * 64), tables={"public.t": 1},
    )
    region_store.put_bytes(key, body)
    region_store.put_bytes(layout.manifest_key(database, snapshot_id), manifest.to_json(keyring))


def test_thousands_of_snapshots_paginate_and_nothing_young_is_touched(ret: dict, conns) -> None:
    config = config_with(ret, "c30d.yaml")
    region = config.regions[1]
    store = conns.store(region, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(region))
    now = datetime.now(UTC)
    # 2,500 snapshots one hour apart around the 30-day boundary: the oldest 1,250 are past it (the youngest of
    # those by 50 minutes, the oldest kept inside it by 10: writing them all takes a while on a busy machine)
    times = [now - timedelta(days=30) + timedelta(hours=i - 1250, minutes=10) for i in range(2500)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda t: _fake_snapshot(store, keyring, t), times))
    results = retention.prune(config, conns, regions=[region.name])
    assert results[0].error is None
    remaining = catalog.snapshot_ids(store, "bulkdb")
    assert len(remaining) == 1250
    assert all(layout.snapshot_id_time(i) >= now - timedelta(days=30) for i in remaining)
    gone = {k for k, _ in versions_under(ret, region.name, "databases/bulkdb/")}
    assert len(gone) == 2 * 1250  # data and manifest of each kept snapshot, no version of the others


def test_a_snapshot_written_while_versioning_was_suspended_is_erased_in_every_version(ret: dict, conns) -> None:
    """Objects written while a bucket's versioning was suspended (or before it was enabled) are its null
    versions; a delete that does not name them leaves them behind a new delete marker."""
    config = config_with(ret, "c30d.yaml")
    region = config.regions[2]
    store = conns.store(region, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(region))
    client = ret["servers"][region.name].client(region.name)
    client.put_bucket_versioning(Bucket=store.bucket, VersioningConfiguration={"Status": "Suspended"})
    try:
        _fake_snapshot(store, keyring, datetime.now(UTC) - timedelta(days=31), database="nulldb")
    finally:
        client.put_bucket_versioning(Bucket=store.bucket, VersioningConfiguration={"Status": "Enabled"})
    assert len(versions_under(ret, region.name, "databases/nulldb/")) == 2
    [result] = retention.prune(config, conns, regions=[region.name])
    assert result.error is None
    assert versions_under(ret, region.name, "databases/nulldb/") == []


def test_object_lock_holds_until_erasure_and_no_longer(stack: Stack, conns, tmp_path: Path) -> None:
    from devstack import MotoServer

    server = MotoServer().start()
    region = "eu-west-3"
    os.environ[env_name("lock_conn")] = server.airflow_conn(region)
    path = tmp_path / "lock.yaml"
    path.write_text(json.dumps({
        "retention": "1d", "encryption": {"keyring_conn_id": "strongroom_keyring"},
        "regions": [{"name": region, "bucket": "sr-locked", "aws_conn_id": "lock_conn", "object_lock": "governance"}],
        "databases": [{"name": "shop", "postgres_conn_id": "pg_shop"}], "transfer": {"part_size": "5MiB"},
    }))
    try:
        created = run_cli("--config", str(path), "init-buckets")
        assert created.code == 0, created.stdout + created.stderr
        config = load_config(path)
        taken = snapshot_database(config, "shop", conns)
        erase_at = datetime.fromisoformat(taken["taken_at"]) + timedelta(days=1)
        client = server.client(region)
        key = layout.data_key("shop", taken["snapshot_id"], "dump.zst.srenc")
        for locked in (key, layout.manifest_key("shop", taken["snapshot_id"])):
            lock = client.head_object(Bucket="sr-locked", Key=locked)
            assert lock["ObjectLockMode"] == "GOVERNANCE"
            until = lock["ObjectLockRetainUntilDate"]
            assert erase_at - timedelta(seconds=1) <= until <= erase_at + timedelta(seconds=1)
        version = client.head_object(Bucket="sr-locked", Key=key)["VersionId"]
        with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
            client.delete_object(Bucket="sr-locked", Key=key, VersionId=version)
        assert client.head_object(Bucket="sr-locked", Key=key)["VersionId"] == version
    finally:
        os.environ.pop(env_name("lock_conn"), None)
        server.stop()


def test_a_snapshot_deleted_between_listing_and_reading_counts_as_deleted(ret: dict, conns) -> None:
    """Another prune (of the other hourly DAG, before the prune pool serialised them) deletes a snapshot
    after this one listed the region and before it read the manifest: left alone, not a region failure."""
    from strongroom.storage import ObjectStore

    config = config_with(ret, "c30d.yaml")
    region = config.regions[1]
    gone, kept = (snapshot_database(config, "shop", conns) for _ in range(2))
    store = conns.store(region, config.transfer)
    gone_manifest = layout.manifest_key("shop", gone["snapshot_id"])

    class RacingStore(ObjectStore):  # the other prune deletes the snapshot just before this one reads it
        def get_bytes(self, key: str) -> bytes:
            if key == gone_manifest:
                self.erase_prefix(f"databases/shop/data/{gone['snapshot_id']}/")
                self.erase_prefix(gone_manifest)
            return super().get_bytes(key)

    racing = RacingStore(store.client, store.bucket, region=store.region)
    keyring = conns.keyring(config.keyring_conn_id(region))
    result = retention.read_catalog(racing, keyring, region.name)
    assert ("shop", gone["snapshot_id"]) not in result.snapshots
    entry = result.snapshots[("shop", kept["snapshot_id"])]
    assert entry.taken_at is not None and entry.problem is None
    plan = retention.plan_retention(result, timedelta(days=30), timedelta(minutes=50), datetime.now(UTC))
    assert plan.held == () and [d for d in plan.deletions if d.database == "shop"] == []


def test_a_junk_key_under_points_keeps_that_sources_content_and_stops_nothing_else(ret: dict, conns) -> None:
    """Someone who can write to one bucket puts a key under objects/<source>/points/ that is not a point
    index: that source's content is kept this time (nothing deleted on a guess), and the region's other
    deletions (an expired snapshot) still happen: one junk key cannot stop erasure."""
    config = config_with(ret, "c30d.yaml")
    region = config.regions[0]
    store = conns.store(region, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(region))
    store.put_bytes("objects/uploads/points/not-a-point", b"junk")
    store.put_bytes("objects/uploads/content/" + "ab" * 32, b"orphaned content, referenced by no point")
    old = datetime.now(UTC) - timedelta(days=40)
    _fake_snapshot(store, keyring, old)
    result = retention.read_catalog(store, keyring, region.name)
    assert result.sources["uploads"].unsure
    # no grace, a minute on: unreferenced content would go, were the source's points known
    plan = retention.plan_retention(result, timedelta(days=30), timedelta(0), datetime.now(UTC) + timedelta(minutes=1))
    assert [d for d in plan.deletions if d.kind == "content"] == []
    assert "snapshot" in [d.kind for d in plan.deletions if d.database == "bulkdb"]
    result.sources["uploads"].unsure = False  # what the same plan does once the junk is understood
    unsure_off = retention.plan_retention(result, timedelta(days=30), timedelta(0),
                                          datetime.now(UTC) + timedelta(minutes=1))
    assert [d.kind for d in unsure_off.deletions if d.kind == "content"] == ["content"]
