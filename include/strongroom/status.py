"""``strongroom status``: per database and region, the newest committed snapshot, its age, the gaps
(snapshots another region holds and this one lacks), and the last error.

It reads the buckets themselves, never Airflow's database, so it works when Airflow is what broke.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom import catalog, layout, objects, records
from strongroom.config import Config, RegionConfig
from strongroom.connections import Connections
from strongroom.errors import IntegrityError, KeyringError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.regions import first_answer_or
from strongroom.replication import COMMITTED, RUN_RECORD_KIND
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegionStatus:
    database: str
    region: str
    newest: str | None
    newest_taken_at: str | None
    age_seconds: int | None
    snapshots: int
    gaps: list[str] = field(default_factory=list)
    last_error: str | None = None
    kind: str = "database"  # or "bucket": an object-storage source, whose snapshots are points
    # records and manifests in this region that failed authentication or lie in the future: ignored
    unauthenticated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_status(config: Config, conns: Connections, now: datetime | None = None) -> list[RegionStatus]:
    now = now or datetime.now(UTC)
    listings: dict[str, dict[str, list[str]]] = {}
    errors: dict[str, str] = {}
    bad: dict[str, list[str]] = {}
    last_run: dict[str, Any] = {}
    for region in config.regions:
        bad[region.name] = []
        try:
            store = conns.store(region, config.transfer)
            keyring = conns.keyring(config.keyring_conn_id(region))
            listings[region.name] = {
                db.name: _authenticated_ids(store, keyring, db.name, now, bad[region.name]) for db in config.databases}
            for source in config.object_storage:
                listings[region.name]["bucket:" + source.bucket] = [
                    layout.stamp(t) for t in objects.point_times(store, source.bucket)
                    if not records.in_future(t, now)]
            try:
                record = records.read(store, keyring, layout.RUN_RECORD_KEY, kind=RUN_RECORD_KIND, times=["checked_at"],
                                      now=now) or {}
            except IntegrityError as exc:
                log.warning("ignoring %s", exc)
                bad[region.name].append(str(exc))
                record = {}
            if str(record.get("checked_at", "")) > str(last_run.get("checked_at", "")):
                last_run = record
        except StrongroomError as exc:
            errors[region.name] = f"unreachable: {exc}"
    rows = []
    for db in config.databases:
        everywhere = sorted({i for ids in listings.values() for i in ids.get(db.name, [])})
        live = [i for i in everywhere if layout.snapshot_id_time(i) + config.retention > now]
        for region in config.regions:
            ids = listings.get(region.name, {}).get(db.name)
            newest = ids[-1] if ids else None
            taken = layout.snapshot_id_time(newest) if newest else None
            run_outcome = last_run.get("results", {}).get(db.name, {}).get(region.name)
            error = errors.get(region.name) or (run_outcome if run_outcome not in (None, COMMITTED) else None)
            elsewhere = {r: len(i.get(db.name, [])) for r, i in listings.items() if i.get(db.name)}
            if region.name == config.primary.name and ids == [] and elsewhere:
                # an emptied (or swapped) primary bucket is a failure, not "no snapshots yet"
                other, count = next(iter(elsewhere.items()))
                error = f"FAILED: the primary holds no snapshot of {db.name} while {other} holds {count}"
            rows.append(RegionStatus(
                database=db.name,
                region=region.name,
                newest=newest,
                newest_taken_at=taken.isoformat() if taken else None,
                age_seconds=int((now - taken).total_seconds()) if taken else None,
                snapshots=len(ids or []),
                gaps=[] if ids is None else [i for i in live if i not in set(ids)],
                last_error=error,
                unauthenticated=list(bad.get(region.name, [])),
            ))
    for source in config.object_storage:
        name = "bucket:" + source.bucket
        everywhere = sorted({i for ids in listings.values() for i in ids.get(name, [])})
        live = [i for i in everywhere if layout.parse_stamp(i) + config.retention > now]
        for region in config.regions:
            ids = listings.get(region.name, {}).get(name)
            newest = ids[-1] if ids else None
            taken = layout.parse_stamp(newest) if newest else None
            rows.append(RegionStatus(
                database=source.bucket, region=region.name, newest=newest,
                newest_taken_at=taken.isoformat() if taken else None,
                age_seconds=int((now - taken).total_seconds()) if taken else None,
                snapshots=len(ids or []), gaps=[] if ids is None else [i for i in live if i not in set(ids)],
                last_error=errors.get(region.name), kind="bucket",
                unauthenticated=list(bad.get(region.name, [])),
            ))
    return rows


def _authenticated_ids(
    store: ObjectStore, keyring: Keyring, database: str, now: datetime, bad: list[str]
) -> list[str]:
    """Committed snapshot ids, oldest first, with the newest proven by its authenticated manifest.

    A manifest key is only a name anyone with write access could create: ids in the future are dropped,
    and the newest is the newest whose manifest authenticates (the others are listed in ``bad``), so a
    junk or future-dated key can neither pose as a fresh backup nor silence a staleness alert.
    """
    ids = []
    for snapshot_id in catalog.snapshot_ids(store, database):
        if records.in_future(layout.snapshot_id_time(snapshot_id), now):
            bad.append(f"manifest {layout.manifest_key(database, snapshot_id)} is dated in the future")
        else:
            ids.append(snapshot_id)
    while ids:
        try:
            manifest = catalog.load_manifest(store, keyring, database, ids[-1])
            if not records.in_future(manifest.taken_at, now):
                break
            bad.append(f"manifest {layout.manifest_key(database, ids[-1])} was taken in the future")
        except (IntegrityError, KeyringError) as exc:
            bad.append(str(exc))
        log.warning("ignoring %s", bad[-1])
        ids.pop()
    return ids


def size_trends(config: Config, conns: Connections) -> dict[str, list[dict[str, Any]]]:
    """Per database, the stored size of every committed snapshot, oldest first, from one listing of its data.

    Read from the primary region, else the next region that answers (none: empty); the sizes are of the
    stored (compressed, encrypted) objects, as the bill and the restore download see them.
    """

    def trends_in(region: RegionConfig) -> dict[str, list[dict[str, Any]]]:
        store = conns.store(region, config.transfer)
        trends: dict[str, list[dict[str, Any]]] = {}
        for db in config.databases:
            committed = set(catalog.snapshot_ids(store, db.name))
            sizes: dict[str, int] = {}
            for obj in store.list_objects(layout.data_prefix(db.name)):
                parsed = layout.parse_snapshot_key(obj.key)
                if parsed and parsed.snapshot_id in committed:
                    sizes[parsed.snapshot_id] = sizes.get(parsed.snapshot_id, 0) + obj.size
            trends[db.name] = [
                {"snapshot_id": i, "taken_at": layout.snapshot_id_time(i).isoformat(), "stored_bytes": n}
                for i, n in sorted(sizes.items())
            ]
        return trends

    return first_answer_or(config, "the snapshot sizes", trends_in, {})
