"""The catalog: authenticated manifests, and the snapshots they commit.

A snapshot exists in a region when, and only when, its manifest is there and authenticates. Keys and
snapshot ids are built and parsed by :mod:`strongroom.layout` (``docs/storage-layout.md``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from strongroom import envelope, layout
from strongroom.config import require_offset
from strongroom.errors import IntegrityError, KeyringError, NotFoundError
from strongroom.keyring import Keyring
from strongroom.storage import ObjectStore

MANIFEST_FORMAT = "strongroom.snapshot/1"  # the dump as one sealed object
CHUNKED_FORMAT = "strongroom.snapshot/2"  # the dump as content-defined chunks (strongroom.chunks)


@dataclass(frozen=True)
class StoredObject:
    key: str
    plain_size: int
    compressed_size: int
    stored_size: int
    sha256: str


@dataclass(frozen=True)
class ChunkRef:
    """One chunk of a chunked dump, in order: its name (the MAC of its plaintext), plaintext and stored size."""

    name: str
    size: int
    stored: int


@dataclass(frozen=True)
class Manifest:
    snapshot_id: str
    database: str
    taken_at: datetime
    server_version: str
    pg_dump_version: str
    key_id: str
    wrapped_key: str
    dump: StoredObject
    tables: Mapping[str, int]
    globals: StoredObject | None = None
    globals_note: str = ""
    checksums: Mapping[str, str] = field(default_factory=dict)  # table -> content md5, small tables only
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    strongroom_version: str = ""
    # the schema inventory (strongroom.inventory), read in the same transaction as the row counts
    inventory: Mapping[str, Any] = field(default_factory=dict)
    # a chunked snapshot: the chunk key's id (the wrapped key above is the chunk key) and the dump's chunks
    chunk_key_id: str = ""
    chunks: tuple[ChunkRef, ...] = ()
    # a chunked snapshot in a region that locks: every chunk it names is locked at least until then there
    chunks_locked_until: datetime | None = None

    @property
    def chunked(self) -> bool:
        return bool(self.chunk_key_id)

    def objects(self) -> list[StoredObject]:
        """The data objects this snapshot alone consists of (a chunked snapshot's chunks are shared: they are
        in :attr:`chunks`, and ``dump`` only sums them up)."""
        own = [] if self.chunked else [self.dump]
        return [*own, *([self.globals] if self.globals else [])]

    def chunk_keys(self) -> list[str]:
        """The keys of the chunks this snapshot names, in order (repeats kept)."""
        return [layout.chunk_key(self.database, self.chunk_key_id, c.name) for c in self.chunks]

    @property
    def identity(self) -> bytes:
        """Associated data binding the wrapped key to this snapshot (or, chunked, to its chunk key)."""
        if self.chunked:
            return chunk_key_identity(self.database, self.chunk_key_id)
        return envelope.object_identity("data-key", self.database, self.snapshot_id)  # as wrap_data_key binds it

    def object_identity(self, kind: str) -> bytes:
        return envelope.object_identity(kind, self.database, self.snapshot_id)

    def data_key(self, keyring: Keyring) -> bytes:
        """This snapshot's data key, unwrapped under ``keyring`` (the keyring of the region this manifest was
        read from). Raises :class:`KeyringError` for an unknown key id, :class:`IntegrityError` when the
        wrapped key does not open."""
        return envelope.unwrap_key(keyring.key(self.key_id), self.key_id, self.wrapped_key, self.identity)

    def rewrapped(self, data_key: bytes, keyring: Keyring) -> Manifest:
        """This manifest with ``data_key`` wrapped under ``keyring``'s active key: how each region's copy
        carries the key its own keyring opens (the inverse of :meth:`data_key`)."""
        wrapped = envelope.wrap_key(keyring.active_key, keyring.active_id, data_key, self.identity)
        return replace(self, key_id=keyring.active_id, wrapped_key=wrapped)

    def body(self) -> dict[str, Any]:
        body = asdict(self)
        body["format"] = CHUNKED_FORMAT if self.chunked else MANIFEST_FORMAT
        if self.chunked:  # compact: [name, plain size, stored size] per chunk, in order
            body["chunks"] = [[c.name, c.size, c.stored] for c in self.chunks]
            body["chunks_locked_until"] = self.chunks_locked_until.isoformat() if self.chunks_locked_until else None
        else:  # whole snapshots keep their original shape
            for name in ("chunk_key_id", "chunks", "chunks_locked_until"):
                del body[name]
        body["taken_at"] = self.taken_at.isoformat()
        body["created_at"] = self.created_at.isoformat()
        body["tables"] = dict(sorted(self.tables.items()))
        body["checksums"] = dict(sorted(self.checksums.items()))
        if not body["checksums"]:
            del body["checksums"]  # manifests without checksums keep their original shape
        if not body["inventory"]:
            del body["inventory"]
        body["encryption"] = {
            "stream": "SRSTRM/1 AES-256-GCM-HKDF-SHA256, 1 MiB segments",
            "key_wrap": "AES-256-GCM under HKDF(keyring key)",
            "key_id": body.pop("key_id"),
            "wrapped_key": body.pop("wrapped_key"),
        }
        if self.chunked:
            body["encryption"]["stream"] = "SRSTRM/1 AES-256-GCM-HKDF-SHA256 per chunk, names HMAC-SHA256"
            body["encryption"]["key_wrap"] = "chunk key: AES-256-GCM under HKDF(keyring key)"
        body["compression"] = "zstd"
        body["dump_format"] = "pg_dump custom, uncompressed"
        return body

    def to_json(self, keyring: Keyring) -> bytes:
        """Serialise and authenticate with HMAC-SHA256 under the keyring's active key."""
        body = self.body()
        body["mac_key_id"] = keyring.active_id
        payload = _canonical(body)
        signed = dict(body, mac=envelope.mac(keyring.active_key, payload))
        return json.dumps(signed, indent=2, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, keyring: Keyring, where: str) -> Manifest:
        """Parse and authenticate; anything wrong raises :class:`IntegrityError` naming ``where``."""
        try:
            doc = json.loads(raw)
            mac_value = doc.pop("mac")
            mac_key_id = doc["mac_key_id"]
            if not isinstance(mac_key_id, str):
                raise TypeError("mac_key_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(f"manifest {where} is malformed") from None
        try:
            key = keyring.key(mac_key_id)
        except KeyringError as exc:
            raise KeyringError(f"manifest {where}: {exc}") from None
        if not isinstance(mac_value, str) or not envelope.verify_mac(key, _canonical(doc), mac_value):
            raise IntegrityError(f"manifest {where} failed authentication (tampered or foreign)")
        if doc.get("format") not in (MANIFEST_FORMAT, CHUNKED_FORMAT):
            raise IntegrityError(f"manifest {where} has unsupported format {doc.get('format')!r}")
        enc = doc["encryption"]
        chunked = doc["format"] == CHUNKED_FORMAT
        try:
            listed = doc["chunks"] if chunked else []
            chunks = tuple(ChunkRef(str(n), int(size), int(stored)) for n, size, stored in listed)
            locked = doc.get("chunks_locked_until") if chunked else None
        except (KeyError, TypeError, ValueError):
            raise IntegrityError(f"manifest {where} has a malformed chunk list") from None
        if chunked and not (layout.is_chunk_key_id(str(doc.get("chunk_key_id", "")))
                            and all(layout.is_chunk_name(c.name) for c in chunks)):
            raise IntegrityError(f"manifest {where} names a chunk key or chunk Strongroom does not write")
        return cls(
            snapshot_id=doc["snapshot_id"],
            database=doc["database"],
            taken_at=datetime.fromisoformat(doc["taken_at"]),
            server_version=doc["server_version"],
            pg_dump_version=doc["pg_dump_version"],
            key_id=enc["key_id"],
            wrapped_key=enc["wrapped_key"],
            dump=StoredObject(**doc["dump"]),
            tables=doc["tables"],
            globals=StoredObject(**doc["globals"]) if doc.get("globals") else None,
            globals_note=doc.get("globals_note", ""),
            checksums=doc.get("checksums", {}),
            created_at=datetime.fromisoformat(doc["created_at"]),
            strongroom_version=doc.get("strongroom_version", ""),
            inventory=doc.get("inventory", {}),
            chunk_key_id=str(doc["chunk_key_id"]) if chunked else "",
            chunks=chunks,
            chunks_locked_until=datetime.fromisoformat(locked) if locked else None,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "database": self.database,
            "taken_at": self.taken_at.isoformat(),
            "stored_bytes": self.dump.stored_size + (self.globals.stored_size if self.globals else 0),
            "plain_bytes": self.dump.plain_size,
            "tables": len(self.tables),
            "rows": sum(self.tables.values()),
            "key_id": self.key_id,
        }


def chunk_key_identity(database: str, chunk_key_id: str) -> bytes:
    """Associated data binding a wrapped chunk key to its database and id (every manifest that uses it)."""
    return envelope.object_identity("chunk-key", database, chunk_key_id)


def wrap_chunk_key(chunk_key: bytes, keyring: Keyring, database: str, chunk_key_id: str) -> tuple[str, str]:
    """(key id, wrapped key): a chunk key wrapped under ``keyring``'s active key for a chunked manifest
    (:meth:`Manifest.data_key` unwraps it)."""
    identity = chunk_key_identity(database, chunk_key_id)
    return keyring.active_id, envelope.wrap_key(keyring.active_key, keyring.active_id, chunk_key, identity)


def wrap_data_key(data_key: bytes, keyring: Keyring, database: str, snapshot_id: str) -> tuple[str, str]:
    """(key id, wrapped key): a snapshot's ``data_key`` wrapped under ``keyring``'s active key and bound to the
    snapshot, the one place a data key is wrapped (:meth:`Manifest.data_key` unwraps it)."""
    identity = envelope.object_identity("data-key", database, snapshot_id)
    return keyring.active_id, envelope.wrap_key(keyring.active_key, keyring.active_id, data_key, identity)


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def snapshot_ids(store: ObjectStore, database: str) -> list[str]:
    """Committed snapshot ids in this region, oldest first (from manifest key names)."""
    keys = (info.key for info in store.list_objects(layout.manifest_prefix(database)))
    return layout.snapshot_ids(keys, database, layout.MANIFESTS)


def load_manifest(store: ObjectStore, keyring: Keyring, database: str, snapshot_id: str) -> Manifest:
    key = layout.manifest_key(database, snapshot_id)
    try:
        raw = store.get_bytes(key)
    except NotFoundError:
        raise NotFoundError(f"snapshot {snapshot_id} of {database} does not exist in {store.where}") from None
    manifest = Manifest.from_json(raw, keyring, f"s3://{store.bucket}/{key}")
    if manifest.snapshot_id != snapshot_id or manifest.database != database:
        raise IntegrityError(f"manifest s3://{store.bucket}/{key} describes another snapshot")
    return manifest


def list_manifests(store: ObjectStore, keyring: Keyring, database: str) -> list[Manifest]:
    return [load_manifest(store, keyring, database, sid) for sid in snapshot_ids(store, database)]


def select_snapshot(
    store: ObjectStore,
    keyring: Keyring,
    database: str,
    *,
    snapshot_id: str | None = None,
    at: datetime | None = None,
) -> Manifest:
    """The named snapshot, else the newest taken at or before ``at``, else the newest."""
    if at is not None:
        require_offset(at, "at")
    ids = snapshot_ids(store, database)
    if snapshot_id:
        layout.snapshot_id_time(snapshot_id)
        if snapshot_id not in ids:
            raise NotFoundError(f"snapshot {snapshot_id} of {database} is not in {store.where} "
                                f"(choose from: {choices(ids)})")
        return load_manifest(store, keyring, database, snapshot_id)
    if not ids:
        raise NotFoundError(f"no committed snapshot of {database} in {store.where}")
    if at is None:
        return load_manifest(store, keyring, database, ids[-1])
    for candidate in reversed(ids):
        if layout.snapshot_id_time(candidate) <= at:
            manifest = load_manifest(store, keyring, database, candidate)
            if manifest.taken_at <= at:
                return manifest
    raise NotFoundError(f"no snapshot of {database} taken at or before {at.isoformat()} in {store.where} "
                        f"(choose from: {choices(ids)})")


def choices(names: list[str], most: int = 10) -> str:
    """The valid choices for one line, newest first: all of them, or the newest ``most`` and a count."""
    newest = list(reversed(names))[:most]
    more = f" and {len(names) - most} older" if len(names) > most else ""
    return ", ".join(newest) + more
