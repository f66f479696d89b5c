"""Benchmark: deduplicated (chunked) snapshots, measured before the chunk store exists (issue 20).

Run from the repository root::

    .venv/bin/python bench/dedup.py [--scale N] [--hours N] [--workloads append,delete,update]
        [--chunk-sizes 512,1024,2048,4096] [--out bench/results/dedup.json] [--keep]

(or ``python -m bench.dedup``; a smoke run of a few MB: ``--scale 1 --hours 3 --out /tmp/dedup.json``). It
needs ``restic`` (``make bench-deps`` installs it from Debian's packages). The services and the ``shop``
sample database are ``bench/harness.py``'s.

One run starts a throwaway PostgreSQL 15 cluster, creates the ``shop`` sample database at ``--scale``
(360, the default, is the 1.2 GB benchmark database), then for each workload copies it (``CREATE DATABASE
... TEMPLATE shop``) and runs ``--hours`` "hours": hour 0 snapshots the database as created, each later hour
first applies the workload's changes (:func:`plan_hour`, :func:`apply_hour`). Each hour's snapshot is the
dump a Strongroom snapshot streams, ``pg_dump --format=custom --compress=0``, written to a temporary file
and fed, side by side, to

* restic: ``restic backup --stdin`` into a local repository of its own per workload (repository format 2,
  compression ``auto``; the password in ``RESTIC_PASSWORD``, never in argv); after each snapshot the
  repository's size is ``du -sb`` of its directory;
* a **simulation** of Strongroom's chunk store, one per average chunk size (:class:`SimulatedChunkStore`):
  the dump cut by FastCDC (pyfastcdc, seeded as the product's chunker will be; min = avg/4, max = avg*4
  capped at 16 MiB), each chunk named by HMAC-SHA256 of its plaintext and stored once: a chunk whose name is
  new is sealed by the product's envelope (``strongroom.envelope.seal_blob``: zstd level 3, then the
  AES-256-GCM stream, whose 52-byte header and 16-byte tag per 1 MiB segment are so counted exactly), plus
  one sealed chunk list per snapshot (32-byte name and 8-byte length per chunk). Nothing is uploaded: the
  store keeps the names and adds up the bytes. One region is simulated; each region stores the same.

The chunk stores are fed through :func:`feed`, which knows only :class:`ChunkStore`'s one method: the real
pipeline will replace the simulation there, through a sink, without touching the workloads or the report.

Reported per workload and chunk size: stored bytes after the last snapshot over one snapshot, mean bytes
uploaded per later snapshot over the first, objects per GB stored, stored bytes over restic's repository,
and the issue's targets. Byte counts are the point: the timings (pg_dump, restic, the simulation's CPU)
are recorded, but restic and the simulation run at the same time on a shared machine, so they are only
indicative, and the issue's time and memory targets can only be judged on the real pipeline. For the same
reason the harness's measuring options (``--repeat``, ``--quiet-timeout``, ``--retries``) are not taken: a
run is one pass of byte counts, not timed rounds. The results go to ``--out`` as JSON and to the same name
with ``.md`` as Markdown tables, also printed.

A SIGTERM or ^C stops the run after the snapshots taken so far and reports them (the report says
``stopped_early``, and each workload its number of snapshots). Workloads can run as separate processes
(``--workloads append`` in one, ``--workloads delete`` in another: each creates its own database) and be
merged into one report afterwards with ``--merge A.json B.json ... --out bench/results/dedup.json``.
"""

from __future__ import annotations

import argparse
import hmac
import io
import itertools
import json
import os
import random
import resource
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

if __package__ in (None, ""):  # run as a script (`python bench/dedup.py`): find the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness
from bench.harness import DATABASE, MB, MiB

KiB = 1 << 10
GB = 10**9
HOURS = 24
CHUNK_SIZES = (512 * KiB, 1 * MiB, 2 * MiB, 4 * MiB)  # pyfastcdc's avg_size (its real mean is about avg + min)
MAX_CHUNK = 16 * MiB
CHUNKER_SEED = 0x20DEDB  # fixed, so runs cut alike; the product's seed will be secret, which changes no ratio
WORKLOAD_SEED = 20
CHUNK_REF_SIZE = 32 + 8  # a chunk list entry: HMAC-SHA256 name and length
READ_SIZE = 4 * MiB

APPEND_STORED_LIMIT = 3.0  # append-mostly: stored after 24 snapshots <= 3x one snapshot
APPEND_UPLOAD_LIMIT = 0.15  # append-mostly: mean upload per later snapshot <= 15% of the first
RESTIC_RATIO_LIMIT = 1.2  # every workload: stored <= 1.2x restic's repository (aim: below 1.0)


# --------------------------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """An hour of changes, as fractions of each table's rows at the start (``base``).

    Every workload appends and updates its newest rows (orders placed in the last hour are shipped); the
    other two add one kind of scattered change to that, so the difference is that change alone."""

    name: str
    description: str
    append: float = 0.005  # new customers, orders (3 items each, an invoice for every other), events
    update_newest: float = 0.005  # the newest orders (and their invoices) change status
    delete_scattered: float = 0.0  # old orders (with their items and invoices) and events, anywhere
    update_uniform: float = 0.0  # orders (with items and invoices), events and customers, anywhere


WORKLOADS = {
    w.name: w
    for w in (
        Workload("append", "append-mostly: 0.5% new rows per hour, the newest 0.5% of orders updated"),
        Workload("delete", "append-mostly, and 0.1% of old rows deleted at scattered places per hour",
                 delete_scattered=0.001),
        Workload("update", "append-mostly, and 1% of rows updated uniformly across each table per hour",
                 update_uniform=0.01),
    )
}


@dataclass(frozen=True)
class TableSizes:
    """Row counts (the ids run 1..n when the sample database is created) of the tables the workloads change;
    order items (3 per order) and invoices (one per even order id) follow their orders."""

    customers: int
    orders: int
    events: int


@dataclass(frozen=True)
class HourChanges:
    """What one hour of a workload does: ids are the tables' ``id`` (orders carry their items and invoices)."""

    hour: int
    new_customers: range
    new_orders: range
    new_events: range
    shipped_orders: range  # the newest orders: status advances
    deleted_orders: tuple[int, ...] = ()
    deleted_events: tuple[int, ...] = ()
    updated_orders: tuple[int, ...] = ()
    updated_events: tuple[int, ...] = ()
    updated_customers: tuple[int, ...] = ()


def _count(fraction: float, rows: int) -> int:
    return round(fraction * rows) if fraction > 0 else 0


def _scattered(rng: random.Random, last: int, count: int) -> tuple[int, ...]:
    """``count`` distinct ids drawn uniformly from 1..last, sorted."""
    return tuple(sorted(rng.sample(range(1, last + 1), min(count, last))))


def plan_hour(workload: Workload, hour: int, base: TableSizes, seed: int = WORKLOAD_SEED) -> HourChanges:
    """Hour ``hour``'s changes (hour 1 is the first to change anything) of ``workload`` on tables that had
    ``base`` rows at hour 0. Pure and deterministic: the same arguments always plan the same ids.

    Appends take the ids after the previous hours' appends; deletes pick among the rows of hour 0 ("old"
    rows), uniform updates among every row there is by then; an id deleted in an earlier hour is skipped by
    the database, which at 0.1% per hour changes the counts by a few percent of a percent."""
    if hour < 1:
        raise ValueError("hour 0 is the database as created: the first hour of changes is 1")
    per_hour = TableSizes(*(_count(workload.append, n) for n in (base.customers, base.orders, base.events)))

    def appended(before: int, added: int) -> range:
        first = before + (hour - 1) * added + 1
        return range(first, first + added)

    new_customers = appended(base.customers, per_hour.customers)
    new_orders = appended(base.orders, per_hour.orders)
    new_events = appended(base.events, per_hour.events)
    newest = _count(workload.update_newest, base.orders)
    shipped = range(max(1, new_orders.start - newest), new_orders.start)  # the newest before this hour's
    rng = random.Random(f"{seed}:{workload.name}:{hour}")
    deleted_orders = _scattered(rng, base.orders, _count(workload.delete_scattered, base.orders))
    deleted_events = _scattered(rng, base.events, _count(workload.delete_scattered, base.events))
    updated_orders = _scattered(rng, new_orders.start - 1, _count(workload.update_uniform, base.orders))
    updated_events = _scattered(rng, new_events.start - 1, _count(workload.update_uniform, base.events))
    updated_customers = _scattered(rng, new_customers.start - 1, _count(workload.update_uniform, base.customers))
    return HourChanges(hour, new_customers, new_orders, new_events, shipped, deleted_orders, deleted_events,
                       updated_orders, updated_events, updated_customers)


_WORDS = "ARRAY['amber','basil','cedar','delta','ember','fjord','garnet','harbor','indigo','juniper'," \
         "'kestrel','lumen','meadow','nectar','onyx','prairie','quartz','raven','sierra','tundra']"


def apply_hour(conn_kwargs: dict[str, Any], changes: HourChanges, products: int = 200) -> None:
    """Apply one hour's changes in one transaction; new rows look like ``scripts/sample_data``'s, with
    timestamps of the hour, so every run writes the same bytes."""
    import psycopg

    h = changes.hour
    at = f"timestamptz '2026-07-01 00:00+00' + {h} * interval '1 hour'"
    with psycopg.connect(**conn_kwargs) as conn:
        run = conn.execute
        c, o, e = changes.new_customers, changes.new_orders, changes.new_events
        run(f"""INSERT INTO customers (id, email, name, country, created_at, profile)
            SELECT g, 'user' || g || '@example.' || (ARRAY['com','de','fr','nl'])[1 + g % 4],
                   initcap(({_WORDS})[1 + g % 20]) || ' ' || initcap(({_WORDS})[1 + (g * 7) % 20]),
                   (ARRAY['DE','FR','NL','IE','ES','IT','PL','SE'])[1 + g % 8], {at},
                   jsonb_build_object('plan', (ARRAY['free','team','business'])[1 + g % 3], 'newsletter', g % 3 = 0)
            FROM generate_series({c.start}, {c.stop - 1}) g""")
        run(f"""INSERT INTO orders (id, customer_id, status, placed_at, total, shipping_address)
            SELECT g, 1 + (g * 13) % {c.stop - 1}, 'paid', {at} + g % 3600 * interval '1 second',
                   round((g % 1000)::numeric + 0.5, 2),
                   jsonb_build_object('street', g || ' ' || initcap(({_WORDS})[1 + g % 20]) || ' Street',
                                      'city', initcap(({_WORDS})[1 + (g * 3) % 20]),
                                      'postcode', lpad((g % 99999)::text, 5, '0'))
            FROM generate_series({o.start}, {o.stop - 1}) g""")
        run(f"""INSERT INTO order_items (order_id, line, product_id, quantity, unit_price)
            SELECT g, l, 1 + (g * l) % {products}, 1 + (g + l) % 5, round((3 + (g * l) % 200)::numeric + 0.25, 2)
            FROM generate_series({o.start}, {o.stop - 1}) g, generate_series(1, 3) l""")
        run(f"""INSERT INTO billing.invoices (order_id, number, issued_on, amount)
            SELECT g, 'INV-' || nextval('billing.invoice_numbers'), ({at})::date, round((g % 1000)::numeric + 0.5, 2)
            FROM generate_series({o.start}, {o.stop - 1}) g WHERE g % 2 = 0""")
        run(f"""INSERT INTO events (id, customer_id, kind, occurred_at, payload)
            SELECT g, 1 + g % {c.stop - 1}, (ARRAY['login','view','search','checkout','logout'])[1 + g % 5],
                   {at} + g % 3600 * interval '1 second',
                   jsonb_build_object('session', md5(g::text), 'path', '/' || ({_WORDS})[1 + g % 20] || '/' || g,
                                      'agent', 'Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/'
                                               || (100 + g % 40),
                                      'query', ({_WORDS})[1 + (g * 11) % 20] || ' ' || ({_WORDS})[1 + (g * 5) % 20],
                                      'ms', g % 1500)
            FROM generate_series({e.start}, {e.stop - 1}) g""")
        s = changes.shipped_orders
        run(f"UPDATE orders SET status = 'shipped' WHERE id BETWEEN {s.start} AND {s.stop - 1}")
        run(f"UPDATE billing.invoices SET notes = 'Shipped in hour {h}'"
            f" WHERE order_id BETWEEN {s.start} AND {s.stop - 1}")
        if changes.deleted_orders:
            ids = list(changes.deleted_orders)
            run("DELETE FROM order_items WHERE order_id = ANY(%s)", (ids,))
            run("DELETE FROM billing.invoices WHERE order_id = ANY(%s)", (ids,))
            run("DELETE FROM orders WHERE id = ANY(%s)", (ids,))
        if changes.deleted_events:
            run("DELETE FROM events WHERE id = ANY(%s)", (list(changes.deleted_events),))
        if changes.updated_orders:
            ids = list(changes.updated_orders)
            run("UPDATE orders SET status = 'delivered', total = total + 1 WHERE id = ANY(%s)", (ids,))
            run("UPDATE order_items SET quantity = quantity + 1 WHERE order_id = ANY(%s)", (ids,))
            run(f"UPDATE billing.invoices SET notes = 'Adjusted in hour {h}' WHERE order_id = ANY(%s)", (ids,))
        if changes.updated_events:
            run(f"UPDATE events SET payload = payload || '{{\"seen\": {h}}}' WHERE id = ANY(%s)",
                (list(changes.updated_events),))
        if changes.updated_customers:
            run(f"UPDATE customers SET profile = profile || '{{\"visits\": {h}}}' WHERE id = ANY(%s)",
                (list(changes.updated_customers),))


# --------------------------------------------------------------------------------------------- chunk stores


@dataclass(frozen=True)
class SnapshotBytes:
    """One snapshot into one store: what it read, what it added, and the store's totals after it."""

    plain_bytes: int
    chunks: int
    new_chunks: int
    uploaded_bytes: int  # new objects' stored bytes, the chunk list included
    stored_bytes: int  # the store's total after this snapshot
    objects: int  # the store's objects after this snapshot
    cpu_s: float = 0.0  # this process's CPU while storing the snapshot (indicative)


class ChunkStore(Protocol):
    """What :func:`feed` needs of a chunk store: the simulation now, the real pipeline through a sink later."""

    @property
    def label(self) -> str: ...

    def add_snapshot(self, dump: Path) -> SnapshotBytes: ...


Seal = Callable[[bytes], int]  # plaintext -> bytes stored for it


def envelope_seal() -> Seal:
    """The product's envelope, under a fresh throwaway data key: the stored size of one sealed object."""
    from strongroom import envelope

    key = envelope.new_data_key()
    identity = envelope.object_identity("bench-chunk")
    return lambda plain: len(envelope.seal_blob(key, identity, plain)[0])


@dataclass
class SimulatedChunkStore:
    """A SIMULATION of Strongroom's deduplicated chunk store (no uploads): chunks by FastCDC with average
    ``avg_size``, names by HMAC-SHA256 under ``name_key``, a new name's chunk sealed once by ``seal``, and
    one sealed chunk list per snapshot."""

    avg_size: int
    name_key: bytes
    seal: Seal
    seed: int = CHUNKER_SEED
    names: set[bytes] = field(default_factory=set, repr=False)
    stored_bytes: int = 0
    objects: int = 0

    @property
    def label(self) -> str:
        return f"{self.avg_size // KiB} KiB"

    @property
    def min_size(self) -> int:
        return self.avg_size // 4

    @property
    def max_size(self) -> int:
        return min(self.avg_size * 4, MAX_CHUNK)

    def add_snapshot(self, dump: Path) -> SnapshotBytes:
        import pyfastcdc

        chunker = pyfastcdc.FastCDC(self.avg_size, min_size=self.min_size, max_size=self.max_size, seed=self.seed)
        started = time.process_time()
        with open(dump, "rb", buffering=0) as raw:
            result = self.add_chunks(chunk.data for chunk in chunker.cut_stream(io.BufferedReader(raw, READ_SIZE)))
        return SnapshotBytes(**{**asdict(result), "cpu_s": round(time.process_time() - started, 3)})

    def add_chunks(self, chunks: Iterable[bytes | memoryview]) -> SnapshotBytes:
        """The store's accounting for one snapshot made of ``chunks``, in order."""
        refs = bytearray()
        plain = count = new = uploaded = 0
        for data in chunks:
            name = hmac.digest(self.name_key, data, "sha256")
            refs += name + struct.pack(">Q", len(data))
            plain += len(data)
            count += 1
            if name not in self.names:
                self.names.add(name)
                uploaded += self.seal(bytes(data))
                new += 1
        uploaded += self.seal(bytes(refs))  # the snapshot's chunk list: one object
        self.stored_bytes += uploaded
        self.objects += new + 1
        return SnapshotBytes(plain, count, new, uploaded, self.stored_bytes, self.objects)


def feed(stores: Sequence[ChunkStore], dump: Path) -> dict[str, SnapshotBytes]:
    """One snapshot's dump into each store, one after the other (the chunk-size loop)."""
    return {store.label: store.add_snapshot(dump) for store in stores}


# --------------------------------------------------------------------------------------------- restic


@dataclass
class ResticRepo:
    """A local restic repository; the password only ever in ``RESTIC_PASSWORD`` of restic's environment."""

    path: Path
    env: dict[str, str]
    logs: Path

    def init(self) -> None:
        self._run(["init", "--repository-version", "2"], "init")

    def start_backup(self, dump: Path, hour: int) -> tuple[subprocess.Popen[bytes], Path, float]:
        usage = self.logs / f"restic.{self.path.name}.{hour}.time"
        argv = [harness.TIME, "--format=%M %U %S", f"--output={usage}", "restic", "--repo", str(self.path),
                "backup", "--stdin", "--stdin-filename", "shop.pgdump", "--quiet"]
        with open(dump, "rb") as source, open(self.logs / f"restic.{self.path.name}.err", "ab") as err:
            proc = subprocess.Popen(argv, stdin=source, stdout=subprocess.DEVNULL, stderr=err, env=self.env,
                                    start_new_session=True)
        return proc, usage, time.perf_counter()

    def finish(self, started: tuple[subprocess.Popen[bytes], Path, float]) -> dict[str, float]:
        proc, usage, at = started
        if proc.wait() != 0:
            raise harness.CommandFailed(f"restic backup exited with {proc.returncode} (see {self.logs})")
        wall = time.perf_counter() - at
        maxrss_kib, user, system = usage.read_text().split()[-3:]
        return {"wall_s": round(wall, 2), "cpu_s": round(float(user) + float(system), 2),
                "peak_rss": int(maxrss_kib) * 1024}

    @staticmethod
    def stop(started: tuple[subprocess.Popen[bytes], Path, float] | None) -> None:
        """Kill a backup still running (the run was stopped): its process group, which this repo started."""
        if started is not None and started[0].poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(started[0].pid, signal.SIGKILL)
            started[0].wait()

    def size(self) -> int:
        done = subprocess.run(["du", "-sb", str(self.path)], capture_output=True, text=True, check=True)
        return int(done.stdout.split()[0])

    def _run(self, args: list[str], what: str) -> None:
        done = subprocess.run(["restic", "--repo", str(self.path), *args], env=self.env, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise harness.CommandFailed(f"restic {what} exited with {done.returncode}: {done.stderr.strip()[-400:]}")


# --------------------------------------------------------------------------------------------- the benchmark


class DedupBench(harness.Bench):
    """The workloads' hours on copies of the shop database, each hour's dump into restic and the chunk stores."""

    hours: int = HOURS
    workloads: tuple[Workload, ...] = tuple(WORKLOADS.values())
    chunk_sizes: tuple[int, ...] = CHUNK_SIZES
    results: dict[str, Any]
    stopped_early: bool = False

    def make_stores(self) -> list[ChunkStore]:
        name_key = secrets.token_bytes(32)
        seal = envelope_seal()
        return [SimulatedChunkStore(size, name_key, seal) for size in self.chunk_sizes]

    def table_sizes(self, dbname: str) -> TableSizes:
        row = self.sql("SELECT (SELECT max(id) FROM customers), (SELECT max(id) FROM orders),"
                       " (SELECT max(id) FROM events)", dbname)[0]
        return TableSizes(*(int(v) for v in row))

    def dump(self, dbname: str, path: Path) -> float:
        argv = [str(self.pg_bin / "pg_dump"), "--format=custom", "--compress=0", "--no-password",
                f"--file={path}", dbname]
        started = time.perf_counter()
        done = subprocess.run(argv, env=self.tool_env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise harness.CommandFailed(f"pg_dump of {dbname} exited with {done.returncode}: {done.stderr[-400:]}")
        return round(time.perf_counter() - started, 2)

    def run(self) -> None:
        """Each workload in turn. A SIGTERM or ^C ends the run after the snapshots taken so far, which are
        reported (each workload says how many it has): a long run stopped for time still tells something."""
        self.results = {}
        self.stopped_early = False
        try:
            for workload in self.workloads:
                self.run_workload(workload)
        except (SystemExit, KeyboardInterrupt):
            self.stopped_early = True
            harness.say("stopped: reporting the snapshots taken so far")
        for name, run in list(self.results.items()):
            if len(run["hours"]) < 2:
                del self.results[name]  # nothing to compare with the first snapshot

    def run_workload(self, workload: Workload) -> None:
        dbname = f"dedup_{workload.name}"
        self.sql(f"CREATE DATABASE {dbname} TEMPLATE {DATABASE}")
        base = self.table_sizes(dbname)
        dump = self.workdir / "hour.pgdump"
        restic = ResticRepo(self.workdir / f"restic-{workload.name}", self.restic_env(), self.logs)
        restic.init()
        stores = self.make_stores()
        hours: list[dict[str, Any]] = []
        backup = None
        self.results[workload.name] = {"workload": asdict(workload), "base_rows": asdict(base), "hours": hours}
        harness.say(f"workload {workload.name}: {workload.description}; {self.hours} snapshots")
        try:
            for hour in range(self.hours):
                started = time.perf_counter()
                apply_s = 0.0
                if hour:
                    apply_hour(self.pg.connect_kwargs(dbname), plan_hour(workload, hour, base))
                    apply_s = round(time.perf_counter() - started, 2)
                dump_s = self.dump(dbname, dump)
                backup = restic.start_backup(dump, hour)  # restic runs while the chunk stores read the same file
                stored = feed(stores, dump)
                restic_run = {**restic.finish(backup), "repo_bytes": restic.size()}
                backup = None
                record = {
                    "hour": hour,
                    "dump_bytes": dump.stat().st_size,
                    "apply_s": apply_s,
                    "pg_dump_z0_s": dump_s,
                    "restic": restic_run,
                    "stores": {label: asdict(s) for label, s in stored.items()},
                }
                hours.append(record)
                ratios = ", ".join(f"{label} {s.stored_bytes / MB:.0f}" for label, s in stored.items())
                harness.say(f"  {workload.name} hour {hour:>2}: dump {dump.stat().st_size / MB:.0f} MB"
                            f" in {dump_s:.0f} s,"
                            f" restic repo {restic_run['repo_bytes'] / MB:.0f} MB, stored MB {ratios}"
                            f"  ({time.perf_counter() - started:.0f} s)")
        finally:
            restic.stop(backup)
            self.sql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            shutil.rmtree(restic.path, ignore_errors=True)
            dump.unlink(missing_ok=True)

    def restic_env(self) -> dict[str, str]:
        return {**self.env, "RESTIC_PASSWORD": secrets.token_urlsafe(24),
                "RESTIC_CACHE_DIR": str(self.workdir / "restic-cache")}


# --------------------------------------------------------------------------------------------- report


def summarize_series(uploads: list[int], stored_after: list[int]) -> dict[str, float]:
    """Stored bytes after the last snapshot over after the first, and the mean upload of the later
    snapshots over the first's (NaN with one snapshot)."""
    later = uploads[1:]
    return {
        "stored_vs_one": round(stored_after[-1] / stored_after[0], 3),
        "upload_vs_first": round(statistics.mean(later) / uploads[0], 4) if later else float("nan"),
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, run in results.items():
        rows = run["hours"]
        repo = [r["restic"]["repo_bytes"] for r in rows]
        restic_uploads = [repo[0], *(b - a for a, b in itertools.pairwise(repo))]
        append = name == "append"
        workload: dict[str, Any] = {
            "snapshots": len(rows),
            "dump_bytes_first": rows[0]["dump_bytes"],
            "dump_bytes_last": rows[-1]["dump_bytes"],
            "restic": {
                "repo_bytes": repo[-1],
                **summarize_series(restic_uploads, repo),
                "wall_s_mean": round(statistics.mean(r["restic"]["wall_s"] for r in rows), 2),
                "cpu_s_mean": round(statistics.mean(r["restic"]["cpu_s"] for r in rows), 2),
                "peak_rss": max(r["restic"]["peak_rss"] for r in rows),
            },
            "pg_dump_z0_s_mean": round(statistics.mean(r["pg_dump_z0_s"] for r in rows), 2),
            "sizes": {},
        }
        for label in rows[0]["stores"]:
            series = [r["stores"][label] for r in rows]
            last = series[-1]
            chunks = sum(s["chunks"] for s in series)
            ratio = last["stored_bytes"] / repo[-1]
            size: dict[str, Any] = {
                "stored_bytes": last["stored_bytes"],
                "objects": last["objects"],
                **summarize_series([s["uploaded_bytes"] for s in series], [s["stored_bytes"] for s in series]),
                "objects_per_gb": round(last["objects"] / (last["stored_bytes"] / GB), 1),
                "vs_restic": round(ratio, 3),
                "mean_chunk_bytes": round(sum(s["plain_bytes"] for s in series) / chunks),
                "cpu_s_mean": round(statistics.mean(s["cpu_s"] for s in series), 2),
            }
            targets = {"vs_restic_le_1_2": ratio <= RESTIC_RATIO_LIMIT, "vs_restic_below_1": ratio < 1.0}
            if append and len(series) == HOURS:
                targets["stored_le_3x_one"] = size["stored_vs_one"] <= APPEND_STORED_LIMIT
                targets["upload_le_15pct_first"] = size["upload_vs_first"] <= APPEND_UPLOAD_LIMIT
            size["targets"] = targets
            workload["sizes"][label] = size
        out[name] = workload
    return {"workloads": out}


def markdown(report: dict[str, Any]) -> str:
    db = report["database"]
    summary = report["results"]
    lines = [
        f"shop at scale {db['scale']} ({db['size_bytes'] / MiB:.0f} MiB on disk); stored bytes are one region's.",
        "",
        "| workload | snapshots | store | stored after last | ÷ one snapshot | later upload ÷ first | objects | "
        "objects/GB | ÷ restic | mean chunk |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, w in summary["workloads"].items():
        r, n = w["restic"], w["snapshots"]
        lines.append(f"| {name} | {n} | restic | {r['repo_bytes'] / MB:,.0f} MB | {r['stored_vs_one']:.2f} | "
                     f"{r['upload_vs_first']:.3f} | | | 1.00 | |")
        for label, s in w["sizes"].items():
            lines.append(
                f"| {name} | {n} | sim {label} | {s['stored_bytes'] / MB:,.0f} MB | {s['stored_vs_one']:.2f} | "
                f"{s['upload_vs_first']:.3f} | {s['objects']:,} | {s['objects_per_gb']:,.0f} | {s['vs_restic']:.3f} | "
                f"{s['mean_chunk_bytes'] / MiB:.2f} MiB |"
            )
    lines += ["", "| workload | dump (first → last) | pg_dump -Z0 s | restic s (cpu s) | restic peak RSS | "
              "simulation cpu s per snapshot, by size |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name, w in summary["workloads"].items():
        r = w["restic"]
        cpu = ", ".join(f"{label}: {s['cpu_s_mean']:.1f}" for label, s in w["sizes"].items())
        lines.append(f"| {name} | {w['dump_bytes_first'] / MB:,.0f} → {w['dump_bytes_last'] / MB:,.0f} MB | "
                     f"{w['pg_dump_z0_s_mean']:.1f} | {r['wall_s_mean']:.1f} ({r['cpu_s_mean']:.1f}) | "
                     f"{r['peak_rss'] / MiB:.0f} MiB | {cpu} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- main


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) * KiB for part in text.split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of KiB: {text!r}") from None
    if not sizes or any(not 256 <= s // KiB <= 4096 for s in sizes):
        raise argparse.ArgumentTypeError("each chunk size is 256 to 4096 KiB (pyfastcdc's range for the average)")
    return sizes


def _workloads(text: str) -> tuple[Workload, ...]:
    unknown = [n for n in text.split(",") if n not in WORKLOADS]
    if unknown or not text:
        raise argparse.ArgumentTypeError(f"workloads are {', '.join(WORKLOADS)}; not {', '.join(unknown) or text!r}")
    return tuple(WORKLOADS[n] for n in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--scale", type=int, default=harness.DEFAULT_SCALE,
        help="sample_data scale, ~3.4 MiB each (default: %(default)s, the 1.2 GB database; 1 for a smoke run)")
    add("--hours", type=int, default=HOURS, help="snapshots per workload (default: %(default)s)")
    add("--workloads", type=_workloads, default=tuple(WORKLOADS.values()),
        help=f"comma-separated, of {','.join(WORKLOADS)} (default: all)")
    add("--chunk-sizes", type=_sizes, default=CHUNK_SIZES,
        help="comma-separated average chunk sizes in KiB (default: 512,1024,2048,4096)")
    add("--out", default="bench/results/dedup.json", help="JSON results; the tables go beside it as .md")
    add("--keep", action="store_true", help="keep the work directory (logs)")
    add("--merge", nargs="+", metavar="JSON",
        help="instead of measuring, merge the workloads of these results (runs of one workload each, say) into "
        "--out and its .md")
    args = parser.parse_args(argv)
    if args.merge:
        return write(Path(args.out), merge([json.loads(Path(p).read_text()) for p in args.merge]))
    if args.hours < 2:
        parser.error("--hours must be at least 2: the first snapshot is the one the others are compared with")
    if shutil.which("restic") is None:
        parser.error("restic is not installed: `make bench-deps` installs it from Debian's packages")

    bench = DedupBench(scale=args.scale, repeat=1, workdir=Path(tempfile.mkdtemp(prefix="strongroom-dedup-")),
                       s3_servers=1)
    bench.hours, bench.workloads, bench.chunk_sizes = args.hours, args.workloads, args.chunk_sizes
    run = harness.execute(bench, keep=args.keep)
    restic_version = subprocess.run(["restic", "version"], capture_output=True, text=True, check=False).stdout.strip()
    report = {
        **harness.report_head("deduplicated snapshots (simulated chunk store) vs restic, issue 20", "dedup.py", argv,
                              bench, run),
        "restic": restic_version,
        "simulation": {
            "chunker": f"pyfastcdc FastCDC, min avg/4, max min(avg*4, 16 MiB), seed {CHUNKER_SEED:#x}",
            "names": "HMAC-SHA256 of the plaintext",
            "sealing": "strongroom.envelope.seal_blob (zstd level 3, AES-256-GCM stream) per new chunk",
            "chunk_list": f"one sealed object per snapshot, {CHUNK_REF_SIZE} bytes per chunk",
        },
        "hours_asked": args.hours,
        "stopped_early": bench.stopped_early,
        "total_seconds": run.seconds,
        "peak_rss_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "results": summarize(bench.results),
        "runs": bench.results,
    }
    return write(Path(args.out), report)


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report of several runs' workloads (on the same database scale): the first run's head, each run's
    command, every workload measured, summarized again."""
    scales = {r["database"]["scale"] for r in reports}
    if len(scales) != 1:
        raise SystemExit(f"cannot merge runs at different scales: {sorted(scales)}")
    runs = {name: run for report in reports for name, run in report["runs"].items()}
    merged = {k: v for k, v in reports[0].items() if k not in ("command", "runs", "results", "total_seconds")}
    return {**merged, "commands": [r["command"] for r in reports], "stopped_early": any(r["stopped_early"] for r in
            reports), "total_seconds": [r["total_seconds"] for r in reports], "results": summarize(runs), "runs": runs}


def write(out: Path, report: dict[str, Any]) -> int:
    harness.write_report(out, report)
    table = markdown(report)
    out.with_suffix(".md").write_text(table)
    print()
    print(table)
    harness.say(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
