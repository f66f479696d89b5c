"""Load a NEW database while its dump is still arriving.

A restore into a database that does not exist yet may write it before the whole download is authenticated,
because any failure drops it again (:func:`strongroom.restore.restore_snapshot`); an existing target is
never loaded this way: it is touched only after every check. What a stream sends to ``pg_restore`` has
passed its own segment's authentication; what is checked only at the end (the SHA-256 and size of the whole
object, the end of the stream) drops the database when it fails.

:func:`strongroom.restore.fetch_dump` calls :meth:`StreamingLoad.grew` after each write to the spool. A
whole-format snapshot is spooled as stored (encrypted and compressed, :meth:`StreamingLoad.begin` with its
data key): only its header and table of contents are ever written to disk in plaintext, and the spool is
the stored size, several times smaller than the dump. A chunked snapshot's spool holds the plaintext (its
chunks are authenticated one by one as they arrive). As soon as the dump's header and table of contents
are there:

1. they are written to a file of their own, the restore's entries are chosen and its roles checked there
   (``prepare``), the database is created and the ``pre-data`` section (definitions) restored from it;
2. up to ``jobs`` ``pg_restore`` processes start (:func:`strongroom.postgres.start_restore_stream`), each
   with its share of the tables' data, balanced by the rows the snapshot recorded
   (:func:`split_data`); each is sent the dump from its start through a pipe as the spool grows, skipping
   the other streams' tables: unsealed segment by segment by a thread of its own from a sealed spool (two
   streams decrypt and decompress the dump twice; on the benchmark that takes about as long as writing
   the plaintext to disk and reading it back did, docs/benchmarks.md), or with ``os.sendfile`` from a
   plaintext one (the bytes do not pass through Python).

After the download is verified, :meth:`StreamingLoad.finish` sends the streams the rest of the dump and
restores ``post-data`` (indexes, constraints, triggers) from the header and TOC file with ``--jobs``: the
indexes and constraints of the tables loaded by a stream that is done already while another still loads
(:func:`ready_after`), the rest once all data is in.
:meth:`StreamingLoad.abandon` stops the streams and drops the database (a failed attempt in one region:
the next region starts from nothing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from strongroom import dumpfile, envelope, postgres
from strongroom.catalog import Manifest
from strongroom.errors import IntegrityError, RestoreError, SourceError, StrongroomError

log = logging.getLogger(__name__)

# a TABLE DATA line of `pg_restore --list`: "<id>; <tableoid> <oid> TABLE DATA <schema> <name> <owner>"
_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")

# stored bytes unsealed at a time: a stored segment is a little longer, so each read completes one segment at
# most (its plaintext, a few MiB inflated, is used before the next segment is authenticated)
_SEALED_READ = envelope.SEGMENT_SIZE

# (manifest, path of the header and TOC) -> the TOC lines to restore, and the list file restricting the
# restore to them (None: everything); raises a StrongroomError to refuse (missing roles, unknown tables)
Prepare = Callable[[Manifest, str], tuple[list[str], str | None]]


class Stopped(Exception):
    """A target-side error raised while the dump was arriving, carried past the region fallback (which
    would try the next region for any :class:`StrongroomError`) to the caller, who raises ``error``."""

    def __init__(self, error: StrongroomError) -> None:
        super().__init__(str(error))
        self.error = error


def split_data(lines: Sequence[str], weights: Mapping[str, int], streams: int) -> list[list[str]]:
    """Share the TABLE DATA entries of ``lines`` between at most ``streams`` lists, the largest tables
    (by ``weights``, "schema.table" -> rows) first, each to the list with the least so far; every other
    entry goes to the first list. Each list keeps the order of ``lines`` (a stream reads the file in
    order); a list that would get no table is left out."""
    streams = max(1, streams)
    tables = [(i, f"{m.group(1)}.{m.group(2)}") for i, line in enumerate(lines) if (m := _TABLE_DATA.match(line))]
    load = [0] * streams
    owner: dict[int, int] = {}
    for i, name in sorted(tables, key=lambda t: (-weights.get(t[1], 0), t[0])):
        k = min(range(streams), key=lambda s: (load[s], s))
        owner[i] = k
        load[k] += weights.get(name, 0) + 1
    out: list[list[str]] = [[] for _ in range(streams)]
    for i, line in enumerate(lines):
        out[owner.get(i, 0)].append(line)
    return [entries for k, entries in enumerate(out) if k == 0 or entries]


# post-data entries that may be built as soon as the tables they depend on are loaded (pg_restore --jobs
# does the same); everything else (triggers, rules, materialized view refreshes, ...) waits for all data
EARLY_KINDS = frozenset({"INDEX", "CONSTRAINT", "FK CONSTRAINT", "INDEX ATTACH"})


def ready_after(items: Sequence[dumpfile.TocItem], loaded: set[int], allowed: set[int] | None = None) -> list[int]:
    """The post-data entries of :data:`EARLY_KINDS` (among ``allowed``, when given) whose every dependency
    is met once the TABLE DATA entries ``loaded`` are: a table whose data is not among them, a TABLE DATA
    entry not among them, or a post-data entry not itself ready, holds an entry back. In TOC order."""
    by_id = {item.dump_id: item for item in items}
    data_of = {dep: item.dump_id for item in items if item.desc == "TABLE DATA" for dep in item.deps
               if dep in by_id and by_id[dep].desc == "TABLE"}
    ready: set[int] = set()

    def met(dep: int) -> bool:
        item = by_id.get(dep)
        if item is None:
            return True
        if dep in data_of:
            return data_of[dep] in loaded
        if item.desc == "TABLE DATA":
            return dep in loaded
        return item.section != dumpfile.SECTION_POST_DATA or dep in ready

    changed = True
    while changed:
        changed = False
        for item in items:
            if (item.section == dumpfile.SECTION_POST_DATA and item.desc in EARLY_KINDS
                    and item.dump_id not in ready and (allowed is None or item.dump_id in allowed)
                    and all(met(dep) for dep in item.deps)):
                ready.add(item.dump_id)
                changed = True
    return [item.dump_id for item in items if item.dump_id in ready]


def _dump_id(line: str) -> int | None:
    head = line.split(";", 1)[0]
    return int(head) if head.isdigit() else None


@dataclass
class _Stream:
    process: postgres.ToolProcess
    feeder: threading.Thread
    loads: set[int]  # dump ids of its TABLE DATA entries


class StreamingLoad:
    """Restores the dump being spooled into ``target``, a database that does not exist yet (module doc).

    Used by one restore, for one attempt at a time: :meth:`begin` (each region's attempt), :meth:`grew`
    (each write), then :meth:`finish` or :meth:`abandon`.
    """

    def __init__(self, target: postgres.PgSettings, spool_dir: str, prepare: Prepare, *, jobs: int,
                 no_owner: bool, bin_dir: str | None) -> None:
        self.target, self.spool_dir, self.prepare = target, spool_dir, prepare
        self.jobs, self.no_owner, self.bin_dir = max(1, jobs), no_owner, bin_dir
        self._cond = threading.Condition()
        self._reset()

    def _reset(self) -> None:
        self.manifest: Manifest | None = None
        self.use_list: str | None = None
        self.created = False
        self.passed = False  # the dump cannot be read while it arrives: restored after the download instead
        self._streams: list[_Stream] = []
        self._post: list[postgres.ToolProcess] = []  # post-data restores started
        self._toc = dumpfile.Toc(0, 0, 0, ())
        self._lines: list[str] = []
        self._head = os.path.join(self.spool_dir, "toc")  # the dump's header and TOC, in plaintext
        self._key: bytes | None = None  # the spool holds the stored (sealed) bytes: the streams unseal them
        self._prefix: envelope.StreamUnsealer | None = None  # unseals the spool's start until the TOC is whole
        self._prefix_read = 0
        self._feed_errors: list[StrongroomError] = []
        self._fd: int | None = None
        self._available = 0
        self._complete = False
        self._aborted = False

    @property
    def loading(self) -> bool:
        """The data is being loaded from the spool as it grows (its data offsets are not needed)."""
        return bool(self._streams)

    def begin(self, manifest: Manifest, data_key: bytes | None = None) -> None:
        """A download of ``manifest``'s dump starts (from nothing). With ``data_key`` the spool receives the
        dump as stored (encrypted and compressed), and each stream unseals it for itself, so the plaintext
        dump is never written to disk; without, it receives the plaintext."""
        self.abandon()
        self.manifest = manifest
        self._key = data_key

    def grew(self, path: str, size: int) -> None:
        """``size`` bytes of the dump are written to ``path``."""
        if self._streams:
            with self._cond:
                self._available = size
                self._cond.notify_all()
            return
        if self.passed or self.created or self.manifest is None:
            return
        try:
            toc = self._unseal_prefix(path, size) if self._key is not None else dumpfile.partial_toc(path)
        except dumpfile.DumpLayoutError as exc:
            log.info("the dump is restored after its download: %s", exc)
            self.passed = True
            return
        if toc is not None:
            try:
                self._start(path, toc, size)
            except StrongroomError as exc:
                raise Stopped(exc) from None

    def _unseal_prefix(self, path: str, size: int) -> dumpfile.Toc | None:
        """Unseal the spool's stored bytes that arrived since the last call into the head file, a segment at a
        time, until the dump's TOC is whole there: returns it (None: not yet). Raises :class:`IntegrityError`
        for a segment that fails authentication, :class:`strongroom.dumpfile.DumpLayoutError` for a dump
        that cannot be read as it arrives."""
        assert self.manifest is not None and self._key is not None
        if self._prefix is None:
            self._prefix = self._unsealer()
            self._prefix_read = 0
            os.close(os.open(self._head, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        toc = None
        with open(path, "rb") as src:
            src.seek(self._prefix_read)
            while toc is None and self._prefix_read < size:
                data = src.read(min(_SEALED_READ, size - self._prefix_read))
                if not data:
                    break
                self._prefix_read += len(data)
                with open(self._head, "ab") as out:
                    out.write(self._prefix.update(data))
                toc = dumpfile.partial_toc(self._head)
        return toc

    def _unsealer(self) -> envelope.StreamUnsealer:
        """Unseals a sealed spool from its start."""
        assert self.manifest is not None and self._key is not None
        return envelope.StreamUnsealer(self._key, self.manifest.object_identity("dump"),
                                       f"the spooled dump of snapshot {self.manifest.snapshot_id}")

    def _start(self, path: str, toc: dumpfile.Toc, size: int) -> None:
        """Start loading the spool at ``path``, whose header and TOC (``toc``) are whole: in the head file
        already when the spool is sealed (:meth:`_unseal_prefix`), else copied there from the spool."""
        assert self.manifest is not None
        self._toc = toc
        self._prefix = None
        if self._key is not None:
            os.truncate(self._head, toc.end)
        else:
            with open(path, "rb") as src:
                data = src.read(toc.end)
            fd = os.open(self._head, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        lines, self.use_list = self.prepare(self.manifest, self._head)
        self._lines = lines
        postgres.create_database(self.target)
        self.created = True
        try:
            postgres.restore_dump(self.target, self._head, jobs=1, single_transaction=False, clean=False,
                                  bin_dir=self.bin_dir, use_list=self.use_list, no_owner=self.no_owner,
                                  sections=("pre-data",))
        except StrongroomError as exc:
            self.abandon()
            raise RestoreError(f"{exc}; the new database was dropped") from None
        self._fd = os.open(path, os.O_RDONLY)
        self._available = size
        for k, entries in enumerate(split_data(lines, self.manifest.tables, self.jobs)):
            listing = os.path.join(self.spool_dir, f"data-{k}.list")
            with open(listing, "w", encoding="utf-8") as out:
                out.write("\n".join(entries) + "\n")
            process = postgres.start_restore_stream(self.target, bin_dir=self.bin_dir, use_list=listing,
                                                    no_owner=self.no_owner)
            feeder = threading.Thread(target=self._feed, args=(process,), name=f"restore-stream-{k}", daemon=True)
            loads = {i for line in entries if " TABLE DATA " in line and (i := _dump_id(line)) is not None}
            self._streams.append(_Stream(process, feeder, loads))
            feeder.start()
        log.info("loading %s while the dump arrives: definitions restored, %d data stream(s)",
                 self.target.describe(), len(self._streams))

    def _feed(self, process: postgres.ToolProcess) -> None:
        """Send the dump to one stream's stdin as the spool grows, until the end (or the stream stops reading:
        done with its tables, or failed; its exit code says which). A sealed spool's segments are each
        authenticated before their plaintext is sent; one that fails, or a plaintext whose size is not the
        manifest's, stops the stream and is raised by :meth:`finish`."""
        assert self._fd is not None
        out = process.stdin.fileno()
        send, last = self._unsealing(out) if self._key is not None else (self._sending(out), None)
        offset = 0
        try:
            while True:
                end, complete, aborted = self._wait_for(offset)
                if aborted:
                    return
                if offset < end:
                    offset = send(offset, end)
                elif complete:
                    if last is not None:
                        last()
                    return
        except OSError:  # BrokenPipeError: the stream has what it needs, or failed
            return
        except StrongroomError as exc:
            self._feed_errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                process.stdin.close()

    def _sending(self, out: int) -> Callable[[int, int], int]:
        """Send a plaintext spool's bytes from ``offset`` to ``end`` (``os.sendfile``); returns the new offset."""
        fd = self._fd
        assert fd is not None

        def send(offset: int, end: int) -> int:
            return offset + os.sendfile(out, fd, offset, end - offset)

        return send

    def _unsealing(self, out: int) -> tuple[Callable[[int, int], int], Callable[[], None]]:
        """Unseal a sealed spool's bytes from ``offset`` on (a segment at most) and send the plaintext; and
        the step at the spool's end: the rest of the plaintext, and its size checked."""
        fd, manifest = self._fd, self.manifest
        assert fd is not None and manifest is not None
        unsealer = self._unsealer()
        sent = 0

        def send(offset: int, end: int) -> int:
            nonlocal sent
            data = os.pread(fd, min(_SEALED_READ, end - offset), offset)
            sent += _write_all(out, unsealer.update(data))
            return offset + len(data)

        def last() -> None:
            total = sent + _write_all(out, unsealer.finalize())
            if total != manifest.dump.plain_size:
                raise IntegrityError(f"snapshot {manifest.snapshot_id}: {total} bytes unsealed, the manifest says "
                                     f"{manifest.dump.plain_size}")

        return send, last

    def _wait_for(self, offset: int) -> tuple[int, bool, bool]:
        """Until the spool holds more than ``offset`` bytes, or is complete, or the load is abandoned:
        returns the spool's size, whether it is complete, whether the load is abandoned."""
        with self._cond:
            while offset >= self._available and not self._complete and not self._aborted:
                self._cond.wait()
            return self._available, self._complete, self._aborted

    def finish(self) -> None:
        """The whole dump is spooled and verified: let the streams read to its end, then restore
        ``post-data`` (indexes, constraints, triggers) with ``jobs``. When a stream is done while another
        still loads, the indexes and constraints of the tables loaded so far are built meanwhile
        (:func:`ready_after`), as ``pg_restore --jobs`` does. Raises :class:`SourceError` (the database left
        for the caller to drop) when a step failed."""
        with self._cond:
            self._complete = True
            self._cond.notify_all()
        pending, loaded = list(self._streams), set()
        early: postgres.ToolProcess | None = None
        early_ids: list[int] = []
        allowed = None if self.use_list is None else {i for line in self._lines if (i := _dump_id(line))}
        failed: list[postgres.ToolProcess] = []
        while pending and not failed:
            done = [s for s in pending if s.process.process.poll() is not None]
            if not done:
                time.sleep(0.05)
                continue
            for stream in done:
                stream.feeder.join()
                pending.remove(stream)
                loaded |= stream.loads
                if stream.process.wait() != 0:
                    failed.append(stream.process)
            if pending and early is None and not failed:
                early_ids = ready_after(self._toc.items, loaded, allowed)
                if early_ids:
                    early = self._post_data("post-early.list", early_ids, max(1, self.jobs - len(pending)))
        for stream in pending:  # a stream failed: the others stop too
            stream.process.kill()
            stream.feeder.join(timeout=30)
        self._close()
        if early is not None and early.wait() != 0:
            failed.append(early)
        if self._feed_errors:
            raise self._feed_errors[0]
        if failed:
            raise SourceError(f"pg_restore into {self.target.describe()} failed: {failed[0].error_line()}")
        rest = [item.dump_id for item in self._toc.items
                if item.dump_id not in early_ids and (allowed is None or item.dump_id in allowed)]
        last = self._post_data("post.list", rest, self.jobs)
        if last.wait() != 0:
            raise SourceError(f"pg_restore into {self.target.describe()} failed: {last.error_line()}")

    def _post_data(self, name: str, ids: Sequence[int], jobs: int) -> postgres.ToolProcess:
        """Start ``pg_restore --section=post-data --jobs`` of the entries ``ids`` of the dump (from its header
        and TOC: post-data entries hold no data)."""
        wanted = set(ids)
        listing = os.path.join(self.spool_dir, name)
        with open(listing, "w", encoding="utf-8") as out:
            out.write("".join(f"{line}\n" for line in self._lines if _dump_id(line) in wanted))
        process = postgres.start_restore(self.target, self._head, bin_dir=self.bin_dir, use_list=listing, jobs=jobs,
                                         no_owner=self.no_owner, sections=("post-data",))
        self._post.append(process)
        return process

    def abandon(self) -> None:
        """Stop the streams and drop the database if it was created; ready for another attempt."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
        for stream in self._streams:
            stream.process.kill()
            stream.feeder.join(timeout=30)
        for process in self._post:
            process.kill()
        self._close()
        if self.created:
            postgres.drop_database(self.target)
        self._reset()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> int:
    """Write all of ``data`` to ``fd`` (a pipe); returns its length."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)
