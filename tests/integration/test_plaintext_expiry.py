"""Plaintext copies (sandbox databases, review copies) are removed at their snapshot's time + retention,
against the real PostgreSQL and S3 server; the monitor names any that are overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import PRIMARY, UI_REVIEW, UI_SOURCE, Stack


def test_expired_sandboxes_and_review_copies_are_erased_and_flagged_until_then(stack: Stack, ledger: Path) -> None:
    from strongroom import expiry, monitor
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config

    config, conns = load_config(ledger), connections()
    now = datetime.now(UTC)
    # a fresh installation: the review bucket does not exist until the first restore into it; no copy, no
    # error (the expiry task and the monitor stay quiet)
    missing = config.model_copy(update={"object_restore_targets": [
        config.object_restore_targets[0].model_copy(update={"bucket": "never-created-review"})]})
    assert [c for c in expiry.find_copies(missing, conns) if c.kind == expiry.REVIEW] == []
    young = (now - timedelta(days=1)).strftime("%Y%m%d_%H%M%S")
    old_db, young_db, foreign_db = "bulk_20200101_000000_abcdef", f"bulk_{young}_abcdef", "crm_20200101_000000"
    for name in (old_db, young_db, foreign_db):
        stack.pg.execute(f'CREATE DATABASE "{name}"')
    review = conns.bucket_store(f"s3_{PRIMARY.replace('-', '_')}", UI_REVIEW, PRIMARY, config.transfer)
    review.ensure_bucket()
    stack.client.put_bucket_versioning(Bucket=UI_REVIEW, VersioningConfiguration={"Status": "Enabled"})
    young_point = (now - timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ")
    old_key = f"{UI_SOURCE}/20200101T000000Z-abcdef/invoices/1.pdf"
    young_key = f"{UI_SOURCE}/{young_point}-abcdef/invoices/1.pdf"
    foreign_key = "notes/20200101T000000Z-abcdef/kept.txt"  # not named after a configured source
    for key in (old_key, old_key, young_key, foreign_key):  # the old copy twice: two versions to erase
        stack.client.put_object(Bucket=UI_REVIEW, Key=key, Body=b"plaintext production data")
    try:
        overdue = monitor.plaintext_conditions(config, conns, now)
        messages = sorted(c.message for c in overdue)
        assert len(overdue) == 2, messages
        assert messages[0].startswith(f"review copy {UI_SOURCE}/20200101T000000Z-abcdef/ on s3://{UI_REVIEW} "
                                      "was due for removal at 2020-01-31 00:00 UTC")
        assert messages[1].startswith(f"sandbox database {old_db} on ")
        assert all(c.kind == "plaintext_overdue" for c in overdue)

        done = expiry.remove_due(config, conns, now)
        assert sorted(done["removed"]) == sorted(m.split(" was due")[0] for m in messages)
        assert not stack.database_exists(old_db)
        assert stack.database_exists(young_db) and stack.database_exists(foreign_db)
        versions = stack.client.list_object_versions(Bucket=UI_REVIEW, Prefix=f"{UI_SOURCE}/20200101T")
        assert not versions.get("Versions") and not versions.get("DeleteMarkers")  # erased, not hidden
        for kept in (young_key, foreign_key):
            assert stack.client.get_object(Bucket=UI_REVIEW, Key=kept)["Body"].read()
        assert monitor.plaintext_conditions(config, conns, now) == []
        # the young copies go once their own snapshot is older than the retention
        later = now + config.retention  # (sandboxes other tests of the session left are due by then too)
        mine = [c for c in monitor.plaintext_conditions(config, conns, later)
                if young_db in c.key or young_point in c.key]
        assert len(mine) == 2, mine
        expiry.remove_due(config, conns, later)
        assert not stack.database_exists(young_db)
        assert monitor.plaintext_conditions(config, conns, later) == []
    finally:
        for name in (old_db, young_db, foreign_db):
            stack.pg.execute(f'DROP DATABASE IF EXISTS "{name}"')
        review.erase_prefix("")
        stack.client.delete_bucket(Bucket=UI_REVIEW)  # restore_objects' first restore creates it again
