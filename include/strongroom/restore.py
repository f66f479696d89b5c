"""Restore a snapshot into a target database, all or nothing.

The whole object is downloaded, checked against the manifest's size and SHA-256, decrypted (every
segment authenticated) and decompressed into a private spool file *before* the target is touched, so a
tampered or truncated snapshot leaves the target exactly as it was. The spool is removed afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import zstandard

from strongroom import catalog, crypto, postgres
from strongroom.catalog import Manifest
from strongroom.config import Config, RegionConfig, TransferConfig
from strongroom.connections import Connections
from strongroom.errors import IntegrityError, RestoreError, StrongroomError
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreResult:
    database: str
    snapshot_id: str
    taken_at: str
    region: str
    unavailable: tuple[str, ...]
    target: str
    created_database: bool
    tables: int
    rows: int
    download_seconds: float
    restore_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fetch_dump(
    store: ObjectStore, manifest: Manifest, data_key: bytes, path: str, transfer: TransferConfig
) -> dict[str, float]:
    """Download, verify, decrypt and decompress the dump into ``path`` (mode 0600).

    Returns the seconds spent waiting for bytes (``download``) and decrypting, decompressing and writing
    them (``decrypt``); the two overlap with the parallel range downloads.
    """
    obj = manifest.dump
    info = store.head(obj.key)
    if info is None:
        raise IntegrityError(f"s3://{store.bucket}/{obj.key} is missing although its manifest exists")
    if info.size != obj.stored_size:
        raise IntegrityError(
            f"s3://{store.bucket}/{obj.key} is {info.size} bytes, the manifest says {obj.stored_size}"
        )
    decryptor = crypto.StreamDecryptor(data_key, manifest.object_identity("dump"))
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    digest = hashlib.sha256()
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        chunks = store.iter_chunks(
            obj.key, obj.stored_size, chunk_size=transfer.part_size, concurrency=transfer.download_concurrency
        )
        waited = worked = 0.0
        mark = time.monotonic()
        for chunk in chunks:
            got = time.monotonic()
            waited += got - mark
            digest.update(chunk)
            view = memoryview(chunk)
            # one segment at a time: a whole range would inflate to ~10x its size in memory at once
            for start in range(0, len(chunk), crypto.SEGMENT_SIZE):
                piece = view[start : start + crypto.SEGMENT_SIZE]
                written += out.write(_inflate(decompressor, decryptor.update(piece)))
            view.release()
            mark = time.monotonic()
            worked += mark - got
        written += out.write(_inflate(decompressor, decryptor.finalize()))
        worked += time.monotonic() - mark
    if digest.hexdigest() != obj.sha256:
        raise IntegrityError(f"s3://{store.bucket}/{obj.key} does not match the SHA-256 in its manifest")
    if not decompressor.eof or decompressor.unused_data:
        raise IntegrityError(f"s3://{store.bucket}/{obj.key}: compressed stream is incomplete or has trailing data")
    if written != obj.plain_size:
        raise IntegrityError(f"s3://{store.bucket}/{obj.key}: {written} bytes restored, manifest says {obj.plain_size}")
    return {"download": round(waited, 3), "decrypt": round(worked, 3)}


def _inflate(decompressor: Any, data: bytes) -> bytes:
    if not data:
        return b""
    try:
        return bytes(decompressor.decompress(data))
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"decompression failed: {exc}") from None


def _fetch_from(
    config: Config, conns: Connections, region: RegionConfig, database: str, path: str,
    *, snapshot_id: str | None, at: datetime | None,
) -> Manifest:
    """Select the snapshot in one region and fetch it, verified and decrypted, into ``path``."""
    store = conns.store(region, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(region))
    manifest = catalog.select_snapshot(store, keyring, database, snapshot_id=snapshot_id, at=at)
    data_key = crypto.unwrap_key(keyring.key(manifest.key_id), manifest.key_id, manifest.wrapped_key, manifest.identity)
    fetch_dump(store, manifest, data_key, path, config.transfer)
    return manifest


def restore_snapshot(
    config: Config,
    database: str,
    target: postgres.PgSettings,
    conns: Connections,
    *,
    snapshot_id: str | None = None,
    at: datetime | None = None,
    region: str | None = None,
    clean: bool = False,
) -> RestoreResult:
    """Restore a snapshot of ``database`` into ``target``; the target is untouched unless all checks pass.

    Without ``region``, the primary is tried first and every other region after it, in configured order,
    when a snapshot, object, key or integrity check fails there; the result says which region served.
    """
    db = config.database(database)
    candidates = [config.region(region)] if region else list(config.regions)
    state = postgres.inspect_target(target)
    if state.exists and state.relations and not clean:
        raise RestoreError(
            f"target {target.describe()} is not empty ({state.relations} relations): "
            "restore into a new database, or pass --clean to replace its contents"
        )
    spool = tempfile.mkdtemp(prefix="strongroom-restore-", dir=config.restore.spool_dir)
    try:
        path = os.path.join(spool, "dump")
        started = time.monotonic()
        failures: list[str] = []
        for where in candidates:
            try:
                manifest = _fetch_from(config, conns, where, db.name, path, snapshot_id=snapshot_id, at=at)
                break
            except StrongroomError as exc:
                if os.path.exists(path):
                    os.unlink(path)
                if len(candidates) == 1:
                    raise
                log.warning("region %s cannot serve the restore: %s", where.name, exc)
                failures.append(f"{where.name}: {exc}")
        else:
            raise RestoreError("no region could serve the restore: " + "; ".join(failures))
        if failures:
            log.warning("restoring from %s after: %s", where.name, "; ".join(failures))
        downloaded = time.monotonic()
        log.info("restoring %s snapshot %s from %s into %s", db.name, manifest.snapshot_id, where.name,
                 target.describe())
        _restore_file(config, target, path, state, clean)
        restored = time.monotonic()
    finally:
        shutil.rmtree(spool, ignore_errors=True)

    actual = postgres.count_rows(target)
    wrong = {t: (n, actual.get(t)) for t, n in manifest.tables.items() if actual.get(t) != n}
    if wrong:
        table, (expected, got) = sorted(wrong.items())[0]
        raise IntegrityError(
            f"restored {target.describe()} differs from snapshot {manifest.snapshot_id}: "
            f"{table} has {got} rows, the snapshot recorded {expected} ({len(wrong)} table(s) differ)"
        )
    return RestoreResult(
        database=db.name,
        snapshot_id=manifest.snapshot_id,
        taken_at=manifest.taken_at.isoformat(),
        region=where.name,
        unavailable=tuple(failures),
        target=target.describe(),
        created_database=not state.exists,
        tables=len(manifest.tables),
        rows=sum(manifest.tables.values()),
        download_seconds=round(downloaded - started, 3),
        restore_seconds=round(restored - downloaded, 3),
    )


def _restore_file(
    config: Config, target: postgres.PgSettings, path: str, state: postgres.TargetState, clean: bool
) -> None:
    jobs = config.restore.jobs or (os.cpu_count() or 1)
    if state.exists:
        # an existing database is restored in one transaction: it ends fully restored or as it was
        postgres.restore_dump(
            target, path, jobs=1, single_transaction=True, clean=clean, bin_dir=config.snapshot.pg_bin_dir
        )
        return
    postgres.create_database(target)
    try:
        postgres.restore_dump(
            target, path, jobs=jobs, single_transaction=False, clean=False, bin_dir=config.snapshot.pg_bin_dir
        )
    except BaseException as exc:
        postgres.drop_database(target)  # we created it: leave nothing half-restored behind
        if isinstance(exc, StrongroomError):
            raise RestoreError(f"{exc}; the new database was dropped") from None
        raise
