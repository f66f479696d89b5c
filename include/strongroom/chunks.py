"""Chunked snapshots: the dump cut into content-defined chunks, each stored once per region.

A chunked snapshot's dump is the same stream as a whole snapshot's (``pg_dump --format=custom
--compress=0`` of one exported snapshot), cut by FastCDC (``pyfastcdc``, seeded from the chunk key, so the
cut points depend on a secret) into chunks of about ``snapshot.chunk_size``. Each chunk is

* named by the HMAC-SHA256 of its plaintext under a key derived from the *chunk key* (never a bare hash:
  a name tells nothing about the content to anyone without the key);
* sealed as an SRSTRM stream of its zstd frame under the chunk key, bound to its database, chunk key id and
  name (``docs/encryption-format.md``);
* stored at ``chunks/<db>/<chunk key id>/<name>`` (:mod:`strongroom.layout`), once per region.

The manifest lists the chunks in order and carries the chunk key wrapped under the region's keyring, as a
whole snapshot's manifest carries its data key: any one region opens every snapshot it holds alone.

**Reuse.** A snapshot (and a copy into another region) uploads only the chunks that the region's newest
committed chunked manifest does not name, and reuses those only when that manifest was sealed under the
keyring's active key (so after a key rotation every needed chunk is stored again under a new chunk key, and
the old key's chunks age out with the window) and outlives the run by a margin (so no prune can delete a
reused chunk before the new manifest names it: ``docs/retention.md``). A chunk not named by that manifest
is uploaded again even when an older one holds it: a new version, young, which a prune leaves alone.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO

import pyfastcdc

from strongroom import catalog, envelope, layout
from strongroom.catalog import ChunkRef, Manifest
from strongroom.config import Config, TransferConfig
from strongroom.errors import IntegrityError, NotFoundError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.progress import Progress
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)

# besides the run timeout: clocks, and a prune's time between reading and deleting (a tenth of a shorter retention)
REUSE_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class ChunkKey:
    """A chunk key: 32 random bytes, and the id naming it in keys and manifests (16 hex digits)."""

    key_id: str
    key: bytes

    @classmethod
    def new(cls) -> ChunkKey:
        return cls(secrets.token_hex(8), envelope.new_data_key())

    def identity(self, database: str, name: str) -> bytes:
        """Associated data binding a sealed chunk to its database, chunk key and name."""
        return envelope.object_identity("chunk", database, self.key_id, name)


@dataclass
class Base:
    """What a region already holds that a new snapshot may reuse: the chunk key and the chunks named by the
    region's newest committed chunked manifest (empty when nothing may be reused)."""

    key: ChunkKey
    known: dict[str, int] = field(default_factory=dict)  # name -> stored size
    manifest: Manifest | None = None  # the manifest the known chunks come from


def reusable(config: Config, manifest: Manifest, keyring: Keyring, now: datetime) -> bool:
    """Whether the chunks ``manifest`` names may be reused by a run starting ``now``: it is chunked, sealed
    under the keyring's active key, and lives past the run by :data:`REUSE_MARGIN`."""
    expires = manifest.taken_at + config.retention
    margin = min(REUSE_MARGIN, config.retention / 10)
    return (manifest.chunked and manifest.key_id == keyring.active_id
            and expires > now + config.snapshot.run_timeout + margin)


def newest_chunked(store: ObjectStore, keyring: Keyring, database: str) -> Manifest | None:
    """The newest committed snapshot of ``database`` in ``store`` when it is chunked, else None (also when a
    prune deleted it between the listing and the read: nothing is then taken as there, which is always safe)."""
    ids = catalog.snapshot_ids(store, database)
    if not ids:
        return None
    try:
        manifest = catalog.load_manifest(store, keyring, database, ids[-1])
    except NotFoundError:
        log.info("%s: snapshot %s of %s was deleted while it was read: no chunk is reused from it", store.where,
                 ids[-1], database)
        return None
    return manifest if manifest.chunked else None


def base_for(config: Config, store: ObjectStore, keyring: Keyring, database: str, now: datetime) -> Base:
    """The chunk key and reusable chunks of a new snapshot landing in ``store`` (a fresh key when nothing
    there may be reused)."""
    newest = newest_chunked(store, keyring, database)
    if newest is None or not reusable(config, newest, keyring, now):
        return Base(ChunkKey.new())
    key = ChunkKey(newest.chunk_key_id, newest.data_key(keyring))
    return Base(key, _still_there(store, newest), newest)


def _still_there(store: ObjectStore, manifest: Manifest, present: Mapping[str, int] | None = None) -> dict[str, int]:
    """The chunks ``manifest`` names that ``store`` holds with their recorded length: one that went missing
    (deleted by hand, lost) is written again by the next snapshot or copy instead of being taken as there."""
    if present is None:
        present = stored_sizes(store, manifest.database, manifest.chunk_key_id)
    return {c.name: c.stored for c in manifest.chunks if present.get(c.name) == c.stored}


def known_in(config: Config, store: ObjectStore, keyring: Keyring, manifest: Manifest, now: datetime,
             present: Mapping[str, int] | None = None) -> dict[str, int]:
    """The chunks of ``manifest`` that ``store``'s region may take as present without copying them: those its
    newest committed manifest names, when that one uses the same chunk key and may be reused."""
    newest = newest_chunked(store, keyring, manifest.database)
    if newest is None or newest.chunk_key_id != manifest.chunk_key_id or not reusable(config, newest, keyring, now):
        return {}
    return _still_there(store, newest, present)


# ---- writing ------------------------------------------------------------------------------------------------


@dataclass
class WriteStats:
    plain: int = 0
    chunks: int = 0
    new_chunks: int = 0
    new_plain: int = 0
    uploaded: int = 0  # stored bytes uploaded


class ChunkWriter:
    """Seals and uploads chunks as they come, ``concurrency`` at a time, and keeps their refs in order.

    A chunk in ``known`` (or already written by this writer) is not uploaded again. Memory is bounded: at
    most ``concurrency`` chunks are sealed or in flight while the next one is cut.
    """

    def __init__(
        self, store: ObjectStore, database: str, key: ChunkKey, *, known: Mapping[str, int],
        retain_until: datetime | None, level: int, concurrency: int,
    ) -> None:
        self.store, self.database, self.key = store, database, key
        self.known = dict(known)
        self.retain_until = retain_until
        self.level = level
        self.namer = envelope.ChunkNamer(key.key)
        self.refs: list[ChunkRef] = []
        self.stats = WriteStats()
        self._stored: dict[str, Future[int] | int] = dict(self.known)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="chunk-put")
        self._error: BaseException | None = None

    def add(self, plain: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        name = self.namer.name(plain)
        size = len(plain)
        self.stats.plain += size
        self.stats.chunks += 1
        if name not in self._stored:
            self.stats.new_chunks += 1
            self.stats.new_plain += size
            self._slots.acquire()
            self._stored[name] = self._pool.submit(self._put, name, bytes(plain))
        self.refs.append(ChunkRef(name, size, -1))

    def _put(self, name: str, plain: bytes) -> int:
        try:
            identity = self.key.identity(self.database, name)
            sealed, _ = envelope.seal_blob(self.key.key, identity, plain, level=self.level)
            del plain
            self.store.put_data(layout.chunk_key(self.database, self.key.key_id, name), sealed,
                                retain_until=self.retain_until)
            self.stats.uploaded += len(sealed)
            return len(sealed)
        except BaseException as exc:
            self._error = self._error or exc
            raise
        finally:
            self._slots.release()

    def finish(self) -> list[ChunkRef]:
        """Wait for every upload; the refs in order with their stored sizes. Raises the first failure."""
        self._pool.shutdown(wait=True)
        if self._error is not None:
            raise self._error
        sizes = {name: (v.result() if isinstance(v, Future) else v) for name, v in self._stored.items()}
        self.refs = [ChunkRef(r.name, r.size, sizes[r.name]) for r in self.refs]
        return self.refs

    def abort(self) -> None:
        """Stop uploading (what was uploaded stays: unnamed by any manifest, a later prune removes it)."""
        self._error = self._error or StrongroomError("the chunked write was stopped")
        self._pool.shutdown(wait=True, cancel_futures=True)


def cut(source: IO[bytes], key: ChunkKey, chunk_size: int) -> Iterator[memoryview]:
    """The content-defined chunks of ``source``, in order (FastCDC 2020, seeded from the chunk key)."""
    chunker = pyfastcdc.FastCDC(chunk_size, min_size=chunk_size // 4, max_size=min(chunk_size * 4, 16 * 2**20),
                                seed=envelope.chunker_seed(key.key))
    for chunk in chunker.cut_stream(source):
        yield chunk.data


def write_stream(source: IO[bytes], writer: ChunkWriter, chunk_size: int, *, label: str,
                 total: int | None = None) -> list[ChunkRef]:
    """Cut ``source`` into chunks and write them through ``writer``; the refs in order."""
    progress = Progress(label, total, estimated=True)
    try:
        for piece in cut(source, writer.key, chunk_size):
            writer.add(piece)
            progress.update(writer.stats.plain)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


# ---- checking, copying and reading --------------------------------------------------------------------------


def stored_sizes(store: ObjectStore, database: str, chunk_key_id: str) -> dict[str, int]:
    """Every chunk under one chunk key in ``store``, with its stored size (one listing)."""
    prefix = layout.chunks_prefix(database, chunk_key_id)
    return {info.key[len(prefix):]: info.size for info in store.list_objects(prefix)}


def missing(manifest: Manifest, present: Mapping[str, int]) -> list[str]:
    """The chunks ``manifest`` names that are absent from ``present`` or have another length there, each
    once, as "<name> (why)"."""
    problems: list[str] = []
    seen: set[str] = set()
    for ref in manifest.chunks:
        if ref.name in seen:
            continue
        seen.add(ref.name)
        size = present.get(ref.name)
        if size is None:
            problems.append(f"{ref.name} (missing)")
        elif size != ref.stored:
            problems.append(f"{ref.name} ({size} bytes, the manifest says {ref.stored})")
    return problems


def check_present(store: ObjectStore, manifest: Manifest, present: Mapping[str, int] | None = None) -> None:
    """Every chunk ``manifest`` names is in ``store`` with the right length; else IntegrityError naming them."""
    if present is None:
        present = stored_sizes(store, manifest.database, manifest.chunk_key_id)
    problems = missing(manifest, present)
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise IntegrityError(f"{store.where}: snapshot {manifest.snapshot_id} of {manifest.database} lacks "
                             f"{len(problems)} chunk(s): " + ", ".join(problems[:3]) + more)


def read_chunk(store: ObjectStore, manifest: Manifest, key: ChunkKey, ref: ChunkRef,
               namer: envelope.ChunkNamer) -> bytes:
    """One chunk read, authenticated and decrypted; its plaintext checked against its name and size."""
    where_key = layout.chunk_key(manifest.database, key.key_id, ref.name)
    where = f"s3://{store.bucket}/{where_key}"
    sealed = store.get_data(where_key, ref.stored)
    if len(sealed) != ref.stored:
        raise IntegrityError(f"{where} is {len(sealed)} bytes, the manifest says {ref.stored}")
    try:
        plain = envelope.unseal_blob(key.key, key.identity(manifest.database, ref.name), sealed, where)
    except IntegrityError as exc:
        message = str(exc) if where in str(exc) else f"{where}: {exc}"
        raise IntegrityError(f"chunk of snapshot {manifest.snapshot_id}: {message}") from None
    if len(plain) != ref.size or not namer.matches(plain, ref.name):
        raise IntegrityError(f"{where} does not hold the chunk its name says (snapshot {manifest.snapshot_id})")
    return plain


def read_chunks(store: ObjectStore, manifest: Manifest, key: ChunkKey, transfer: TransferConfig,
                refs: Iterable[ChunkRef] | None = None) -> Iterator[bytes]:
    """The plaintext of ``refs`` (default: every chunk of the snapshot, so the dump), in order, fetched
    ``transfer.download_concurrency`` ahead; each authenticated before it is yielded."""
    namer = envelope.ChunkNamer(key.key)
    pending = list(refs if refs is not None else manifest.chunks)
    workers = max(1, transfer.download_concurrency)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk-get") as pool:
        inflight: list[Future[bytes]] = []
        position = 0
        try:
            while position < len(pending) or inflight:
                while position < len(pending) and len(inflight) < workers:
                    inflight.append(pool.submit(read_chunk, store, manifest, key, pending[position], namer))
                    position += 1
                yield inflight.pop(0).result()
        finally:
            for future in inflight:
                future.cancel()


def copy_chunks(source: ObjectStore, target: ObjectStore, manifest: Manifest, known: Mapping[str, int],
                transfer: TransferConfig, *, retain_until: datetime | None) -> int:
    """Copy into ``target`` every chunk of ``manifest`` not in ``known``, as stored (never decrypted);
    returns how many. Each copy is checked for its length."""
    todo: dict[str, int] = {}
    for ref in manifest.chunks:
        if ref.name not in known:
            todo[ref.name] = ref.stored
    def copy(item: tuple[str, int]) -> None:
        name, stored = item
        key = layout.chunk_key(manifest.database, manifest.chunk_key_id, name)
        data = source.get_data(key, stored)
        if len(data) != stored:
            raise IntegrityError(f"{source.where}: {key} is {len(data)} bytes, the manifest says {stored}")
        target.put_data(key, data, retain_until=retain_until)

    with ThreadPoolExecutor(max_workers=max(1, transfer.upload_concurrency), thread_name_prefix="chunk-copy") as pool:
        list(pool.map(copy, todo.items()))
    return len(todo)


def verify_new(store: ObjectStore, manifest: Manifest, data_key: bytes, known: Mapping[str, int],
               transfer: TransferConfig, present: Mapping[str, int] | None = None) -> int:
    """Check that every chunk is present with its length, and read back and authenticate every chunk not in
    ``known`` (those this run wrote); returns how many were read back."""
    check_present(store, manifest, present)
    key = ChunkKey(manifest.chunk_key_id, data_key)
    fresh, seen = [], set()
    for ref in manifest.chunks:
        if ref.name not in known and ref.name not in seen:
            seen.add(ref.name)
            fresh.append(ref)
    for _ in read_chunks(store, manifest, key, transfer, fresh):
        pass
    return len(fresh)


def lock_slack(config: Config) -> timedelta:
    """How far a reused chunk's lock may lag the newest snapshot naming it before it is extended: a day, or
    a thirtieth of a shorter retention (locks are extended once a day, not every hour)."""
    return min(timedelta(days=1), config.retention / 30)


def lock_chunks(store: ObjectStore, manifest: Manifest, base: Manifest | None, erase_at: datetime,
                slack: timedelta, transfer: TransferConfig) -> datetime | None:
    """In a region that locks: make sure every chunk ``manifest`` names is locked until at least
    ``erase_at - slack`` and never past ``erase_at``; returns the date all of them are locked until (None
    in a region that does not lock).

    Chunks the region's ``base`` manifest names are locked until its ``chunks_locked_until``; when that is
    within ``slack`` of ``erase_at`` they are left, else extended to ``erase_at``. The others were written
    by this run with ``erase_at``, and are locked again to be sure.
    """
    if store.lock_mode is None:
        return None
    reused = {c.name for c in base.chunks} if base is not None else set()
    floor = base.chunks_locked_until if base is not None else None
    extend_reused = floor is None or floor < erase_at - slack
    names = {c.name for c in manifest.chunks if extend_reused or c.name not in reused}

    def lock(name: str) -> None:
        store.apply_lock(layout.chunk_key(manifest.database, manifest.chunk_key_id, name), erase_at)

    with ThreadPoolExecutor(max_workers=max(1, transfer.upload_concurrency), thread_name_prefix="chunk-lock") as pool:
        list(pool.map(lock, sorted(names)))
    if extend_reused or floor is None:
        return erase_at
    return min(floor, erase_at)


def spool(store: ObjectStore, manifest: Manifest, data_key: bytes, path: str, transfer: TransferConfig,
          on_write: Callable[[int], None] | None = None) -> int:
    """Write the snapshot's dump into ``path`` (created, mode 0600), chunk by chunk as they arrive; returns
    the bytes written. ``on_write`` is called after each chunk with the bytes written so far (flushed)."""
    key = ChunkKey(manifest.chunk_key_id, data_key)
    progress = Progress(f"download {manifest.database} snapshot {manifest.snapshot_id}", manifest.dump.plain_size)
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for plain in read_chunks(store, manifest, key, transfer):
            written += out.write(plain)
            progress.update(written)
            if on_write is not None:
                out.flush()
                on_write(written)
    if written != manifest.dump.plain_size:
        raise IntegrityError(f"{store.where}: {written} bytes restored of snapshot {manifest.snapshot_id}, its "
                             f"manifest says {manifest.dump.plain_size}")
    return written
