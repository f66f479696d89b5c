"""The staleness monitor: is every database backed up recently, restorable, and restore-tested?

It reads the buckets themselves (``strongroom.status``, ``strongroom.keycheck`` and the restore-test
results), never Airflow's database, which may be what broke. The decision is pure and table-tested:
:func:`find_conditions` turns what was read into conditions, :func:`plan_alerts` decides which of them to
alert on now (a condition that persists alerts again at most once per ``repeat``). :func:`run_monitor`
reads, decides, sends and records the last-alert state in the bucket (``status/monitor.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom import layout, records
from strongroom.alerts import SUBJECT_PREFIX, Alert
from strongroom.config import Config, RegionConfig
from strongroom.connections import Connections
from strongroom.drill import RESULT_KIND, latest_platform_drill
from strongroom.errors import IntegrityError, StrongroomError
from strongroom.keycheck import KeyReport, check_keys
from strongroom.metrics import Metric, age_metrics
from strongroom.pools import PoolDrift
from strongroom.progress import duration_text
from strongroom.regions import first_answer, first_answer_or
from strongroom.status import RegionStatus, collect_status, size_trends

log = logging.getLogger(__name__)

STATE_KIND = "monitor-state"
NEVER = datetime.min.replace(tzinfo=UTC)  # the time of a restore test that was never (authentically) run
REPEAT = timedelta(hours=1)
RPO = timedelta(hours=1)  # the promised recovery point: green below it


@dataclass(frozen=True)
class Condition:
    """Something wrong. ``key`` identifies it across runs (for repeat suppression)."""

    key: str
    kind: str  # stale | unreachable | missing_key | keycheck | restore_failed | restore_overdue | unauthenticated
    # | plaintext_overdue | pools
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
    unauthenticated: tuple[str, ...] = ()  # newer results that failed authentication: ignored

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "tested_at": self.tested_at.isoformat(), "success": self.success,
                "snapshot_id": self.snapshot_id, "region": self.region, "restore_seconds": self.restore_seconds,
                "headline": self.headline, "result_key": self.result_key, "docs_key": self.docs_key,
                "unauthenticated": list(self.unauthenticated)}


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
        return Alert(  # every condition in the subject, as long as a mail header line may hold them
            subject=f"{SUBJECT_PREFIX} backup monitor: " + _bounded([c.message for c in self.send]),
            facts=[("DAG", "backup_monitor"), ("checked at", now.isoformat(timespec="seconds")),
                   ("conditions", ", ".join(kinds))],
            details=[c.message for c in self.send]
            + [f"(still open, alerted within the last hour: {c.message})" for c in self.suppressed],
        )


SUBJECT_BUDGET = 700  # SMTP refuses a line over 998 characters, and mail servers do not all fold headers


def _bounded(messages: Sequence[str], budget: int = SUBJECT_BUDGET) -> str:
    """``messages`` joined by "; ", all of them when they fit in ``budget`` characters; else as many as fit
    and how many more the message body lists."""
    text = "; ".join(messages)
    if len(text) <= budget:
        return text
    shown: list[str] = []
    for message in messages:
        if len("; ".join([*shown, message])) > budget - 40:
            break
        shown.append(message)
    return "; ".join(shown or [messages[0][: budget - 40]]) + f"; and {len(messages) - len(shown or [1])} more"


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


def find_conditions(
    *, databases: Sequence[str], status: Sequence[RegionStatus], keys: KeyReport | str | None,
    restore_tests: Mapping[str, RestoreTestSummary], threshold: timedelta, restore_overdue: timedelta,
    now: datetime, watched_since: datetime | None = None, pools: PoolDrift | str | None = None,
) -> list[Condition]:
    """Everything wrong, from what was read. ``keys`` and ``pools`` are a report, or the error that stopped
    the check (``pools`` None: not checked).

    ``watched_since`` is when the monitor first checked these buckets: until ``restore_overdue`` has
    passed since then, a database without any restore test is not overdue (its first one is not due yet).
    """
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
                f"{row.database} in {row.region}: newest snapshot {row.newest} is {duration_text(row.age_seconds)} old "
                f"(threshold {duration_text(threshold)}){why}"))
    if isinstance(keys, str):
        out.append(Condition("keycheck", "keycheck", f"the key check could not run: {keys}"))
    elif keys is not None:
        for key_id, where in sorted(keys.missing.items()):
            out.append(Condition(f"missing_key:{key_id}", "missing_key",
                                 f"the keyring lacks key id {key_id!r} needed by {len(where)} snapshot(s), "
                                 f"e.g. {where[0]}"))
        for bad in keys.unreadable:
            out.append(Condition(f"unreadable:{bad}", "missing_key", f"manifest {bad} could not be read"))
    said: set[tuple[str, str]] = set()
    for row in status:
        for problem in row.unauthenticated:
            if (row.region, problem) not in said:
                said.add((row.region, problem))
                out.append(Condition(f"unauthenticated:{row.region}:{problem}", "unauthenticated",
                                     f"{row.region}: {problem}; ignored"))
    for database in databases:
        test = restore_tests.get(database)
        for problem in test.unauthenticated if test else ():
            out.append(Condition(f"unauthenticated:{problem}", "unauthenticated", f"{problem}; ignored"))
        if test is None or test.tested_at == NEVER:
            if watched_since is not None and now - watched_since <= restore_overdue:
                continue  # a fresh installation: the first scheduled restore test is not due yet
            out.append(Condition(f"restore_overdue:{database}", "restore_overdue",
                                 f"{database} has no restore test on record"))
            continue
        if not test.success:
            out.append(Condition(f"restore_failed:{database}:{test.tested_at.isoformat()}", "restore_failed",
                                 f"the last restore test of {database} failed: {test.headline}"))
        if now - test.tested_at > restore_overdue:
            ago = duration_text(now - test.tested_at)
            out.append(Condition(f"restore_overdue:{database}", "restore_overdue",
                                 f"the last restore test of {database} ran {ago} ago "
                                 f"(due every {duration_text(restore_overdue)})"))
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


def plaintext_conditions(config: Config, conns: Connections, now: datetime) -> list[Condition]:
    """A sandbox database or review copy still there after its snapshot's ``taken_at`` + retention."""
    from strongroom import expiry

    try:
        copies = expiry.find_copies(config, conns)
    except StrongroomError as exc:
        return [Condition("plaintext_check", "plaintext_overdue", f"the plaintext copies could not be listed: {exc}")]
    return [
        Condition(f"plaintext_overdue:{c.where}:{c.name}", "plaintext_overdue",
                  f"{c.describe()} was due for removal at {c.expires_at(config.retention):%Y-%m-%d %H:%M} UTC "
                  f"(snapshot taken {c.taken_at:%Y-%m-%d %H:%M} + retention): it holds production data in the clear")
        for c in expiry.due(copies, config.retention, now)
    ]


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
        if last_at is not None and records.in_future(last_at, now):
            last_at = None  # a time in the future is a bad record, never a reason to stay quiet
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


def latest_restore_tests(
    config: Config, conns: Connections, now: datetime | None = None
) -> dict[str, RestoreTestSummary]:
    """The newest authenticated restore-test result per database
    (``restore-tests/<db>/<time>-<id>/result.json``), read from the primary region, else the next region
    that answers. Newer results that do not authenticate are ignored and named in ``unauthenticated``
    (with no authenticated result at all, the summary is a failure dated :data:`NEVER`)."""
    now = now or datetime.now(UTC)

    def newest_in(region: RegionConfig) -> dict[str, RestoreTestSummary]:
        store = conns.store(region, config.transfer)
        keyring = conns.keyring(config.keyring_conn_id(region))
        found: dict[str, RestoreTestSummary] = {}
        for db in config.databases:
            listed = store.list_objects(layout.restore_tests_prefix(db.name))
            keys = sorted(o.key for o in listed if layout.is_restore_test_result(o.key))
            bad: list[str] = []
            summary = None
            for key in reversed(keys):  # run folders start with the UTC time: newest last
                try:
                    doc = records.unseal(store.get_bytes(key), keyring, kind=RESULT_KIND, key=key,
                                         times=["tested_at"], now=now)
                except IntegrityError as exc:
                    log.warning("ignoring %s", exc)
                    bad.append(str(exc))
                    continue
                summary = _summary(db.name, key, doc)
                if summary is not None:
                    break
            if summary is None and bad:
                summary = RestoreTestSummary(db.name, NEVER, False, headline="no authenticated result")
            if summary is not None:
                found[db.name] = replace(summary, unauthenticated=tuple(bad))
        return found

    return first_answer_or(config, "the restore-test results", newest_in, {})


def _summary(database: str, key: str, doc: Mapping[str, Any]) -> RestoreTestSummary | None:
    try:
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


def _read_state(
    config: Config, conns: Connections, now: datetime
) -> tuple[dict[str, str], datetime | None, str | None]:
    """The last-alert times; since when the monitor watches (``now`` on its first run; None for a state
    written before that was recorded: watched long enough); and the problem when the stored state did not
    authenticate (then it is empty). Read from the primary region, else the next region that answers."""

    def state_in(region: RegionConfig) -> tuple[dict[str, str], datetime | None, str | None]:
        store = conns.store(region, config.transfer)
        keyring = conns.keyring(config.keyring_conn_id(region))
        try:
            doc = records.read(store, keyring, layout.MONITOR_STATE_KEY, kind=STATE_KIND, times=["checked_at"],
                               now=now)
            if doc is None:
                return {}, now, None
            since = _parse_time(str(doc["since"])) if doc.get("since") else None
            return {str(k): str(v) for k, v in dict(doc.get("alerted", {})).items()}, since, None
        except IntegrityError as exc:
            log.warning("ignoring %s", exc)
            return {}, None, str(exc)  # no grace for a forged state: it must not silence anything
        except (ValueError, AttributeError, TypeError) as exc:
            raise StrongroomError(f"monitor state {layout.MONITOR_STATE_KEY} is malformed: {exc}") from None

    unread: tuple[dict[str, str], datetime | None, str | None] = ({}, None, None)
    return first_answer_or(config, "the monitor state", state_in, unread)


def _write_state(
    config: Config, conns: Connections, plan: MonitorPlan, now: datetime, since: datetime | None = None
) -> str | None:
    """Record the state in the primary region, else the next region that answers; returns where (or None)."""
    body: dict[str, Any] = {"checked_at": now.isoformat(), "alerted": plan.state}
    if since is not None:
        body["since"] = since.isoformat()

    def write(region: RegionConfig) -> None:
        records.write(conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region)),
                      layout.MONITOR_STATE_KEY, body, kind=STATE_KIND)

    try:
        return first_answer(config, "a write of the monitor state", write).region.name
    except StrongroomError as exc:
        log.warning("monitor state not written: %s", exc)
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
    state, since, bad_state = _read_state(config, conns, now)
    pools: PoolDrift | str | None = None
    if check_pools is not None:
        try:
            pools = check_pools()
        except StrongroomError as exc:
            pools = f"{type(exc).__name__}: {exc}"
    conditions = find_conditions(
        databases=[d.name for d in config.databases], status=status, keys=keys,
        restore_tests=latest_restore_tests(config, conns, now), threshold=config.alerts.staleness_threshold,
        restore_overdue=restore_overdue_after(config), now=now, watched_since=since, pools=pools,
    )
    if bad_state:
        conditions.append(Condition("unauthenticated:monitor-state", "unauthenticated", f"{bad_state}; ignored"))
    conditions += plaintext_conditions(config, conns, now)
    plan = plan_alerts(conditions, state, now)
    alert = plan.alert(now)
    if alert is not None:
        log.warning("%s backup monitor: %s", SUBJECT_PREFIX, "; ".join(c.message for c in plan.send))
        try:
            send(alert)
        except StrongroomError as exc:  # the failure names every condition the undelivered alert carried
            raise type(exc)(f"{exc}; the alert said: " + "; ".join(c.message for c in plan.send)) from None
    for condition in plan.suppressed:
        log.info("still open (alerted within the hour): %s", condition.message)
    stored_in = _write_state(config, conns, plan, now, since)
    return {"conditions": len(conditions), "alerted": [c.key for c in plan.send],
            "suppressed": [c.key for c in plan.suppressed], "resolved": plan.resolved, "state_region": stored_in}


def dashboard(config: Config, conns: Connections, now: datetime | None = None) -> dict[str, Any]:
    """What the Backups page and ``strongroom status --json`` show: per database and source bucket and per
    region the newest backup, its age and colour against the RPO and the alert threshold, the gaps, the
    last error; per database the newest restore test and the trend of snapshot sizes; the newest platform
    drill; transport warnings and the records that were ignored because they did not authenticate."""
    now = now or datetime.now(UTC)
    threshold = config.alerts.staleness_threshold
    status = collect_status(config, conns, now)
    tests = latest_restore_tests(config, conns, now)
    trends = size_trends(config, conns)
    drill = latest_platform_drill(config, conns, now)

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
            "size_trend": mark_jumps(trends.get(db.name, []), config.alerts.size_jump_factor),
        })
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "rpo_seconds": int(RPO.total_seconds()),
        "threshold_seconds": int(threshold.total_seconds()),
        "regions": [r.name for r in config.regions],
        "primary": config.primary.name,
        "databases": databases,
        "buckets": [{"name": s.bucket, "regions": regions(s.bucket, "bucket")} for s in config.object_storage],
        # the newest platform drill: when, from which region, how long against recovery.rto, pass or fail
        "platform_drill": drill,
        "size_jump_factor": config.alerts.size_jump_factor,
        "alerts": _deliveries(config, conns),
        # allowed but insecure transport (a lowered sslmode, plain HTTP or unverified TLS to S3)
        "warnings": conns.transport_warnings(config),
        # records and manifests that failed authentication or are dated in the future: ignored above
        "unauthenticated": sorted({f"{row.region}: {problem}" for row in status for problem in row.unauthenticated}),
    }


def _deliveries(config: Config, conns: Connections) -> dict[str, Any]:
    from strongroom.deliveries import read_deliveries

    return read_deliveries(config, conns)


def mark_jumps(trend: Sequence[Mapping[str, Any]], factor: float) -> list[dict[str, Any]]:
    """The size trend with ``jump`` (the ratio to the previous snapshot's size) on every point whose
    stored size is more than ``factor`` times larger, or smaller, than the previous one's."""
    out: list[dict[str, Any]] = []
    previous: int | None = None
    for point in trend:
        size = int(point["stored_bytes"])
        marked = dict(point)
        if previous is not None:
            ratio = max(size, 1) / max(previous, 1)
            if ratio > factor or ratio < 1 / factor:
                marked["jump"] = round(ratio, 3)
        out.append(marked)
        previous = size
    return out
