"""Benchmark: the restore test (``strongroom restore-test``) of the >1 GB benchmark database, phase by phase.

Run from the repository root::

    .venv/bin/python bench/restore_test.py [--scale N] [--repeat N] [--out bench/results/restore_test.json]

(or ``python -m bench.restore_test``; a smoke run of a few MB: ``--scale 1 --repeat 1 --quiet-timeout 0
--retries 0 --out /tmp/restore_test.json``). It runs on ``bench/harness.py``'s set-up (throwaway
PostgreSQL 15, one moto S3 server per region, the ``shop`` sample database at scale 360, ~1.2 GiB) and
measurement (fresh subprocesses under GNU time, peak RSS per process, waiting for a quiet machine,
disturbed runs measured again), as ``bench/snapshot.py`` does, and measures:

* ``pg_dump_fc``     ``pg_dump -Fc`` to a local file: the file the baseline restores;
* ``snapshot``       ``strongroom snapshot --database shop``: the snapshot the restore test restores;
* ``pg_restore_jN``  ``pg_restore --jobs=N`` of the -Fc file into a fresh database: the restore baseline, for
                     1 job and for the jobs strongroom uses on this machine (``restore.jobs``, 0: one per core);
* ``pg_restore_raw_jN``, ``pg_restore_piped_jN``  the same restore of the *uncompressed* custom-format dump
                     a snapshot holds (inside its zstd and encryption), from a file pg_dump wrote (with data
                     offsets) and from one written through a pipe (without them, as a snapshot's dump is);
* ``pg_restore_fresh_jN``  the piped dump copied to a new file right before it is restored (not synced),
                     as a restore's freshly written spool is;
* ``restore_test``   ``strongroom restore-test --database shop --snapshot ID --region PRIMARY --json``: a
                     throwaway server is provisioned, the snapshot downloaded, verified, decrypted,
                     restored, validated with Great Expectations, the server torn down; the CLI reports
                     each phase's seconds (``strongroom.drill``), recorded here.

The target (from the snapshot issue): restore ≤ 1.3× ``pg_restore``. The restore phase is compared with
the baseline restoring the same dump with the same jobs in the same run; download and decryption come
before it and are reported next to it. The throwaway server's CPU (a daemon outside the measured process
tree) is sampled and recorded, so it is not mistaken for other load on the machine. Results go to ``--out``
as JSON. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`python bench/restore_test.py`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness
from bench.harness import DATABASE, REGIONS, VENV_BIN

PHASES = ("provision", "download", "decrypt", "restore", "validate", "teardown")


class SandboxCpu(threading.Thread):
    """CPU of the throwaway PostgreSQL servers a restore test starts (and their backends).

    ``pg_ctl`` daemonizes the server, so it is not in the measured process tree and GNU time cannot see it;
    without this, the server's own restore work would count as other people's load on the machine.
    Sampled every 50 ms: the server's total (with its reaped backends) as last seen before it stopped.
    """

    def __init__(self) -> None:
        super().__init__(name="sandbox-cpu", daemon=True)
        self.seen: dict[int, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"strongroom-sandbox-" in cmdline and harness.comm(int(entry.name)) == "postgres":
                    pid = int(entry.name)
                    self.seen[pid] = max(self.seen.get(pid, 0.0), harness.tree_cpu_seconds(pid))
            self._stop_event.wait(0.05)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return round(sum(self.seen.values()), 2)


class RestoreTestBench(harness.Bench):
    """The snapshot benchmark's set-up, with the restore test as the measured command."""

    def snapshot_id(self) -> str:
        taken = [s for s in self.samples if s.name == "snapshot"]
        return str(taken[-1].extra["snapshot_id"])

    def restore_test(self, r: int) -> None:
        argv = [str(VENV_BIN / "strongroom"), "restore-test", "--database", DATABASE]
        argv += ["--snapshot", self.snapshot_id(), "--region", REGIONS[0], "--json"]
        server = SandboxCpu()
        server.start()
        try:
            sample, stdout = self.run_measured("restore_test", r, argv, "strongroom")
        finally:
            server_cpu = server.stop()
        # the throwaway server is part of the measured work, not a disturbance
        sample.other_cpu_s = round(max(0.0, sample.other_cpu_s - server_cpu), 2)
        (result,) = json.loads(stdout)
        sample.extra = {
            "sandbox_server_cpu_s": server_cpu,
            "snapshot_id": result["snapshot_id"],
            "region": result["region"],
            "success": result["success"],
            "phases": result["phases"],
            "restore_seconds": result["restore_seconds"],
            "expectations": len(result["expectations"]),
            "failures": result["failures"],
            "tables": len(result["tables"]),
        }

    def raw_dumps(self) -> None:
        """Uncompressed custom-format dumps (what a snapshot holds, inside its zstd and encryption): one
        written to a file, with the data offsets pg_dump writes back into its TOC, and one written through
        a pipe, without them (as a snapshot's dump is). Made once; only their restores are measured."""
        dump = [str(self.pg_bin / "pg_dump"), "--format=custom", "--compress=0", "--no-password", DATABASE]
        subprocess.run([*dump, f"--file={self.workdir / 'raw.pgdump'}"], env=self.tool_env, check=True)
        # through a real pipe: with stdout redirected to a file pg_dump could still seek back and write offsets
        with open(self.workdir / "piped.pgdump", "wb") as out:
            proc = subprocess.Popen(dump, env=self.tool_env, stdout=subprocess.PIPE)
            assert proc.stdout is not None
            shutil.copyfileobj(proc.stdout, out, 1 << 20)
            if proc.wait() != 0:
                raise harness.CommandFailed(f"pg_dump through a pipe exited with {proc.returncode}")

    def pg_restore_fresh(self, r: int, jobs: int) -> None:
        """The piped dump copied to a new file just before it is restored, as a restore's spool is: its pages
        are still being written back while pg_restore reads it and the server writes the database."""
        name = f"pg_restore_fresh_j{jobs}"
        target = self.fresh_name(name)
        self.sql(f"CREATE DATABASE {target}")
        fresh = self.workdir / "fresh.pgdump"
        argv = self.pg_restore_argv(target, jobs, fresh)
        try:
            waited = self.settle()
            shutil.copyfile(self.workdir / "piped.pgdump", fresh)  # not synced: that is the point
            sample, _ = harness.measure(
                name, r, argv, env=self.tool_env, probes=self.probes, logs=self.logs, root_role="pg_restore"
            )
            sample.waited_s = waited
            self.samples.append(sample)
            harness.say(f"  {name:<18} round {r}: {sample.wall_s:8.2f} s")
        finally:
            fresh.unlink(missing_ok=True)
            self.sql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")

    def measurements(self) -> list[tuple[str, harness.Measurement]]:
        jobs = sorted({1, self.restore_jobs})
        n = self.restore_jobs
        return [
            ("pg_dump_fc", self.pg_dump_fc),
            ("snapshot", self.snapshot),
            *[(f"pg_restore_j{j}", lambda r, j=j: self.pg_restore(r, j)) for j in jobs],
            (
                f"pg_restore_raw_j{n}",
                lambda r: self.pg_restore(r, n, f"pg_restore_raw_j{n}", self.workdir / "raw.pgdump"),
            ),
            (
                f"pg_restore_piped_j{n}",
                lambda r: self.pg_restore(r, n, f"pg_restore_piped_j{n}", self.workdir / "piped.pgdump"),
            ),
            (f"pg_restore_fresh_j{n}", lambda r: self.pg_restore_fresh(r, n)),
            ("restore_test", self.restore_test),
        ]


def summarize(bench: RestoreTestBench) -> dict[str, Any]:
    counted = harness.counted(bench.samples)
    tests = [s for s in counted if s.name == "restore_test"]
    wall = {name: harness.median(bench.samples, name, lambda s: s.wall_s) for name in {s.name for s in counted}}
    phases = {p: statistics.median(s.extra["phases"].get(p, 0.0) for s in tests) for p in PHASES}
    phases_all = {p: [s.extra["phases"].get(p) for s in tests] for p in PHASES}
    outside = statistics.median(s.wall_s - sum(s.extra["phases"].values()) for s in tests)
    jobs = bench.restore_jobs
    baseline = wall[f"pg_restore_j{jobs}"]
    fetch_and_restore = statistics.median(s.extra["restore_seconds"] for s in tests)
    ratio = phases["restore"] / baseline
    return {
        "wall_s": wall,
        "restore_test": {
            "runs": len(tests),
            "wall_s": wall["restore_test"],
            "wall_s_all": [s.wall_s for s in tests],
            "cpu_s": harness.median(bench.samples, "restore_test", lambda s: s.cpu_s),
            "phases_s": phases,
            "phases_s_all": phases_all,
            "outside_phases_s": round(outside, 3),
            "outside_phases_note": "CLI start-up (Python, Airflow imports), catalog and manifest, recording the "
            "result and Data Docs in the primary region",
            "download_decrypt_restore_s": fetch_and_restore,
            "peak_rss_max": {
                role: max(s.peak_rss.get(role, 0) for s in tests)
                for role in sorted({k for s in tests for k in s.peak_rss})
            },
            "expectations": tests[-1].extra["expectations"],
            "success": all(s.extra["success"] for s in tests),
        },
        "target": {
            "what": "restore <= 1.3x pg_restore (the snapshot issue's restore target)",
            "limit": harness.RESTORE_RATIO_LIMIT,
            "baseline": f"pg_restore_j{jobs} (the restore test restores with --jobs={jobs} on this machine)",
            "restore_phase_ratio": round(ratio, 3),
            "pass": ratio <= harness.RESTORE_RATIO_LIMIT,
            "restore_phase_ratio_vs_pg_restore_j1": round(phases["restore"] / wall["pg_restore_j1"], 3),
            "download_decrypt_restore_ratio": round(fetch_and_restore / baseline, 3),
            "download_decrypt_restore_ratio_vs_pg_restore_j1": round(fetch_and_restore / wall["pg_restore_j1"], 3),
            "restore_phase_ratio_vs_uncompressed_piped": round(
                phases["restore"] / wall[f"pg_restore_piped_j{jobs}"], 3
            ),
            "uncompressed_piped_vs_file": round(wall[f"pg_restore_piped_j{jobs}"] / wall[f"pg_restore_raw_j{jobs}"], 3),
            "restore_phase_ratio_vs_fresh_file": round(phases["restore"] / wall[f"pg_restore_fresh_j{jobs}"], 3),
            "note": "pg_restore_raw: the same uncompressed dump strongroom restores, from a file pg_dump wrote "
            "(with data offsets); pg_restore_piped: written through a pipe (no offsets), as a snapshot's dump is",
        },
        "disturbed_runs": harness.disturbed_runs(bench.samples),
    }


def print_summary(report: dict[str, Any]) -> None:
    res = report["results"]
    rt, target = res["restore_test"], res["target"]
    print()
    print(
        f"Strongroom restore-test benchmark  {report['date']}  "
        f"database {report['database']['size_bytes'] / harness.MiB:.0f} MiB"
    )
    for name, seconds in sorted(res["wall_s"].items()):
        print(f"  {name:<22}{seconds:>9.2f} s")
    print("  restore-test phases: " + ", ".join(f"{p} {v:.2f} s" for p, v in rt["phases_s"].items()))
    print(
        f"  outside the phases: {rt['outside_phases_s']:.2f} s; "
        f"{rt['expectations']} expectations, success {rt['success']}"
    )
    verdict = "PASS" if target["pass"] else "FAIL"
    print(
        f"restore phase / {target['baseline'].split()[0]} = {target['restore_phase_ratio']:.2f} "
        f"(limit {target['limit']}): {verdict}; "
        f"download+decrypt+restore: {target['download_decrypt_restore_ratio']:.2f}"
    )
    for line in res["disturbed_runs"]:
        print(f"disturbed: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--scale", type=int, default=harness.DEFAULT_SCALE,
        help="sample_data scale, ~3.4 MiB each (default: %(default)s; 1 for a smoke run)")
    harness.add_measuring_options(parser, out="bench/results/restore_test.json")
    args = parser.parse_args(argv)
    harness.check_measuring_options(parser, args)
    bench = RestoreTestBench(
        scale=args.scale,
        repeat=args.repeat,
        workdir=Path(tempfile.mkdtemp(prefix="strongroom-bench-rt-")),
        quiet_timeout=args.quiet_timeout,
        retries=args.retries,
    )
    run = harness.execute(bench, prepare=bench.raw_dumps)
    report = {
        **harness.report_head("strongroom restore-test phases vs pg_restore", "restore_test.py", argv, bench, run),
        "repeat": args.repeat,
        "total_seconds": run.seconds,
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
