"""Plaintext on the restore volume: private directories under ``restore.spool_dir``, each under a lease.

A restore's decrypted dump and a restore test's throwaway server (its data directory holds the restored
plaintext) live in directories named ``strongroom-restore-*``, ``strongroom-rt-*`` and
``strongroom-sandbox-*`` directly under the spool directory. Each holds ``lease.json``: the host, the owning
process (pid and start time) and when the lease expires. At start-up every restore and restore test calls
:func:`strongroom.sandbox.clean_leftovers`, which removes (stopping a server still running there first)
every such directory
whose lease expired, or whose owner on this host is gone (a worker killed by SIGKILL or the OOM killer):
no plaintext outlives its lease.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from strongroom.progress import duration_text

log = logging.getLogger(__name__)

LEASE_FILE = "lease.json"
PREFIXES = ("strongroom-restore-", "strongroom-rt-", "strongroom-sandbox-")
DEFAULT_LEASE = timedelta(hours=6)
_warned: list[bool] = []  # said once per process


def root(spool_dir: str | None) -> Path:
    """The spool directory; unset, the system temp directory, said in the log each time."""
    if spool_dir:
        path = Path(spool_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    if not _warned:
        _warned.append(True)
        log.warning("restore.spool_dir is not set: decrypted plaintext is spooled in %s; set it to an encrypted "
                    "volume", tempfile.gettempdir())
    return Path(tempfile.gettempdir())


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime, counted after the command name


@dataclass(frozen=True)
class Spool:
    path: Path

    @classmethod
    def create(cls, spool_dir: str | None, prefix: str, ttl: timedelta = DEFAULT_LEASE) -> Spool:
        """A new private directory (mode 0700) under the spool directory, leased to this process for ``ttl``."""
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=root(spool_dir)))
        now = datetime.now(UTC)
        lease = {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": _start_time(os.getpid()),
                 "created_at": now.isoformat(), "expires_at": (now + ttl).isoformat()}
        (path / LEASE_FILE).write_text(json.dumps(lease))
        return cls(path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _expired(path: Path, now: datetime) -> str | None:
    """Why the directory at ``path`` is a leftover, or None while its owner may still use it."""
    try:
        lease = json.loads((path / LEASE_FILE).read_text())
        expires = datetime.fromisoformat(lease["expires_at"])
    except (OSError, ValueError, KeyError, TypeError):
        age = now - datetime.fromtimestamp(path.stat().st_mtime, UTC)
        return f"no lease, {duration_text(age)} old" if age > DEFAULT_LEASE else None
    if expires <= now:
        return f"lease expired at {lease['expires_at']}"
    if lease.get("host") == socket.gethostname():
        pid = int(lease.get("pid") or 0)
        if not pid or _start_time(pid) != lease.get("pid_started"):
            return f"its owner (pid {pid}) is gone"
    return None


def clean_leftovers(spool_dir: str | None, now: datetime | None, stop_server: Callable[[Path], None]) -> list[str]:
    """Remove what dead or expired restores and restore tests left under the spool directory; a sandbox's
    directory goes through ``stop_server`` (which stops a server still running there, then removes it)."""
    now = now or datetime.now(UTC)
    base = root(spool_dir)
    removed = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if not path.name.startswith(PREFIXES) or not path.is_dir() or path.is_symlink():
            continue
        try:
            why = _expired(path, now)
        except OSError:
            continue
        if why is None:
            continue
        if path.name.startswith("strongroom-sandbox-"):
            stop_server(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
        log.warning("removed restore leftover %s (%s)", path, why)
        removed.append(str(path))
    return removed
