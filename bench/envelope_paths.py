"""Benchmark: the cost of the stream paths of two versions of the library, side by side (issue 17).

Run from the repository root, with a second checkout of the library to compare against::

    git worktree add /tmp/before <commit> && \\
    .venv/bin/python bench/envelope_paths.py --before /tmp/before/include --input dump.bin \\
        [--repeat 5] [--callgrind-mb 8] [--out bench/results/envelope_paths.json]

(a smoke run: ``--input`` any file of a few MB, ``--repeat 1 --callgrind-mb 0``). ``--input`` should be a
real plain dump (``pg_dump -Fc --compress=0``), as a snapshot streams one: ``--make-input SCALE`` writes one
first, of the benchmarks' sample database at that scale (``scripts/sample_data.py``; scale 60 is ~200 MB).

Two paths, each in a fresh subprocess per run, the two libraries alternating (before, after, after, before,
...) so that a machine whose speed drifts during the run affects both alike:

* ``seal``: what a snapshot does to the dump between ``pg_dump`` and the upload (zstd, AES-256-GCM, SHA-256
  of what is stored): ``snapshot.encode_stream`` before issue 17, ``envelope.seal_stream`` after;
* ``unseal``: what a restore does between the download and ``pg_restore`` (SHA-256, decryption,
  decompression, the spool file, its data offsets): ``restore.fetch_dump`` in both, fed from memory by a
  stand-in for the object store, so only the library's own work is timed.

Each run reports the process's CPU seconds (user + system, zstd's threads included) and wall seconds for
the path alone, not the interpreter's start-up. With ``--callgrind-mb N`` each path also runs under
``valgrind --tool=callgrind`` per library, on the first N MB and on 64 KiB, and reports the difference: the
instructions the path executes on N MB, without the start-up and imports. Unlike seconds, that count does not
depend on what else the machine is doing.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DATABASE, SNAPSHOT_ID = "bench", "20261126T140003Z-abcdef"
KEY = bytes(range(32))
THREADS = 0  # the default of snapshot.zstd_threads: one zstd worker per core


class _MemoryStore:
    """The two reads ``restore.fetch_dump`` makes of a store (head, ranged chunks), served from memory."""

    bucket = "memory"

    def __init__(self, key: str, data: bytes) -> None:
        self._key, self._data = key, data

    def head(self, key: str) -> Any:
        from strongroom.storage import ObjectInfo

        return ObjectInfo(key, len(self._data)) if key == self._key else None

    def iter_chunks(self, key: str, size: int, *, chunk_size: int, concurrency: int, **_: Any) -> Iterator[bytes]:
        for start in range(0, size, chunk_size):
            yield self._data[start : start + chunk_size]


def _seal(source: Any, sink: Any, identity: bytes) -> None:
    """The snapshot's seal step, in whichever form this library has it."""
    if importlib.util.find_spec("strongroom.envelope"):
        from strongroom import envelope

        envelope.seal_stream(source, sink, data_key=KEY, identity=identity, level=3, threads=THREADS)
    else:  # before issue 17
        from strongroom import snapshot

        snapshot.encode_stream(  # type: ignore[attr-defined]
            source, sink, data_key=KEY, associated_data=identity, level=3, threads=THREADS)


def _manifest(stored: bytes, plain_size: int) -> Any:
    from strongroom.catalog import Manifest, StoredObject

    dump = StoredObject(f"databases/{DATABASE}/data/{SNAPSHOT_ID}/dump.zst.srenc", plain_size, 0, len(stored),
                        hashlib.sha256(stored).hexdigest())
    return Manifest(snapshot_id=SNAPSHOT_ID, database=DATABASE, taken_at=datetime.now(UTC), server_version="15",
                    pg_dump_version="15", key_id="bench", wrapped_key="", dump=dump, tables={})


def worker(path: str, input_path: Path, limit: int | None) -> dict[str, Any]:
    """One run of ``path`` with the library on ``sys.path``; its CPU and wall seconds."""
    import io
    import logging

    from strongroom.config import TransferConfig

    logging.disable(logging.CRITICAL)  # the progress lines
    plain = input_path.read_bytes()[:limit] if limit else input_path.read_bytes()
    manifest = _manifest(b"", len(plain))
    identity = manifest.object_identity("dump")
    stored: list[bytes] = []
    if path == "unseal":  # sealed once, untimed: the bytes on disk are the same in both libraries
        _seal(io.BytesIO(plain), stored.append, identity)
        sealed = b"".join(stored)
        manifest = _manifest(sealed, len(plain))
        store = _MemoryStore(manifest.dump.key, sealed)
    source = io.BytesIO(plain)
    with tempfile.TemporaryDirectory() as tmp:
        cpu, wall = time.process_time(), time.perf_counter()
        if path == "seal":
            digest = hashlib.sha256()
            _seal(source, digest.update, identity)
        else:
            from strongroom import restore

            restore.fetch_dump(store, manifest, KEY, os.path.join(tmp, "spool"), TransferConfig())  # type: ignore[arg-type]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3), "plain_bytes": len(plain)}


def _run(include: Path, path: str, input_path: Path, *, limit: int | None = None,
         callgrind: Path | None = None) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", path, "--input", str(input_path)]
    if limit:
        argv += ["--limit", str(limit)]
    if callgrind:
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}", *argv]
    env = {**os.environ, "PYTHONPATH": str(include), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if callgrind:
        totals = re.search(r"^(?:summary|totals):\s+(\d+)", callgrind.read_text(), re.MULTILINE)
        assert totals, f"no instruction total in {callgrind}"
        result["instructions"] = int(totals.group(1))
    return result


def _path_instructions(include: Path, path: str, input_path: Path, limit: int) -> int:
    """Instructions the path executes on ``limit`` bytes: a run on ``limit`` bytes minus a run on 64 KiB, so
    the interpreter's start-up and imports (which differ between the libraries) do not count."""
    with tempfile.TemporaryDirectory() as tmp:
        full = _run(include, path, input_path, limit=limit, callgrind=Path(tmp) / "full.out")["instructions"]
        bare = _run(include, path, input_path, limit=64 << 10, callgrind=Path(tmp) / "bare.out")["instructions"]
    return int(full - bare)


def compare(before: Path, after: Path, input_path: Path, repeat: int, callgrind_mb: int) -> dict[str, Any]:
    order = [("before", before), ("after", after), ("after", after), ("before", before)]
    report: dict[str, Any] = {"input_bytes": input_path.stat().st_size, "repeat": repeat, "paths": {}}
    for path in ("seal", "unseal"):
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        _run(after, path, input_path)  # warm-up: the input in the page cache
        for i in range(repeat):
            name, include = order[i % 4]
            runs[name].append(_run(include, path, input_path))
            other = "after" if name == "before" else "before"
            runs[other].append(_run(after if other == "after" else before, path, input_path))
            print(f"  {path} round {i + 1}: before {runs['before'][-1]['cpu_seconds']} cpu-s, "
                  f"after {runs['after'][-1]['cpu_seconds']} cpu-s", flush=True)
        entry: dict[str, Any] = {"runs": runs}
        for name in runs:
            entry[f"{name}_cpu_median"] = statistics.median(r["cpu_seconds"] for r in runs[name])
            entry[f"{name}_wall_median"] = statistics.median(r["wall_seconds"] for r in runs[name])
        entry["cpu_ratio"] = round(entry["after_cpu_median"] / entry["before_cpu_median"], 4)
        entry["wall_ratio"] = round(entry["after_wall_median"] / entry["before_wall_median"], 4)
        if callgrind_mb:
            counts = {name: _path_instructions(include, path, input_path, callgrind_mb << 20)
                      for name, include in (("before", before), ("after", after))}
            entry["instructions"] = counts
            entry["instructions_ratio"] = round(counts["after"] / counts["before"], 4)
        print(f"{path}: cpu after/before {entry['cpu_ratio']}, wall {entry['wall_ratio']}"
              + (f", instructions {entry['instructions_ratio']}" if callgrind_mb else ""), flush=True)
        report["paths"][path] = entry
    return report


def make_input(path: Path, scale: int) -> None:
    """``pg_dump -Fc --compress=0`` of the sample database at ``scale``, from a throwaway cluster."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from devstack import PG_BIN, LocalPostgres
    from sample_data import create_sample

    pg = LocalPostgres().start()
    try:
        import psycopg

        with psycopg.connect(**pg.connect_kwargs(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE shop")
        create_sample(pg.connect_kwargs("shop"), scale)
        kwargs = pg.connect_kwargs("shop")
        env = {**os.environ, "PGPASSWORD": str(kwargs.get("password") or "")}
        subprocess.run([str(PG_BIN / "pg_dump"), "-Fc", "--compress=0", "-h", str(kwargs["host"]),
                        "-p", str(kwargs["port"]), "-U", str(kwargs["user"]), "-f", str(path), "shop"],
                       env=env, check=True)
    finally:
        pg.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="the include/ directory of the library to compare against")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parent.parent / "include")
    parser.add_argument("--input", type=Path, required=True, help="a plain dump (pg_dump -Fc --compress=0)")
    parser.add_argument("--make-input", type=int, metavar="SCALE", help="first write --input at this scale")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each library per path")
    parser.add_argument("--callgrind-mb", type=int, default=8, help="MB run under callgrind (0: none)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/envelope_paths.json"))
    parser.add_argument("--worker", choices=("seal", "unseal"), help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.input, args.limit)))
        return 0
    if args.before is None:
        parser.error("--before is required")
    if args.make_input:
        make_input(args.input.resolve(), args.make_input)
    report = compare(args.before.resolve(), args.after.resolve(), args.input.resolve(), args.repeat,
                     args.callgrind_mb)
    report["before"], report["after"] = str(args.before), str(args.after)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
