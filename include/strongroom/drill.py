"""Restore tests: restore snapshots into an isolated PostgreSQL and prove the data intact and usable.

For each database: pick snapshots (the newest, plus a random one within the retention window) from a
region chosen in rotation, so every region is exercised; then, inside one call (tasks may run on
different workers): provision an isolated server, download from that region only, verify, decrypt,
restore, validate (``strongroom.validation``), tear down in a ``finally``. Each phase is timed (RTO
evidence) and the snapshot's age when tested is recorded (RPO evidence). A JSON result and the Data Docs
are stored in every region under ``restore-tests/`` and pruned by the same retention window.
A restore test never switches regions: it tests the region it chose.

The **platform drill** (:func:`run_platform_drill`, weekly) is the same proof for the whole platform at
once: the newest complete platform point recovered from one region (each in turn) by the recovery
pipeline itself (:func:`strongroom.recovery.execute_recovery`) into throwaway targets, each database
checked as above and each bucket by content, the total time measured against ``recovery.rto``.
"""

from __future__ import annotations

import html
import logging
import os
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strongroom import catalog, inventory, layout, postgres, records, recovery, restore, roles, sandbox, validation
from strongroom.catalog import Manifest
from strongroom.config import Config, RegionConfig
from strongroom.connections import Connections
from strongroom.errors import IntegrityError, RestoreTestError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.postgres import PgSettings
from strongroom.progress import duration_text
from strongroom.regions import first_answer_or
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)

RESULT_KIND = "restore-test"


@dataclass
class DrillResult:
    database: str
    snapshot_id: str
    region: str
    tested_at: str
    snapshot_taken_at: str = ""
    snapshot_age_seconds: int = 0
    success: bool = False
    phases: dict[str, float] = field(default_factory=dict)
    tables: dict[str, dict[str, int | None]] = field(default_factory=dict)
    expectations: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    roles: dict[str, Any] | None = None  # roles created for the test, stand-in owners, what was left out
    schema_differences: list[str] = field(default_factory=list)
    result_key: str | None = None
    docs_key: str | None = None

    @property
    def restore_seconds(self) -> float:
        return round(sum(self.phases.get(p, 0.0) for p in ("download", "decrypt", "restore")), 3)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, restore_seconds=self.restore_seconds)

    def headline(self) -> str:
        what = f"{self.database} snapshot {self.snapshot_id} from {self.region}"
        if self.success:
            took = duration_text(self.restore_seconds)
            return f"restore test passed: {what} ({took} to restore, {len(self.expectations)} checks)"
        cause = self.error or "; ".join(self.failures[:5]) + (" ..." if len(self.failures) > 5 else "")
        return f"restore test FAILED: {what}: {cause}"


def rotation_region(config: Config, now: datetime) -> RegionConfig:
    """A different region each day, so every region is exercised."""
    return config.regions[now.toordinal() % len(config.regions)]


def choose_snapshots(ids: list[str], rng: random.Random) -> list[str]:
    """The newest, plus a random other one within the window (like AWS Backup's LATEST and RANDOM)."""
    if not ids:
        return []
    chosen = [ids[-1]]
    if len(ids) > 1:
        chosen.append(rng.choice(ids[:-1]))
    return chosen


@contextmanager
def _isolated(
    config: Config, conns: Connections, major: str, store: ObjectStore, keyring: Keyring, name: str
) -> Iterator[PgSettings]:
    """Superuser settings for a database (not yet created) on an isolated server; it is gone afterwards."""
    if config.restore_test.sandbox_conn_id:
        server = conns.postgres(config.restore_test.sandbox_conn_id)
        check_sandbox_server(config, conns, server)
        target = server.with_dbname(f"strongroom_rt_{name}_{secrets.token_hex(3)}")
        try:
            yield target
        finally:
            postgres.drop_database(target)
    else:
        with sandbox.throwaway_server(major, store, config.restore.lease, config.restore.spool_dir,
                                      keyring=keyring) as server:
            yield server.with_dbname(name)


def check_sandbox_server(config: Config, conns: Connections, server: PgSettings) -> None:
    """Refuse a restore-test sandbox that is any configured source's cluster (by its system identifier,
    whatever host, address, port or user reaches it), before anything is created there."""
    mine = postgres.server_identity(server)
    if mine is None:
        raise RestoreTestError(f"restore_test.sandbox_conn_id: cannot read the system identifier of "
                               f"{server.describe()}, so it cannot be proven not to be a production cluster")
    for db in config.databases:
        source = conns.postgres(db.postgres_conn_id)
        theirs = postgres.server_identity(source)
        same = theirs.system_identifier == mine.system_identifier if theirs else source.describe() == server.describe()
        if same:
            raise RestoreTestError(f"restore_test.sandbox_conn_id reaches the cluster of the production source "
                                   f"{db.name} (same system identifier); refusing")


def check_snapshot(
    config: Config, conns: Connections, database: str, snapshot_id: str, region: RegionConfig,
    *, now: datetime | None = None, record: bool = True,
) -> DrillResult:
    """Restore one snapshot from ``region`` into an isolated server and validate it. Never raises for a
    failed restore or check: the result says what failed (and is recorded); raises only for bad input.

    The restore is :mod:`strongroom.restore`'s pipeline, from ``region`` only (a corrupt copy there fails
    the test, on purpose) and as an unprivileged role (:func:`strongroom.restore.restore_file`), so that
    nothing production wrote ever runs as a superuser; then the rows, the expectations and the schema
    are checked as that role, and the database and the role are dropped."""
    now = now or datetime.now(UTC)
    db = config.database(database)
    store = conns.store(region, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(region))
    result = DrillResult(db.name, snapshot_id, region.name, now.isoformat())
    suites = validation.load_user_suites(Path(config.restore_test.expectations_dir), db.name)
    work = restore.open_spool(config, "strongroom-rt-")
    report = None
    schema_docs: dict[str, bytes] = {}
    try:
        manifest, _ = restore.locate_snapshot(config, conns, db.name, snapshot_id=snapshot_id, at=None,
                                              region=region.name)
        result.snapshot_taken_at = manifest.taken_at.isoformat()
        result.snapshot_age_seconds = int((now - manifest.taken_at).total_seconds())
        started = time.monotonic()
        with _isolated(config, conns, manifest.server_version.split(".")[0], store, keyring, db.name) as admin:
            result.phases["provision"] = round(time.monotonic() - started, 3)
            path = os.path.join(work.path, "dump")
            fetched = restore.fetch_snapshot(config, conns, db.name, path, snapshot_id=snapshot_id,
                                             region=region.name, with_globals=True)
            result.phases.update(fetched.phases)
            mark = time.monotonic()
            bin_dir = config.snapshot.pg_bin_dir
            needed = roles.needed_roles(manifest.inventory, postgres.toc(path, bin_dir))
            restorer, role_report = roles.prepare_restorer(admin, fetched.globals, needed)
            result.roles = role_report.to_dict()
            try:
                restore.restore_file(config, admin, path, postgres.inspect_target(admin), restorer=restorer)
                dumped_sequences = inventory.dump_sequence_values(path, bin_dir)
                os.unlink(path)
                result.phases["restore"] = round(time.monotonic() - mark, 3)
                mark = time.monotonic()
                report = validate_restored(config, result, manifest, suites, restorer, admin, dumped_sequences)
            finally:
                postgres.drop_database(admin)
                roles.drop_restorer(admin, restorer)
            result.phases["validate"] = round(time.monotonic() - mark, 3)
            schema_docs = {"schema.html": _schema_page(result, manifest, result.schema_differences)}
            mark = time.monotonic()
        result.phases["teardown"] = round(time.monotonic() - mark, 3)
    except StrongroomError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.success = False
    finally:
        work.remove()
    if record:
        _record(config, conns, result, {**(report.docs if report else {}), **schema_docs})
    log.info("%s", result.headline())
    return result


def validate_restored(
    config: Config, result: DrillResult, manifest: Manifest, suites: list[validation.UserSuite], reader: PgSettings,
    admin: PgSettings, dumped_sequences: dict[str, int | None],
) -> validation.ValidationReport:
    """The restore test's checks of a restored database, into ``result``: the rows of every table, the
    baseline suite (row counts, content checksums) and the user suites as ``reader``, and the schema
    against the snapshot's inventory as ``admin``. Shared by the restore test and the platform drill."""
    result.tables = {t: {"expected": n, "restored": got}
                     for t, (n, got) in restore.compare_rows(reader, manifest).items()}
    report = validation.validate(
        reader, manifest, suites, validation.parameters_for(manifest, config.restore_test.freshness_lag),
        run_name=f"{manifest.database}-{manifest.snapshot_id}",
    )
    differences = _schema_check(admin, manifest, dumped_sequences)
    result.expectations = report.expectations + _schema_expectations(manifest, differences)
    result.schema_differences = differences
    result.failures = report.failures + [f"schema: {d}" for d in differences]
    result.success = report.success and not differences
    return report


def _schema_check(admin: PgSettings, manifest: Manifest, dumped: dict[str, int | None]) -> list[str]:
    """The restored database against the snapshot's schema inventory (none recorded: nothing to compare)."""
    if not manifest.inventory:
        return []
    return inventory.compare(manifest.inventory, inventory.inventory_of(admin), dumped)


def _schema_expectations(manifest: Manifest, differences: list[str]) -> list[dict[str, Any]]:
    if not manifest.inventory:
        return []
    if not differences:
        return [{"suite": "schema", "table": "*", "expectation": "schema matches the snapshot's inventory",
                 "column": None, "success": True, "error": None}]
    return [{"suite": "schema", "table": d.split(":")[0], "expectation": "schema matches the snapshot's inventory",
             "column": None, "success": False, "error": d} for d in differences]


def _schema_page(result: DrillResult, manifest: Manifest, differences: list[str]) -> bytes:
    """The schema check beside the Data Docs: a small static page (object names only, no row values)."""
    items = "".join(f"<li>{html.escape(d)}</li>" for d in differences)
    counted = ", ".join(f"{len(v)} {k}" for k, v in sorted(manifest.inventory.items()) if isinstance(v, dict | list))
    verdict = "matches the snapshot's inventory" if not differences else f"{len(differences)} difference(s)"
    stand_ins = ", ".join((result.roles or {}).get("stand_ins", [])) or "none"
    body = (f"<h1>Schema check: {html.escape(result.database)} snapshot {html.escape(result.snapshot_id)}</h1>"
            f"<p>Restored schema {html.escape(verdict)} ({html.escape(counted) or 'no inventory recorded'}).</p>"
            f"<p>Stand-in owners (superusers in production, ordinary roles here): {html.escape(stand_ins)}</p>"
            + (f"<ul>{items}</ul>" if items else ""))
    head = "<!doctype html><html><head><meta charset='utf-8'><title>schema check</title></head>"
    return f"{head}<body>{body}</body></html>".encode()


def _record(config: Config, conns: Connections, result: DrillResult, docs: dict[str, bytes]) -> None:
    """Store the JSON result and the Data Docs in every region, like snapshots: the evidence survives the
    loss of a region. A region that cannot be written is logged; the others still get their copy."""
    run = layout.new_restore_test_run(result.database, datetime.fromisoformat(result.tested_at))
    result.docs_key = layout.restore_test_doc_key(run, "index.html") if docs else None
    result.result_key = layout.restore_test_result_key(run)
    stored = []
    for region in config.regions:
        try:
            store = conns.store(region, config.transfer)
            for name, data in docs.items():
                store.put_bytes(layout.restore_test_doc_key(run, name), data)
            records.write(store, conns.keyring(config.keyring_conn_id(region)), result.result_key,
                          dict(result.to_dict(), stored_in=region.name), kind=RESULT_KIND)
            stored.append(region.name)
        except StrongroomError as exc:
            log.error("could not store the restore-test result in %s: %s", region.name, exc)
    if not stored:
        result.result_key = result.docs_key = None


def run_restore_tests(
    config: Config, conns: Connections, *, database: str | None = None, snapshot_id: str | None = None,
    region: str | None = None, now: datetime | None = None, seed: int | None = None,
) -> list[DrillResult]:
    """The scheduled restore test for one or every database: newest plus a random snapshot, one region."""
    now = now or datetime.now(UTC)
    where = config.region(region) if region else rotation_region(config, now)
    rng = random.Random(seed)  # noqa: S311 - choosing a sample, not a secret
    names = [config.database(database).name] if database else [d.name for d in config.databases]
    results = []
    for name in names:
        if snapshot_id:
            chosen = [snapshot_id]
        else:
            store = conns.store(where, config.transfer)
            live = [i for i in catalog.snapshot_ids(store, name)
                    if layout.snapshot_id_time(i) + config.retention > now]
            chosen = choose_snapshots(live, rng)
            if not chosen:
                results.append(DrillResult(name, "-", where.name, now.isoformat(),
                                           error=f"no committed snapshot of {name} in {where.name} to test"))
                continue
        results += [check_snapshot(config, conns, name, sid, where, now=now) for sid in chosen]
    if database is None and snapshot_id is None:
        results += [check_objects(config, conns, s.bucket, where, rng, now=now) for s in config.object_storage]
    return results


def check_objects(
    config: Config, conns: Connections, source: str, region: RegionConfig, rng: random.Random,
    *, sample: int = 25, now: datetime | None = None,
) -> DrillResult:
    """Restore a random sample of objects of the newest point from ``region`` and check each against the
    point index (its keyed content hash and size). Like a snapshot test, it never switches regions."""
    from strongroom import objects

    now = now or datetime.now(UTC)
    result = DrillResult(source, "-", region.name, now.isoformat())
    started = time.monotonic()
    try:
        store = conns.store(region, config.transfer)
        keyring = conns.keyring(config.keyring_conn_id(region))
        times = objects.point_times(store, source)
        if not times:
            raise RestoreTestError(f"no point of {source} in {region.name} to test")
        index = objects.load_point(store, keyring, source, times[-1])
        result.snapshot_id = layout.stamp(times[-1])
        result.snapshot_taken_at = times[-1].isoformat()
        result.snapshot_age_seconds = int((now - times[-1]).total_seconds())
        _, ikey = objects.id_key(conns.keyring(config.encryption.keyring_conn_id), index.id_key_id)
        keys = rng.sample(sorted(index.entries), min(sample, len(index.entries)))
        for key in keys:
            objects.fetch_content(store, keyring, source, index.entries[key], ikey)
            result.expectations.append({"suite": "objects", "table": source, "expectation": "content matches index",
                                        "column": None, "success": True, "error": None})
        result.success = True
    except StrongroomError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.phases["download"] = round(time.monotonic() - started, 3)
    _record(config, conns, result, {})
    log.info("%s", result.headline())
    return result


def require_success(results: list[DrillResult]) -> list[dict[str, Any]]:
    failed = [r for r in results if not r.success]
    if failed:
        raise RestoreTestError(" | ".join(r.headline() for r in failed))
    return [r.to_dict() for r in results]


# ---- the platform drill -----------------------------------------------------------------------------------

DRILL_KIND = "platform-drill"


def drill_region(config: Config, last_region: str | None, now: datetime) -> RegionConfig:
    """The region after the one the last platform drill recovered from, so every region is drilled in turn
    whatever the schedule; without a (known) last drill, the day's :func:`rotation_region`."""
    names = [r.name for r in config.regions]
    if last_region in names:
        return config.regions[(names.index(str(last_region)) + 1) % len(names)]
    return rotation_region(config, now)


DRILL_LEASE_KIND = "drill-lease"


@contextmanager
def _throwaway_bucket(config: Config, conns: Connections, source: str, now: datetime) -> Iterator[ObjectStore]:
    """A new, empty bucket next to ``source`` (its connection and region) that is emptied (every version)
    and deleted afterwards: where the drill recovers that source's objects. Before it is created, a lease
    naming it (valid for ``recovery.drill_run_timeout``) is sealed into every region that answers, so a
    drill that dies leaves a bucket the next one can tell from a live one (:func:`remove_leftover_buckets`)."""
    src = config.source(source)
    store = conns.bucket_store(src.aws_conn_id, f"{layout.DRILL_BUCKET_PREFIX}{secrets.token_hex(6)}", src.region,
                               config.transfer)
    lease = {"bucket": store.bucket, "source": source, "created_at": now.isoformat(),
             "expires_at": (now + config.recovery.drill_run_timeout).isoformat()}
    leased = _write_drill_lease(config, conns, store.bucket, lease)
    store.create_bucket()
    try:
        yield store
    finally:
        try:
            store.delete_bucket()
            _remove_drill_lease(config, conns, store.bucket, leased)
        except StrongroomError as exc:  # the result still counts; the next drill removes it after its lease
            log.error("could not remove the drill's throwaway bucket s3://%s: %s", store.bucket, exc)


def _write_drill_lease(config: Config, conns: Connections, bucket: str, lease: dict[str, Any]) -> list[RegionConfig]:
    written = []
    failed = []
    for region in config.regions:
        try:
            records.write(conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region)),
                          layout.drill_lease_key(bucket), lease, kind=DRILL_LEASE_KIND)
            written.append(region)
        except StrongroomError as exc:
            failed.append(f"{region.name}: {' '.join(str(exc).split())}")
    if not written:
        raise RestoreTestError(f"the lease of throwaway bucket {bucket} could not be written in any region, so it "
                               f"is not created: {'; '.join(failed)}")
    return written


def _remove_drill_lease(config: Config, conns: Connections, bucket: str, regions: list[RegionConfig]) -> None:
    for region in regions:
        try:
            conns.store(region, config.transfer).delete(layout.drill_lease_key(bucket))
        except StrongroomError as exc:  # an expired lease of a bucket that is gone harms nothing
            log.warning("could not remove the lease of drill bucket %s in %s: %s", bucket, region.name, exc)


def _live_drill_lease(config: Config, conns: Connections, bucket: str, now: datetime) -> list[str]:
    """The regions that hold a live (authenticated, unexpired) lease of ``bucket``; every region is asked. A
    lease that does not authenticate is ignored (with a warning): it protects nothing."""
    held = []
    for region in config.regions:
        try:
            body = records.read(conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region)),
                                layout.drill_lease_key(bucket), kind=DRILL_LEASE_KIND, times=("created_at",), now=now)
            if body is not None and body.get("bucket") == bucket and datetime.fromisoformat(body["expires_at"]) > now:
                held.append(region.name)
        except IntegrityError as exc:
            log.warning("ignoring %s", exc)
        except StrongroomError as exc:
            log.warning("lease of drill bucket %s unreadable in %s: %s", bucket, region.name, exc)
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring malformed lease of drill bucket %s in %s", bucket, region.name)
    return held


def remove_leftover_buckets(config: Config, conns: Connections, now: datetime | None = None) -> list[str]:
    """Remove the throwaway buckets (``strongroom-drill-*``, next to every source) that drills which died left
    behind: created longer ago than ``recovery.drill_run_timeout`` and without a live lease in any region
    (a running drill's bucket has both a live lease and a younger age). One warning line per bucket removed;
    a bucket or a connection that fails is logged and the drill goes on. Returns the buckets removed."""
    now = now or datetime.now(UTC)
    older = now - config.recovery.drill_run_timeout
    removed: list[str] = []
    seen: set[tuple[str, str | None]] = set()
    for src in config.object_storage:
        if (src.aws_conn_id, src.region) in seen:
            continue
        seen.add((src.aws_conn_id, src.region))
        try:
            found = conns.bucket_store(src.aws_conn_id, src.bucket, src.region, config.transfer).list_buckets(
                layout.DRILL_BUCKET_PREFIX)
        except StrongroomError as exc:
            log.warning("could not look for leftover drill buckets through %s: %s", src.aws_conn_id, exc)
            continue
        for name, created in found:
            if not layout.is_drill_bucket(name) or created > older:
                continue
            held = _live_drill_lease(config, conns, name, now)
            if held:
                log.warning("drill bucket s3://%s is older than the drill timeout but its lease in %s is live: kept",
                            name, ", ".join(held))
                continue
            try:
                conns.bucket_store(src.aws_conn_id, name, src.region, config.transfer).delete_bucket()
            except StrongroomError as exc:
                log.error("could not remove leftover drill bucket s3://%s: %s", name, exc)
                continue
            _remove_drill_lease(config, conns, name, list(config.regions))
            log.warning("removed s3://%s, left by a platform drill that did not finish (created %s, older than the "
                        "drill timeout of %s, no live lease)", name, created.isoformat(),
                        duration_text(config.recovery.drill_run_timeout.total_seconds()))
            removed.append(name)
    return removed


def run_platform_drill(
    config: Config, conns: Connections, now: datetime | None = None, *, region: str | None = None,
) -> dict[str, Any]:
    """Recover the newest complete platform point from one region (the next in turn, or ``region``) into
    throwaway targets with :func:`strongroom.recovery.execute_recovery`, as on the day a region is lost:
    every database into an isolated server (:func:`_isolated`, as the restore test), every source bucket
    into a new bucket removed afterwards. Each database is then checked as the restore test checks it
    (:func:`validate_restored`: rows, content checksums, expectations, schema), each bucket by content
    against the point index. The recovery's total time is compared with ``recovery.rto``; over it, the drill
    fails and names the slowest part. The evidence is stored in every region (``platform/drills/``).

    Never raises for a failed drill (the result says what failed, and is recorded): see
    :func:`require_drill_success`."""
    from strongroom import objects

    now = now or datetime.now(UTC)
    started = time.monotonic()
    last = latest_platform_drill(config, conns, now)
    where = config.region(region) if region else drill_region(config, last["region"] if last else None, now)
    rto = config.recovery.rto.total_seconds()
    evidence: dict[str, Any] = {
        "drill_id": layout.new_platform_id(now), "drilled_at": now.isoformat(), "region": where.name,
        "point_id": None, "point_time": None, "recovery_id": None, "total_seconds": None, "rto_seconds": rto,
        "within_rto": False, "slowest": None, "success": False, "error": None, "parts": [],
        "leftovers_removed": remove_leftover_buckets(config, conns, now),
    }
    try:
        plan = recovery.plan_recovery(config, conns, region=where.name)
        evidence.update(point_id=plan.point_id, point_time=plan.point_time)
        covered = {(p.kind, p.name) for p in plan.parts}
        uncovered = [f"database {d.name}" for d in config.databases if (recovery.DATABASE, d.name) not in covered]
        uncovered += [f"bucket {s.bucket}" for s in config.object_storage if (recovery.BUCKET, s.bucket) not in covered]
        if uncovered:  # the drill proves the whole platform recoverable, not the part a point happens to hold
            raise RestoreTestError(f"platform point {plan.point_id} does not hold {', '.join(uncovered)} "
                                   "(configured after it was recorded?)")
        store = conns.store(where, config.transfer)
        keyring = conns.keyring(config.keyring_conn_id(where))
        manifests = {p.name: catalog.load_manifest(store, keyring, p.name, p.ref)
                     for p in plan.parts if p.kind == recovery.DATABASE}
        with ExitStack() as stack:
            targets = recovery.RecoveryTargets(
                databases={name: stack.enter_context(_isolated(config, conns, m.server_version.split(".")[0], store,
                                                               keyring, name)) for name, m in manifests.items()},
                buckets={p.name: stack.enter_context(_throwaway_bucket(config, conns, p.name, now))
                         for p in plan.parts if p.kind == recovery.BUCKET},
            )
            report = recovery.execute_recovery(config, conns, plan, targets, missing_roles=restore.ROLES_CREATE)
            checks: dict[tuple[str, str], DrillResult] = {}
            for part in plan.parts:
                restored = next(r for r in report.parts if r.kind == part.kind and r.name == part.name)
                if restored.result != recovery.OK:
                    continue
                check = DrillResult(part.name, part.ref, where.name, now.isoformat())
                try:
                    if part.kind == recovery.DATABASE:
                        suites = validation.load_user_suites(Path(config.restore_test.expectations_dir), part.name)
                        settings = targets.databases[part.name]
                        validate_restored(config, check, manifests[part.name], suites, settings, settings, {})
                    else:
                        index = objects.load_point(store, keyring, part.name, datetime.fromisoformat(part.ref))
                        _, ikey = objects.id_key(conns.keyring(config.encryption.keyring_conn_id), index.id_key_id)
                        check.failures = objects.compare_restored(targets.buckets[part.name], index, ikey)
                        check.expectations = [{"suite": "objects", "table": part.name, "column": None,
                                               "expectation": "every key, size and content matches the point",
                                               "success": not check.failures, "error": None}]
                        check.success = not check.failures
                except StrongroomError as exc:
                    check.error = f"{type(exc).__name__}: {exc}"
                checks[(part.kind, part.name)] = check
        evidence.update(
            recovery_id=report.recovery_id, total_seconds=report.total_seconds, within_rto=report.within_rto,
            slowest=report.slowest,
            parts=[_drill_part(r, checks.get((r.kind, r.name))) for r in report.parts],
        )
        evidence["success"] = report.within_rto and all(p["result"] == "passed" for p in evidence["parts"])
    except StrongroomError as exc:
        evidence["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    evidence["drill_seconds"] = round(time.monotonic() - started, 3)
    evidence["headline"] = drill_headline(evidence)
    evidence["stored_in"] = _store_drill(config, conns, evidence)
    log.info("%s", evidence["headline"])
    return evidence


def _drill_part(restored: recovery.PartResult, check: DrillResult | None) -> dict[str, Any]:
    """One part of the drill's evidence: how its recovery went, then how its checks went (no row values)."""
    failures = ([restored.error] if restored.error else []) + (
        [check.error] if check and check.error else []) + (check.failures[:10] if check else [])
    passed = restored.result == recovery.OK and check is not None and check.success and not check.error
    return {"kind": restored.kind, "name": restored.name, "ref": restored.ref, "seconds": restored.seconds,
            "bytes": restored.bytes, "result": "passed" if passed else "FAILED",
            "checks": len(check.expectations) if check else 0, "failures": failures}


def drill_headline(evidence: dict[str, Any]) -> str:
    """One line: passed or FAILED, from where, how long against the RTO, and what failed or was slowest."""
    what = f"platform drill from {evidence['region']}"
    if evidence.get("error"):
        return f"{what} FAILED: {evidence['error']}"
    took = (f"recovered point {evidence['point_id'] or evidence['point_time']} in "
            f"{duration_text(evidence['total_seconds'])} ({'within' if evidence['within_rto'] else 'OVER'} the RTO "
            f"of {duration_text(evidence['rto_seconds'])})")
    failed = [f"{p['kind']} {p['name']}: {'; '.join(p['failures'][:3]) or 'failed'}"
              for p in evidence["parts"] if p["result"] != "passed"]
    if evidence["success"]:
        return f"{what} passed: {took}, {len(evidence['parts'])} part(s) checked"
    over = "" if evidence["within_rto"] else f"; slowest part: {evidence['slowest']}"
    return f"{what} FAILED: {took}{over}" + (f"; failed: {' | '.join(failed)}" if failed else "")


def _store_drill(config: Config, conns: Connections, evidence: dict[str, Any]) -> list[str]:
    """The evidence as an authenticated record in every region that answers (the others are logged)."""
    key = layout.platform_drill_key(evidence["drill_id"])
    stored = []
    for region in config.regions:
        try:
            records.write(conns.store(region, config.transfer), conns.keyring(config.keyring_conn_id(region)), key,
                          dict(evidence, stored_in=region.name), kind=DRILL_KIND)
            stored.append(region.name)
        except StrongroomError as exc:
            log.error("could not store the platform drill's evidence in %s: %s", region.name, exc)
    return stored


def require_drill_success(evidence: dict[str, Any]) -> dict[str, Any]:
    """The drill's small summary (a task's XCom); :class:`RestoreTestError` with its headline when it failed."""
    if not evidence["success"]:
        raise RestoreTestError(evidence["headline"])
    return drill_summary(evidence)


def drill_summary(evidence: dict[str, Any]) -> dict[str, Any]:
    return {k: evidence.get(k) for k in ("drill_id", "region", "point_id", "total_seconds", "rto_seconds",
                                         "within_rto", "slowest", "success", "stored_in")}


def latest_platform_drill(config: Config, conns: Connections, now: datetime | None = None) -> dict[str, Any] | None:
    """The newest authenticated platform drill record (its summary and headline), from the primary region,
    else the next region that answers; None when there is none. Newer records that do not authenticate are
    skipped with a warning and named in ``unauthenticated``."""
    now = now or datetime.now(UTC)

    def newest_in(region: RegionConfig) -> dict[str, Any] | None:
        store = conns.store(region, config.transfer)
        keyring = conns.keyring(config.keyring_conn_id(region))
        keys = sorted(o.key for o in store.list_objects(layout.PLATFORM_DRILLS)
                      if layout.parse_platform_drill_key(o.key))
        bad: list[str] = []
        for key in reversed(keys):  # named after the UTC second it ran: newest last
            try:
                doc = records.unseal(store.get_bytes(key), keyring, kind=DRILL_KIND, key=key, times=["drilled_at"],
                                     now=now)
                return dict(drill_summary(doc), drilled_at=doc["drilled_at"], headline=str(doc["headline"]),
                            error=doc.get("error"), key=key, unauthenticated=bad)
            except IntegrityError as exc:
                log.warning("ignoring %s", exc)
                bad.append(str(exc))
            except (KeyError, TypeError):
                log.warning("ignoring malformed platform drill record %s", key)
                bad.append(f"{DRILL_KIND} record {key} is malformed")
        return {"drilled_at": None, "success": False, "headline": "no authenticated platform drill",
                "region": None, "unauthenticated": bad} if bad else None

    return first_answer_or(config, "the platform drill results", newest_in, None)
