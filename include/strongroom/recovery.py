"""Platform recovery: every database and every source bucket back to one point, from one surviving region.

A *platform point* says which snapshot of each configured database and which object point of each source
bucket belong together (one hourly run). :func:`record_point` writes it in every region as an authenticated
record (:mod:`strongroom.records`), with the spread between its earliest and latest part and, per region,
which parts that region lacks. :func:`plan_recovery` chooses what to restore and from where: a recorded
point, or (``at``) the catalogs alone, so snapshots taken by hand are recoverable too. It changes nothing.
:func:`execute_recovery` restores every part in parallel through the single-restore pipelines
(:func:`strongroom.restore.restore_snapshot`, :func:`strongroom.objects.restore_point`), each checked as
those check, after refusing any production target nobody confirmed; its report (per part and the total
against ``recovery.rto``) is stored in every region that answers.

Keys are built by :mod:`strongroom.layout` (``platform/points/``, ``platform/recoveries/``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom import approval, catalog, layout, objects, postgres, records, regions, restore
from strongroom.config import Config, RegionConfig, parse_time, require_offset
from strongroom.connections import Connections
from strongroom.errors import (
    ConfigError,
    IntegrityError,
    NoRegionError,
    NotFoundError,
    RecoveryError,
    RefusedError,
    StrongroomError,
)
from strongroom.keyring import Keyring
from strongroom.postgres import PgSettings
from strongroom.progress import duration_text
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)

POINT_KIND = "platform-point"
REPORT_KIND = "platform-recovery"
DATABASE, BUCKET = "database", "bucket"
OK, FAILED = "ok", "failed"


# ---- values ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One database snapshot or one bucket's object point. ``ref`` is the snapshot id, or the point's time
    (ISO) for a bucket; ``at`` is the part's time (the snapshot's ``taken_at``, the point's time)."""

    kind: str  # DATABASE or BUCKET
    name: str
    ref: str
    at: str

    @property
    def label(self) -> str:
        return f"database {self.name} snapshot {self.ref}" if self.kind == DATABASE else \
            f"bucket {self.name} point {self.ref}"

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.at)

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "ref": self.ref, "at": self.at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Part:
        kind, name, ref, at = (str(data[k]) for k in ("kind", "name", "ref", "at"))
        if kind not in (DATABASE, BUCKET):
            raise ValueError(f"part kind {kind!r}")
        require_offset(datetime.fromisoformat(at), "part time")
        if kind == DATABASE:
            layout.snapshot_id_time(ref)
        else:
            require_offset(datetime.fromisoformat(ref), "point time")
        return cls(kind, name, ref, at)


def spread_seconds(parts: Sequence[Part]) -> float:
    """The platform's own consistency window: latest minus earliest part time."""
    times = [p.time for p in parts]
    return (max(times) - min(times)).total_seconds() if times else 0.0


@dataclass(frozen=True)
class PlatformPoint:
    """A recorded platform point as one region holds it (``complete``/``missing`` as recorded there)."""

    point_id: str
    region: str
    taken_at: datetime
    parts: tuple[Part, ...]
    spread_seconds: float
    complete: bool
    missing: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"point_id": self.point_id, "region": self.region, "taken_at": self.taken_at.isoformat(),
                "parts": [p.to_dict() for p in self.parts], "spread_seconds": self.spread_seconds,
                "complete": self.complete, "missing": list(self.missing)}

    @classmethod
    def from_record(cls, body: Mapping[str, Any], region: str) -> PlatformPoint:
        return cls(
            point_id=str(body["point_id"]), region=region,
            taken_at=require_offset(datetime.fromisoformat(str(body["taken_at"])), "taken_at"),
            parts=tuple(Part.from_dict(p) for p in body["parts"]),
            spread_seconds=float(body["spread_seconds"]), complete=bool(body["complete"]),
            missing=tuple(str(m) for m in body["missing"]),
        )


@dataclass(frozen=True)
class RecoveryPlan:
    """What a recovery restores and from where. Holds no secret: it travels in XCom."""

    region: str
    requested_at: str  # the time asked for (`at`), else when the plan was made
    point_time: str  # the oldest part's time: the platform is back to at least this moment
    data_loss_seconds: float  # requested_at minus point_time: the most any part loses
    spread_seconds: float
    parts: tuple[Part, ...]
    point_id: str | None = None  # None: chosen from the catalogs (`at`)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "parts": [p.to_dict() for p in self.parts]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecoveryPlan:
        return cls(**{**data, "parts": tuple(Part.from_dict(p) for p in data["parts"])})

    def lines(self) -> list[str]:
        source = f"point {self.point_id}" if self.point_id else f"the catalogs at {self.requested_at}"
        head = (f"recover {source} from region {self.region}: {len(self.parts)} part(s), spread "
                f"{duration_text(self.spread_seconds)}, data-loss window {duration_text(self.data_loss_seconds)} "
                f"(requested {self.requested_at}, point {self.point_time})")
        return [head, *(f"  {p.label} (taken {p.at})" for p in self.parts)]


def _plan(region: str, requested: datetime, parts: Sequence[Part], point_id: str | None) -> RecoveryPlan:
    oldest = min((p.time for p in parts), default=requested)
    return RecoveryPlan(region=region, requested_at=requested.isoformat(), point_time=oldest.isoformat(),
                        data_loss_seconds=max(0.0, (requested - oldest).total_seconds()),
                        spread_seconds=spread_seconds(parts), parts=tuple(parts), point_id=point_id)


# ---- what a region holds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Holdings:
    """One region's catalog: committed snapshot ids per database, point times per source (oldest first)."""

    snapshots: Mapping[str, list[str]]
    points: Mapping[str, list[datetime]]

    def holds(self, part: Part) -> bool:
        if part.kind == DATABASE:
            return part.ref in self.snapshots.get(part.name, [])
        return datetime.fromisoformat(part.ref) in self.points.get(part.name, [])


def _holdings(config: Config, conns: Connections, region: RegionConfig) -> _Holdings:
    store = conns.store(region, config.transfer)
    store.check_bucket()  # a region that does not answer says so here, not as an empty catalog
    return _Holdings({db.name: catalog.snapshot_ids(store, db.name) for db in config.databases},
                     {s.bucket: objects.point_times(store, s.bucket) for s in config.object_storage})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# ---- recording a point ----------------------------------------------------------------------------------


def record_point(config: Config, conns: Connections, now: datetime | None = None) -> dict[str, Any]:
    """Record a platform point in every region: the newest committed snapshot of each database and the
    newest object point of each source (the newest any region holds), and per region what it lacks.

    A region that does not answer is named in the result (``unreachable``); the others still get the
    point. Raises :class:`NoRegionError` only when no region could be written.
    """
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    if not config.databases and not config.object_storage:
        raise ConfigError("no databases and no object_storage sources are configured: no platform point to record")
    held: dict[str, _Holdings] = {}
    unreachable: dict[str, str] = {}
    for region in config.regions:
        try:
            held[region.name] = _holdings(config, conns, region)
        except StrongroomError as exc:
            unreachable[region.name] = _one_line(exc)
            log.error("platform point: region %s does not answer: %s", region.name, unreachable[region.name])
    if not held:
        raise NoRegionError("no platform point recorded, no region answers: "
                            + "; ".join(f"{r}: {why}" for r, why in unreachable.items()), retryable=True)
    parts: list[Part] = []
    absent: list[str] = []
    for db in config.databases:
        ids = [h.snapshots[db.name][-1] for h in held.values() if h.snapshots[db.name]]
        if not ids:
            absent.append(f"database {db.name} (no committed snapshot in any region)")
            continue
        newest = max(ids)
        holding = [config.region(r) for r, h in held.items() if newest in h.snapshots[db.name]]
        parts.append(Part(DATABASE, db.name, newest, _taken_at(config, conns, db.name, newest, holding).isoformat()))
    for source in config.object_storage:
        times = [h.points[source.bucket][-1] for h in held.values() if h.points[source.bucket]]
        if not times:
            absent.append(f"bucket {source.bucket} (no object point in any region)")
            continue
        at = max(times).isoformat()
        parts.append(Part(BUCKET, source.bucket, at, at))
    point_id = layout.new_platform_id(now)
    key = layout.platform_point_key(point_id)
    spread = spread_seconds(parts)
    written: dict[str, dict[str, Any]] = {}
    for name, holdings in held.items():
        region = config.region(name)
        missing = absent + [p.label for p in parts if not holdings.holds(p)]
        body = {"point_id": point_id, "taken_at": now.isoformat(), "parts": [p.to_dict() for p in parts],
                "spread_seconds": spread, "complete": not missing, "missing": missing, "region": name}
        try:
            records.write(conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region)),
                          key, body, kind=POINT_KIND)
        except StrongroomError as exc:
            unreachable[name] = _one_line(exc)
            log.error("platform point %s not recorded in %s: %s", point_id, name, unreachable[name])
            continue
        written[name] = {"complete": not missing, "missing": missing}
    if not written:
        raise NoRegionError(f"platform point {point_id} recorded in no region: "
                            + "; ".join(f"{r}: {why}" for r, why in unreachable.items()), retryable=True)
    repaired, repair_failed = _repair_points(config, conns, held, list(written), now)
    complete = [r for r, w in written.items() if w["complete"]]
    incomplete = [f"{r} (missing {', '.join(w['missing'])})" for r, w in written.items() if not w["complete"]]
    log.info("platform point %s: %d part(s), spread %s; complete in %s%s%s", point_id, len(parts),
             duration_text(spread), ", ".join(complete) or "no region",
             f"; incomplete in {'; '.join(incomplete)}" if incomplete else "",
             f"; unreachable: {', '.join(unreachable)}" if unreachable else "")
    return {"point_id": point_id, "taken_at": now.isoformat(), "parts": len(parts), "spread_seconds": spread,
            "regions": written, "unreachable": unreachable, "repaired": repaired, "repair_failed": repair_failed}


def _repair_points(
    config: Config, conns: Connections, held: Mapping[str, _Holdings], targets: list[str], now: datetime
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Record in each of ``targets`` the platform points of the window other regions hold and it lacks
    (recorded while it was down), so every region lists the same points. A point is re-recorded, not copied:
    each region's record is sealed with its own keyring and says what *that* region holds, so its
    ``complete``/``missing`` are worked out again from ``held`` (the region's catalog at this run) and the
    record names the region it was taken from (``copied_from``). Only points that authenticate where they
    are read are recorded; a junk one is skipped with a warning. Points that leave the window within
    :data:`strongroom.replication.REPAIR_MARGIN` are not. A region whose repair fails is returned with its
    error; the others go on."""
    from strongroom.replication import REPAIR_MARGIN

    oldest = now - config.retention + REPAIR_MARGIN
    ids: dict[str, set[str]] = {}
    for name in held:
        try:
            keys = conns.store(config.region(name), config.transfer).list_objects(layout.PLATFORM_POINTS)
            ids[name] = {p for p in (layout.parse_platform_point_key(info.key) for info in keys) if p}
        except StrongroomError as exc:
            log.warning("platform points of %s unlisted, not repaired from or into it: %s", name, _one_line(exc))
    repaired: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    for name in (t for t in targets if t in ids):
        lacking = sorted({p for other, ps in ids.items() if other != name for p in ps
                          if layout.platform_id_time(p) > oldest} - ids[name])
        region = config.region(name)
        try:
            store, keyring = conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region))
            for point_id in lacking:

                def read_from(where: RegionConfig, point_id: str = point_id, name: str = name) -> PlatformPoint:
                    if where.name == name or point_id not in ids.get(where.name, set()):
                        raise NotFoundError(f"{where.name} does not hold it")
                    point = _read_point(conns.store(where, config.transfer),
                                        conns.keyring(config.keyring_conn_id(where)), where, point_id)
                    if point is None:  # junk there (warned): the next region that holds it
                        raise IntegrityError(f"not authentic in {where.name}")
                    return point

                try:
                    answer = regions.first_answer(config, f"platform point {point_id} for {name}", read_from)
                except StrongroomError as exc:  # an origin that stopped answering is not this region's failure
                    log.warning("platform point %s authenticates in no region that holds it: not recorded in "
                                "%s (%s)", point_id, name, _one_line(exc))
                    continue
                point, origin = answer.value, answer.region
                labels = {p.label for p in point.parts}
                missing = [m for m in point.missing if m not in labels]  # parts no region had then
                missing += [p.label for p in point.parts if not held[name].holds(p)]
                body = {**point.to_dict(), "region": name, "complete": not missing, "missing": missing,
                        "copied_from": origin.name, "copied_at": now.isoformat()}
                records.write(store, keyring, layout.platform_point_key(point_id), body, kind=POINT_KIND)
                repaired.setdefault(name, []).append(point_id)
                log.info("platform point %s recorded in %s from %s (%s)", point_id, name, origin.name,
                         "complete" if not missing else f"missing {', '.join(missing)}")
        except StrongroomError as exc:
            failed[name] = _one_line(exc)
            log.error("platform points not repaired in %s: %s", name, failed[name])
    return repaired, failed


def _taken_at(config: Config, conns: Connections, database: str, snapshot_id: str,
              holding: Iterable[RegionConfig]) -> datetime:
    """The snapshot's ``taken_at`` from its authenticated manifest (the first region that reads it); its
    id's time when none does (the id is named after the same second)."""
    for region in holding:
        try:
            store = conns.store(region, config.transfer)
            keyring = conns.keyring(config.keyring_conn_id(region))
            return catalog.load_manifest(store, keyring, database, snapshot_id).taken_at
        except StrongroomError as exc:
            log.warning("manifest of %s snapshot %s unreadable in %s: %s", database, snapshot_id, region.name, exc)
    return layout.snapshot_id_time(snapshot_id)


# ---- reading points -------------------------------------------------------------------------------------


def _points_in(config: Config, conns: Connections, region: RegionConfig) -> list[PlatformPoint]:
    """The authenticated points one region holds, newest first; a bad record is skipped with a warning."""
    store = conns.store(region, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(region))
    found = []
    for info in store.list_objects(layout.PLATFORM_POINTS):
        point_id = layout.parse_platform_point_key(info.key)
        if point_id is None:
            continue
        point = _read_point(store, keyring, region, point_id)
        if point is not None:
            found.append(point)
    return sorted(found, key=lambda p: (p.taken_at, p.point_id), reverse=True)


def _read_point(store: ObjectStore, keyring: Any, region: RegionConfig, point_id: str) -> PlatformPoint | None:
    key = layout.platform_point_key(point_id)
    try:
        body = records.read(store, keyring, key, kind=POINT_KIND, times=("taken_at",))
        if body is None:
            return None
        point = PlatformPoint.from_record(body, region.name)
        if point.point_id != point_id:
            raise IntegrityError(f"{POINT_KIND} record {key} names another point ({point.point_id})")
        return point
    except (IntegrityError, ConfigError, NotFoundError) as exc:
        log.warning("platform point %s in %s skipped: %s", point_id, region.name, _one_line(exc))
    except (KeyError, ValueError, TypeError) as exc:
        log.warning("platform point %s in %s skipped: malformed record (%s)", point_id, region.name, exc)
    return None


@dataclass(frozen=True)
class PointListing:
    """The points the regions that could be read hold, and why each other region could not be read."""

    points: list[PlatformPoint]
    unreadable: dict[str, str]  # region -> the reason, one line


def read_points(config: Config, conns: Connections, region: str | None = None) -> PointListing:
    """Every authenticated platform point in ``region`` (else in every region that can be read), newest
    first, one entry per point and region. A forged or unreadable record is skipped with one warning; a
    region that cannot be read is named in ``unreadable`` with its reason (the named region's error is
    raised). Raises :class:`NoRegionError` naming every region and why when none can be read."""
    found: list[PlatformPoint] = []
    unreadable: dict[str, str] = {}
    read = 0
    for where in regions.candidates(config, region):
        try:
            found += _points_in(config, conns, where)
            read += 1
        except StrongroomError as exc:
            if region:
                raise
            unreadable[where.name] = _one_line(exc)
            log.warning("platform points of region %s unreadable: %s", where.name, unreadable[where.name])
    if not read:
        raise NoRegionError("no region could be read for the platform points: "
                            + "; ".join(f"{r}: {why}" for r, why in unreadable.items()), retryable=True)
    order = {r.name: i for i, r in enumerate(config.regions)}
    return PointListing(sorted(found, key=lambda p: (-p.taken_at.timestamp(), p.point_id, order[p.region])),
                        unreadable)


def list_points(config: Config, conns: Connections, region: str | None = None) -> list[PlatformPoint]:
    """The points of :func:`read_points` (a region that cannot be read is logged and passed over)."""
    return read_points(config, conns, region).points


# ---- planning -------------------------------------------------------------------------------------------


def plan_recovery(
    config: Config, conns: Connections, *, at: datetime | None = None, point_id: str | None = None,
    region: str | None = None, now: datetime | None = None,
) -> RecoveryPlan:
    """Decide what a recovery restores and from which region; reads catalogs and records, changes nothing.

    With ``point_id`` the recorded point; with ``at`` the catalogs alone (per database the newest snapshot
    taken at or before ``at``, per source its newest point at or before ``at``); with neither the newest
    point recorded complete. ``region=None``: the first region in configured order that answers and holds
    every part. A region (chosen or given) that lacks a part is refused in one line naming the part.
    """
    if at is not None and point_id:
        raise ConfigError("choose a point (`point_id`) or a time (`at`), not both")
    if region:
        config.region(region)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    if at is not None:
        require_offset(at, "at")
        return _plan_at(config, conns, at, region)
    if point_id:
        layout.platform_id_time(point_id)
        point = _find_point(config, conns, point_id, region)
    else:
        point = _newest_complete(config, conns, region)
    what = f"platform point {point.point_id}"

    def lacking(where: RegionConfig) -> tuple[list[Part], list[str]]:
        holdings = _holdings(config, conns, where)
        return list(point.parts), [p.label for p in point.parts if not holdings.holds(p)]

    where, parts = _choose_region(config, what, lacking, region)
    return _plan(where, now, parts, point.point_id)


def _plan_at(config: Config, conns: Connections, at: datetime, region: str | None) -> RecoveryPlan:
    def lacking(where: RegionConfig) -> tuple[list[Part], list[str]]:
        store = conns.store(where, config.transfer)
        keyring = conns.keyring(config.keyring_conn_id(where))
        holdings = _holdings(config, conns, where)
        parts: list[Part] = []
        missing: list[str] = []
        for db in config.databases:
            if not any(layout.snapshot_id_time(i) <= at for i in holdings.snapshots[db.name]):
                missing.append(f"database {db.name} (no snapshot taken at or before {at.isoformat()})")
                continue
            try:
                manifest = catalog.select_snapshot(store, keyring, db.name, at=at)
            except NotFoundError as exc:
                missing.append(f"database {db.name} ({_one_line(exc)})")
                continue
            parts.append(Part(DATABASE, db.name, manifest.snapshot_id, manifest.taken_at.isoformat()))
        for source in config.object_storage:
            times = [t for t in holdings.points[source.bucket] if t <= at]
            if not times:
                missing.append(f"bucket {source.bucket} (no point at or before {at.isoformat()})")
                continue
            parts.append(Part(BUCKET, source.bucket, times[-1].isoformat(), times[-1].isoformat()))
        return parts, missing

    where, parts = _choose_region(config, f"the platform at {at.isoformat()}", lacking, region)
    return _plan(where, at, parts, None)


def _choose_region(
    config: Config, what: str, lacking: Callable[[RegionConfig], tuple[list[Part], list[str]]],
    region: str | None,
) -> tuple[str, list[Part]]:
    """The named region, else the first in configured order that answers and holds every part
    (:func:`strongroom.regions.first_answer`; a region lacking a part is passed over like an empty one)."""
    answer = regions.first_answer(config, what, lacking, region=region,
                                  empty=lambda found: f"lacks {', '.join(found[1])}" if found[1] else None)
    parts, missing = answer.value
    if not missing:
        return answer.region.name, parts
    if region:
        raise NotFoundError(f"{what} cannot be recovered from region {answer.region.name}: it lacks "
                            + ", ".join(missing))
    reasons = [f"{answer.region.name}: lacks {', '.join(missing)}", *answer.unavailable]
    raise NoRegionError(f"no region holds every part of {what}: " + "; ".join(reasons),
                        retryable=any(s.retryable for s in answer.skipped))


def _find_point(config: Config, conns: Connections, point_id: str, region: str | None) -> PlatformPoint:
    def read(where: RegionConfig) -> PlatformPoint:
        store = conns.store(where, config.transfer)
        point = _read_point(store, conns.keyring(config.keyring_conn_id(where)), where, point_id)
        if point is None:
            raise NotFoundError(f"no authenticated platform point {point_id} in region {where.name}")
        return point

    return regions.first_answer(config, f"platform point {point_id}", read, region=region).value


def _newest_complete(config: Config, conns: Connections, region: str | None) -> PlatformPoint:
    points = list_points(config, conns, region)
    for point in points:
        if point.complete:
            return point
    where = f"region {region}" if region else "any region"
    newest = f" (the newest, {points[0].point_id}, misses {', '.join(points[0].missing)})" if points else ""
    raise NotFoundError(f"no complete platform point in {where}{newest}: recover with `at` from the catalogs, "
                        "or name a `point_id`")


# ---- executing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryTargets:
    """Where each part goes: configured database -> target database, configured source -> target bucket."""

    databases: Mapping[str, PgSettings] = field(default_factory=dict)
    buckets: Mapping[str, ObjectStore] = field(default_factory=dict)


def targets_from_config(config: Config, conns: Connections) -> RecoveryTargets:
    """The targets of the ``recovery`` section, through their connections."""
    return RecoveryTargets(
        databases={name: conns.postgres(conn_id) for name, conn_id in config.recovery.databases.items()},
        buckets={name: conns.bucket_store(t.aws_conn_id, t.bucket, None, config.transfer)
                 for name, t in config.recovery.buckets.items()},
    )


@dataclass(frozen=True)
class PartResult:
    kind: str
    name: str
    ref: str
    region: str
    target: str
    result: str  # OK or FAILED
    seconds: float
    bytes: int = 0
    detail: str = ""  # tables and rows verified, objects written
    error: str | None = None

    @property
    def label(self) -> str:
        return Part(self.kind, self.name, self.ref, self.ref).label

    def line(self) -> str:
        outcome = self.detail if self.result == OK else f"FAILED: {self.error}"
        return (f"{self.label} from {self.region} into {self.target}: {outcome} "
                f"({self.bytes} bytes, {duration_text(self.seconds)})")


@dataclass(frozen=True)
class RecoveryReport:
    recovery_id: str
    region: str
    point_id: str | None
    requested_at: str
    point_time: str
    data_loss_seconds: float
    spread_seconds: float
    started_at: str
    total_seconds: float
    rto_seconds: float
    slowest: str | None
    parts: tuple[PartResult, ...]
    stored_in: tuple[str, ...] = ()
    report_key: str | None = None
    # production database -> the safety snapshot taken of it before it was overwritten
    safety_snapshots: Mapping[str, str] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return all(p.result == OK for p in self.parts)

    @property
    def within_rto(self) -> bool:
        return self.total_seconds <= self.rto_seconds

    @property
    def failed(self) -> list[PartResult]:
        return [p for p in self.parts if p.result != OK]

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "parts": [dict(p.__dict__) for p in self.parts], "stored_in": list(self.stored_in),
                "safety_snapshots": dict(self.safety_snapshots), "success": self.success,
                "within_rto": self.within_rto}

    def headline(self) -> str:
        ok = len(self.parts) - len(self.failed)
        rto = "within" if self.within_rto else "OVER"
        return (f"recovery {self.recovery_id} from {self.region}: {ok} of {len(self.parts)} part(s) restored in "
                f"{duration_text(self.total_seconds)} ({rto} the RTO of {duration_text(self.rto_seconds)}; slowest "
                f"{self.slowest or '-'}); data-loss window {duration_text(self.data_loss_seconds)}")

    def lines(self) -> list[str]:
        safety = [f"  safety snapshot of production database {name} before it was overwritten: {sid}"
                  for name, sid in sorted(self.safety_snapshots.items())]
        return [self.headline(), *safety, *(f"  {p.line()}" for p in self.parts)]

    def summary(self) -> dict[str, Any]:
        """Small enough for a task's XCom and its one summary line."""
        return {"recovery_id": self.recovery_id, "region": self.region, "point_id": self.point_id,
                "total_seconds": self.total_seconds, "rto_seconds": self.rto_seconds, "within_rto": self.within_rto,
                "slowest": self.slowest, "failed": [p.label for p in self.failed], "report_key": self.report_key,
                "safety_snapshots": dict(self.safety_snapshots)}


def check_targets(
    config: Config, conns: Connections, plan: RecoveryPlan, targets: RecoveryTargets,
    confirm_production: Iterable[str] = (),
) -> set[str]:
    """Refuse, before anything is touched, a part without a target, a production target whose name was not
    confirmed, a confirmation that names no production target, and a non-production target that is not new
    or empty. Returns the confirmed production targets (restored over their contents)."""
    confirmed = set(confirm_production)
    problems: list[str] = []
    production: set[str] = set()
    for part in plan.parts:
        if part.kind == DATABASE:
            db_target = targets.databases.get(part.name)
            if db_target is None:
                problems.append(f"no recovery target for database {part.name} (recovery.databases)")
                continue
            source = restore.production_source(config, conns, db_target)
            state = postgres.inspect_target(db_target)
            if source:
                production.add(source)
                if source not in confirmed:
                    problems.append(f"target {db_target.describe()} of {part.name} is the production database "
                                    f"{source}: confirm with `confirm_production={source}`")
            elif state.exists and state.relations:
                problems.append(f"target {db_target.describe()} of {part.name} is not empty ({state.relations} "
                                "relations): recover into a new or empty database")
            continue
        bucket_target = targets.buckets.get(part.name)
        if bucket_target is None:
            problems.append(f"no recovery target for bucket {part.name} (recovery.buckets)")
            continue
        sources = {s.bucket for s in config.object_storage}
        if bucket_target.bucket in sources:
            production.add(bucket_target.bucket)
        if bucket_target.bucket == part.name and part.name not in confirmed:
            problems.append(f"target bucket {bucket_target.bucket} is the live source bucket {part.name}: confirm "
                            f"with `confirm_production={part.name}`")
            continue
        try:
            objects.check_target_bucket(config, bucket_target.bucket, part.name,
                                        part.name if part.name in confirmed else None)
            bucket_target.check_bucket()
            if bucket_target.bucket not in sources and next(iter(bucket_target.list_objects("")), None):
                problems.append(f"target bucket {bucket_target.bucket} of {part.name} is not empty: "
                                "recover into an empty bucket")
        except StrongroomError as exc:
            problems.append(_one_line(exc))
    for name in sorted(confirmed - production):
        problems.append(f"`confirm_production={name}` names no production target of this recovery")
    if problems:
        raise RefusedError("recovery refused, nothing was restored: " + "; ".join(problems))
    return confirmed & production


def execute_recovery(
    config: Config, conns: Connections, plan: RecoveryPlan, targets: RecoveryTargets, *,
    confirm_production: Iterable[str] | None = None, concurrency: int | None = None,
    missing_roles: str = restore.ROLES_REFUSE,
) -> RecoveryReport:
    """Restore every part of ``plan`` into ``targets``, ``recovery.concurrency`` at a time, each through the
    single-restore pipeline and its checks. Nothing starts unless :func:`check_targets` passes. A failed
    part does not stop the others; the report names it (:func:`require_success` raises for it). The report
    is stored in every region that answers. ``missing_roles`` is the single restore's (the platform drill
    creates them on its throwaway servers)."""
    overwrite = check_targets(config, conns, plan, targets, confirm_production or ())
    started_at = datetime.now(UTC)
    started = time.monotonic()
    safety = take_safety_snapshots(config, conns, plan, targets, overwrite)
    workers = concurrency or config.recovery.concurrency
    log.info("recovering %d part(s) from %s, %d at a time", len(plan.parts), plan.region, workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recover") as pool:
        results = list(pool.map(lambda p: _recover_part(config, conns, plan, p, targets, overwrite, missing_roles),
                                plan.parts))
    total = round(time.monotonic() - started, 3)
    slowest = max(results, key=lambda r: r.seconds, default=None)
    report = RecoveryReport(
        recovery_id=layout.new_platform_id(started_at), region=plan.region, point_id=plan.point_id,
        requested_at=plan.requested_at, point_time=plan.point_time, data_loss_seconds=plan.data_loss_seconds,
        spread_seconds=plan.spread_seconds, started_at=started_at.isoformat(), total_seconds=total,
        rto_seconds=config.recovery.rto.total_seconds(),
        slowest=f"{slowest.label} ({duration_text(slowest.seconds)})" if slowest else None, parts=tuple(results),
        safety_snapshots=safety,
    )
    report = _store_report(config, conns, report)
    log.info("%s", report.headline())
    return report


def take_safety_snapshots(
    config: Config, conns: Connections, plan: RecoveryPlan, targets: RecoveryTargets, production: set[str],
) -> dict[str, str]:
    """Before anything is overwritten: for every database target that is a confirmed production database
    and exists, its safety snapshot (:func:`strongroom.restore.safety_snapshot`, as a single restore over
    production takes it: committed in every region). One that cannot be taken refuses the recovery with
    :class:`RefusedError`, and no part is restored. Returns production database -> safety snapshot id."""
    taken: dict[str, str] = {}
    for part in plan.parts:
        target = targets.databases.get(part.name) if part.kind == DATABASE else None
        if target is None:
            continue
        source = restore.production_source(config, conns, target)
        if source is None or source not in production or source in taken:
            continue
        if not postgres.inspect_target(target).exists:  # nothing there to lose
            continue
        try:
            taken[source] = restore.safety_snapshot(config, conns, source, "the platform recovery")
        except StrongroomError as exc:
            earlier = f" (safety snapshots taken: {', '.join(f'{n} {i}' for n, i in taken.items())})" if taken else ""
            raise RefusedError(f"recovery refused, nothing was restored: the safety snapshot of the production "
                               f"database {source} could not be taken: {_one_line(exc)}{earlier}") from None
    return taken


def _recover_part(
    config: Config, conns: Connections, plan: RecoveryPlan, part: Part, targets: RecoveryTargets,
    overwrite: set[str], missing_roles: str = restore.ROLES_REFUSE,
) -> PartResult:
    started = time.monotonic()
    size, detail, target = 0, "", ""
    try:
        if part.kind == DATABASE:
            settings = targets.databases[part.name]
            target = settings.describe()
            where = config.region(plan.region)
            manifest = catalog.load_manifest(conns.store(where, config.transfer),
                                             conns.keyring(config.keyring_conn_id(where)), part.name, part.ref)
            size = int(manifest.summary()["stored_bytes"])
            done = restore.restore_snapshot(config, part.name, settings, conns, snapshot_id=part.ref,
                                            region=plan.region, clean=part.name in overwrite,
                                            missing_roles=missing_roles)
            detail = f"{done.tables} tables, {done.rows} rows verified"
        else:
            store = targets.buckets[part.name]
            target = f"s3://{store.bucket}"
            wanted = datetime.fromisoformat(part.ref)
            written = objects.restore_point(config, conns, part.name, wanted, store, region=plan.region,
                                            allow_source=part.name if part.name in overwrite else None)
            if datetime.fromisoformat(written["point"]) != wanted:
                raise IntegrityError(f"{part.label}: region {plan.region} served point {written['point']} instead")
            size = int(written["bytes"])
            detail = f"{written['objects']} objects verified and written"
    except StrongroomError as exc:
        log.error("%s: FAILED: %s", part.label, _one_line(exc))
        return PartResult(part.kind, part.name, part.ref, plan.region, target, FAILED,
                          round(time.monotonic() - started, 3), size, error=_one_line(exc))
    seconds = round(time.monotonic() - started, 3)
    log.info("%s restored into %s: %s (%s)", part.label, target, detail, duration_text(seconds))
    return PartResult(part.kind, part.name, part.ref, plan.region, target, OK, seconds, size, detail)


def _store_report(config: Config, conns: Connections, report: RecoveryReport) -> RecoveryReport:
    """The report as an authenticated record in every region that answers (a lost region is expected)."""
    key = layout.recovery_report_key(report.recovery_id)
    stored = []
    for region in config.regions:
        try:
            records.write(conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region)),
                          key, dict(report.to_dict(), stored_in=region.name, report_key=key), kind=REPORT_KIND)
            stored.append(region.name)
        except StrongroomError as exc:
            log.warning("recovery report not stored in %s: %s", region.name, _one_line(exc))
    return RecoveryReport(**{**report.__dict__, "stored_in": tuple(stored), "report_key": key if stored else None})


def require_success(report: RecoveryReport) -> RecoveryReport:
    """Raise :class:`RecoveryError` naming every failed part (the others were restored)."""
    if report.failed:
        raise RecoveryError(f"recovery {report.recovery_id} failed for " + "; ".join(
            f"{p.label} ({p.error})" for p in report.failed) + f"; {len(report.parts) - len(report.failed)} other "
            "part(s) were restored")
    return report


def read_report(config: Config, conns: Connections, recovery_id: str, region: str | None = None) -> dict[str, Any]:
    """A stored recovery report (authenticated), from ``region`` or the first region that holds it."""
    key = layout.recovery_report_key(recovery_id)

    def read(where: RegionConfig) -> dict[str, Any]:
        body = records.read(conns.store(where, config.transfer), conns.keyring(config.keyring_conn_id(where)), key,
                            kind=REPORT_KIND, times=("started_at",))
        if body is None:
            raise NotFoundError(f"no recovery report {recovery_id} in region {where.name}")
        return body

    return regions.first_answer(config, f"recovery report {recovery_id}", read, region=region).value


# ---- the recover_platform DAG ---------------------------------------------------------------------------


def parse_form_choice(point: str | None, at: str | None) -> tuple[str | None, datetime | None]:
    """The trigger form's ``point`` (empty: the newest complete point) and ``at`` (empty, or a time with a
    UTC offset, as the form's date-time picker sends it; one without is refused, :func:`config.parse_time`)."""
    point_id = (point or "").strip() or None
    if point_id:
        layout.platform_id_time(point_id)
    if not (at or "").strip():
        return point_id, None
    return point_id, parse_time(str(at), "at")


def confirmations(text: str | None) -> list[str]:
    """The names typed to confirm production targets: comma (or space) separated."""
    return [name for name in (text or "").replace(",", " ").split() if name]


def approval_subject(production: Iterable[str]) -> str:
    """What a second person approves: the recovery over exactly these production sources."""
    return "platform recovery over production " + ", ".join(sorted(production))


def execute_approved(
    config: Config, conns: Connections, plan: RecoveryPlan, targets: RecoveryTargets, confirm_production: Iterable[str],
    *, clearance: Any, run: approval.Run, keyring: Keyring,
) -> RecoveryReport:
    """:func:`execute_recovery` for the DAG: when any target is a production source (decided again here, from
    the targets themselves, not from the plan), only with the sealed approval of a second person for exactly
    those sources (:func:`strongroom.approval.verify`); refused before anything is touched otherwise."""
    confirmed = list(confirm_production)
    production = check_targets(config, conns, plan, targets, confirmed)
    if production:
        approver = approval.verify(clearance, run, keyring, approval_subject(production))
        log.info("recovery over production %s approved by %s", ", ".join(sorted(production)), approver)
    return execute_recovery(config, conns, plan, targets, confirm_production=confirmed)
