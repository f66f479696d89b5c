"""Benchmark: platform recovery of the benchmark database plus a bucket of N objects, whole and part by part.

Run from the repository root::

    .venv/bin/python bench/recovery.py [--scale 360] [--objects 2000] [--size 65536] [--repeat 2]
                                       [--out bench/results/recovery.json]

(or ``python -m bench.recovery``; a smoke run: ``--scale 5 --objects 200 --repeat 1 --quiet-timeout 0
--retries 0 --out /tmp/recovery.json``). The set-up and the measuring are ``bench/harness.py``'s.

One run starts a throwaway PostgreSQL 15 cluster and one moto S3 server per region on loopback (all stopped
at the end, also on error), creates the ``shop`` sample database and a versioned source bucket of
``--objects`` objects of ``--size`` bytes (on the primary region's server, as ``bench/objects.py`` fills
it), then, unmeasured: one ``strongroom snapshot``, one ``strongroom objects backup`` pass, and one platform
point (:func:`strongroom.recovery.record_point`, in a worker). It then measures, each as a fresh subprocess
of the real CLI, every part going to a fresh target (a new database, an empty new bucket):

* ``whole``          ``strongroom recover --point ID --json``: both parts in parallel
                     (``recovery.concurrency`` 2), the target map naming both;
* ``database_alone`` ``strongroom recover --at T --json`` with a configuration that holds only the database
                     (and maps only it);
* ``bucket_alone``   the same with only the source bucket.

A part alone cannot go through ``--point``: :func:`strongroom.recovery.plan_recovery` takes every part of a
recorded point and :func:`strongroom.recovery.check_targets` refuses a part without a target. ``--at T``
(``T`` the point's time) plans from the catalogs of the configured parts only; with one snapshot and one
object pass it picks exactly the point's snapshot and object point, which each run checks.

Every measurement runs once as a warm-up, then ``--repeat`` times, interleaved; medians are reported, with
the ratio whole / slowest part alone (target: at most 1.2), from wall time and from the CLI's own
``total_seconds``. This is a benchmark only: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a script (`python bench/recovery.py`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness
from bench.harness import DATABASE, REGIONS, VENV_BIN
from devstack import MotoServer

RATIO_LIMIT = 1.2  # issue 18: the parallel recovery takes at most the slowest part alone plus 20%
SOURCE = "bench-recovery-source"
TARGET_DB_CONN = "pg_recovery_shop"
WHOLE, DB_ALONE, BUCKET_ALONE = "whole", "database_alone", "bucket_alone"


# --------------------------------------------------------------------------------------------- worker


def record_point_worker(config_path: str) -> int:
    """Record a platform point through the library (there is no CLI verb for it: the hourly DAG records it);
    prints the result as JSON. Connections come from the environment, as for the CLI."""
    from strongroom import airflow_adapter, recovery
    from strongroom.config import load_config

    result = recovery.record_point(load_config(Path(config_path)), airflow_adapter.connections())
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------- the benchmark


@dataclass
class RecoveryBench(harness.Bench):
    """The shop database and a source bucket recovered together, and each alone."""

    objects: int = 2000
    object_size: int = 64 * 1024
    point_id: str = ""  # the platform point recorded in prepare(), and its time
    point_at: str = ""
    point_parts: dict[str, str] = field(default_factory=dict)  # part name -> snapshot id or object point

    # ---- set-up (unmeasured)

    @property
    def primary(self) -> MotoServer:
        assert self.services is not None, "not started"
        return self.services.s3[REGIONS[0]]

    def config_path(self, name: str) -> Path:
        return self.workdir / f"{name}.yaml"

    def write_config(self, name: str, *, database: bool, bucket: bool, target_bucket: str | None = None) -> Path:
        """The example configuration (its transfer, snapshot and restore settings), with this run's source
        bucket as the only object-storage source, and a ``recovery`` section mapping the parts kept."""
        assert self.services is not None, "not started"
        data = yaml.safe_load(harness.CONFIG.read_text())
        data["restore_test"]["expectations_dir"] = str((harness.CONFIG.parent / "../expectations").resolve())
        data["object_restore_targets"] = []
        if not database:
            data["databases"] = []
        data["object_storage"] = [{"bucket": SOURCE, "aws_conn_id": harness.s3_conn_id(REGIONS[0]),
                                   "region": REGIONS[0]}] if bucket else []
        recovery: dict[str, Any] = {"concurrency": 2, "databases": {}, "buckets": {}}
        if database:
            recovery["databases"][DATABASE] = TARGET_DB_CONN
        if bucket and target_bucket:
            recovery["buckets"][SOURCE] = {"bucket": target_bucket, "aws_conn_id": harness.s3_conn_id(REGIONS[0])}
        data["recovery"] = recovery
        path = self.config_path(name)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def fill_source(self) -> None:
        """The source bucket: ``objects`` objects of ``object_size`` bytes, as bench/objects.py writes them."""
        harness.say(f"filling s3://{SOURCE} with {self.objects} objects of {self.object_size} bytes")
        self.primary.create_bucket(SOURCE, REGIONS[0])
        client = self.primary.client(REGIONS[0])
        payload = os.urandom(self.object_size)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: client.put_object(Bucket=SOURCE, Key=f"f/{i:06d}",
                                                      Body=payload[i % 97:] + i.to_bytes(4, "big")),
                          range(self.objects)))

    def cli(self, *args: str, config: Path | None = None, env: dict[str, str] | None = None) -> Any:
        """An unmeasured CLI call whose --json output is returned."""
        import subprocess

        argv = [str(VENV_BIN / "strongroom"), *(["--config", str(config)] if config else []), *args, "--json"]
        done = subprocess.run(argv, env=env or self.env, capture_output=True, text=True, check=False, cwd=harness.REPO)
        if done.returncode != 0:
            raise harness.CommandFailed(f"{' '.join(args)} exited with {done.returncode}: {done.stderr[-800:]}")
        return json.loads(done.stdout)

    def prepare(self) -> None:
        import subprocess

        self.fill_source()
        whole = self.write_config(WHOLE, database=True, bucket=True, target_bucket="unused-target")
        self.env["STRONGROOM_CONFIG"] = str(whole)
        harness.say("one snapshot, one object backup pass, one platform point (unmeasured)")
        taken = self.cli("snapshot", "--database", DATABASE)[0]
        self.info["snapshot"] = {k: taken.get(k) for k in ("snapshot_id", "seconds", "stored_bytes", "plain_bytes")}
        passes = self.cli("objects", "backup")
        self.info["object_pass"] = passes
        argv = [sys.executable, str(Path(__file__).resolve()), "--record-point-worker", str(whole)]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False, cwd=harness.REPO)
        if done.returncode != 0:
            raise harness.CommandFailed(f"record_point failed: {done.stderr[-800:]}")
        point = json.loads(done.stdout.strip().splitlines()[-1])  # the library logs before it
        self.info["point"] = point
        self.point_id, self.point_at = point["point_id"], point["taken_at"]
        listed = self.cli("points")
        parts = next(row["parts"] for row in listed if row["point_id"] == self.point_id)
        self.point_parts = {p["name"]: p["ref"] for p in parts}
        harness.say(f"platform point {self.point_id} at {self.point_at}: {self.point_parts}")

    # ---- the measured recoveries

    def recover(self, name: str, r: int, *, database: bool, bucket: bool) -> None:
        """One recovery into fresh targets as a fresh CLI subprocess; the targets are dropped afterwards."""
        target_db = self.fresh_name(f"recovered_{name}")
        target_bucket = f"bench-recovered-{self._counter}"
        if bucket:
            self.primary.create_bucket(target_bucket, REGIONS[0])
        config = self.write_config(f"{name}.r{r}", database=database, bucket=bucket, target_bucket=target_bucket)
        env = self.env | {harness.conn_var(TARGET_DB_CONN): self.pg.airflow_uri(target_db)}
        which = ["--point", self.point_id] if database and bucket else ["--at", self.point_at]
        argv = [str(VENV_BIN / "strongroom"), "--config", str(config), "recover", *which, "--json"]
        try:
            sample, stdout = self.run_measured(name, r, argv, "strongroom", env=env)
        finally:
            self.sql(f"DROP DATABASE IF EXISTS {target_db} WITH (FORCE)")
            if bucket:
                self.empty_bucket(target_bucket)
        report = json.loads(stdout)
        used = {p["name"]: p["ref"] for p in report["parts"]}
        if any(self.point_parts.get(k) != v for k, v in used.items()):  # the same parts as the point, or no figure
            raise RuntimeError(f"{name} recovered {used}, not the point's parts {self.point_parts}")
        sample.extra = {
            "total_seconds": report["total_seconds"],
            "parts": {p["kind"]: {"seconds": p["seconds"], "bytes": p["bytes"], "result": p["result"],
                                  "detail": p["detail"]} for p in report["parts"]},
            "success": report["success"],
        }

    def empty_bucket(self, bucket: str) -> None:
        """Remove every version of a target bucket, so the moto server does not grow run after run."""
        client = self.primary.client(REGIONS[0])
        while True:  # first page again each time: paging on while deleting skips versions
            page = client.list_object_versions(Bucket=bucket, MaxKeys=1000)
            doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                      for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if not doomed:
                break
            client.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
        client.delete_bucket(Bucket=bucket)

    def measurements(self) -> list[tuple[str, harness.Measurement]]:
        return [
            (WHOLE, lambda r: self.recover(WHOLE, r, database=True, bucket=True)),
            (DB_ALONE, lambda r: self.recover(DB_ALONE, r, database=True, bucket=False)),
            (BUCKET_ALONE, lambda r: self.recover(BUCKET_ALONE, r, database=False, bucket=True)),
        ]


# --------------------------------------------------------------------------------------------- report


def summarize(bench: RecoveryBench) -> dict[str, Any]:
    samples = bench.samples
    medians: dict[str, dict[str, Any]] = {}
    for name in (WHOLE, DB_ALONE, BUCKET_ALONE):
        measured = [s for s in harness.counted(samples) if s.name == name]
        if not measured:
            continue
        kinds = sorted({k for s in measured for k in s.extra["parts"]})
        medians[name] = {
            "runs": len(measured),
            "wall_s": harness.median(samples, name, lambda s: s.wall_s),
            "wall_s_all": [s.wall_s for s in measured],
            "total_seconds": harness.median(samples, name, lambda s: s.extra["total_seconds"]),
            "part_seconds": {k: statistics.median(s.extra["parts"][k]["seconds"] for s in measured) for k in kinds},
            "cpu_s": harness.median(samples, name, lambda s: s.cpu_s),
            "moto_cpu_s": harness.median(samples, name, lambda s: s.moto_cpu_s),
            "postgres_cpu_s": harness.median(samples, name, lambda s: s.postgres_cpu_s),
            "other_cpu_s_max": max(s.other_cpu_s for s in measured),
            "peak_rss_max": {role: max(s.peak_rss.get(role, 0) for s in measured)
                             for role in sorted({role for s in measured for role in s.peak_rss})},
            "all_succeeded": all(s.extra["success"] for s in measured),
        }
    result: dict[str, Any] = {"medians": medians, "disturbed_runs": harness.disturbed_runs(samples)}
    if not all(name in medians for name in (WHOLE, DB_ALONE, BUCKET_ALONE)):
        result["partial"] = True
        return result
    whole, db, bucket = medians[WHOLE], medians[DB_ALONE], medians[BUCKET_ALONE]
    slowest = DB_ALONE if db["wall_s"] >= bucket["wall_s"] else BUCKET_ALONE
    ratio = whole["wall_s"] / medians[slowest]["wall_s"]
    slowest_own = max(db["total_seconds"], bucket["total_seconds"])
    result["target"] = {
        "whole_wall_s": whole["wall_s"],
        "database_alone_wall_s": db["wall_s"],
        "bucket_alone_wall_s": bucket["wall_s"],
        "slowest_alone": slowest,
        "ratio": round(ratio, 3),
        "limit": RATIO_LIMIT,
        "pass": ratio <= RATIO_LIMIT,
        "ratio_own_timer": round(whole["total_seconds"] / slowest_own, 3),
        "ratio_own_timer_note": "the CLI's total_seconds (execute_recovery: the parts, without start-up, "
                                "planning and storing the report)",
        "whole_parts_seconds": whole["part_seconds"],
        "sum_of_parts_alone_wall_s": round(db["wall_s"] + bucket["wall_s"], 3),
    }
    return result


def print_summary(report: dict[str, Any]) -> None:
    res = report["results"]
    db = report["database"]
    print()
    print(f"Strongroom platform recovery benchmark  {report['date']}  nproc={report['machine']['nproc']}  "
          f"scale={db['scale']}  database {db['size_bytes'] / harness.MiB:.0f} MiB  "
          f"bucket {report['objects']} x {report['object_bytes']} bytes")
    print(f"{'measurement':<16}{'wall s':>9}{'own s':>9}{'db s':>8}{'bucket s':>10}{'cpu s':>8}{'others':>8}")
    for name, m in res["medians"].items():
        parts = m["part_seconds"]
        print(f"{name:<16}{m['wall_s']:>9.2f}{m['total_seconds']:>9.2f}{parts.get('database', float('nan')):>8.2f}"
              f"{parts.get('bucket', float('nan')):>10.2f}{m['cpu_s']:>8.1f}{m['other_cpu_s_max']:>8.1f}")
    if "target" in res:
        t = res["target"]
        print(f"whole / {t['slowest_alone']} = {t['ratio']:.2f} (limit {t['limit']}): "
              f"{'PASS' if t['pass'] else 'FAIL'}  [own timer: {t['ratio_own_timer']:.2f}]")
    for line in res["disturbed_runs"]:
        print(f"disturbed: {line}")


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--scale", type=int, default=harness.DEFAULT_SCALE,
        help="sample_data scale, ~3.4 MiB each (default: %(default)s; 5 for a smoke run)")
    add("--objects", type=int, default=2000, help="objects in the source bucket (default: %(default)s)")
    add("--size", type=int, default=64 * 1024, help="bytes per object (default: %(default)s, as bench/objects.py)")
    harness.add_measuring_options(parser, out="bench/results/recovery.json")
    add("--keep", action="store_true", help="keep the work directory (configurations, per-run logs)")
    add("--only", default="", help="comma-separated measurements to run (default: all)")
    add("--record-point-worker", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.record_point_worker:
        return record_point_worker(args.record_point_worker)
    harness.check_measuring_options(parser, args)

    bench = RecoveryBench(
        objects=args.objects,
        object_size=args.size,
        scale=args.scale,
        repeat=args.repeat,
        workdir=Path(tempfile.mkdtemp(prefix="strongroom-bench-recovery-")),
        quiet_timeout=args.quiet_timeout,
        retries=args.retries,
        only=tuple(name for name in args.only.split(",") if name),
    )
    run = harness.execute(bench, keep=args.keep, prepare=bench.prepare)
    load = os.getloadavg()
    report = {
        **harness.report_head("strongroom recover: database + bucket, whole vs each part alone", "recovery.py", argv,
                              bench, run),
        "objects": args.objects,
        "object_bytes": args.size,
        "repeat": args.repeat,
        "total_seconds": run.seconds,
        "load_average_at_end": [round(x, 2) for x in load],
        "snapshot": bench.info.get("snapshot"),
        "object_pass": bench.info.get("object_pass"),
        "point": bench.info.get("point"),
        "moto_server_peak_rss": bench.info.get("moto_server_peak_rss"),
        "results": summarize(bench),
        "samples": [asdict(s) for s in bench.samples],
    }
    out = Path(args.out)
    harness.write_report(out, report)
    print_summary(report)
    harness.say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
