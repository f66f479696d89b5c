"""The retention plan is a pure decision: table-driven, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from strongroom.retention import RegionCatalog, SnapshotEntry, Upload, Version, plan_retention

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
RETENTION = timedelta(days=30)
GRACE = timedelta(minutes=50)


def sid(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%SZ") + "-abcdef"


def entry(taken: datetime, committed: bool = True, written: datetime | None = None, db: str = "shop") -> SnapshotEntry:
    s = sid(taken)
    when = written or taken
    versions = [
        Version(f"databases/{db}/manifests/{s}.json", "m1", when, True, False),
        Version(f"databases/{db}/data/{s}/dump.zst.srenc", "d1", when, True, False),
        Version(f"databases/{db}/data/{s}/dump.zst.srenc", "d0", when - timedelta(seconds=1), False, False),
        Version(f"databases/{db}/data/{s}/globals.sql.zst.srenc", "g-marker", when, True, True),
    ]
    if not committed:
        versions = versions[1:]
    return SnapshotEntry(db, s, taken if committed else None, versions)


def catalog_of(*entries: SnapshotEntry, uploads: tuple[Upload, ...] = ()) -> RegionCatalog:
    return RegionCatalog("eu-west-1", {(e.database, e.snapshot_id): e for e in entries}, list(uploads))


@pytest.mark.parametrize(
    ("age", "deleted"),
    [
        (RETENTION - timedelta(seconds=1), False),
        (RETENTION + timedelta(seconds=1), True),
        (RETENTION + timedelta(days=300), True),
        (timedelta(0), False),
    ],
)
def test_window_boundary(age: timedelta, deleted: bool) -> None:
    plan = plan_retention(catalog_of(entry(NOW - age)), RETENTION, GRACE, NOW)
    assert [d.kind for d in plan.deletions] == (["snapshot"] if deleted else [])
    assert plan.kept == (0 if deleted else 1)


def test_expired_snapshot_goes_even_when_no_newer_one_exists() -> None:
    plan = plan_retention(catalog_of(entry(NOW - timedelta(days=45))), RETENTION, GRACE, NOW)
    assert len(plan.deletions) == 1 and plan.kept == 0
    assert "older than the retention of 30d" in plan.deletions[0].reason


def test_every_version_and_marker_is_deleted_manifest_last() -> None:
    old = entry(NOW - timedelta(days=31))
    (deletion,) = plan_retention(catalog_of(old), RETENTION, GRACE, NOW).deletions
    assert set(deletion.versions) == {(v.key, v.version_id) for v in old.versions}
    assert "/manifests/" in deletion.versions[-1][0]
    assert all("/manifests/" not in key for key, _ in deletion.versions[:-1])


@pytest.mark.parametrize(
    ("taken_ago", "written_ago", "evidence", "deleted", "held"),
    [
        (timedelta(minutes=10), timedelta(minutes=10), True, False, False),  # may still be replicating
        (timedelta(hours=2), timedelta(hours=2), True, True, False),  # abandoned, by its pending record
        (timedelta(hours=2), timedelta(hours=2), False, False, True),  # no evidence: held and alerted
        (timedelta(hours=2), timedelta(minutes=5), False, False, False),  # still being written
        (timedelta(days=31), timedelta(minutes=5), False, True, False),  # past the retention whatever happens
    ],
)
def test_uncommitted_leftovers(
    taken_ago: timedelta, written_ago: timedelta, evidence: bool, deleted: bool, held: bool
) -> None:
    orphan = entry(NOW - taken_ago, committed=False, written=NOW - written_ago)
    if evidence:
        orphan.abandoned = frozenset(v.key for v in orphan.versions)
    plan = plan_retention(catalog_of(orphan), RETENTION, GRACE, NOW)
    assert [d.kind for d in plan.deletions] == (["uncommitted"] if deleted else [])
    assert bool(plan.held) == held


@pytest.mark.parametrize("case", ["delete marker", "old versions only", "unauthenticated", "pending forged"])
def test_a_young_snapshot_without_authenticated_evidence_is_held(case: str) -> None:
    """Inside the window, only an authenticated record is a reason to delete (issue 15, item 4)."""
    young = entry(NOW - timedelta(days=2), committed=False)
    s = young.snapshot_id
    manifest = f"databases/shop/manifests/{s}.json"
    if case == "delete marker":
        young.versions += [Version(manifest, "m1", NOW - timedelta(days=2), False, False),
                           Version(manifest, "dm", NOW - timedelta(hours=3), True, True)]
    elif case == "old versions only":
        young.versions += [Version(manifest, "m1", NOW - timedelta(days=2), False, False)]
    elif case == "unauthenticated":
        young.versions += [Version(manifest, "m1", NOW - timedelta(days=2), True, False)]
        young.problem = f"manifest s3://b/{manifest} failed authentication (tampered or foreign)"
    else:
        young.abandoned = frozenset(v.key for v in young.versions)
        young.problem = "pending record failed authentication"
    plan = plan_retention(catalog_of(young), RETENTION, GRACE, NOW)
    assert plan.deletions == ()
    [held] = plan.held
    assert s in held and "nothing deleted on unauthenticated evidence" in held
    assert {"delete marker": "delete marker", "old versions only": "only as old versions",
            "unauthenticated": "failed authentication", "pending forged": "failed authentication"}[case] in held
    # the same snapshot past the window goes, whatever its records say
    later = plan_retention(catalog_of(young), RETENTION, GRACE, NOW + timedelta(days=29))
    assert [d.kind for d in later.deletions] == ["uncommitted"] and later.held == ()


def test_an_abandoned_snapshot_loses_only_what_its_pending_record_names() -> None:
    orphan = entry(NOW - timedelta(hours=3), committed=False)
    named = {v.key for v in orphan.versions if "dump" in v.key}
    orphan.abandoned = frozenset(named)
    plan = plan_retention(catalog_of(orphan), RETENTION, GRACE, NOW)
    [deletion] = plan.deletions
    assert {k for k, _ in deletion.versions} == named
    assert len(plan.held) == 1 and "does not name" in plan.held[0]


def test_stale_uploads_are_aborted_young_ones_kept() -> None:
    uploads = (Upload("databases/shop/data/x/dump", "u-old", NOW - timedelta(hours=1)),
               Upload("databases/shop/data/y/dump", "u-new", NOW - timedelta(minutes=5)))
    plan = plan_retention(catalog_of(uploads=uploads), RETENTION, GRACE, NOW)
    assert [d.upload for d in plan.deletions] == [("databases/shop/data/x/dump", "u-old")]


def test_object_content_and_uploads_wait_out_the_object_passes_own_run_timeout() -> None:
    """object_backup.run_timeout may be longer than snapshot.run_timeout: content a pass has stored but not
    yet indexed, and its unfinished uploads, are kept that long; a snapshot's upload keeps its own grace."""
    from strongroom.retention import SourceCatalog

    written = NOW - timedelta(minutes=90)
    key = "objects/uploads/content/" + "c" * 64
    cat = catalog_of(uploads=(Upload("objects/uploads/content/x", "u-1", written),
                              Upload("databases/shop/data/x/dump", "u-2", written)))
    cat.sources = {"uploads": SourceCatalog(contents={"c" * 64: [Version(key, "v1", written, True, False)]})}
    assert [d.kind for d in plan_retention(cat, RETENTION, GRACE, NOW).deletions] == ["upload", "upload", "content"]
    longer = plan_retention(cat, RETENTION, GRACE, NOW, source_grace=timedelta(hours=2)).deletions
    assert [d.upload for d in longer] == [("databases/shop/data/x/dump", "u-2")]
    shorter = plan_retention(cat, RETENTION, GRACE, NOW, source_grace=timedelta(minutes=60)).deletions
    assert [d.reason for d in shorter if d.kind == "upload"] == [
        f"unfinished upload begun {written.isoformat()}, more than 1h ago",
        f"unfinished upload begun {written.isoformat()}, more than 50m ago"]


@pytest.mark.parametrize("prefix", ["audit/retention/", "restore-tests/shop/"])
def test_old_records_are_pruned_by_the_same_window(prefix: str) -> None:
    old_key = prefix + sid(NOW - timedelta(days=31))[:16] + "-aaaaaa.json"
    new_key = prefix + sid(NOW - timedelta(days=1))[:16] + "-bbbbbb/result.json"
    cat = catalog_of()
    cat.records = {old_key: [Version(old_key, "v1", NOW - timedelta(days=31), True, False)],
                 new_key: [Version(new_key, "v1", NOW - timedelta(days=1), True, False)]}
    plan = plan_retention(cat, RETENTION, GRACE, NOW)
    assert [d.versions for d in plan.deletions] == [((old_key, "v1"),)]


def test_platform_points_and_recovery_reports_go_with_every_version_once_past_the_window() -> None:
    from strongroom import layout

    old_point = layout.platform_point_key(layout.new_platform_id(NOW - timedelta(days=30, seconds=1)))
    young_point = layout.platform_point_key(layout.new_platform_id(NOW - timedelta(days=29)))
    old_report = layout.recovery_report_key(layout.new_platform_id(NOW - timedelta(days=45)))
    cat = catalog_of()
    cat.records = {
        old_point: [Version(old_point, "v2", NOW - timedelta(days=2), True, True),  # a delete marker
                    Version(old_point, "v1", NOW - timedelta(days=30), False, False)],
        young_point: [Version(young_point, "v1", NOW - timedelta(days=29), True, False)],
        old_report: [Version(old_report, "v1", NOW - timedelta(days=45), True, False)],
    }
    plan = plan_retention(cat, RETENTION, GRACE, NOW)
    assert sorted((d.kind, d.versions) for d in plan.deletions) == [
        ("platform-point", ((old_point, "v2"), (old_point, "v1"))),
        ("recovery-report", ((old_report, "v1"),)),
    ]
    assert all("older than the retention" in d.reason for d in plan.deletions)


def test_plan_is_pure_and_mixed() -> None:
    cat = catalog_of(entry(NOW - timedelta(days=40)), entry(NOW - timedelta(days=2)),
                     entry(NOW - timedelta(days=31), db="erased-account"))
    first = plan_retention(cat, RETENTION, GRACE, NOW)
    assert first == plan_retention(cat, RETENTION, GRACE, NOW)
    assert sorted(d.database for d in first.deletions) == ["erased-account", "shop"]
    assert first.kept == 1
    assert first.summary() == "eu-west-1: delete 2 snapshot; keep 1 snapshot(s)"


# ---- chunks of chunked snapshots ------------------------------------------------------------------------


def chunk(name: str, written: datetime, versions: int = 1) -> tuple[str, list[Version]]:
    key = f"chunks/shop/0123456789abcdef/{name * 64}"
    return key, [Version(key, f"v{i}", written - timedelta(hours=i), i == 0, False) for i in range(versions)]


def chunked_catalog(*entries: tuple[SnapshotEntry, set[str]], chunks: dict[str, list[Version]]) -> RegionCatalog:
    cat = catalog_of(*(e for e, _ in entries))
    for e, names in entries:
        e.chunk_refs = {f"chunks/shop/0123456789abcdef/{n * 64}" for n in names}
    cat.chunks = chunks
    return cat


def test_a_chunk_goes_in_every_version_once_no_staying_snapshot_names_it_after_the_snapshots() -> None:
    old, new = entry(NOW - timedelta(days=31)), entry(NOW - timedelta(days=1))
    long_ago = NOW - timedelta(days=40)
    cat = chunked_catalog((old, {"a", "b"}), (new, {"b", "c"}),
                          chunks=dict([chunk("a", long_ago, versions=2), chunk("b", long_ago), chunk("c", NOW)]))
    plan = plan_retention(cat, RETENTION, GRACE, NOW)
    assert [d.kind for d in plan.deletions] == ["snapshot", "chunks"]  # the chunks after what named them
    assert {v for _, v in plan.deletions[-1].versions} == {"v0", "v1"}
    assert {k for k, _ in plan.deletions[-1].versions} == {"chunks/shop/0123456789abcdef/" + "a" * 64}


def test_a_chunk_named_by_a_held_snapshot_stays() -> None:
    held = entry(NOW - timedelta(days=2), committed=False, written=NOW - timedelta(days=2))  # held: no manifest
    cat = chunked_catalog((held, {"a"}), chunks=dict([chunk("a", NOW - timedelta(days=3))]))
    plan = plan_retention(cat, RETENTION, GRACE, NOW)
    assert "chunks" not in [d.kind for d in plan.deletions] and plan.held


def test_a_young_unnamed_chunk_stays_for_the_run_that_is_writing_it() -> None:
    cat = chunked_catalog(chunks=dict([chunk("a", NOW - GRACE + timedelta(seconds=5))]))
    assert plan_retention(cat, RETENTION, GRACE, NOW).deletions == ()
    cat = chunked_catalog(chunks=dict([chunk("a", NOW - GRACE - timedelta(seconds=5))]))
    assert [d.kind for d in plan_retention(cat, RETENTION, GRACE, NOW).deletions] == ["chunks"]


def test_no_chunk_goes_while_what_a_snapshot_names_is_unknown() -> None:
    unreadable = entry(NOW - timedelta(days=1))
    unreadable.chunk_unsure = True
    cat = chunked_catalog((unreadable, set()), chunks=dict([chunk("a", NOW - timedelta(days=40))]))
    assert plan_retention(cat, RETENTION, GRACE, NOW).deletions == ()
    cat = chunked_catalog(chunks=dict([chunk("a", NOW - timedelta(days=40))]))
    cat.chunks_unsure = {"shop"}  # a manifest vanished while the prune read it
    assert plan_retention(cat, RETENTION, GRACE, NOW).deletions == ()
