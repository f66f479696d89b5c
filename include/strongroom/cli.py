"""``strongroom``: the same code path as the DAGs, and the break-glass tool when Airflow is down.

Connections come from Airflow (``AIRFLOW_CONN_*`` environment variables work without any Airflow
service running). ``list``, ``restore`` and ``verify`` (and every command's transport check) read a
connection set as such a variable without importing Airflow when Airflow would read it from there too (no
secrets backend configured), which saves seconds at start-up
(:class:`strongroom.airflow_adapter.AirflowConnections`). Every failure exits non-zero with one line on
stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from strongroom.errors import (
    ConfigError,
    PruneError,
    ReplicationError,
    SourceError,
    StrongroomError,
    worded,
)
from strongroom.progress import duration_text

if TYPE_CHECKING:
    from strongroom.config import Config, RegionConfig

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_TERMINATED = 143
# the settings the library's messages name (errors.worded), as this CLI's flags
FLAGS = {
    "clean": "--clean", "missing_roles=create": "--create-roles", "missing_roles=no_owner": "--no-owner",
    "confirm_source": "--confirm-source", "confirm_production": "--confirm-production", "target_dsn": "--target-dsn",
    "now": "--now", "dry_run": "--dry-run", "point_id": "--point", "at": "--at",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, like every other failure
        sys.stderr.write(f"strongroom: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="strongroom", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", help="configuration file (default: $STRONGROOM_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    snap = sub.add_parser("snapshot", help="take and commit a snapshot of one or every database")
    snap.add_argument("--database", help="one configured database (default: all)")
    snap.add_argument("--json", action="store_true")

    lst = sub.add_parser("list", help="list committed snapshots")
    lst.add_argument("--database", help="one configured database (default: all)")
    lst.add_argument("--region", help="region to read (default: the primary, else the next region that answers)")
    lst.add_argument("--json", action="store_true")

    rst = sub.add_parser("restore", help="restore a snapshot into a target database")
    rst.add_argument("--database", required=True)
    which = rst.add_mutually_exclusive_group()
    which.add_argument("--snapshot", help="snapshot id (default: the newest)")
    which.add_argument("--at", help="newest snapshot taken at or before this time, e.g. 2026-11-26T14:00+00:00")
    target = rst.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-conn", help="Airflow connection id of the target database")
    target.add_argument("--target-dsn", help="libpq DSN without a password (PGPASSWORD/PGPASSFILE supply it)")
    target.add_argument("--sandbox", action="store_true",
                        help="a new database on restore.sandbox_conn_id, named after the snapshot")
    rst.add_argument("--region", help="region to restore from (default: the primary)")
    rst.add_argument("--table", action="append", default=[], dest="tables", metavar="SCHEMA.TABLE",
                     help="restore only this table (repeatable; into a new database)")
    rst.add_argument("--clean", action="store_true", help="replace the contents of a non-empty target")
    rst.add_argument("--confirm-production", metavar="NAME",
                     help="the source database's name, to restore over it (a safety snapshot is taken first)")
    owners = rst.add_mutually_exclusive_group()
    owners.add_argument("--create-roles", action="store_true",
                        help="create the roles the target lacks from the snapshot's globals (NOLOGIN, no passwords)")
    owners.add_argument("--no-owner", action="store_true",
                        help="restore without owners and privileges: everything belongs to the restoring role")
    rst.add_argument("--with-passwords", action="store_true",
                     help="roles created keep LOGIN and their password (hash) from the globals")
    rst.add_argument("--globals-only", action="store_true",
                     help="only create the snapshot's roles on the target's server (tablespaces: report only)")
    rst.add_argument("--json", action="store_true")

    prn = sub.add_parser("prune", help="delete every snapshot older than the retention, in every region")
    prn.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    prn.add_argument("--now", help="evaluate the policy at this instant (later than now: --dry-run only)")
    prn.add_argument("--json", action="store_true")

    rt = sub.add_parser("restore-test", help="restore into an isolated server and validate (exit 1 on failure)")
    rt.add_argument("--database", help="one configured database (default: all)")
    rt.add_argument("--snapshot", help="snapshot id (default: the newest plus a random one)")
    rt.add_argument("--region", help="region to test (default: today's region in the rotation)")
    rt.add_argument("--json", action="store_true")

    dr = sub.add_parser("drill", help="platform drill: recover the newest complete platform point into throwaway "
                                      "targets, check every part, time it against recovery.rto (exit 1 on failure)")
    dr.add_argument("--region", help="region to recover from (default: the one after the last drill's)")
    dr.add_argument("--json", action="store_true")

    obj = sub.add_parser("objects", help="object-storage backups")
    obj_sub = obj.add_subparsers(dest="objects_command", required=True, parser_class=_Parser)
    ob = obj_sub.add_parser("backup", help="run one incremental pass of one or every source bucket")
    ob.add_argument("--bucket", help="one configured source bucket (default: all)")
    ob.add_argument("--json", action="store_true")
    ol = obj_sub.add_parser("list", help="what a point in time holds")
    ol.add_argument("--bucket", required=True)
    ol.add_argument("--at", help="time with a UTC offset (default: now)")
    ol.add_argument("--prefix", default="")
    ol.add_argument("--json", action="store_true")
    orr = obj_sub.add_parser("restore", help="write the objects as they were at a point in time into a bucket")
    orr.add_argument("--bucket", required=True, help="the configured source bucket")
    orr.add_argument("--at", required=True, help="time with a UTC offset")
    orr.add_argument("--target-bucket", required=True)
    orr.add_argument("--target-conn", help="Airflow AWS connection of the target (default: the source's)")
    orr.add_argument("--prefix", default="")
    orr.add_argument("--region", help="region to restore from (default: the primary, then the others)")
    orr.add_argument("--confirm-source", help="repeat the source bucket's name to overwrite the live source")
    orr.add_argument("--json", action="store_true")

    rec = sub.add_parser("recover", help="platform recovery: every database and bucket back to one point, from one "
                                         "region, into the recovery targets (exit 1 when a part fails)")
    point = rec.add_mutually_exclusive_group()
    point.add_argument("--at", help="from the catalogs: each database's newest snapshot and each bucket's point at "
                                    "or before this time, e.g. 2026-11-26T14:00+00:00")
    point.add_argument("--point", help="a recorded platform point id (default: the newest complete point)")
    rec.add_argument("--region", help="region to recover from (default: the first that holds every part)")
    rec.add_argument("--confirm-production", action="append", default=[], metavar="NAME",
                     help="a production database or source bucket that is a target, by name (repeatable or "
                          "comma-separated): restored over")
    rec.add_argument("--dry-run", action="store_true", help="print the plan, touch nothing")
    rec.add_argument("--json", action="store_true")

    pts = sub.add_parser("points", help="recorded platform points, newest first, complete or missing per region")
    pts.add_argument("--region", help="one region (default: every region that answers)")
    pts.add_argument("--json", action="store_true")

    ver = sub.add_parser("verify", help="check every committed snapshot in each region: manifests authenticate, "
                                        "objects and chunks present with their length; --deep reads and "
                                        "authenticates every object and chunk (exit 1 naming each problem)")
    ver.add_argument("--region", help="one region (default: every region)")
    ver.add_argument("--database", help="one configured database (default: all)")
    ver.add_argument("--deep", action="store_true", help="read and authenticate every object and every chunk")
    ver.add_argument("--json", action="store_true")

    sub.add_parser("init-buckets", help="create or check each region's bucket (versioning, lifecycle, ...)")
    ia = sub.add_parser("init-airflow", help="create or resize the Airflow pools the configuration needs "
                                             "(through Airflow's REST API, the pools.api_conn_id connection)")
    ia.add_argument("--check", action="store_true", help="change nothing; exit 1 naming any missing or "
                                                        "wrongly sized pool")

    st = sub.add_parser("status", help="per database and region: newest snapshot, age, gaps, last error; "
                                       "the last restore test and the size trend")
    st.add_argument("--json", action="store_true")

    keys = sub.add_parser("keys", help="keyring tools")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    keys_sub.add_parser("generate", help="print a new keyring entry")
    keys_sub.add_parser("check", help="fail when a committed snapshot needs a key the keyring lacks")
    return parser


def parse_at(text: str, option: str = "--at") -> datetime:
    from strongroom.config import parse_time

    return parse_time(text, option)


def _print(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def _config(args: argparse.Namespace) -> Config:
    """The configuration, refused at load when a region or source bucket would be reached over plain HTTP
    or unverified TLS on a non-loopback host without ``allow_insecure_transport`` (one error line)."""
    from strongroom import airflow_adapter
    from strongroom.config import load_config

    config = load_config(args.config)
    airflow_adapter.connections(environment_first=True).s3_transport(config)
    return config


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, snapshot
    config = _config(args)
    names = [config.database(args.database).name] if args.database else [d.name for d in config.databases]
    if not names:
        raise ConfigError("no databases are configured")
    conns = airflow_adapter.connections()
    results = []
    failed: list[tuple[str, StrongroomError]] = []
    for name in names:
        try:
            result = snapshot.snapshot_database(config, name, conns)
        except (ReplicationError, SourceError) as exc:
            # one source that fails, or one region that is down, must not cost the other databases their
            # snapshot (a region outage with Airflow gone: this command is the hourly run)
            failed.append((name, exc))
            continue
        results.append(result)
        if not args.json:
            regions = ", ".join(result["regions"])
            print(
                f"{name}: snapshot {result['snapshot_id']} committed in {regions} "
                f"({result['stored_bytes']} bytes stored, {result['seconds']}s)"
            )
    if args.json:
        _print(results, True, "")
    if len(failed) > 1:
        raise type(failed[0][1])("; ".join(str(e) if str(e).startswith(f"{n}: ") else f"{n}: {e}" for n, e in failed))
    if failed:
        raise failed[0][1]
    return 0


NO_SNAPSHOTS = "holds no snapshots"  # a region that answers but lists nothing: the next one is asked


def _cmd_list(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, catalog
    from strongroom.regions import candidates, first_answer
    config = _config(args)
    names = [config.database(args.database).name] if args.database else [d.name for d in config.databases]
    conns = airflow_adapter.connections(environment_first=True)
    now = datetime.now(UTC)

    def listing(region: RegionConfig) -> list[dict[str, Any]]:
        store = conns.store(region, config.transfer)
        keyring = conns.keyring(config.keyring_conn_id(region))
        store.check_bucket()
        return [dict(m.summary(), region=region.name, age_seconds=int((now - m.taken_at).total_seconds()))
                for name in names for m in catalog.list_manifests(store, keyring, name)]

    answer = first_answer(config, "the snapshot list", listing, region=args.region,
                          empty=lambda rows: None if rows else NO_SNAPSHOTS)
    rows, region = answer.value, answer.region
    if args.json:
        _print(rows, True, "")
    else:
        header = ("DATABASE", "SNAPSHOT", "TAKEN AT (UTC)", "AGE", "STORED", "TABLES", "ROWS")
        print("{:<16} {:<26} {:<20} {:>8} {:>12} {:>6} {:>12}".format(*header))
        for r in rows:
            taken = datetime.fromisoformat(r["taken_at"]).strftime("%Y-%m-%d %H:%M:%S")
            print(
                f"{r['database']:<16} {r['snapshot_id']:<26} {taken:<20} {duration_text(r['age_seconds']):>8} "
                f"{r['stored_bytes']:>12} {r['tables']:>6} {r['rows']:>12}"
            )
        if not rows:
            print(f"(no committed snapshots in {', '.join(c.name for c in candidates(config, args.region))})")
        elif answer.skipped:
            print(f"(listed from region {region.name})")
    if rows and answer.skipped:  # the log's warning may not reach a terminal (Airflow configures logging)
        _warn(f"listed from region {region.name} after passing over {'; '.join(answer.unavailable)}")
    emptied = [s.region for s in answer.skipped if s.reason == NO_SNAPSHOTS]
    if rows and emptied:
        which = " and ".join(f"the primary region {n}" if n == config.primary.name else f"region {n}" for n in emptied)
        one = len(emptied) == 1
        raise StrongroomError(f"{which} {'holds' if one else 'hold'} no snapshots while {region.name} holds "
                              f"{len(rows)}: {'its bucket was' if one else 'their buckets were'} emptied or replaced")
    return 0


def _warn(text: str) -> None:
    red = sys.stderr.isatty()
    sys.stderr.write(("\033[31m" if red else "") + f"strongroom: warning: {text}" + ("\033[0m" if red else "") + "\n")


def _cmd_restore(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, restore
    from strongroom.postgres import PgSettings
    from strongroom.replication import CachedConnections

    config = _config(args)
    at = parse_at(args.at) if args.at else None
    # the plan and the restore ask for the same store and keyring: each S3 client is built once
    conns = CachedConnections(airflow_adapter.connections(environment_first=True))
    if args.globals_only:
        return _restore_globals(args, config, conns, at)
    if args.with_passwords and not args.create_roles:
        raise ConfigError("--with-passwords applies to roles created with --create-roles or --globals-only")
    choice = restore.ROLES_CREATE if args.create_roles else restore.ROLES_NO_OWNER if args.no_owner else \
        restore.ROLES_REFUSE
    plan = restore.plan_restore(
        config, conns, args.database,
        target_conn_id=args.target_conn or restore.SANDBOX,
        target_dsn=PgSettings.from_dsn(args.target_dsn) if args.target_dsn else None,
        snapshot_id=args.snapshot, at=at, region=args.region, tables=args.tables, clean=args.clean,
        confirm_production=args.confirm_production, missing_roles=choice, run_suffix=secrets.token_hex(3),
    )
    target = PgSettings.from_dsn(args.target_dsn) if args.target_dsn else restore.planned_target(conns, plan)
    safety = restore.take_safety_snapshot(config, conns, plan)
    if safety:
        sys.stderr.write(f"strongroom: safety snapshot of {plan.production} before the restore: {safety}\n")
    result = restore.execute_plan(config, conns, plan, target, with_passwords=args.with_passwords)
    _print(
        dict(result.to_dict(), safety_snapshot=safety),
        args.json,
        f"restored {result.database} snapshot {result.snapshot_id} (taken {result.taken_at}) from region "
        f"{result.region} into {result.target}: {result.tables} tables, {result.rows} rows verified "
        f"(download+decrypt {duration_text(result.download_seconds)}, "
        f"pg_restore {duration_text(result.restore_seconds)})",
    )
    for skipped in result.unavailable:
        sys.stderr.write(f"strongroom: warning: region {skipped}\n")
    for line in result.role_lines():
        _warn(line)
    return 0


def _restore_globals(args: argparse.Namespace, config: Any, conns: Any, at: datetime | None) -> int:
    from strongroom import restore
    from strongroom.postgres import PgSettings

    if not (args.target_conn or args.target_dsn):
        raise ConfigError("--globals-only needs --target-conn or --target-dsn (the server to create roles on)")
    if args.tables or args.clean or args.no_owner or args.confirm_production:
        raise ConfigError("--globals-only creates roles only: --table, --clean, --no-owner and "
                          "--confirm-production do not apply")
    target = PgSettings.from_dsn(args.target_dsn) if args.target_dsn else conns.postgres(args.target_conn)
    snapshot_id, report = restore.restore_globals(
        config, conns, args.database, target, snapshot_id=args.snapshot, at=at, region=args.region,
        with_passwords=args.with_passwords,
    )
    lines = [f"roles of {args.database} snapshot {snapshot_id} on {target.describe()}: "
             f"{len(report.created)} created, {len(report.existing)} existed (left as they are)", *report.lines()]
    _print(dict(report.to_dict(), snapshot_id=snapshot_id), args.json, "\n".join(lines))
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "generate":
        from strongroom.keyring import generate_entry

        key_id, encoded = generate_entry()
        print(json.dumps({key_id: encoded}))
        sys.stderr.write(
            f"add this entry to the keyring connection's 'keys'; set 'active' to {key_id!r} to rotate "
            "(keep every older key: see docs/keys.md)\n"
        )
        return 0
    from strongroom import airflow_adapter, keycheck
    config = _config(args)
    report = keycheck.check_keys(config, airflow_adapter.connections())
    for line in report.lines():
        print(line)
    if not report.ok:
        raise StrongroomError(report.summary())
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, monitor
    config = _config(args)
    board = monitor.dashboard(config, airflow_adapter.connections())
    if args.json:
        _print(board, True, "")
        return 0
    header = ("DATABASE", "REGION", "NEWEST SNAPSHOT", "AGE", "GAPS", "LAST ERROR")
    print("{:<16} {:<14} {:<26} {:>8} {:>5}  {}".format(*header))
    red = sys.stdout.isatty()
    failed = []
    for entry in [*board["databases"], *board["buckets"]]:
        for row in entry["regions"]:
            age = duration_text(row["age_seconds"]) if row["age_seconds"] is not None else "-"
            line = (f"{row['database']:<16} {row['region']:<14} {row['newest'] or '-':<26} {age:>8} "
                    f"{len(row['gaps']):>5}  {row['last_error'] or ''}")
            if (row["last_error"] or "").startswith("FAILED"):
                failed.append(f"{row['database']} in {row['region']}")
                line = f"\033[31m{line}\033[0m" if red else line
            print(line)
    print()
    for db in board["databases"]:
        test = db["restore_test"]
        line = test["headline"] if test else "no restore test on record"
        when = f" at {test['tested_at']}, restore {duration_text(test['restore_seconds'])}" if test else ""
        print(f"{db['name']}: last restore test {line}{when}")
        for problem in test["unauthenticated"] if test else []:
            print(f"{db['name']}: UNAUTHENTICATED: {problem} (ignored)")
    last = board["platform_drill"]
    print(f"platform: last drill {last['headline']} at {last['drilled_at']}" if last and last["drilled_at"]
          else "platform: no platform drill on record")
    for problem in (last or {}).get("unauthenticated", []):
        print(f"platform: UNAUTHENTICATED: {problem} (ignored)")
    for problem in board["unauthenticated"]:
        print(f"UNAUTHENTICATED: {problem} (ignored)")
    for warning in board["warnings"]:
        print(f"WARNING: {warning}")
    if failed:
        raise StrongroomError("FAILED: " + ", ".join(failed) + " (no snapshots while another region holds them)")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, retention
    config = _config(args)
    now = parse_at(args.now, "--now") if args.now else None
    results = retention.prune(config, airflow_adapter.connections(), now=now, dry_run=args.dry_run)
    if args.json:
        _print([r.to_dict() for r in results], True, "")
    else:
        for result in results:
            if result.error:
                print(f"{result.region}: NOT PRUNED: {result.error}")
                continue
            assert result.plan is not None
            verb = "would delete" if args.dry_run else "deleted"
            print(f"{result.plan.summary()}" + ("" if args.dry_run else f" ({result.removed} versions removed)"))
            for d in result.plan.deletions:
                what = f"{d.database}/{d.snapshot_id}" if d.snapshot_id else (d.upload[0] if d.upload else d.kind)
                print(f"  {verb} {d.kind} {what}: {d.reason}")
            for held in result.plan.held:
                print(f"  HELD {held}")
    failed = [f"{r.region} ({r.error})" for r in results if r.error]
    if failed:
        raise PruneError("not pruned: " + "; ".join(failed))
    if not args.dry_run:
        retention.check_held(results)  # held snapshots fail the command: that is the alert
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, verification
    config = _config(args)
    report = verification.verify(config, airflow_adapter.connections(environment_first=True),
                                 region=args.region, database=args.database, deep=args.deep)
    _print(report.to_dict(), args.json, "\n".join(report.lines()))
    if not report.ok:
        raise StrongroomError(report.summary())
    if not args.json:
        print(report.summary())
    return 0


def _cmd_restore_test(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, drill
    config = _config(args)
    conns = airflow_adapter.connections()
    results = drill.run_restore_tests(config, conns, database=args.database, snapshot_id=args.snapshot,
                                      region=args.region)
    if args.json:
        _print([r.to_dict() for r in results], True, "")
    else:
        for r in results:
            print(r.headline())
            phases = ", ".join(f"{k} {duration_text(v)}" for k, v in r.phases.items())
            print(f"  snapshot age {duration_text(r.snapshot_age_seconds)}; phases: {phases}")
            if r.result_key:
                print(f"  result: {r.result_key}" + (f"; Data Docs: {r.docs_key}" if r.docs_key else ""))
    drill.require_success(results)
    return 0


def _cmd_drill(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, drill
    config = _config(args)
    evidence = drill.run_platform_drill(config, airflow_adapter.connections(), region=args.region)
    lines = [evidence["headline"]]
    lines += [f"  removed s3://{name}, left by a platform drill that did not finish"
              for name in evidence["leftovers_removed"]]
    for part in evidence["parts"]:
        lines.append(f"  {part['kind']} {part['name']} ({part['ref']}): {part['result']} in "
                     f"{duration_text(part['seconds'])}, {part['checks']} checks"
                     + (f"; {'; '.join(part['failures'][:3])}" if part["failures"] else ""))
    lines.append(f"  evidence stored in {', '.join(evidence['stored_in']) or 'no region'}")
    _print(evidence, args.json, "\n".join(lines))
    drill.require_drill_success(evidence)
    return 0


def _cmd_objects(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, objects
    config = _config(args)
    conns = airflow_adapter.connections()
    if args.objects_command == "backup":
        names = [config.source(args.bucket).bucket] if args.bucket else [s.bucket for s in config.object_storage]
        if not names:
            raise ConfigError("no object_storage sources are configured")
        results = [objects.backup_pass(config, name, conns) for name in names]
        for r in results if not args.json else []:
            repaired = "; ".join(f"{len(points)} missed point(s) copied to {region}"
                                 for region, points in r.repaired.items())
            print(f"{r.source}: point {r.taken_at}: {r.objects} objects, {r.read_from_source} read from the source, "
                  f"committed in {', '.join(r.committed) or 'no region'}{'; ' + repaired if repaired else ''} "
                  f"({duration_text(r.seconds)})")
        if args.json:
            _print([r.to_dict() for r in results], True, "")
        failed = [f"{r.source}: {error}" for r in results for error in r.errors()]
        if failed:
            raise ReplicationError("; ".join(failed))
        return 0
    at = parse_at(args.at) if getattr(args, "at", None) else None
    if args.objects_command == "list":
        listing = objects.list_point(config, conns, args.bucket, at, args.prefix)
        text = [f"{listing['source']} at point {listing['point']} (region {listing['region']}):"]
        text += [f"  {o['size']:>12}  {o['key']}" for o in listing["objects"]]
        _print(listing, args.json, "\n".join(text))
        return 0
    source = config.source(args.bucket)
    target = conns.bucket_store(args.target_conn or source.aws_conn_id, args.target_bucket, source.region,
                                config.transfer)
    assert at is not None
    done = objects.restore_point(config, conns, args.bucket, at, target, prefix_=args.prefix, region=args.region,
                                 allow_source=args.confirm_source)
    _print(done, args.json, f"restored {done['objects']} objects ({done['bytes']} bytes) of {done['source']} as at "
                            f"point {done['point']} from {done['region']} into s3://{done['target']}")
    return 0


def _cmd_recover(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, recovery

    config = _config(args)
    at = parse_at(args.at) if args.at else None
    conns = airflow_adapter.connections()
    plan = recovery.plan_recovery(config, conns, at=at, point_id=args.point, region=args.region)
    if args.dry_run:
        _print(plan.to_dict(), args.json, "\n".join(plan.lines()))
        return 0
    confirmed = [name.strip() for given in args.confirm_production for name in given.split(",") if name.strip()]
    targets = recovery.targets_from_config(config, conns)
    report = recovery.execute_recovery(config, conns, plan, targets, confirm_production=confirmed)
    _print(report.to_dict(), args.json, "\n".join(report.lines()))
    recovery.require_success(report)
    return 0


def _cmd_points(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, recovery

    config = _config(args)
    listing = recovery.read_points(config, airflow_adapter.connections(), region=args.region)
    for where, why in listing.unreadable.items():  # the log's warning may not reach a terminal
        _warn(f"region {where} could not be read, its points are not listed: {why}")
    grouped: dict[str, dict[str, Any]] = {}
    for p in listing.points:
        entry = grouped.setdefault(p.point_id, {"point_id": p.point_id, "taken_at": p.taken_at.isoformat(),
                                                "spread_seconds": p.spread_seconds,
                                                "parts": [part.to_dict() for part in p.parts], "regions": {}})
        entry["regions"][p.region] = {"complete": p.complete, "missing": list(p.missing)}
    rows = list(grouped.values())
    if args.json:
        _print(rows, True, "")
        return 0
    print("{:<24} {:<20} {:>8} {:>5}  {}".format("POINT", "TAKEN AT (UTC)", "SPREAD", "PARTS", "REGIONS"))
    for row in rows:
        taken = datetime.fromisoformat(row["taken_at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        states = "; ".join(f"{r}: complete" if s["complete"] else f"{r}: MISSING {', '.join(s['missing'])}"
                           for r, s in row["regions"].items())
        print(f"{row['point_id']:<24} {taken:<20} {duration_text(row['spread_seconds']):>8} "
              f"{len(row['parts']):>5}  {states}")
    if not rows:
        print("(no platform point recorded)")
    return 0


def _cmd_init_buckets(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, buckets
    config = _config(args)
    reports = buckets.init_buckets(config, airflow_adapter.connections())
    for r in reports:
        state = "created" if r.created else ("managed" if r.managed else "not created by strongroom: checked only")
        print(f"{r.region}: s3://{r.bucket} ({state})")
        for item in r.drift:
            print(f"  {'fixed' if item in r.fixed else 'DRIFT'}: {item}")
        if not r.drift:
            print("  as expected")
    bad = [r.region for r in reports if not r.ok]
    if bad:
        raise StrongroomError("buckets drift from the expected state in: " + ", ".join(bad))
    return 0


def _cmd_init_airflow(args: argparse.Namespace) -> int:
    from strongroom import airflow_adapter, pools
    from strongroom.config import load_config

    config = load_config(args.config)
    drift, changes = pools.sync_pools(config, airflow_adapter.database_servers(config),
                                      airflow_adapter.pool_api(config), check_only=args.check)
    for line in changes:
        print(line)
    if args.check and not drift.ok:
        raise StrongroomError(drift.summary())
    print("pools: " + ("as configured" if args.check or drift.ok else f"{len(changes)} change(s) made"))
    return 0


_COMMANDS = {
    "snapshot": _cmd_snapshot, "list": _cmd_list, "restore": _cmd_restore, "status": _cmd_status, "keys": _cmd_keys,
    "prune": _cmd_prune, "init-buckets": _cmd_init_buckets, "restore-test": _cmd_restore_test, "drill": _cmd_drill,
    "objects": _cmd_objects, "init-airflow": _cmd_init_airflow, "recover": _cmd_recover, "points": _cmd_points,
    "verify": _cmd_verify,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Airflow (imported lazily, for connections) logs through its own handlers, to stdout: keep stdout for
    # our output (--json) and stderr for the one error line unless -v asks for more
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO" if args.verbose else "ERROR"
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:  # Airflow and botocore are chatty at import and on retries
        for name in ("airflow", "botocore", "urllib3"):
            logging.getLogger(name).setLevel(logging.ERROR)
    from strongroom.signals import Terminated, terminate_on_sigterm

    try:
        with terminate_on_sigterm():
            return _COMMANDS[args.command](args)
    except StrongroomError as exc:
        sys.stderr.write(f"strongroom: error: {worded(str(exc), FLAGS)}\n")
        return EXIT_FAILURE
    except Terminated:
        sys.stderr.write("strongroom: error: stopped by SIGTERM; unfinished uploads were aborted\n")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        sys.stderr.write("strongroom: error: interrupted; unfinished uploads were aborted\n")
        return 130
    except Exception as exc:  # an unexpected failure still gets one line; -v shows the traceback
        if args.verbose:
            logging.getLogger("strongroom").exception("unexpected failure")
        first = (str(exc).splitlines() or [""])[0]
        sys.stderr.write(f"strongroom: error: {type(exc).__name__}: {first}\n")
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
