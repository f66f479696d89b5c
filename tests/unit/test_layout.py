"""The bucket layout, pinned: every key below is on disk in existing backups, so these strings never change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from strongroom import layout
from strongroom.errors import NotFoundError

SID = "20261126T140003Z-9f2c1a"
AT = datetime(2026, 11, 26, 14, 0, 3, tzinfo=UTC)


def test_stamp_is_the_utc_second_and_parses_back() -> None:
    assert layout.stamp(AT) == "20261126T140003Z"
    assert layout.stamp(AT.replace(microsecond=999_999)) == "20261126T140003Z"
    assert layout.stamp(AT.astimezone(timezone(timedelta(hours=2)))) == "20261126T140003Z"
    assert layout.parse_stamp("20261126T140003Z") == AT
    for bad in ("20261126T140003", "2026-11-26T14:00:03Z", "20261326T140003Z"):
        with pytest.raises(ValueError):
            layout.parse_stamp(bad)


def test_snapshot_ids() -> None:
    sid = layout.new_snapshot_id(AT)
    assert sid.startswith("20261126T140003Z-") and layout.is_snapshot_id(sid) and len(sid) == len(SID)
    assert layout.snapshot_id_time(SID) == AT
    assert not layout.is_snapshot_id("20261126T140003Z-9F2C1A")
    with pytest.raises(NotFoundError, match="not a snapshot id"):
        layout.snapshot_id_time("latest")


def test_snapshot_keys() -> None:
    assert layout.database_prefix("shop") == "databases/shop/"
    assert layout.data_prefix("shop") == "databases/shop/data/"
    assert layout.data_prefix("shop", SID) == f"databases/shop/data/{SID}/"
    assert layout.data_key("shop", SID, "dump.zst.srenc") == f"databases/shop/data/{SID}/dump.zst.srenc"
    assert layout.manifest_prefix("shop") == "databases/shop/manifests/"
    assert layout.manifest_key("shop", SID) == f"databases/shop/manifests/{SID}.json"
    assert layout.pending_prefix("shop") == "databases/shop/pending/"
    assert layout.pending_key("shop", SID) == f"databases/shop/pending/{SID}.json"


@pytest.mark.parametrize(("key", "parsed"), [
    (f"databases/shop/data/{SID}/dump.zst.srenc", ("shop", "data", SID)),
    (f"databases/shop/data/{SID}/globals.sql.zst.srenc", ("shop", "data", SID)),
    (f"databases/shop/manifests/{SID}.json", ("shop", "manifests", SID)),
    (f"databases/shop/pending/{SID}.json", ("shop", "pending", SID)),
    (f"databases/shop/manifests/{SID}.json.bak", None),
    (f"databases/shop/manifests/{SID}/x.json", None),
    (f"databases/shop/data/{SID}.json", None),
    ("databases/shop/data/not-an-id/dump.zst.srenc", None),
    (f"objects/shop/manifests/{SID}.json", None),
    (f"restore-tests/shop/{SID}/result.json", None),
])
def test_parse_snapshot_key(key: str, parsed: tuple[str, str, str] | None) -> None:
    assert layout.parse_snapshot_key(key) == parsed
    assert layout.is_manifest_key(key) == (parsed is not None and parsed[1] == "manifests")


def test_snapshot_ids_among_keys() -> None:
    keys = [layout.manifest_key("shop", "20261127T000000Z-aaaaaa"), layout.manifest_key("shop", SID),
            layout.pending_key("shop", "20261128T000000Z-bbbbbb"), layout.manifest_key("crm", SID),
            "databases/shop/manifests/junk.json"]
    assert layout.snapshot_ids(keys, "shop", layout.MANIFESTS) == [SID, "20261127T000000Z-aaaaaa"]
    assert layout.snapshot_ids(keys, "shop", layout.PENDING) == ["20261128T000000Z-bbbbbb"]


def test_object_keys() -> None:
    assert layout.source_prefix("uploads") == "objects/uploads/"
    assert layout.content_prefix("uploads") == "objects/uploads/content/"
    assert layout.content_key("uploads", "ab12") == "objects/uploads/content/ab12"
    assert layout.points_prefix("uploads") == "objects/uploads/points/"
    assert layout.point_key("uploads", AT) == "objects/uploads/points/20261126T140003Z.idx"
    assert layout.journal_key("uploads") == "objects/uploads/partial/journal.idx"
    assert layout.parse_object_key("objects/uploads/content/ab12") == ("uploads", "content", "ab12")
    point = layout.parse_object_key(layout.point_key("uploads", AT))
    assert point == ("uploads", "points", "20261126T140003Z.idx")
    assert point is not None and layout.point_time(point.name) == AT
    assert layout.parse_object_key(layout.journal_key("uploads")) == ("uploads", "partial", "journal.idx")
    assert layout.parse_object_key("objects/uploads/stray") is None
    assert layout.parse_object_key(f"databases/shop/manifests/{SID}.json") is None
    for name in ("20261126T140003Z", "20261126T140003Z.json", "latest.idx"):
        assert layout.point_time(name) is None


def test_records() -> None:
    assert layout.RUN_RECORD_KEY == "status/last-run.json"
    assert layout.MONITOR_STATE_KEY == "status/monitor.json"
    assert layout.DELIVERY_KEY == "status/alerts.json"
    assert layout.DATED_RECORD_PREFIXES == ("audit/retention/", "restore-tests/", "platform/points/",
                                            "platform/recoveries/", "platform/drills/")
    audit = layout.audit_key(AT)
    assert audit.startswith("audit/retention/20261126T140003Z-") and audit.endswith(".json")
    assert len(audit) == len("audit/retention/20261126T140003Z-abcdef.json")
    assert layout.record_time(audit) == AT
    assert layout.record_time("restore-tests/shop/20261399T000000Z-abcdef/result.json") is None
    run = layout.new_restore_test_run("shop", AT)
    assert run.startswith("restore-tests/shop/20261126T140003Z-") and run.endswith("/")
    assert layout.restore_tests_prefix("shop") == "restore-tests/shop/"
    assert layout.restore_test_result_key(run) == f"{run}result.json"
    assert layout.restore_test_doc_key(run, "index.html") == f"{run}docs/index.html"
    assert layout.record_time(layout.restore_test_result_key(run)) == AT
    assert layout.is_restore_test_result(layout.restore_test_result_key(run))
    assert layout.is_restore_test_doc(layout.restore_test_doc_key(run, "index.html"))
    assert not layout.is_restore_test_doc(layout.restore_test_result_key(run))
    assert not layout.is_restore_test_doc(f"{run}docs/../../../{layout.manifest_key('shop', SID)}")
    assert not layout.is_restore_test_doc(f"databases/shop/x/docs/{SID}")
    lease = layout.new_lease_id(AT)
    assert lease.startswith("20261126T140003Z-") and len(lease) == len("20261126T140003Z-") + 8
    assert layout.lease_key(lease) == f"leases/restore-tests/{lease}.json"


def test_review_copies() -> None:
    prefix = layout.review_prefix("uploads", AT, "3fa9c1")
    assert prefix == "uploads/20261126T140003Z-3fa9c1/"
    assert layout.review_point(prefix + "a/b.txt") == AT
    assert layout.review_point("uploads/20261126T140003Z-3fa9c/a") is None
    assert layout.review_point("uploads/xxxxxxxxxxxxxxxx-3fa9c1/a") is None
    assert layout.review_point("uploads/a") is None


def test_platform_points_and_recoveries() -> None:
    point_id = layout.new_platform_id(AT)
    assert point_id.startswith("20261126T140003Z-") and len(point_id) == len("20261126T140003Z-abcdef")
    assert layout.platform_id_time(point_id) == AT.replace(microsecond=0)
    key = layout.platform_point_key(point_id)
    assert key == f"platform/points/{point_id}.json"
    assert layout.parse_platform_point_key(key) == point_id and layout.parse_recovery_report_key(key) is None
    report = layout.recovery_report_key(point_id)
    assert report == f"platform/recoveries/{point_id}.json"
    assert layout.parse_recovery_report_key(report) == point_id and layout.parse_platform_point_key(report) is None
    assert layout.record_time(key) == layout.platform_id_time(point_id)  # pruned by its time, like the others
    for bad in ("platform/points/x.json", f"platform/points/{point_id}.json.bak", f"platform/other/{point_id}.json",
                f"platform/points/{point_id}/x.json"):
        assert layout.parse_platform_point_key(bad) is None, bad
    with pytest.raises(NotFoundError, match="is not a platform point id"):
        layout.platform_point_key("../../databases/shop")


def test_platform_drills() -> None:
    drill_id = layout.new_platform_id(AT)
    key = layout.platform_drill_key(drill_id)
    assert key == f"platform/drills/{drill_id}.json"
    assert layout.parse_platform_drill_key(key) == drill_id
    assert layout.parse_platform_point_key(key) is None and layout.parse_recovery_report_key(key) is None
    assert layout.record_time(key) == layout.platform_id_time(drill_id)  # pruned past the window
    for bad in ("platform/drills/x.json", f"platform/points/{drill_id}.json", f"platform/drills/{drill_id}.json.bak"):
        assert layout.parse_platform_drill_key(bad) is None, bad
    with pytest.raises(NotFoundError, match="is not a platform point id"):
        layout.platform_drill_key("../x")


def test_drill_bucket_leases() -> None:
    assert layout.drill_lease_key("strongroom-drill-0123456789ab") == "leases/drills/strongroom-drill-0123456789ab.json"
    for bad in ("strongroom-drill-", "strongroom-drill-0123456789ab/../x", "sr-test-eu-central-1",
                "strongroom-drill-0123456789abc"):
        assert not layout.is_drill_bucket(bad), bad
        with pytest.raises(ValueError, match="is not a platform drill's bucket name"):
            layout.drill_lease_key(bad)
