"""Isolated PostgreSQL for restore tests: a throwaway server, or a fresh database on a sandbox server.

The throwaway server has its own data directory under ``restore.spool_dir`` (leased, see
:mod:`strongroom.spool`), listens on a private Unix socket only (no TCP), uses the source's major version,
starts with a minimal environment (no credential of ours reaches it), and is torn down in a ``finally``.
Its bootstrap superuser is ``strongroom_admin``, so that production's own superuser names (``postgres``)
can exist there as ordinary roles: stand-in owners for what production's superusers own. A lease record
in the bucket names what each throwaway server left on which host, so a later teardown can remove what a
worker that died left behind.
Never a production source: a configured sandbox gets a new database of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from strongroom import layout, postgres, records, spool
from strongroom.errors import IntegrityError, SourceError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.postgres import STABLE_SETTINGS, PgSettings
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)

LEASE_KIND = "lease"
ADMIN = "strongroom_admin"  # the throwaway server's bootstrap superuser
# Text output that checksums depend on, pinned so a snapshot and its restore compare equal anywhere.
STABLE_OPTIONS = " ".join(f"-c {k}={v}" for k, v in STABLE_SETTINGS.items())


def bin_dir(major: str) -> str:
    path = f"/usr/lib/postgresql/{major}/bin"
    if not os.access(os.path.join(path, "initdb"), os.X_OK):
        raise SourceError(f"PostgreSQL {major} server binaries are not installed ({path}/initdb missing)")
    return path


def _as_server_user(argv: list[str]) -> list[str]:
    """initdb refuses root: run the server as the postgres OS user when we are root."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass(frozen=True)
class Lease:
    lease_id: str
    host: str
    data_dir: str
    started_at: str
    expires_at: str

    @property
    def key(self) -> str:
        return layout.lease_key(self.lease_id)


@contextmanager
def throwaway_server(
    major: str, store: ObjectStore | None = None, ttl: timedelta = timedelta(hours=6), spool_dir: str | None = None,
    keyring: Keyring | None = None,
) -> Iterator[PgSettings]:
    """Start a private PostgreSQL ``major`` server under ``spool_dir``; yield superuser settings; always tear
    it down.

    With ``store`` (and the region's ``keyring``, which seals it) a lease names what to remove should
    this worker die."""
    base = spool.Spool.create(spool_dir, "strongroom-sandbox-", ttl).path
    lease = Lease(layout.new_lease_id(datetime.now(UTC)), socket.gethostname(), str(base),
                  datetime.now(UTC).isoformat(), (datetime.now(UTC) + ttl).isoformat())
    if store is not None:
        if keyring is None:
            raise ValueError("a lease is sealed: pass the region's keyring with the store")
        records.write(store, keyring, lease.key, lease.__dict__, kind=LEASE_KIND)
    try:
        _start(base, major)
        yield PgSettings(dbname="postgres", host=str(base), port=5432, user=ADMIN,
                         options={"options": STABLE_OPTIONS})
    finally:
        stop_and_remove(base, major)
        if store is not None:
            try:
                store.delete(lease.key)
            except StrongroomError as exc:
                log.warning("could not remove lease %s: %s", lease.key, exc)


def _start(base: Path, major: str) -> None:
    binaries = bin_dir(major)
    os.chmod(base, 0o700)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data = base / "data"
    run = [
        ([f"{binaries}/initdb", "-D", str(data), "-U", ADMIN, "--auth=trust", "-E", "UTF8", "--no-sync"],
         "initdb"),
        ([f"{binaries}/pg_ctl", "-D", str(data), "-l", str(base / "log"), "-w", "-o",
          f"-c listen_addresses='' -c unix_socket_directories={base} -p 5432 -c fsync=off"
          " -c full_page_writes=off -c synchronous_commit=off", "start"], "start"),
    ]
    for argv, what in run:
        result = subprocess.run(_as_server_user(argv), capture_output=True, text=True, check=False,
                                env=postgres.minimal_env())
        if result.returncode != 0:
            raise SourceError(f"throwaway PostgreSQL {major}: {what} failed: {result.stderr.strip()[-300:]}")


def stop_and_remove(base: Path, major: str) -> None:
    data = base / "data"
    pid_file = data / "postmaster.pid"
    if pid_file.exists():
        subprocess.run(_as_server_user([f"{bin_dir(major)}/pg_ctl", "-D", str(data), "-m", "immediate", "-w",
                                        "stop"]), capture_output=True, check=False, env=postgres.minimal_env())
        if pid_file.exists():  # pg_ctl could not stop it: the postmaster's pid is the first line
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


def clean_leftovers(spool_dir: str | None, now: datetime | None = None) -> list[str]:
    """Remove what dead or expired restores and restore tests left under the spool directory
    (:func:`strongroom.spool.clean_leftovers`), stopping a throwaway server still running in one first."""
    return spool.clean_leftovers(spool_dir, now, lambda path: stop_and_remove(path, data_major(path)))


def data_major(base: Path) -> str:
    """The major version of the data directory under ``base`` (15 when it cannot be read)."""
    version = base / "data" / "PG_VERSION"
    try:
        return version.read_text().strip() or "15"
    except OSError:
        return "15"


def teardown_stale(store: ObjectStore, keyring: Keyring, now: datetime | None = None) -> list[str]:
    """Remove what dead workers left on this host: expired leases' servers and data directories.

    Only a lease that authenticates is acted on: a forged one (anyone with write access to the bucket could
    write one) is left alone, and after the others are handled :class:`IntegrityError` names it.
    """
    now = now or datetime.now(UTC)
    removed = []
    ignored: list[str] = []
    host = socket.gethostname()
    for info in store.list_objects(layout.LEASE_PREFIX):
        try:
            body = records.unseal(store.get_bytes(info.key), keyring, kind=LEASE_KIND, key=info.key,
                                  times=["started_at"], now=now)
            lease = Lease(**body)
            if lease.key != info.key:
                raise IntegrityError(f"{LEASE_KIND} record {info.key} names another lease")
        except IntegrityError as exc:
            log.warning("ignoring %s", exc)
            ignored.append(str(exc))
            continue
        except (ValueError, TypeError):
            log.warning("ignoring unreadable lease %s", info.key)
            ignored.append(f"{LEASE_KIND} record {info.key} is unreadable")
            continue
        if datetime.fromisoformat(lease.expires_at) > now:
            continue
        if lease.host == host:
            base = Path(lease.data_dir)
            if base.name.startswith("strongroom-sandbox-") and base.exists():
                stop_and_remove(base, data_major(base))
            store.delete(info.key)
            removed.append(lease.lease_id)
        else:
            log.warning("lease %s on host %s expired: that host's teardown removes it", lease.lease_id, lease.host)
    if ignored:
        raise IntegrityError(f"{store.where}: nothing removed for {len(ignored)} lease(s) that do not "
                             f"authenticate: {'; '.join(ignored)}")
    return removed
