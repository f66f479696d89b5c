"""Benchmark: Strongroom snapshot and restore of a >1 GB database against pg_dump -Fc and pg_restore.

Run from the repository root::

    .venv/bin/python bench/snapshot.py [--scale N] [--shape shop|wide] [--repeat N] [--out bench/results/snapshot.json]
        [--keep]

(or ``python -m bench.snapshot``; a smoke run of a few MB: ``--scale 1 --repeat 1 --quiet-timeout 0
--retries 0 --out /tmp/snapshot.json``). The set-up and the measuring are ``bench/harness.py``'s.

One run starts a throwaway PostgreSQL 15 cluster and one moto S3 server per region on loopback (all stopped
at the end, also on error; ``--s3-servers 1`` shares one server, which then copies server-side), creates the
``shop`` sample database (with ``--shape wide``, two wide text/JSON tables of about the same size under the
same name: ``scripts/sample_data.create_wide``), then measures, each as a fresh subprocess:

* ``pg_dump_fc``        ``pg_dump -Fc`` (default compression) of shop to a local file: the snapshot baseline;
* ``pg_dump_raw``       ``pg_dump -Fc --compress=0`` to /dev/null: what pg_dump alone costs (the floor);
* ``snapshot``          ``strongroom snapshot --database shop`` into the local S3 server (the real CLI: the
                        dump lands in the primary region, then is copied, verified and committed in every
                        configured region);
* ``null_sink``         the product's own pipeline (``strongroom.snapshot.stream_dump``: pg_dump -> zstd ->
                        AES-256-GCM, the function ``take_snapshot`` streams into the store) into a sink that
                        discards the bytes, so the store's own cost is visible; the row counter beside it
                        (schema inventory, row counts, small tables' checksums) is a no-op, in this
                        benchmark's worker only;
* ``null_sink_counted`` the same with the row counter doing its work, exactly as in ``take_snapshot``;
* ``pg_restore_j1/j2``  ``pg_restore`` of the pg_dump -Fc file into a fresh database: the restore baseline;
* ``restore``           ``strongroom restore --target-dsn ...`` from the local S3 server into a fresh
                        database;
* ``list``              ``strongroom list --json`` (the CLI's fixed start-up cost, and the stored size);
* ``snapshot_no_inventory`` the same snapshot with the schema inventory switched off (the CLI's own
                        ``main`` with ``strongroom.inventory.read_inventory`` replaced by a no-op, in this
                        benchmark only): with ``snapshot`` in the same rounds, what the inventory adds;
* ``inventory_read``    ``read_inventory`` alone, in a REPEATABLE READ transaction on the benchmark
                        database, timed in-process (the inventory's own cost, free of the snapshot's noise).

Every measurement runs once as a warm-up, then ``--repeat`` times, interleaved; medians are reported.
Wall time comes from the parent; CPU time and the tree's peak RSS from GNU time's ``wait4``; each process's
own peak RSS from sampling ``VmHWM`` in /proc; the moto server's and the PostgreSQL server's CPU from /proc
deltas. Results go to ``--out`` as JSON, and a summary to stdout. This is a benchmark only: nothing asserts
on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

if __package__ in (None, ""):  # run as a script (`python bench/snapshot.py`, `make bench`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness
from bench.harness import DATABASE, MB, VENV_BIN

SNAPSHOT_RATIO_LIMIT = 1.0
SNAPSHOT_RATIO_AIM = 0.6
REPLICATION_RATIO_LIMIT = 0.5  # replication to two more regions adds at most 0.5x the snapshot's own time
RSS_LIMIT = 300 * MB
CHUNKED = "shop_chunked"  # the database label of the warm chunked snapshots (the same PostgreSQL database)
INVENTORY_LIMIT = 0.05  # the schema inventory adds less than 5% to a snapshot
FULL = ("pg_dump_fc", "snapshot", "null_sink", "null_sink_counted", "pg_dump_raw", "restore", "list")


# --------------------------------------------------------------------------------------------- workers


def inventory_worker(dsn: str) -> int:
    """Time ``read_inventory`` in a REPEATABLE READ transaction; prints seconds and the JSON size."""
    import psycopg

    from strongroom.inventory import read_inventory

    with psycopg.connect(dsn, password=os.environ.get("PGPASSWORD")) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        started = time.perf_counter()
        found = read_inventory(conn)
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": round(seconds, 4), "json_bytes": len(json.dumps(found)),
                      "relations": len(found["relations"])}))
    return 0


def null_sink_worker(dsn: str, count_rows: bool) -> int:
    """The product's snapshot pipeline (``strongroom.snapshot.stream_dump``) into a sink that discards the
    bytes; prints its stream statistics as JSON. Without ``count_rows`` the row counter that runs beside
    the dump does nothing (patched in this process only), so the pair shows what the counter costs."""
    from strongroom import envelope, postgres, snapshot
    from strongroom.config import load_config

    config = load_config(None)
    settings = postgres.PgSettings.from_dsn(dsn)

    def discard(block: bytes) -> None:
        del block

    idle_counter = mock.patch.object(snapshot.RowCounter, "run", lambda self: None)
    started = time.monotonic()
    with nullcontext() if count_rows else idle_counter, postgres.snapshot_session(settings) as session:
        stats, counter = snapshot.stream_dump(
            config, session, settings, settings.dbname, "bench", envelope.new_data_key(), discard
        )
    result = asdict(stats) | {"seconds": round(time.monotonic() - started, 3), "tables_counted": len(counter.counts)}
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------- the benchmark


class SnapshotBench(harness.Bench):
    """The shop database's snapshot and restore, against pg_dump -Fc and pg_restore."""

    def null_sink(self, r: int, count_rows: bool = False) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--null-sink-worker", self.dsn]
        name = "null_sink_counted" if count_rows else "null_sink"
        sample, stdout = self.run_measured(name, r, [*argv, "--count-rows"] if count_rows else argv, "python")
        sample.extra = json.loads(stdout)

    def restore(self, r: int) -> None:
        target = self.fresh_name("restored_sr")
        dsn = f"host=127.0.0.1 port={self.pg.port} user=postgres dbname={target}"
        argv = [str(VENV_BIN / "strongroom"), "restore", "--database", DATABASE, "--target-dsn", dsn, "--json"]
        # the spool goes to the default temporary directory, as in production with restore.spool_dir unset
        try:
            sample, stdout = self.run_measured("restore", r, argv, "strongroom")
        finally:
            self.sql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")
        result = json.loads(stdout)
        sample.extra = {k: result[k] for k in ("snapshot_id", "download_seconds", "restore_seconds", "rows")}

    def list_snapshots(self, r: int) -> None:
        argv = [str(VENV_BIN / "strongroom"), "list", "--database", DATABASE, "--json"]
        sample, stdout = self.run_measured("list", r, argv, "strongroom")
        rows = json.loads(stdout)
        newest = max(rows, key=lambda row: row["taken_at"])
        sample.extra = {
            "snapshots": len(rows),
            "stored_bytes": newest["stored_bytes"],
            "plain_bytes": newest["plain_bytes"],
        }

    def snapshot_no_inventory(self, r: int) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--snapshot-without-inventory"]
        sample, stdout = self.run_measured("snapshot_no_inventory", r, argv, "python")
        result = json.loads(stdout)[0]
        sample.extra = {k: result[k] for k in ("snapshot_id", "seconds", "replication_seconds") if k in result}

    def inventory_read(self, r: int) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--inventory-worker", self.dsn]
        sample, stdout = self.run_measured("inventory_read", r, argv, "python")
        sample.extra = json.loads(stdout)

    chunked: bool = False  # also measure the chunked format (snapshot.format: chunked) beside the whole one

    def chunked_env(self) -> dict[str, str]:
        """The environment of a chunked run: the example configuration with ``snapshot.format: chunked`` and
        one database label per round for the cold snapshots (``shop_c<round>``: nothing to reuse) and one for
        the warm ones (``shop_chunked``: the previous round's snapshot of an unchanged database)."""
        path = self.workdir / "chunked.yaml"
        if not path.exists():
            doc = yaml.safe_load(harness.CONFIG.read_text())
            doc["snapshot"] = {**doc.get("snapshot", {}), "format": "chunked"}
            labels = [CHUNKED, *(f"shop_c{r}" for r in range(self.repeat + 1))]
            doc["databases"] = [{"name": label, "postgres_conn_id": "pg_shop"} for label in labels]
            path.write_text(json.dumps(doc))
        return self.env | {"STRONGROOM_CONFIG": str(path)}

    def snapshot_chunked(self, r: int, cold: bool) -> None:
        label = f"shop_c{r}" if cold else CHUNKED
        name = "snapshot_chunked_cold" if cold else "snapshot_chunked"
        argv = [str(VENV_BIN / "strongroom"), "snapshot", "--database", label, "--json"]
        sample, stdout = self.run_measured(name, r, argv, "strongroom", env=self.chunked_env())
        result = json.loads(stdout)[0]
        sample.extra = {k: result[k] for k in ("snapshot_id", "seconds", "replication_seconds", "plain_bytes")}

    def restore_chunked(self, r: int) -> None:
        target = self.fresh_name("restored_chunked")
        dsn = f"host=127.0.0.1 port={self.pg.port} user=postgres dbname={target}"
        argv = [str(VENV_BIN / "strongroom"), "restore", "--database", CHUNKED, "--target-dsn", dsn, "--json"]
        try:
            sample, stdout = self.run_measured("restore_chunked", r, argv, "strongroom", env=self.chunked_env())
        finally:
            self.sql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")
        result = json.loads(stdout)
        sample.extra = {k: result[k] for k in ("snapshot_id", "download_seconds", "restore_seconds", "rows")}

    def measurements(self) -> list[tuple[str, harness.Measurement]]:
        jobs = sorted({1, 2, self.restore_jobs})
        chunked: list[tuple[str, harness.Measurement]] = [
            ("snapshot_chunked_cold", lambda r: self.snapshot_chunked(r, cold=True)),
            ("snapshot_chunked", lambda r: self.snapshot_chunked(r, cold=False)),
            ("restore_chunked", self.restore_chunked),
        ] if self.chunked else []
        return [*chunked,
            ("pg_dump_fc", self.pg_dump_fc),
            ("snapshot", self.snapshot),
            ("snapshot_no_inventory", self.snapshot_no_inventory),
            ("inventory_read", self.inventory_read),
            ("null_sink", self.null_sink),
            ("null_sink_counted", lambda r: self.null_sink(r, count_rows=True)),
            ("pg_dump_raw", self.pg_dump_raw),
            *[(f"pg_restore_j{j}", lambda r, j=j: self.pg_restore(r, j)) for j in jobs],
            ("restore", self.restore),
            ("list", self.list_snapshots),
        ]


# --------------------------------------------------------------------------------------------- report


def replication_target(samples: list[harness.Sample]) -> dict[str, Any]:
    """Replication to the other regions against the snapshot's own time, both from the CLI's own timers:
    ``replication_seconds`` (copy, read-back verify and commit everywhere, and the run check) after
    ``seconds`` (take_snapshot: dump, compress, encrypt, land in the first region)."""
    taken = [s for s in harness.counted(samples) if s.name == "snapshot"]
    if not taken or "replication_seconds" not in taken[0].extra:
        return {"measured": False, "note": "this strongroom does not report replication_seconds"}
    ratios = [s.extra["replication_seconds"] / s.extra["seconds"] for s in taken]
    ratio = statistics.median(ratios)
    return {
        "measured": True,
        "replication_s": statistics.median(s.extra["replication_seconds"] for s in taken),
        "snapshot_s": statistics.median(s.extra["seconds"] for s in taken),
        "ratio": round(ratio, 3),
        "ratios_all": [round(r, 3) for r in ratios],
        "limit": REPLICATION_RATIO_LIMIT,
        "pass": ratio <= REPLICATION_RATIO_LIMIT,
        "peak_rss_bytes": max(s.peak_rss.get("strongroom", 0) for s in taken),
    }



def inventory_target(samples: list[harness.Sample]) -> dict[str, Any]:
    """What the schema inventory adds to a snapshot: ``snapshot`` against ``snapshot_no_inventory`` measured
    in the same rounds (take_snapshot's own timer, and wall time), and ``read_inventory``'s own time."""
    with_inv = {s.round: s for s in harness.counted(samples) if s.name == "snapshot"}
    without = {s.round: s for s in harness.counted(samples) if s.name == "snapshot_no_inventory"}
    rounds = sorted(set(with_inv) & set(without))
    if not rounds:
        return {"measured": False}
    pairs = [(with_inv[r].extra["seconds"], without[r].extra["seconds"]) for r in rounds]
    take_with = statistics.median(a for a, _ in pairs)
    take_without = statistics.median(b for _, b in pairs)
    reads = [s.extra for s in harness.counted(samples) if s.name == "inventory_read"]
    read_s = statistics.median(x["seconds"] for x in reads) if reads else None
    own = read_s / take_without if read_s is not None else None
    return {
        "measured": True,
        "take_seconds_with": take_with,
        "take_seconds_without": take_without,
        "take_overhead": round(take_with / take_without - 1, 4),
        "take_overhead_per_round": [round(a / b - 1, 4) for a, b in pairs],
        "wall_with": statistics.median(with_inv[r].wall_s for r in rounds),
        "wall_without": statistics.median(without[r].wall_s for r in rounds),
        "read_inventory_seconds": read_s,
        "read_inventory_share_of_take": round(own, 5) if own is not None else None,
        "inventory_json_bytes": reads[0]["json_bytes"] if reads else None,
        "limit": INVENTORY_LIMIT,
        "pass": own is not None and own < INVENTORY_LIMIT,
        "note": "pass is judged on read_inventory's own time against the snapshot; the with/without difference "
                "of whole snapshots is dominated by the machine's noise (see take_overhead_per_round)",
    }


def chunked_targets(samples: list[harness.Sample]) -> dict[str, Any] | None:
    """The chunked format against the same run's whole format and baselines (issue 20): snapshot wall time
    against ``pg_dump -Fc`` (cold: every chunk new; warm: an unchanged database, only the dump's header
    chunk is new), restore against ``pg_restore --jobs=2``, and the CLI's peak RSS."""
    names = {s.name for s in harness.counted(samples)}
    if not {"snapshot_chunked_cold", "restore_chunked", "pg_dump_fc", "pg_restore_j2"} <= names:
        return None

    def wall(name: str) -> float:
        return harness.median(samples, name, lambda s: s.wall_s)

    def rss(name: str) -> int:
        return max((s.peak_rss.get("strongroom", 0) for s in harness.counted(samples) if s.name == name), default=0)

    result: dict[str, Any] = {
        "snapshot_cold_vs_pg_dump_fc": round(wall("snapshot_chunked_cold") / wall("pg_dump_fc"), 3),
        "restore_vs_pg_restore_j2": round(wall("restore_chunked") / wall("pg_restore_j2"), 3),
        "restore_limit": harness.RESTORE_RATIO_LIMIT,
        "peak_rss_mib": {n: round(rss(n) / harness.MiB, 1) for n in ("snapshot_chunked_cold", "snapshot_chunked",
                                                                    "restore_chunked") if n in names},
        "rss_limit_mib": RSS_LIMIT / harness.MiB,
    }
    if "snapshot" in names:
        result["snapshot_whole_vs_pg_dump_fc"] = round(wall("snapshot") / wall("pg_dump_fc"), 3)
    if "snapshot_chunked" in names:
        result["snapshot_warm_vs_pg_dump_fc"] = round(wall("snapshot_chunked") / wall("pg_dump_fc"), 3)
    if "restore" in names:
        result["restore_whole_vs_pg_restore_j2"] = round(wall("restore") / wall("pg_restore_j2"), 3)
    return result


def summarize(bench: SnapshotBench) -> dict[str, Any]:
    samples = bench.samples
    names = list(dict.fromkeys(s.name for s in samples))
    medians: dict[str, dict[str, Any]] = {}
    for name in names:
        measured = [s for s in harness.counted(samples) if s.name == name]
        roles = sorted({role for s in measured for role in s.peak_rss})
        medians[name] = {
            "runs": len(measured),
            "wall_s": harness.median(samples, name, lambda s: s.wall_s),
            "wall_s_all": [s.wall_s for s in measured],
            "cpu_s": harness.median(samples, name, lambda s: s.cpu_s),
            "moto_cpu_s": harness.median(samples, name, lambda s: s.moto_cpu_s),
            "postgres_cpu_s": harness.median(samples, name, lambda s: s.postgres_cpu_s),
            "system_busy_s": harness.median(samples, name, lambda s: s.system_busy_s),
            "other_cpu_s_max": max(s.other_cpu_s for s in measured),
            "peak_rss_max": {role: max(s.peak_rss.get(role, 0) for s in measured) for role in roles},
            "tree_maxrss_max": max(s.tree_maxrss for s in measured),
        }
    wall = {name: m["wall_s"] for name, m in medians.items()}
    replication = replication_target(samples)
    inventory_cost = inventory_target(samples)
    chunked = chunked_targets(samples)
    if set(FULL) - set(names):
        return {
            "medians": medians,
            "targets": {"replication_vs_snapshot": replication, "inventory_vs_snapshot": inventory_cost,
                        "chunked": chunked},
            "partial": True,
            "disturbed_runs": [f"{s.name} round {s.round}" for s in harness.counted(samples) if s.disturbed],
        }
    jobs = bench.restore_jobs
    strongroom_rss = max(
        s.peak_rss.get("strongroom", 0) for s in harness.counted(samples) if s.name in ("snapshot", "restore")
    )
    last = {s.name: s for s in samples}
    snapshot_ratio = wall["snapshot"] / wall["pg_dump_fc"]
    landing = harness.median(samples, "snapshot", lambda s: s.extra["seconds"])
    restore_ratio = wall["restore"] / wall[f"pg_restore_j{jobs}"]
    targets = {
        "snapshot_vs_pg_dump_fc": {
            "ratio": round(snapshot_ratio, 3),
            "limit": SNAPSHOT_RATIO_LIMIT,
            "aim": SNAPSHOT_RATIO_AIM,
            "pass": snapshot_ratio <= SNAPSHOT_RATIO_LIMIT,
            "meets_aim": snapshot_ratio <= SNAPSHOT_RATIO_AIM,
            "landing_only_ratio": round(landing / wall["pg_dump_fc"], 3),
            "landing_only_note": "take_snapshot's own timer (dump, compress, encrypt, upload to the first "
            "region, pending manifest), without CLI start-up and without replication to the other regions",
            "null_sink_ratio": round(wall["null_sink"] / wall["pg_dump_fc"], 3),
        },
        "restore_vs_pg_restore": {
            "ratio": round(restore_ratio, 3),
            "baseline": f"pg_restore_j{jobs} (strongroom restores with --jobs={jobs} on this machine)",
            "limit": harness.RESTORE_RATIO_LIMIT,
            "pass": restore_ratio <= harness.RESTORE_RATIO_LIMIT,
            "ratio_vs_pg_restore_j1": round(wall["restore"] / wall["pg_restore_j1"], 3),
        },
        "strongroom_peak_rss": {
            "bytes": strongroom_rss,
            "mib": round(strongroom_rss / harness.MiB, 1),
            "limit_bytes": RSS_LIMIT,
            "pass": strongroom_rss < RSS_LIMIT,
            "snapshot_bytes": medians["snapshot"]["peak_rss_max"].get("strongroom", 0),
            "restore_bytes": medians["restore"]["peak_rss_max"].get("strongroom", 0),
        },
        "replication_vs_snapshot": replication,
        "inventory_vs_snapshot": inventory_cost,
        "chunked": chunked,
    }
    sizes = {
        "database_bytes": bench.info["database"]["size_bytes"],
        "pg_dump_fc_bytes": last["pg_dump_fc"].extra["file_bytes"],
        "stored_object_bytes": last["list"].extra["stored_bytes"],
        "plain_dump_bytes": last["list"].extra["plain_bytes"],
    }
    sizes["stored_vs_pg_dump_fc"] = round(sizes["stored_object_bytes"] / sizes["pg_dump_fc_bytes"], 3)
    breakdown = {
        "snapshot_minus_null_sink_s": round(wall["snapshot"] - wall["null_sink"], 2),
        "snapshot_minus_null_sink_counted_s": round(wall["snapshot"] - wall["null_sink_counted"], 2),
        "row_count_cost_s": round(wall["null_sink_counted"] - wall["null_sink"], 2),
        "null_sink_minus_pg_dump_raw_s": round(wall["null_sink"] - wall["pg_dump_raw"], 2),
        "snapshot_take_seconds": landing,
        "snapshot_replicate_and_start_s": harness.median(samples, "snapshot", lambda s: s.wall_s - s.extra["seconds"]),
        "restore_download_seconds": harness.median(samples, "restore", lambda s: s.extra["download_seconds"]),
        "restore_pg_restore_seconds": harness.median(samples, "restore", lambda s: s.extra["restore_seconds"]),
        "restore_start_select_and_check_s": harness.median(
            samples, "restore", lambda s: s.wall_s - s.extra["download_seconds"] - s.extra["restore_seconds"]
        ),
        "cli_start_and_list_s": wall["list"],
    }
    disturbed = harness.disturbed_runs(samples)
    return {
        "medians": medians,
        "targets": targets,
        "sizes": sizes,
        "breakdown": breakdown,
        "disturbed_runs": disturbed,
    }


def print_summary(report: dict[str, Any]) -> None:
    res = report["results"]
    db = report["database"]
    print()
    print(
        f"Strongroom snapshot benchmark  {report['date']}  nproc={report['machine']['nproc']}  "
        f"shape={db.get('shape', 'shop')}  scale={db['scale']}  database {db['size_bytes'] / harness.MiB:.0f} MiB"
    )
    header = f"{'measurement':<19}{'wall s':>9}{'cpu s':>8}{'moto cpu':>10}{'pg cpu':>8}{'busy':>7}{'others':>8}"
    print(f"{header}  peak RSS (MiB)")
    for name, m in res["medians"].items():
        rss = ", ".join(f"{role} {peak / harness.MiB:.0f}" for role, peak in m["peak_rss_max"].items())
        busy = m["system_busy_s"] / max(m["wall_s"], 1e-9) / (report["machine"]["nproc"] or 1)
        print(
            f"{name:<19}{m['wall_s']:>9.2f}{m['cpu_s']:>8.1f}{m['moto_cpu_s']:>10.1f}"
            f"{m['postgres_cpu_s']:>8.1f}{busy:>6.0%}{m['other_cpu_s_max']:>8.1f}  {rss}"
        )
    rep = res["targets"]["replication_vs_snapshot"]
    if rep["measured"]:
        print(
            f"replication {rep['replication_s']:.2f} s / snapshot {rep['snapshot_s']:.2f} s = {rep['ratio']:.2f}  "
            f"(limit {rep['limit']}): {'PASS' if rep['pass'] else 'FAIL'}  {rep['ratios_all']}"
        )
    if res.get("partial"):
        return
    sizes = res["sizes"]
    mib = {key: value / harness.MiB for key, value in sizes.items() if key.endswith("_bytes")}
    print(
        f"\nsizes: database {mib['database_bytes']:.0f} MiB, pg_dump -Fc {mib['pg_dump_fc_bytes']:.0f} MiB, "
        f"stored object {mib['stored_object_bytes']:.0f} MiB "
        f"({sizes['stored_vs_pg_dump_fc']:.2f} x pg_dump -Fc), "
        f"plain dump {mib['plain_dump_bytes']:.0f} MiB"
    )
    t = res["targets"]
    snap, rest, rss = t["snapshot_vs_pg_dump_fc"], t["restore_vs_pg_restore"], t["strongroom_peak_rss"]
    verdict = {True: "PASS", False: "FAIL"}
    print(
        f"snapshot / pg_dump -Fc = {snap['ratio']:.2f}  (limit {snap['limit']}, aim {snap['aim']}): "
        f"{verdict[snap['pass']]}{'' if snap['meets_aim'] else ', aim missed'}  "
        f"[landing only: {snap['landing_only_ratio']:.2f}, null sink: {snap['null_sink_ratio']:.2f}]"
    )
    print(
        f"restore / {rest['baseline'].split()[0]} = {rest['ratio']:.2f}  (limit {rest['limit']}): "
        f"{verdict[rest['pass']]}  [vs single-job pg_restore: {rest['ratio_vs_pg_restore_j1']:.2f}]"
    )
    print(f"strongroom peak RSS = {rss['mib']:.0f} MiB  (limit {RSS_LIMIT // harness.MB} MB): {verdict[rss['pass']]}")
    print("breakdown: " + ", ".join(f"{k}={round(v, 2)}" for k, v in res["breakdown"].items()))
    for line in res["disturbed_runs"]:
        print(f"disturbed: {line}")
    if report["code_changed_during_run"]:
        changed = ", ".join(report["code_changed_during_run"])
        print(f"WARNING: changed under include/ during the run (the results may mix code versions): {changed}")


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--scale", type=int, default=harness.DEFAULT_SCALE,
        help="sample_data scale, ~3.4 MiB each (default: %(default)s; 1 for a smoke run)")
    add("--shape", choices=("shop", "wide"), default="shop",
        help="the database: the shop sample database, or two wide text/JSON tables of about the same size "
        "(default: %(default)s)")
    harness.add_measuring_options(parser, out="bench/results/snapshot.json")
    add("--keep", action="store_true", help="keep the work directory (dump file, per-run logs)")
    add(
        "--s3-servers",
        type=int,
        choices=(1, 3),
        default=3,
        help="3: one moto server per region, so copies stream through strongroom as between providers; "
        "1: one shared server, whose server-side copy moves the bytes (default: %(default)s)",
    )
    add(
        "--only",
        default="",
        help="comma-separated measurements to run (default: all); a partial run reports "
        "only the medians and the replication target",
    )
    add("--chunked", action="store_true",
        help="also measure chunked snapshots (snapshot.format: chunked): cold, warm and their restore")
    parser.add_argument("--null-sink-worker", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--count-rows", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot-without-inventory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inventory-worker", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.null_sink_worker:
        return null_sink_worker(args.null_sink_worker, args.count_rows)
    if args.snapshot_without_inventory:
        from strongroom import cli, inventory

        # benchmark only: the same snapshot, no inventory
        with mock.patch.object(inventory, "read_inventory", lambda conn: {}):
            return cli.main(["snapshot", "--database", DATABASE, "--json"])
    if args.inventory_worker:
        return inventory_worker(args.inventory_worker)
    harness.check_measuring_options(parser, args)

    bench = SnapshotBench(
        scale=args.scale,
        shape=args.shape,
        repeat=args.repeat,
        workdir=Path(tempfile.mkdtemp(prefix="strongroom-bench-")),
        quiet_timeout=args.quiet_timeout,
        retries=args.retries,
        s3_servers=args.s3_servers,
        only=tuple(name for name in args.only.split(",") if name),
    )
    bench.chunked = args.chunked
    run = harness.execute(bench, keep=args.keep)
    report = {
        **harness.report_head("strongroom snapshot/restore vs pg_dump -Fc/pg_restore", "snapshot.py", argv, bench,
                              run),
        "s3_servers": bench.s3_servers,
        "only": list(bench.only),
        "repeat": args.repeat,
        "total_seconds": run.seconds,
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
