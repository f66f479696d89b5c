"""Deletion only on authenticated evidence (issue 15, item 4), against the real S3 API (moto, versioned).

Someone with write access to one region's bucket can place a delete marker on a manifest (undoable under
versioning) or write junk named like a manifest. Neither may make a prune erase a young snapshot, and
junk in one region may not stop the other regions from committing.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from strongroom import catalog, layout, replication, retention
from strongroom.errors import IntegrityError
from tests.conftest import REGIONS, Stack, conn_id, write_config
from tests.integration.helpers import run_cli

MARKED = REGIONS[1]  # where the attacker places the delete marker
JUNK = REGIONS[2]  # where the attacker writes a junk manifest


@pytest.fixture(scope="module")
def guarded(stack: Stack, tmp_path_factory: pytest.TempPathFactory):
    """Buckets of its own and one snapshot of shop committed in every region."""
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database

    buckets = {r: f"sr-del-{r}" for r in REGIONS}
    for region, bucket in buckets.items():
        stack.servers[region].create_bucket(bucket, region)
    regions = [{"name": r, "bucket": buckets[r], "aws_conn_id": conn_id(r)} for r in REGIONS]
    regions[0]["keyring_conn_id"] = "kr_primary"
    # a one-second run timeout: what is written is past the in-progress grace almost at once, so the
    # prune really decides about it (with the old rule, a delete-marked manifest meant "uncommitted: erase")
    path = write_config(tmp_path_factory.mktemp("deletion") / "deletion.yaml", regions=regions,
                        databases=[{"name": "shop", "postgres_conn_id": "pg_shop"}],
                        snapshot={"run_timeout": "1s", "retries": 0, "retry_delay": "1s", "deadline": "off"})
    config = load_config(path)
    conns = connections()
    taken = snapshot_database(config, "shop", conns)
    assert set(taken["regions"].values()) == {"committed"}
    return config, conns, path, buckets, taken["snapshot_id"]


def _versions(stack: Stack, bucket: str, region: str) -> set[tuple[str, str, bool]]:
    pages = stack.client_for(region).get_paginator("list_object_versions").paginate(Bucket=bucket)
    out = set()
    for page in pages:
        out |= {(v["Key"], v["VersionId"], False) for v in page.get("Versions", [])}
        out |= {(v["Key"], v["VersionId"], True) for v in page.get("DeleteMarkers", [])}
    return out


def test_a_delete_marker_on_a_young_manifest_erases_nothing_and_alerts(stack: Stack, guarded) -> None:
    config, conns, path, buckets, snapshot_id = guarded
    client, bucket = stack.client_for(MARKED), buckets[MARKED]
    key = layout.manifest_key("shop", snapshot_id)
    client.delete_object(Bucket=bucket, Key=key)  # a delete marker: the manifest looks gone
    before = _versions(stack, bucket, MARKED)
    time.sleep(2.5)  # past the one-second run timeout: no longer possibly in progress
    try:
        # the prune task's library call: it fails (the task failure is the alert) after pruning the rest
        with pytest.raises(IntegrityError) as caught:
            retention.prune_all(config, conns)
        message = str(caught.value)
        assert "held 1 snapshot(s) without authenticated evidence" in message and "\n" not in message
        assert f"{MARKED}: shop {snapshot_id}: its manifest has a delete marker" in message
        assert _versions(stack, bucket, MARKED) == before  # not one version or marker erased

        # the break-glass CLI says the same: HELD on stdout, one error line, exit 1
        cli = run_cli("--config", str(path), "prune")
        assert cli.code == 1 and len(cli.error_lines) == 1, cli.stderr
        assert "without authenticated evidence" in cli.error_lines[0]
        assert f"HELD {MARKED}: shop {snapshot_id}" in cli.stdout
        assert _versions(stack, bucket, MARKED) == before

        # past the window, age alone is a reason to erase: a preview shows it would go then
        later = retention.prune(config, conns, now=datetime.now(UTC) + config.retention + timedelta(days=1),
                                dry_run=True, regions=[MARKED])
        [plan] = [r.plan for r in later]
        assert plan is not None and plan.held == ()
        assert [(d.kind, d.snapshot_id) for d in plan.deletions] == [("uncommitted", snapshot_id)]
    finally:
        marker = next(v for k, v, is_marker in _versions(stack, bucket, MARKED) if k == key and is_marker)
        client.delete_object(Bucket=bucket, Key=key, VersionId=marker)  # undone, as an operator would
    assert retention.prune_all(config, conns)  # nothing held any more
    assert stack.client_for(MARKED).head_object(Bucket=bucket, Key=key)


def test_a_junk_manifest_in_one_region_does_not_stop_the_others(stack: Stack, guarded) -> None:
    """A junk object named like a young manifest in one region: the next snapshot still commits in every
    region, repair never copies the junk id, the monitor's key check alerts on it, and prune holds it."""
    from strongroom.keycheck import check_keys
    from strongroom.monitor import run_monitor
    from strongroom.snapshot import snapshot_database

    config, conns, _, buckets, first = guarded
    junk_id = layout.new_snapshot_id(datetime.now(UTC) - timedelta(hours=2))
    junk_key = layout.manifest_key("shop", junk_id)
    # a plausible manifest: a genuine one of this region, renamed to a new id (its MAC no longer matches)
    doc = json.loads(stack.client_for(JUNK).get_object(
        Bucket=buckets[JUNK], Key=layout.manifest_key("shop", first))["Body"].read())
    doc["snapshot_id"] = junk_id
    stack.client_for(JUNK).put_object(Bucket=buckets[JUNK], Key=junk_key, Body=json.dumps(doc).encode())
    written = time.monotonic()
    try:
        taken = snapshot_database(config, "shop", conns)
        assert taken["regions"] == dict.fromkeys(REGIONS, "committed")
        for region in REGIONS:
            store = conns.store(config.region(region), config.transfer)
            ids = catalog.snapshot_ids(store, "shop")
            assert taken["snapshot_id"] in ids
            assert (junk_id in ids) == (region == JUNK)  # never repaired into another region
        # the DAG's per-region replicate task of another region: no gap, no failure
        assert replication.replicate_region(config, "shop", REGIONS[0], conns, None) == []

        report = check_keys(config, conns)
        assert f"{JUNK}/shop/{junk_id} (does not authenticate)" in report.unreadable
        sent: list[object] = []
        monitored = run_monitor(config, conns, sent.append)
        assert f"unreadable:{JUNK}/shop/{junk_id} (does not authenticate)" in monitored["alerted"]

        time.sleep(max(0.0, 2.5 - (time.monotonic() - written)))  # past the one-second run timeout
        with pytest.raises(IntegrityError, match=f"{JUNK}: shop {junk_id}: manifest .* failed authentication"):
            retention.prune_all(config, conns)
        assert stack.client_for(JUNK).head_object(Bucket=buckets[JUNK], Key=junk_key)  # held, not erased
    finally:
        stack.client_for(JUNK).delete_object(Bucket=buckets[JUNK], Key=junk_key)
