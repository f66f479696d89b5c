"""Retention: every snapshot older than the window is permanently deleted, in every region.

Two steps, kept apart:

* :func:`plan_retention` is pure. From one region's catalog, the policy and ``now`` it decides what to
  delete and why. It never guesses: it only runs on a catalog that was read completely.
* :func:`execute_plan` deletes: every object version and delete marker under each doomed snapshot, the
  manifest last, so an interrupted prune leaves a snapshot the next prune still finds. It records every
  deletion in an audit log in the primary region.

Retention is a hard maximum against the real clock, because erasure is the promise: a snapshot older than
the window is deleted even when no newer snapshot exists.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom import catalog, layout
from strongroom.catalog import Manifest
from strongroom.config import Config, RegionConfig, require_offset
from strongroom.connections import Connections
from strongroom.errors import (
    IntegrityError,
    KeyringError,
    NotFoundError,
    PruneError,
    RefusedError,
    StrongroomError,
)
from strongroom.keyring import Keyring
from strongroom.progress import duration_text
from strongroom.regions import first_answer
from strongroom.storage import ObjectStore, Upload, Version

log = logging.getLogger(__name__)



@dataclass
class SnapshotEntry:
    """Everything one snapshot id has in one region: live manifest or not, and every version."""

    database: str
    snapshot_id: str
    taken_at: datetime | None = None  # from the authenticated manifest; None: not committed here
    versions: list[Version] = field(default_factory=list)
    # the keys an authenticated pending record names (its data objects and itself): evidence that an
    # uncommitted snapshot was abandoned; None: no such record
    abandoned: frozenset[str] | None = None
    problem: str | None = None  # a live manifest or pending record that did not authenticate
    # the keys of the chunks its manifest and pending versions name (every version, behind a delete marker
    # too); chunk_unsure: one of them could not be read or authenticated, so what it names is unknown
    chunk_refs: set[str] = field(default_factory=set)
    chunk_unsure: bool = False

    @property
    def newest_write(self) -> datetime:
        return max(v.last_modified for v in self.versions)


@dataclass
class RegionCatalog:
    """One region's complete catalog, as read by :func:`read_catalog`."""

    region: str
    snapshots: dict[tuple[str, str], SnapshotEntry] = field(default_factory=dict)
    uploads: list[Upload] = field(default_factory=list)
    records: dict[str, list[Version]] = field(default_factory=dict)  # audit/restore-test key -> versions
    sources: dict[str, SourceCatalog] = field(default_factory=dict)  # object-storage backups per source
    chunks: dict[str, list[Version]] = field(default_factory=dict)  # chunk key -> versions
    # databases whose chunk references are not all known (a manifest vanished while being read): none of
    # their chunks is deleted this time
    chunks_unsure: set[str] = field(default_factory=set)


@dataclass
class SourceCatalog:
    """One source bucket's backups in a region: its points (and what each references) and its contents."""

    points: dict[datetime, set[str]] = field(default_factory=dict)  # point time -> content ids referenced
    point_versions: dict[datetime, list[Version]] = field(default_factory=dict)
    contents: dict[str, list[Version]] = field(default_factory=dict)  # content id -> versions
    other: list[Version] = field(default_factory=list)  # progress journals and strays
    # a live point vanished between listing and reading (pruned elsewhere, or deleted by hand), or a key
    # under points/ is not a point index: what the points reference is unknown, so no content of this
    # source is deleted this time
    unsure: bool = False


@dataclass(frozen=True)
class Deletion:
    """One thing to delete and why. ``versions`` are exact (key, version id) pairs; the manifest's last."""

    region: str
    kind: str  # "snapshot", "uncommitted", "upload", "audit"
    database: str
    snapshot_id: str
    reason: str
    versions: tuple[tuple[str, str | None], ...] = ()
    upload: tuple[str, str] | None = None

    def describe(self) -> dict[str, Any]:
        keys = sorted({k for k, _ in self.versions} | ({self.upload[0]} if self.upload else set()))
        return {"region": self.region, "kind": self.kind, "database": self.database,
                "snapshot_id": self.snapshot_id, "reason": self.reason, "keys": keys,
                "versions": len(self.versions)}


@dataclass(frozen=True)
class Plan:
    region: str
    now: datetime
    deletions: tuple[Deletion, ...]
    kept: int
    # inside the window and no authenticated evidence to delete: kept, reported and alerted
    held: tuple[str, ...] = ()

    def summary(self) -> str:
        by_kind: dict[str, int] = defaultdict(int)
        for d in self.deletions:
            by_kind[d.kind] += 1
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items())) or "nothing"
        held = f"; held {len(self.held)} without authenticated evidence" if self.held else ""
        return f"{self.region}: delete {parts}; keep {self.kept} snapshot(s){held}"


def plan_retention(
    catalog_: RegionCatalog, retention: timedelta, grace: timedelta, now: datetime, *,
    source_grace: timedelta | None = None,
) -> Plan:
    """Decide what to delete in one region. Pure: no I/O, no clock.

    * a committed snapshot whose ``taken_at`` is older than ``retention``: everything, manifest last;
    * anything of a snapshot without an authenticated manifest whose id is past ``retention`` (age
      alone is always a reason to erase);
    * inside the window, only what an authenticated pending record names, once its newest write is older
      than ``grace`` (the run timeout): the snapshot was abandoned. Anything else there (a delete marker on
      the manifest, a missing manifest, a manifest or pending record that does not authenticate) is
      never a reason to delete: it is *held*, and the prune reports and alerts it;
    * unfinished multipart uploads begun more than ``grace`` ago (``source_grace`` under ``objects/``);
    * audit and restore-test records, platform points and recovery reports older than ``retention`` (every
      version, by the time in their key: a platform point's ``taken_at``);
    * object-storage points older than ``retention``, and content no remaining point references once it is
      older than ``source_grace`` (the object passes' run timeout; ``grace`` when not given).
    """
    source_grace = grace if source_grace is None else source_grace
    cutoff = now - retention
    deletions: list[Deletion] = []
    held: list[str] = []
    kept = 0
    for (database, snapshot_id), entry in sorted(catalog_.snapshots.items()):
        ordered = _manifest_last(entry.versions)
        if entry.taken_at is not None:
            if entry.taken_at < cutoff:
                reason = (f"taken {entry.taken_at.isoformat()}, older than the retention of {duration_text(retention)} "
                          f"(expired {(entry.taken_at + retention).isoformat()})")
                deletions.append(Deletion(catalog_.region, "snapshot", database, snapshot_id, reason, ordered))
            else:
                kept += 1
            continue
        id_time = layout.snapshot_id_time(snapshot_id)
        if id_time < cutoff:
            reason = f"never committed here, and its id time {id_time.isoformat()} is past the retention"
        elif entry.newest_write >= now - grace:
            continue  # possibly a snapshot still being written or replicated: leave it alone
        elif entry.abandoned is not None and entry.problem is None:
            named = tuple(v for v in ordered if v[0] in entry.abandoned)
            reason = (f"abandoned: never committed here, its authenticated pending record was last written "
                      f"{entry.newest_write.isoformat()}, more than the run timeout ({duration_text(grace)}) ago")
            deletions.append(Deletion(catalog_.region, "uncommitted", database, snapshot_id, reason, named))
            if len(named) < len(ordered):
                held.append(f"{catalog_.region}: {database} {snapshot_id}: objects its pending record does not "
                            "name are kept until the window passes")
            continue
        else:
            held.append(f"{catalog_.region}: {database} {snapshot_id}: {_why_held(entry)}; kept until "
                        f"{(id_time + retention).isoformat()}, nothing deleted on unauthenticated evidence")
            continue
        deletions.append(Deletion(catalog_.region, "uncommitted", database, snapshot_id, reason, ordered))
    for upload in catalog_.uploads:
        upload_grace = source_grace if upload.key.startswith(layout.OBJECTS) else grace  # an object pass's
        if upload.initiated < now - upload_grace:
            began = upload.initiated.isoformat()
            reason = f"unfinished upload begun {began}, more than {duration_text(upload_grace)} ago"
            deletions.append(Deletion(catalog_.region, "upload", "", "", reason, upload=(upload.key, upload.upload_id)))
    for key, versions in sorted(catalog_.records.items()):
        made = layout.record_time(key)
        if made is not None and made < cutoff:
            doomed = tuple((v.key, v.version_id) for v in versions)
            if layout.parse_platform_point_key(key) or layout.parse_recovery_report_key(key):
                # a platform point goes like a manifest, every version, once its time is past the window
                kind = "platform-point" if layout.parse_platform_point_key(key) else "recovery-report"
                deletions.append(Deletion(catalog_.region, kind, "", key.rsplit("/", 1)[-1].removesuffix(".json"),
                                          f"{kind} of {made.isoformat()} is older than the retention", doomed))
                continue
            deletions.append(Deletion(catalog_.region, "record", "", "", "record past the retention", doomed))
    deletions += _plan_sources(catalog_, cutoff, source_grace, now)
    deletions += _plan_chunks(catalog_, deletions, grace, now)  # last: after what named them
    return Plan(catalog_.region, now, tuple(deletions), kept, tuple(held))


def _plan_chunks(catalog_: RegionCatalog, deletions: list[Deletion], grace: timedelta, now: datetime
                 ) -> list[Deletion]:
    """Every version of each chunk that no snapshot staying in this region names, once its newest version
    is older than ``grace`` (a snapshot in progress has not named its new chunks yet).

    A snapshot stays unless this plan deletes it, and it names every chunk any version of its manifest or
    pending record names (behind a delete marker too). A database with a snapshot whose versions could
    not all be read loses no chunk: nothing is deleted on a guess."""
    going = {(d.database, d.snapshot_id) for d in deletions if d.kind in ("snapshot", "uncommitted")}
    named: dict[str, set[str]] = defaultdict(set)
    unsure = set(catalog_.chunks_unsure)
    for (database, snapshot_id), entry in catalog_.snapshots.items():
        if (database, snapshot_id) in going:
            continue
        named[database] |= entry.chunk_refs
        if entry.chunk_unsure:
            unsure.add(database)
    doomed: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for key, versions in sorted(catalog_.chunks.items()):
        parsed = layout.parse_chunk_key(key)
        assert parsed is not None
        if parsed.database in unsure or key in named[parsed.database]:
            continue
        if max(v.last_modified for v in versions) >= now - grace:
            continue
        doomed[parsed.database] += [(v.key, v.version_id) for v in versions]
    for database in sorted(unsure):
        log.info("%s: no chunk of %s deleted this time: a snapshot's manifest could not be read completely, so "
                 "what it names is unknown", catalog_.region, database)
    return [Deletion(catalog_.region, "chunks", database, "",
                     f"{len({k for k, _ in versions})} chunk(s) no remaining snapshot names", tuple(versions))
            for database, versions in sorted(doomed.items())]


def _why_held(entry: SnapshotEntry) -> str:
    if entry.problem:
        return entry.problem
    manifests = [v for v in entry.versions if layout.is_manifest_key(v.key)]
    if any(v.is_latest and v.delete_marker for v in manifests):
        return "its manifest has a delete marker (deleted, not expired: undo by removing the marker)"
    if manifests:
        return "its manifest exists only as old versions"
    return "no manifest and no authenticated pending record (a copy that never committed here?)"


def _plan_sources(catalog_: RegionCatalog, cutoff: datetime, grace: timedelta, now: datetime) -> list[Deletion]:
    """Points older than the window go; then every content no remaining point references (all versions),
    unless it was written within ``grace`` (a pass in progress has not indexed it yet)."""
    deletions: list[Deletion] = []
    for source, cat in sorted(catalog_.sources.items()):
        kept_refs: set[str] = set()
        for at, refs in sorted(cat.points.items()):
            if at < cutoff:
                doomed = tuple((v.key, v.version_id) for v in cat.point_versions.get(at, []))
                deletions.append(Deletion(catalog_.region, "point", source, at.isoformat(),
                                          f"point {at.isoformat()} is older than the retention", doomed))
            else:
                kept_refs |= refs
        for cid, versions in sorted(cat.contents.items()):
            if cat.unsure or cid in kept_refs or max(v.last_modified for v in versions) >= now - grace:
                continue
            deletions.append(Deletion(catalog_.region, "content", source, cid[:16],
                                      "no point inside the retention references this content",
                                      tuple((v.key, v.version_id) for v in versions)))
        stale = [v for v in cat.other if v.last_modified < now - grace]
        if stale:
            deletions.append(Deletion(catalog_.region, "journal", source, "",
                                      "progress journal of a pass older than the run timeout",
                                      tuple((v.key, v.version_id) for v in stale)))
    return deletions


def _manifest_last(versions: Iterable[Version]) -> tuple[tuple[str, str | None], ...]:
    ordered = sorted(versions, key=lambda v: (layout.is_manifest_key(v.key), v.key, v.last_modified))
    return tuple((v.key, v.version_id) for v in ordered)


# ---- effects ------------------------------------------------------------------------------------------------


def read_catalog(store: ObjectStore, keyring: Keyring, region: str) -> RegionCatalog:
    """Read one region completely: every version under ``databases/``, every live manifest authenticated,
    every unfinished upload. Any failure raises: a region is never pruned from a partial catalog."""
    result = RegionCatalog(region)
    live: list[tuple[str, str, str]] = []
    for version in store.versions(layout.CHUNKS):
        if layout.parse_chunk_key(version.key) is not None:  # anything else there is not Strongroom's: left
            result.chunks.setdefault(version.key, []).append(version)
    for version in store.versions(layout.DATABASES):
        parsed = layout.parse_snapshot_key(version.key)
        if parsed is None:
            continue
        database, kind, snapshot_id = parsed
        entry = result.snapshots.setdefault((database, snapshot_id), SnapshotEntry(database, snapshot_id))
        entry.versions.append(version)
        if kind in (layout.MANIFESTS, layout.PENDING) and version.is_latest and not version.delete_marker:
            live.append((kind, database, snapshot_id))

    def authenticate(item: tuple[str, str, str]) -> tuple[tuple[str, str, str], Manifest | str | None]:
        kind, database, snapshot_id = item
        try:
            if kind == layout.MANIFESTS:
                return item, catalog.load_manifest(store, keyring, database, snapshot_id)
            key = layout.pending_key(database, snapshot_id)
            manifest = Manifest.from_json(store.get_bytes(key), keyring, f"s3://{store.bucket}/{key}")
            if (manifest.database, manifest.snapshot_id) != (database, snapshot_id):
                raise IntegrityError(f"pending record s3://{store.bucket}/{key} describes another snapshot")
            return item, manifest
        except (IntegrityError, KeyringError) as exc:  # never fatal: such a snapshot is held, not pruned
            return item, str(exc)
        except NotFoundError:  # gone since the listing (deleted by a prune that ran meanwhile): nothing to do
            return item, None

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="manifest") as pool:
        checked = list(pool.map(authenticate, live))
    for (kind, database, snapshot_id), outcome in sorted(checked, key=lambda c: c[0][0] != layout.MANIFESTS):
        if (database, snapshot_id) not in result.snapshots:
            continue  # its manifest was found gone already
        entry = result.snapshots[(database, snapshot_id)]
        if outcome is None:
            log.info("%s: %s %s was deleted while this prune read it; left alone", region, database, snapshot_id)
            del result.snapshots[(database, snapshot_id)]
            result.chunks_unsure.add(database)
        elif isinstance(outcome, str):
            log.warning("%s: %s", region, outcome)
            entry.problem = entry.problem or outcome
            entry.chunk_unsure = True
        elif kind == layout.MANIFESTS:
            entry.taken_at = outcome.taken_at
            entry.chunk_refs.update(outcome.chunk_keys())
        else:
            entry.chunk_refs.update(outcome.chunk_keys())
            entry.abandoned = frozenset([layout.pending_key(database, snapshot_id),
                                         *(o.key for o in outcome.objects())])
    _read_older_versions(store, keyring, result)
    for prefix in layout.DATED_RECORD_PREFIXES:
        for version in store.versions(prefix):
            result.records.setdefault(version.key, []).append(version)
    _read_sources(store, keyring, result)
    result.uploads.extend(store.uploads())
    return result


def _is_record(key: str) -> bool:
    """A manifest's or pending record's key."""
    parsed = layout.parse_snapshot_key(key)
    return parsed is not None and parsed.kind in (layout.MANIFESTS, layout.PENDING)


def _read_older_versions(store: ObjectStore, keyring: Keyring, result: RegionCatalog) -> None:
    """The chunks named by manifest and pending versions that are not the live one (behind a delete marker,
    or overwritten), in databases that have chunks: such a version may be restored, so what it names stays."""
    chunked = {parsed.database for parsed in map(layout.parse_chunk_key, result.chunks) if parsed}
    todo = [(entry, v) for (database, _), entry in result.snapshots.items() if database in chunked
            for v in entry.versions if not v.delete_marker and not v.is_latest and _is_record(v.key)]

    def read(item: tuple[SnapshotEntry, Version]) -> None:
        entry, version = item
        where = f"s3://{store.bucket}/{version.key}?versionId={version.version_id}"
        try:
            manifest = Manifest.from_json(store.read_version(version.key, version.version_id), keyring, where)
        except StrongroomError as exc:
            log.warning("%s: %s: %s", result.region, where, exc)
            entry.chunk_unsure = True
            return
        if (manifest.database, manifest.snapshot_id) != (entry.database, entry.snapshot_id):
            log.warning("%s: %s describes another snapshot", result.region, where)
            entry.chunk_unsure = True
            return
        entry.chunk_refs.update(manifest.chunk_keys())

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="manifest-version") as pool:
        list(pool.map(read, todo))


def _read_sources(store: ObjectStore, keyring: Keyring, result: RegionCatalog) -> None:
    from strongroom import objects

    live_points: list[tuple[str, datetime]] = []
    for version in store.versions(layout.OBJECTS):
        parsed = layout.parse_object_key(version.key)
        if parsed is None:
            continue
        cat = result.sources.setdefault(parsed.source, SourceCatalog())
        if parsed.kind == layout.CONTENT:
            cat.contents.setdefault(parsed.name, []).append(version)
        elif parsed.kind == layout.POINTS:
            at = layout.point_time(parsed.name)
            if at is None:  # not a name Strongroom writes: left alone, and no content of this source is
                # deleted on a guess (one junk key must not stop the region's erasure of everything else)
                log.warning("%s: %s is not named like a point index (<time>.idx): left alone, and no content of "
                            "%s is deleted this time", result.region, version.key, parsed.source)
                cat.unsure = True
                continue
            cat.point_versions.setdefault(at, []).append(version)
            if version.is_latest and not version.delete_marker:
                live_points.append((parsed.source, at))
        else:
            cat.other.append(version)
    for source, at in live_points:  # every live point is read: a region is never pruned on a guess
        try:
            index = objects.load_point(store, keyring, source, at)
        except NotFoundError:
            log.info("%s: point %s of %s was deleted while this prune read it; no content of %s is deleted "
                     "this time", result.region, at.isoformat(), source, source)
            result.sources[source].unsure = True
            continue
        result.sources[source].points[at] = {e.content_id for e in index.entries.values()}
    for cat in result.sources.values():  # points that are only old versions or markers: delete them too
        for at in cat.point_versions:
            cat.points.setdefault(at, set())


def execute_plan(store: ObjectStore, plan: Plan) -> int:
    """Delete what the plan says, logging it first. Returns the number of versions and uploads removed."""
    for deletion in plan.deletions:
        log.info("prune %s: %s %s %s: %s", plan.region, deletion.kind, deletion.database, deletion.snapshot_id,
                 deletion.reason)
    removed = 0
    for deletion in plan.deletions:
        if deletion.upload:
            store.abort_upload(*deletion.upload)
            removed += 1
            continue
        data = [v for v in deletion.versions if not layout.is_manifest_key(v[0])]
        last = [v for v in deletion.versions if layout.is_manifest_key(v[0])]  # the commit point goes last
        removed += store.delete_versions(data) + store.delete_versions(last)  # the manifest goes last
    return removed


@dataclass(frozen=True)
class RegionPrune:
    region: str
    plan: Plan | None
    removed: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "error": self.error, "removed": self.removed,
                "summary": self.plan.summary() if self.plan else None,
                "held": list(self.plan.held) if self.plan else [],
                "deletions": [d.describe() for d in self.plan.deletions] if self.plan else []}


def prune_region(
    config: Config, region: RegionConfig, conns: Connections, now: datetime, *, dry_run: bool
) -> RegionPrune:
    store = conns.store(region, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(region))
    plan = plan_retention(read_catalog(store, keyring, region.name), config.retention,
                          config.snapshot.run_timeout, now, source_grace=config.object_backup.run_timeout)
    log.info("prune plan for %s: %s", region.name, plan.summary())
    if dry_run:
        return RegionPrune(region.name, plan)
    return RegionPrune(region.name, plan, execute_plan(store, plan))


def prune(
    config: Config, conns: Connections, *, now: datetime | None = None, dry_run: bool = False,
    regions: Iterable[str] | None = None,
) -> list[RegionPrune]:
    """Prune every region on its own; one that fails is named, the others are pruned regardless.

    ``now`` may be earlier than the real clock (a preview of the past is harmless); a later ``now`` is
    refused unless ``dry_run``, so no typo can delete backups early.
    """
    real_now = datetime.now(UTC)
    if now is None:
        now = real_now
    require_offset(now, "now")
    if now > real_now + timedelta(seconds=5) and not dry_run:
        raise RefusedError(f"`now` {now.isoformat()} is later than the real clock: only allowed with `dry_run`")
    chosen = [config.region(r) for r in regions] if regions else list(config.regions)
    results = []
    for region in chosen:
        try:
            results.append(prune_region(config, region, conns, now, dry_run=dry_run))
        except StrongroomError as exc:
            log.error("prune of %s failed, nothing deleted there on a guess: %s", region.name, exc)
            results.append(RegionPrune(region.name, None, error=str(exc)))
    if not dry_run:
        _audit(config, conns, results, now)
    return results


def prune_all(config: Config, conns: Connections, **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`prune`, then fail naming every region that could not be pruned (the others were), and every
    snapshot held for lack of authenticated evidence (the task failure is the alert)."""
    results = prune(config, conns, **kwargs)
    failed = [f"{r.region} ({r.error})" for r in results if r.error]
    if failed:
        raise PruneError("not pruned: " + "; ".join(failed))
    check_held(results)
    return [r.to_dict() for r in results]


def check_held(results: list[RegionPrune]) -> None:
    """Raise :class:`IntegrityError` naming what was held (kept inside the window without evidence)."""
    held = [h for r in results if r.plan for h in r.plan.held]
    if held:
        raise IntegrityError(f"pruned, but held {len(held)} snapshot(s) without authenticated evidence: "
                             + " | ".join(held))


def _audit(config: Config, conns: Connections, results: list[RegionPrune], now: datetime) -> None:
    """Record what was deleted, where, when and why, in the primary (else the first reachable) region."""
    deletions = [d.describe() for r in results if r.plan for d in r.plan.deletions]
    if not deletions:
        return
    record = json.dumps({"pruned_at": datetime.now(UTC).isoformat(), "policy_now": now.isoformat(),
                         "retention": duration_text(config.retention), "deletions": deletions,
                         "regions": [{"region": r.region, "removed": r.removed, "error": r.error}
                                     for r in results]}, indent=2).encode()
    key = layout.audit_key(datetime.now(UTC))

    def write(region: RegionConfig) -> None:
        conns.store(region, config.transfer).put_bytes(key, record)

    try:
        first_answer(config, "the write of the prune audit record", write)
    except StrongroomError as exc:
        log.error("could not write the prune audit record: %s", exc)

