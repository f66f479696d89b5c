"""Plaintext copies expire like the snapshots they came from.

A sandbox restore (a database on ``restore.sandbox_conn_id``) and a review copy (objects under
``<source>/<point time>-<run suffix>/`` in an ``object_restore_targets`` bucket) hold production data in the
clear. Each is named after the time of the snapshot or point it came from, and is removed no later than
that time plus ``retention``: the erasure promise covers them too. :func:`find_copies` reads what exists,
:func:`due` decides (pure), :func:`remove_due` erases; the monitor alerts on any copy found past its time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom import layout, postgres, restore
from strongroom.config import Config
from strongroom.connections import Connections
from strongroom.errors import NotFoundError, StorageError, StrongroomError

log = logging.getLogger(__name__)

SANDBOX = "sandbox database"
REVIEW = "review copy"


@dataclass(frozen=True)
class PlaintextCopy:
    kind: str  # SANDBOX or REVIEW
    name: str  # the database's name, or the review copy's prefix
    where: str  # the server or the bucket, without credentials
    taken_at: datetime  # of the snapshot or point it came from

    def expires_at(self, retention: timedelta) -> datetime:
        return self.taken_at + retention

    def describe(self) -> str:
        return f"{self.kind} {self.name} on {self.where}"


def find_copies(config: Config, conns: Connections) -> list[PlaintextCopy]:
    """Every sandbox database and review copy that exists now."""
    found: list[PlaintextCopy] = []
    if config.restore.sandbox_conn_id:
        server = conns.postgres(config.restore.sandbox_conn_id)
        names = [d.name for d in config.databases]
        for name in postgres.list_databases(server):
            taken = restore.sandbox_taken_at(name, names)
            if taken is not None:
                found.append(PlaintextCopy(SANDBOX, name, server.describe().rsplit("/", 1)[0], taken))
    sources = {s.bucket for s in config.object_storage}
    for target in config.object_restore_targets:
        store = conns.bucket_store(target.aws_conn_id, target.bucket, None, config.transfer)
        prefixes: dict[str, datetime] = {}
        try:
            for info in store.list_objects(""):
                taken = layout.review_point(info.key)
                head = "/".join(info.key.split("/", 2)[:2]) + "/"
                if taken is not None and head.split("/", 1)[0] in sources:
                    prefixes[head] = taken
        except NotFoundError:
            continue  # the review bucket is created by the first restore into it: nothing restored yet
        except StorageError as exc:
            if "NoSuchBucket" in str(exc):
                continue
            raise
        found += [PlaintextCopy(REVIEW, p, f"s3://{target.bucket}", t) for p, t in sorted(prefixes.items())]
    return found


def due(copies: Sequence[PlaintextCopy], retention: timedelta, now: datetime) -> list[PlaintextCopy]:
    """The copies whose snapshot is at least ``retention`` old: they must be gone by now."""
    return [c for c in copies if c.expires_at(retention) <= now]


def remove_due(config: Config, conns: Connections, now: datetime | None = None) -> dict[str, Any]:
    """Erase every copy that is due. Each is tried; failures are reported together afterwards."""
    now = now or datetime.now(UTC)
    copies = find_copies(config, conns)
    removed: list[str] = []
    failed: list[str] = []
    for copy in due(copies, config.retention, now):
        try:
            if copy.kind == SANDBOX:
                assert config.restore.sandbox_conn_id is not None
                postgres.drop_database(conns.postgres(config.restore.sandbox_conn_id).with_dbname(copy.name))
            else:
                bucket = copy.where.removeprefix("s3://")
                target = next(t for t in config.object_restore_targets if t.bucket == bucket)
                conns.bucket_store(target.aws_conn_id, bucket, None, config.transfer).erase_prefix(copy.name)
            log.info("removed %s (snapshot taken %s, expired %s)", copy.describe(), copy.taken_at.isoformat(),
                     copy.expires_at(config.retention).isoformat())
            removed.append(copy.describe())
        except (StrongroomError, OSError) as exc:
            failed.append(f"{copy.describe()}: {exc}")
        except Exception as exc:  # a driver error: name it, keep going with the others
            failed.append(f"{copy.describe()}: {type(exc).__name__}: {exc}")
    if failed:
        raise StorageError(f"{len(failed)} expired plaintext copies could not be removed: " + "; ".join(failed))
    return {"removed": removed, "kept": len(copies) - len(removed)}
