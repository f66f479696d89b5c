"""``strongroom verify``: is every committed snapshot in a region whole, and (``deep``) does it authenticate?

*Shallow*: each committed snapshot's manifest authenticates under the region's keyring and its wrapped key
opens; each object it consists of (a whole snapshot's dump, any snapshot's globals) and each chunk it names
is present with the length its manifest records (one listing per chunk key, :func:`strongroom.chunks.stored_sizes`).

*Deep*: besides, every object is read, its SHA-256 compared with the manifest's and its stream decrypted
and decompressed to the recorded size; every chunk is read, authenticated under its chunk key and checked
against its name (:func:`strongroom.chunks.read_chunk`). A chunk shared by many snapshots is read once per
region.

A problem names the region, the database, the chunk (or the object, or the manifest) and every snapshot
that needs it: a chunk missing from one region breaks every snapshot naming it there, and that region's
restore of them (which then falls back to another region, :func:`strongroom.restore.fetch_snapshot`).
Nothing is written or repaired here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from strongroom import catalog, chunks, envelope
from strongroom.catalog import ChunkRef, Manifest, StoredObject
from strongroom.config import Config, RegionConfig, TransferConfig
from strongroom.connections import Connections
from strongroom.errors import IntegrityError, KeyringError, NotFoundError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.progress import Progress, size_text
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)

MISSING = "missing"


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one region: a ``chunk``, ``object`` or ``manifest`` (``name`` is the chunk's name,
    the object's key or the snapshot id), why, and the snapshots that need it."""

    region: str
    database: str
    kind: str
    name: str
    why: str
    snapshots: tuple[str, ...]

    def line(self) -> str:
        needed = f"needed by {len(self.snapshots)} snapshot(s): {', '.join(self.snapshots)}"
        if self.kind == "manifest":
            needed = "the snapshot cannot be restored from this region"
        return f"{self.region}: {self.database}: {self.kind} {self.name} {self.why}; {needed}"

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "database": self.database, "kind": self.kind, "name": self.name,
                "why": self.why, "snapshots": list(self.snapshots)}


@dataclass
class RegionReport:
    region: str
    snapshots: int = 0
    objects: int = 0  # whole objects checked
    chunks: int = 0  # distinct chunks checked
    read: int = 0  # stored bytes read (deep)
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None  # the region could not be verified at all

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None

    def line(self) -> str:
        counts = f"{self.snapshots} snapshot(s), {self.objects} object(s), {self.chunks} chunk(s)"
        read = f", {size_text(self.read)} read" if self.read else ""
        if self.error is not None:
            return f"{self.region}: NOT VERIFIED: {self.error}"
        verdict = "sound" if self.ok else f"{len(self.problems)} problem(s)"
        return f"{self.region}: {counts}{read}: {verdict}"

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "ok": self.ok, "snapshots": self.snapshots, "objects": self.objects,
                "chunks": self.chunks, "read_bytes": self.read, "error": self.error,
                "problems": [p.to_dict() for p in self.problems]}


@dataclass
class VerifyReport:
    deep: bool
    regions: list[RegionReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.regions)

    @property
    def problems(self) -> list[Problem]:
        return [p for r in self.regions for p in r.problems]

    def lines(self) -> list[str]:
        return [p.line() for p in self.problems] + [r.line() for r in self.regions]

    def summary(self) -> str:
        how = "deep" if self.deep else "shallow"
        bad = [r for r in self.regions if not r.ok]
        if not bad:
            return f"verify ({how}): {len(self.regions)} region(s) sound"
        what = "; ".join(f"{r.region} ({'not verified' if r.error else f'{len(r.problems)} problem(s)'})"
                         for r in bad)
        return f"verify ({how}): {len(bad)} of {len(self.regions)} region(s) failed: {what}"

    def to_dict(self) -> dict[str, Any]:
        return {"deep": self.deep, "ok": self.ok, "summary": self.summary(),
                "regions": [r.to_dict() for r in self.regions]}


def verify(config: Config, conns: Connections, *, region: str | None = None, database: str | None = None,
           deep: bool = False) -> VerifyReport:
    """Verify every committed snapshot of ``database`` (default: every configured one) in ``region``
    (default: every region). An unknown name is a :class:`ConfigError`; a region that cannot be read is
    reported (its ``error``), not raised."""
    from strongroom.regions import candidates

    names = [config.database(database).name] if database else [d.name for d in config.databases]
    report = VerifyReport(deep)
    for where in candidates(config, region):
        result = RegionReport(where.name)
        try:
            _verify_region(config, conns, where, names, deep, result)
        except StrongroomError as exc:  # unreachable bucket, missing keyring connection, failed listing
            result.error = " ".join(str(exc).split())
        log.info("verify: %s", result.line())
        report.regions.append(result)
    return report


def _verify_region(config: Config, conns: Connections, where: RegionConfig, names: Sequence[str], deep: bool,
                   result: RegionReport) -> None:
    store = conns.store(where, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(where))
    for database in names:
        opened = list(_open_manifests(store, keyring, where.name, database, result))
        result.snapshots += len(opened)
        for manifest, data_key in opened:
            for obj in manifest.objects():
                kind = "globals" if obj is manifest.globals else "dump"  # the identity its stream is bound to
                result.objects += 1
                why = _check_object(store, manifest, kind, obj, data_key, config.transfer, deep, result)
                if why:
                    result.problems.append(Problem(where.name, database, "object", obj.key, why,
                                                   (manifest.snapshot_id,)))
        _check_chunks(store, where.name, database, opened, config.transfer, deep, result)


def _open_manifests(store: ObjectStore, keyring: Keyring, region: str, database: str,
                    result: RegionReport) -> Iterator[tuple[Manifest, bytes]]:
    """Each committed snapshot's authenticated manifest and its data (or chunk) key; a manifest that does
    not authenticate, or whose key does not open, is a problem."""
    for snapshot_id in catalog.snapshot_ids(store, database):
        try:
            manifest = catalog.load_manifest(store, keyring, database, snapshot_id)
            yield manifest, manifest.data_key(keyring)
        except (IntegrityError, KeyringError, NotFoundError) as exc:
            result.problems.append(Problem(region, database, "manifest", snapshot_id,
                                           f"is unusable ({' '.join(str(exc).split())})", (snapshot_id,)))


def _check_object(store: ObjectStore, manifest: Manifest, kind: str, obj: StoredObject, data_key: bytes,
                  transfer: TransferConfig, deep: bool, result: RegionReport) -> str | None:
    """Why ``obj`` is not as its manifest says, or None. Deep: read it whole, compare its SHA-256, and
    decrypt and decompress it (a dump or globals stream) to the recorded size."""
    info = store.head(obj.key)
    if info is None:
        return MISSING
    if info.size != obj.stored_size:
        return f"is {info.size} bytes, the manifest says {obj.stored_size}"
    if not deep:
        return None
    digest = hashlib.sha256()
    progress = Progress(f"verify {manifest.database} {kind} of {manifest.snapshot_id}", obj.stored_size)

    def received() -> Iterator[bytes]:
        for piece in store.iter_chunks(obj.key, obj.stored_size, chunk_size=transfer.part_size,
                                       concurrency=transfer.download_concurrency):
            digest.update(piece)
            result.read += len(piece)
            progress.add(len(piece))
            yield piece

    plain = 0
    try:
        for block in envelope.unseal_stream(received(), data_key, manifest.object_identity(kind), obj.key):
            plain += len(block)
    except IntegrityError:
        return "fails authentication (damaged, or not the object its manifest names)"
    except NotFoundError:
        return MISSING
    if digest.hexdigest() != obj.sha256:
        return "does not match the SHA-256 in its manifest"
    if plain != obj.plain_size:
        return f"holds {plain} bytes, the manifest says {obj.plain_size}"
    return None


def _check_chunks(store: ObjectStore, region: str, database: str, opened: Sequence[tuple[Manifest, bytes]],
                  transfer: TransferConfig, deep: bool, result: RegionReport) -> None:
    """Every distinct chunk the manifests name: present with its length (one listing per chunk key), and
    (deep) read once, authenticated and checked against its name."""
    by_key: dict[str, tuple[Manifest, bytes, dict[ChunkRef, list[str]]]] = {}
    for manifest, data_key in opened:
        if not manifest.chunked:
            continue
        _, _, needs = by_key.setdefault(manifest.chunk_key_id, (manifest, data_key, {}))
        for ref in manifest.chunks:
            users = needs.setdefault(ref, [])
            if not users or users[-1] != manifest.snapshot_id:
                users.append(manifest.snapshot_id)

    for key_id, (manifest, data_key, needs) in by_key.items():
        present = chunks.stored_sizes(store, database, key_id)
        result.chunks += len(needs)
        sound: list[ChunkRef] = []
        for ref, users in needs.items():
            size = present.get(ref.name)
            why = MISSING if size is None else (
                f"is {size} bytes, the manifest says {ref.stored}" if size != ref.stored else None)
            if why:
                result.problems.append(Problem(region, database, "chunk", ref.name, why, tuple(users)))
            else:
                sound.append(ref)
        if deep:
            for ref, why in _read_chunks(store, manifest, chunks.ChunkKey(key_id, data_key), sound, transfer,
                                         result):
                result.problems.append(Problem(region, database, "chunk", ref.name, why, tuple(needs[ref])))


def _read_chunks(store: ObjectStore, manifest: Manifest, key: chunks.ChunkKey, refs: Sequence[ChunkRef],
                 transfer: TransferConfig, result: RegionReport) -> list[tuple[ChunkRef, str]]:
    """Read and authenticate each of ``refs`` (``transfer.download_concurrency`` at a time); the failures."""
    namer = envelope.ChunkNamer(key.key)
    total = sum(r.stored for r in refs)
    progress = Progress(f"verify {manifest.database} chunks under chunk key {key.key_id}", total)

    def check(ref: ChunkRef) -> str | None:
        try:
            chunks.read_chunk(store, manifest, key, ref, namer)
        except NotFoundError:
            return MISSING
        except IntegrityError as exc:
            if "does not hold the chunk its name says" in str(exc):
                return "holds another chunk than its name says"
            return "fails authentication (damaged, or sealed under another key or name)"
        return None

    failed: list[tuple[ChunkRef, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, transfer.download_concurrency),
                            thread_name_prefix="chunk-verify") as pool:
        for ref, why in zip(refs, pool.map(check, refs), strict=True):
            result.read += ref.stored
            progress.add(ref.stored)
            if why:
                failed.append((ref, why))
    return failed
