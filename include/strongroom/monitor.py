"""The staleness monitor: is every database backed up recently, restorable, and restore-tested?

It reads the buckets themselves (``strongroom.status``, ``strongroom.keycheck`` and the restore-test
results), never Airflow's database, which may be what broke. The decision is pure and table-tested:
:func:`find_conditions` turns what was read into conditions, :func:`plan_alerts` decides which of them to
alert on now (a condition that persists alerts again at most once per ``repeat``). :func:`run_monitor`
reads, decides, sends and records the last-alert state in the bucket (``status/monitor.json``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom.alerts import SUBJECT_PREFIX, Alert
from strongroom.config import Config
from strongroom.connections import Connections
from strongroom.drill import RESULT_PREFIX
from strongroom.errors import StrongroomError
from strongroom.keycheck import KeyReport, check_keys
from strongroom.metrics import Metric, age_metrics
from strongroom.pools import PoolDrift
from strongroom.status import RegionStatus, collect_status, size_trends

log = logging.getLogger(__name__)

STATE_KEY = "status/monitor.json"
REPEAT = timedelta(hours=1)
RPO = timedelta(hours=1)  # the promised recovery point: green below it


@dataclass(frozen=True)
class Condition:
    """Something wrong. ``key`` identifies it across runs (for repeat suppression)."""

    key: str
    kind: str  # stale | unreachable | missing_key | keycheck | restore_failed | restore_overdue
    message: str


@dataclass(frozen=True)
class RestoreTestSummary:
    database: str
    tested_at: datetime
    success: bool
    snapshot_id: str = ""
    region: str = ""
    restore_seconds: float | None = None
    headline: str = ""
    result_key: str = ""
    docs_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "tested_at": self.tested_at.isoformat(), "success": self.success,
                "snapshot_id": self.snapshot_id, "region": self.region, "restore_seconds": self.restore_seconds,
                "headline": self.headline, "result_key": self.result_key, "docs_key": self.docs_key}


@dataclass(frozen=True)
class MonitorPlan:
    send: list[Condition]
    suppressed: list[Condition]
    resolved: list[str]
    state: dict[str, str]  # condition key -> when it was last alerted (ISO)

    def alert(self, now: datetime) -> Alert | None:
        if not self.send:
            return None
        kinds = sorted({c.kind for c in self.send})
        first = self.send[0].message
        more = f" (+{len(self.send) - 1} more)" if len(self.send) > 1 else ""
        return Alert(
            subject=f"{SUBJECT_PREFIX} backup monitor: {first}{more}",
            facts=[("DAG", "backup_monitor"), ("checked at", now.isoformat(timespec="seconds")),
                   ("conditions", ", ".join(kinds))],
            details=[c.message for c in self.send]
            + [f"(still open, alerted within the last hour: {c.message})" for c in self.suppressed],
        )


def rag(age_seconds: int | None, threshold: timedelta, rpo: timedelta = RPO) -> str:
    """green below the RPO, amber up to the alert threshold, red beyond it or when there is no backup."""
    if age_seconds is None:
        return "red"
    if age_seconds < rpo.total_seconds():
        return "green"
    return "amber" if age_seconds <= threshold.total_seconds() else "red"


def restore_overdue_after(config: Config) -> timedelta:
    """A restore test is overdue when none finished within a day plus its own time budget and an hour."""
    return timedelta(days=1) + config.restore_test.rto + timedelta(hours=1)


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def find_conditions(
    *, databases: Sequence[str], status: Sequence[RegionStatus], keys: KeyReport | str | None,
    restore_tests: Mapping[str, RestoreTestSummary], threshold: timedelta, restore_overdue: timedelta,
    now: datetime, pools: PoolDrift | str | None = None,
) -> list[Condition]:
    """Everything wrong, from what was read. ``keys`` and ``pools`` are a report, or the error that stopped
    the check (``pools`` None: not checked)."""
    out: list[Condition] = []
    unreachable: set[str] = set()
    for row in status:
        if row.last_error and row.last_error.startswith("unreachable") and row.region not in unreachable:
            unreachable.add(row.region)
            out.append(Condition(f"unreachable:{row.region}", "unreachable",
                                 f"region {row.region} could not be read: {row.last_error}"))
    for row in status:
        if row.region in unreachable:
            continue  # said once per region above; its age is unknown, not stale
        if row.age_seconds is None:
            out.append(Condition(f"stale:{row.database}:{row.region}", "stale",
                                 f"{row.database} has no committed snapshot in {row.region}"))
        elif row.age_seconds > threshold.total_seconds():
            why = f"; last error: {row.last_error}" if row.last_error else ""
            out.append(Condition(
                f"stale:{row.database}:{row.region}", "stale",
                f"{row.database} in {row.region}: newest snapshot {row.newest} is {_age(row.age_seconds)} old "
                f"(threshold {_age(threshold.total_seconds())}){why}"))
    if isinstance(keys, str):
        out.append(Condition("keycheck", "keycheck", f"the key check could not run: {keys}"))
    elif keys is not None:
        for key_id, where in sorted(keys.missing.items()):
            out.append(Condition(f"missing_key:{key_id}", "missing_key",
                                 f"the keyring lacks key id {key_id!r} needed by {len(where)} snapshot(s), "
                                 f"e.g. {where[0]}"))
        for bad in keys.unreadable:
            out.append(Condition(f"unreadable:{bad}", "missing_key", f"manifest {bad} could not be read"))
    for database in databases:
        test = restore_tests.get(database)
        if test is None:
            out.append(Condition(f"restore_overdue:{database}", "restore_overdue",
                                 f"{database} has no restore test on record"))
            continue
        if not test.success:
            out.append(Condition(f"restore_failed:{database}:{test.tested_at.isoformat()}", "restore_failed",
                                 f"the last restore test of {database} failed: {test.headline}"))
        if now - test.tested_at > restore_overdue:
            ago = _age((now - test.tested_at).total_seconds())
            out.append(Condition(f"restore_overdue:{database}", "restore_overdue",
                                 f"the last restore test of {database} ran {ago} ago "
                                 f"(due every {_age(restore_overdue.total_seconds())})"))
    if isinstance(pools, str):
        out.append(Condition("poolcheck", "pools", f"the pool check could not run: {pools}"))
    elif pools is not None:
        for spec in pools.missing:
            out.append(Condition(f"pool_missing:{spec.name}", "pools",
                                 f"Airflow pool {spec.name} is missing: tasks that use it are never scheduled "
                                 "(run `strongroom init-airflow`)"))
        for spec, have in pools.resized:
            out.append(Condition(f"pool_size:{spec.name}", "pools",
                                 f"Airflow pool {spec.name} has {have} slot(s), the configuration says {spec.slots}"))
    return out


def plan_alerts(
    conditions: Sequence[Condition], state: Mapping[str, str], now: datetime, repeat: timedelta = REPEAT
) -> MonitorPlan:
    """Alert on new conditions, and on persisting ones last alerted ``repeat`` or longer ago."""
    send: list[Condition] = []
    suppressed: list[Condition] = []
    new_state: dict[str, str] = {}
    for condition in conditions:
        last = state.get(condition.key)
        last_at = _parse_time(last) if last else None
        if last and last_at is not None and now - last_at < repeat:
            suppressed.append(condition)
            new_state[condition.key] = last
        else:
            send.append(condition)
            new_state[condition.key] = now.isoformat()
    open_keys = {c.key for c in conditions}
    resolved = sorted(k for k in state if k not in open_keys)  # cleared: a recurrence alerts at once
    return MonitorPlan(send, suppressed, resolved, new_state)


def _parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def latest_restore_tests(config: Config, conns: Connections) -> dict[str, RestoreTestSummary]:
    """The newest restore-test result per database (``restore-tests/<db>/<time>-<id>/result.json``), read
    from the primary region, else the next region that answers."""
    found: dict[str, RestoreTestSummary] = {}
    for region in config.regions:
        try:
            store = conns.store(region, config.transfer)
            for db in config.databases:
                prefix = f"{RESULT_PREFIX}{db.name}/"
                keys = sorted(o.key for o in store.list_objects(prefix) if o.key.endswith("/result.json"))
                for key in reversed(keys):  # run folders start with the UTC time: newest last
                    summary = _summary(db.name, key, store.get_bytes(key))
                    if summary is not None:
                        if db.name not in found or summary.tested_at > found[db.name].tested_at:
                            found[db.name] = summary
                        break
            return found
        except StrongroomError as exc:
            log.warning("restore-test results unreadable in %s: %s", region.name, exc)
    return found


def _summary(database: str, key: str, raw: bytes) -> RestoreTestSummary | None:
    try:
        doc = json.loads(raw)
        tested = _parse_time(str(doc["tested_at"]))
        if tested is None:
            return None
        restore = doc.get("restore_seconds")
        success = bool(doc.get("success"))
        cause = doc.get("error") or "; ".join((doc.get("failures") or [])[:3])
        return RestoreTestSummary(
            database=database, tested_at=tested, success=success, snapshot_id=str(doc.get("snapshot_id", "")),
            region=str(doc.get("region", "")), restore_seconds=float(restore) if restore is not None else None,
            headline=("passed" if success else f"FAILED: {cause}") + f" (snapshot {doc.get('snapshot_id')} "
                     f"from {doc.get('region')})",
            result_key=key, docs_key=doc.get("docs_key"),
        )
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable restore-test result %s", key)
        return None


def _read_state(config: Config, conns: Connections) -> dict[str, str]:
    for region in config.regions:
        try:
            store = conns.store(region, config.transfer)
            if store.head(STATE_KEY) is None:
                return {}
            doc = json.loads(store.get_bytes(STATE_KEY))
            return {str(k): str(v) for k, v in dict(doc.get("alerted", {})).items()}
        except (StrongroomError, ValueError, AttributeError) as exc:
            log.warning("monitor state unreadable in %s: %s", region.name, exc)
    return {}


def _write_state(config: Config, conns: Connections, plan: MonitorPlan, now: datetime) -> str | None:
    body = json.dumps({"checked_at": now.isoformat(), "alerted": plan.state}, indent=2).encode()
    for region in config.regions:  # the primary, else the next region that answers
        try:
            conns.store(region, config.transfer).put_bytes(STATE_KEY, body)
            return region.name
        except StrongroomError as exc:
            log.warning("monitor state not written in %s: %s", region.name, exc)
    return None


def run_monitor(
    config: Config, conns: Connections, send: Callable[[Alert], None], now: datetime | None = None,
    observe: Callable[[list[Metric]], None] | None = None, check_pools: Callable[[], PoolDrift] | None = None,
) -> dict[str, Any]:
    """Read the buckets, decide, send at most one alert (listing every condition due), record the state.

    The state is written only after ``send`` returned, so an alert that could not be delivered is tried
    again on the next run. ``observe`` receives the age of the newest backup per database and region.
    """
    now = now or datetime.now(UTC)
    status = collect_status(config, conns, now)
    if observe is not None:
        observe(age_metrics(status))
    keys: KeyReport | str
    try:
        keys = check_keys(config, conns)
    except StrongroomError as exc:
        keys = f"{type(exc).__name__}: {exc}"
    pools: PoolDrift | str | None = None
    if check_pools is not None:
        try:
            pools = check_pools()
        except StrongroomError as exc:
            pools = f"{type(exc).__name__}: {exc}"
    conditions = find_conditions(
        databases=[d.name for d in config.databases], status=status, keys=keys,
        restore_tests=latest_restore_tests(config, conns), threshold=config.alerts.staleness_threshold,
        restore_overdue=restore_overdue_after(config), now=now, pools=pools,
    )
    plan = plan_alerts(conditions, _read_state(config, conns), now)
    alert = plan.alert(now)
    if alert is not None:
        log.warning("%s", alert.subject)
        send(alert)
    for condition in plan.suppressed:
        log.info("still open (alerted within the hour): %s", condition.message)
    stored_in = _write_state(config, conns, plan, now)
    return {"conditions": len(conditions), "alerted": [c.key for c in plan.send],
            "suppressed": [c.key for c in plan.suppressed], "resolved": plan.resolved, "state_region": stored_in}


def dashboard(config: Config, conns: Connections, now: datetime | None = None) -> dict[str, Any]:
    """What the Backups page and ``strongroom status --json`` show: per database and source bucket and per
    region the newest backup, its age and colour against the RPO and the alert threshold, the gaps, the
    last error; per database the newest restore test and the trend of snapshot sizes."""
    now = now or datetime.now(UTC)
    threshold = config.alerts.staleness_threshold
    status = collect_status(config, conns, now)
    tests = latest_restore_tests(config, conns)
    trends = size_trends(config, conns)

    def regions(name: str, kind: str) -> list[dict[str, Any]]:
        rows = [row for row in status if row.database == name and row.kind == kind]
        return [dict(row.to_dict(), rag=rag(row.age_seconds, threshold)) for row in rows]

    databases = []
    for db in config.databases:
        test = tests.get(db.name)
        databases.append({
            "name": db.name,
            "regions": regions(db.name, "database"),
            "restore_test": test.to_dict() if test else None,
            "size_trend": trends.get(db.name, []),
        })
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "rpo_seconds": int(RPO.total_seconds()),
        "threshold_seconds": int(threshold.total_seconds()),
        "regions": [r.name for r in config.regions],
        "primary": config.primary.name,
        "databases": databases,
        "buckets": [{"name": s.bucket, "regions": regions(s.bucket, "bucket")} for s in config.object_storage],
    }
