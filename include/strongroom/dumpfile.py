"""Give a custom-format dump that went through a pipe the data offsets pg_dump could not write.

``pg_dump --format=custom`` writes its table of contents (TOC) before the data, and each entry with data
holds the file offset of its data block. Written to a seekable file, pg_dump goes back at the end and
fills the offsets in; written to a pipe, as every snapshot is, it cannot, and they stay "not set". A
parallel ``pg_restore --jobs=N`` then has each worker scan the file for the blocks it needs, which costs
much of what the extra jobs gain (``docs/benchmarks.md``: 12.7 s against 9.9 s on the benchmark dump).

:func:`index_data_blocks` finds the blocks in the restored spool and writes their offsets into the TOC in
place, so ``pg_restore`` reads the file as if pg_dump had written it seekably. It changes nothing and
says why when the file is not what it expects; a dump without offsets still restores, only slower.

The layout relied on (archive versions 1.12 to 1.16, PostgreSQL 11 to 17):

* an integer is a sign byte and then ``int_size`` bytes, least significant first; a string is an integer
  length (-1 for NULL) and that many bytes;
* header: ``PGDMP``, major, minor and revision version bytes, ``int_size``, ``off_size``, the format byte
  (1 = custom), the compression (one byte from 1.15, an integer before), seven integers of creation time,
  then three strings (database name, server version, pg_dump version);
* TOC: an entry count, then per entry: dump id, had-dumper, table oid, oid, tag, description, section,
  definition, drop statement, copy statement, namespace, tablespace, table access method (1.14+),
  relkind (an integer, 1.16+), owner, the "with oids" string, dependency strings up to a NULL, and
  finally the data offset: a flag byte (1 not set, 2 set, 3 no data) and ``off_size`` offset bytes;
* data: for each entry with data, in TOC order, a block type byte (1 = table data), the dump id, then
  chunks (an integer length and that many bytes) up to a zero-length chunk.

An uncompressed dump of table data holds a NUL byte only in those integers, since ``COPY`` text never
contains one, so the end of a block followed by the next block's header (``int_size + 1`` zero bytes,
type 1, the next dump id) is found by a plain byte search, not by walking millions of chunk headers.
Other data (large objects, compressed chunks) may contain any bytes: such dumps are left as they are.

The file is read in chunks of :data:`CHUNK` bytes, never mapped or loaded whole: a mapped file's pages
count in the process's resident memory, and the spool is as large as the plain dump.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from io import BufferedIOBase

log = logging.getLogger(__name__)

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
BLOCK_DATA = 1
OFFSET_NOT_SET = 1
OFFSET_SET = 2
OFFSET_NO_DATA = 3
MIN_VERSION = (1, 12)
MAX_VERSION = (1, 16)
CHUNK = 4 << 20  # bytes read at a time while searching for data blocks


class DumpLayoutError(ValueError):
    """The file is not a dump whose data blocks can be located safely (the reason is the message)."""


class TocIncomplete(DumpLayoutError):
    """The file ends inside its header or table of contents: more of it has yet to be written."""


@dataclass(frozen=True)
class DataEntry:
    dump_id: int
    desc: str
    flag: int
    flag_at: int  # file position of the offset flag byte


@dataclass(frozen=True)
class TocItem:
    """Any TOC entry: what it is, its section and the entries it depends on (their dump ids)."""

    dump_id: int
    desc: str
    section: int  # SECTION_NONE, SECTION_PRE_DATA, SECTION_DATA or SECTION_POST_DATA
    deps: tuple[int, ...]


SECTION_NONE, SECTION_PRE_DATA, SECTION_DATA, SECTION_POST_DATA = 1, 2, 3, 4


@dataclass(frozen=True)
class Toc:
    int_size: int
    off_size: int
    end: int  # position just after the TOC: the first data block starts here
    entries: tuple[DataEntry, ...]  # entries that have or had data, in TOC order
    items: tuple[TocItem, ...] = ()  # every entry, in TOC order


class _Reader:
    def __init__(self, f: BufferedIOBase) -> None:
        self.f = f
        self.size = os.fstat(f.fileno()).st_size
        self.pos = 0
        self.int_size = 4

    def take(self, n: int) -> bytes:
        data = self.f.read(n) if 0 <= n <= self.size - self.pos else b""
        if len(data) != n:
            raise TocIncomplete("the file ends inside its table of contents")
        self.pos += n
        return data

    def byte(self) -> int:
        return self.take(1)[0]

    def integer(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def string(self) -> str | None:
        length = self.integer()
        if length < 0:
            return None
        return self.take(length).decode("utf-8", errors="replace")


def read_toc(f: BufferedIOBase) -> Toc:
    """Parse the header and TOC of an uncompressed custom-format dump, read from the start of ``f``."""
    f.seek(0)
    r = _Reader(f)
    if r.take(len(MAGIC)) != MAGIC:
        raise DumpLayoutError("not a pg_dump custom-format archive")
    version = (r.byte(), r.byte())
    r.byte()  # revision
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise DumpLayoutError(f"archive version {version[0]}.{version[1]} is not one this code knows")
    r.int_size = r.byte()
    off_size = r.byte()
    if not 1 <= r.int_size <= 8 or not 1 <= off_size <= 8:
        raise DumpLayoutError(f"unexpected integer/offset sizes {r.int_size}/{off_size}")
    if r.byte() != FORMAT_CUSTOM:
        raise DumpLayoutError("not a custom-format archive")
    compression = r.byte() if version >= (1, 15) else r.integer()
    if compression != 0:
        raise DumpLayoutError("the archive's data is compressed by pg_dump")
    for _ in range(7):
        r.integer()  # creation time
    for _ in range(3):
        r.string()  # database name, server version, pg_dump version
    count = r.integer()
    if count < 0:
        raise DumpLayoutError("negative TOC entry count")
    entries: list[DataEntry] = []
    items: list[TocItem] = []
    for _ in range(count):
        dump_id = r.integer()
        r.integer()  # had dumper
        r.string(), r.string(), r.string()  # table oid, oid, tag
        desc = r.string() or ""
        section = r.integer()
        r.string(), r.string(), r.string(), r.string(), r.string()  # defn, drop, copy, namespace, tablespace
        if version >= (1, 14):
            r.string()  # table access method
        if version >= (1, 16):
            r.integer()  # relkind
        r.string(), r.string()  # owner, "with oids"
        deps: list[int] = []
        while (dep := r.string()) is not None:  # dependencies: dump ids as text
            if dep.isdigit():
                deps.append(int(dep))
        items.append(TocItem(dump_id, desc, section, tuple(deps)))
        flag_at = r.pos
        flag = r.byte()
        r.take(off_size)
        if flag not in (OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA):
            raise DumpLayoutError(f"TOC entry {dump_id} has an unknown offset flag {flag}")
        if flag != OFFSET_NO_DATA:
            entries.append(DataEntry(dump_id, desc, flag, flag_at))
    return Toc(r.int_size, off_size, r.pos, tuple(entries), tuple(items))


def partial_toc(path: str) -> Toc | None:
    """The table of contents of the dump being written at ``path`` (its ``end``: where the data starts), or
    None while the file still ends inside it. Raises :class:`DumpLayoutError` for a dump this module cannot
    read (see :func:`read_toc`)."""
    with open(path, "rb") as f:
        try:
            return read_toc(f)
        except TocIncomplete:
            return None


def _block_header(toc: Toc, dump_id: int) -> bytes:
    return bytes([BLOCK_DATA, 0]) + dump_id.to_bytes(toc.int_size, "little")


class _Scanner:
    """Forward byte search over a file through one reused buffer of ``CHUNK`` bytes (a new 4 MiB object
    per read would be mapped and zeroed afresh each time). A search that starts inside what the previous
    one read goes on from there: the blocks are searched in file order, and a small table's block lies
    within bytes already read, so each byte of the file is read once, whatever the number of tables."""

    def __init__(self, f: BufferedIOBase, longest: int) -> None:
        self.f = f
        self.longest = longest  # the longest pattern searched for
        self.buf = bytearray(CHUNK + longest)
        self.view = memoryview(self.buf)
        self.base = 0  # file position of buf[0]
        self.filled = 0  # buf[:filled] holds the file's bytes from base on
        self.eof = False

    def find(self, pattern: bytes, start: int) -> int:
        """File position of the first ``pattern`` at or after ``start``, or -1."""
        if len(pattern) > self.longest:
            raise ValueError("pattern longer than the scanner was made for")
        if not self.base <= start <= self.base + self.filled:
            self.base, self.filled, self.eof = start, 0, False
        while True:
            hit = self.buf.find(pattern, max(start - self.base, 0), self.filled)  # base passes start as it reads
            if hit >= 0:
                return self.base + hit
            if self.eof:
                return -1
            # keep what a match could still start in: the last len(pattern) - 1 bytes, none before start
            drop = max(start - self.base, self.filled - (len(pattern) - 1), 0)
            self.buf[: self.filled - drop] = self.buf[drop : self.filled]
            self.base, self.filled = self.base + drop, self.filled - drop
            self.f.seek(self.base + self.filled)
            n = self.f.readinto(self.view[self.filled :])
            self.eof = not n
            self.filled += n


def locate_data_blocks(f: BufferedIOBase, toc: Toc) -> list[int]:
    """The file position of each data entry's block, in TOC order; raises when any is not where the
    layout says it must be."""
    unsafe = sorted({e.desc for e in toc.entries if e.desc != "TABLE DATA"})
    if unsafe:
        raise DumpLayoutError(f"the dump holds data other than table rows ({', '.join(unsafe)})")
    end_of_block = bytes(toc.int_size + 1)  # a zero-length chunk
    scanner = _Scanner(f, longest=len(end_of_block) + len(_block_header(toc, 0)))
    positions: list[int] = []
    at = toc.end
    for i, entry in enumerate(toc.entries):
        header = _block_header(toc, entry.dump_id)
        if i == 0:
            f.seek(at)
            if f.read(len(header)) != header:
                raise DumpLayoutError(f"the first data block (entry {entry.dump_id}) is not right after the TOC")
        else:
            found = scanner.find(end_of_block + header, at)
            if found < 0:
                raise DumpLayoutError(f"the data block of TOC entry {entry.dump_id} was not found in order")
            at = found + len(end_of_block)
        positions.append(at)
        at += len(header)
    if toc.entries:
        last = scanner.find(end_of_block, at)
        if last < 0 or last + len(end_of_block) != os.fstat(f.fileno()).st_size:
            raise DumpLayoutError("the last data block does not end at the end of the file")
    return positions


def index_data_blocks(path: str) -> int:
    """Write the data offsets into the TOC of the dump at ``path``, in place.

    Returns how many offsets were written: 0 when the dump already has them or has no data. Raises
    :class:`DumpLayoutError`, with the file unchanged, when the blocks cannot be located safely.
    """
    with open(path, "r+b") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise DumpLayoutError("the file is empty")
        toc = read_toc(f)
        if all(e.flag == OFFSET_SET for e in toc.entries):
            return 0
        positions = locate_data_blocks(f, toc)
        for entry, position in zip(toc.entries, positions, strict=True):
            f.seek(entry.flag_at)
            f.write(bytes([OFFSET_SET]) + position.to_bytes(toc.off_size, "little"))
    return len(positions)
