"""Airflow pools that protect the source servers: no more than N dumps against one server at a time.

A mapped task has one pool for all its map indexes, so ``snapshot_databases`` builds one dump task per
source server (when the DAG is parsed) and gives each the server's pool. What the pools should be is a
pure decision (:func:`required_pools`); comparing with what Airflow has (:func:`pool_drift`) is another;
creating them goes through Airflow's REST API (:class:`PoolApi`), because a task (``backup_monitor``) has no
other way to read pools in Airflow 3 and ``strongroom init-airflow`` may run where the metadata database
is not reachable.

Airflow never fails a task whose pool is missing: it never schedules it. That is why a missing pool is
named by ``strongroom init-airflow --check`` and by ``backup_monitor``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from strongroom.config import Config, DatabaseConfig
from strongroom.errors import ConfigError, StorageError

DUMP_POOL_PREFIX = "strongroom_dumps_"
OBJECT_POOL = "strongroom_object_passes"
# one slot: the prunes of snapshot_databases and backup_object_storage (same cron) never run at once, so
# neither reads a region while the other deletes from it
PRUNE_POOL = "strongroom_prune"


def slug(server: str) -> str:
    """``db-1.internal:5432`` -> ``db_1_internal_5432``: usable in a pool name and a task id."""
    return re.sub(r"[^A-Za-z0-9]+", "_", server).strip("_").lower() or "server"


def default_server(db: DatabaseConfig, host: str | None, port: int | None) -> str:
    """A database's server: its ``server`` setting, else its connection's host and port."""
    if db.server:
        return db.server
    if host:
        return f"{host}:{port or 5432}"
    return f"conn:{db.postgres_conn_id}"  # a socket connection or an unresolvable one: one pool per connection


def dump_pool(server: str) -> str:
    return DUMP_POOL_PREFIX + slug(server)


@dataclass(frozen=True)
class PoolSpec:
    name: str
    slots: int
    description: str


def required_pools(config: Config, servers: dict[str, str]) -> list[PoolSpec]:
    """The pools the DAGs use, with their sizes: one per source server, one for the object passes, one
    slot for pruning.

    :param servers: database name -> server (see :func:`default_server`)
    """
    by_server: dict[str, list[str]] = {}
    for db in config.databases:
        by_server.setdefault(servers[db.name], []).append(db.name)
    specs = [
        PoolSpec(dump_pool(server), config.pools.servers.get(server, config.pools.dumps_per_server),
                 f"Strongroom: concurrent dumps against {server} ({', '.join(names)})")
        for server, names in sorted(by_server.items())
    ]
    if config.object_storage:
        specs.append(PoolSpec(OBJECT_POOL, config.pools.object_passes, "Strongroom: concurrent object-storage passes"))
    specs.append(PoolSpec(PRUNE_POOL, 1, "Strongroom: one prune at a time (both hourly DAGs prune every region)"))
    return specs


@dataclass(frozen=True)
class PoolDrift:
    missing: list[PoolSpec] = field(default_factory=list)
    resized: list[tuple[PoolSpec, int]] = field(default_factory=list)  # (wanted, slots Airflow has)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.resized

    def summary(self) -> str:
        parts = [f"pool {p.name} is missing (tasks that use it are never scheduled)" for p in self.missing]
        parts += [f"pool {p.name} has {have} slot(s), the configuration says {p.slots}" for p, have in self.resized]
        return "; ".join(parts) or "every pool is in place"


def pool_drift(required: list[PoolSpec], existing: dict[str, int]) -> PoolDrift:
    """Compare the pools the configuration needs with those Airflow has (name -> slots)."""
    missing = [p for p in required if p.name not in existing]
    resized = [(p, existing[p.name]) for p in required if p.name in existing and existing[p.name] != p.slots]
    return PoolDrift(missing, resized)


@dataclass(frozen=True)
class ApiSettings:
    """Airflow's REST API and a service account allowed to read and write pools."""

    base_url: str
    username: str
    password: str = field(repr=False)


class PoolApi:
    """Pools through Airflow's public REST API (``/api/v2/pools``)."""

    def __init__(self, settings: ApiSettings, timeout: float = 15) -> None:
        self.settings = settings
        self.timeout = timeout
        self._token: str | None = None

    def _call(self, method: str, path: str, body: dict[str, object] | None = None, auth: bool = True) -> object:
        url = self.settings.base_url.rstrip("/") + path
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._login()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - configured URL
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            if exc.code in (401, 403):
                raise ConfigError(f"Airflow API {method} {path}: {exc.code} (check the API connection's account "
                                  "and its role: it must be allowed to manage pools)") from None
            raise StorageError(f"Airflow API {method} {path}: {exc.code} {detail}") from None
        except OSError as exc:
            raise StorageError(f"Airflow API at {self.settings.base_url} unreachable: {exc}") from None
        return json.loads(raw) if raw else None

    def _login(self) -> str:
        if self._token is None:
            answer = self._call("POST", "/auth/token",
                                {"username": self.settings.username, "password": self.settings.password}, auth=False)
            if not isinstance(answer, dict) or "access_token" not in answer:
                raise ConfigError("Airflow API login answered without a token")
            self._token = str(answer["access_token"])
        return self._token

    def pools(self) -> dict[str, int]:
        found: dict[str, int] = {}
        offset = 0
        while True:
            page = self._call("GET", f"/api/v2/pools?limit=100&offset={offset}")
            assert isinstance(page, dict)
            for pool in page.get("pools", []):
                found[str(pool["name"])] = int(pool["slots"])
            offset += 100
            if offset >= int(page.get("total_entries", 0)):
                return found

    def apply(self, drift: PoolDrift) -> list[str]:
        """Create the missing pools and resize the others; returns one line per change."""
        done = []
        for spec in drift.missing:
            self._call("POST", "/api/v2/pools", {"name": spec.name, "slots": spec.slots,
                                                 "description": spec.description, "include_deferred": False})
            done.append(f"created pool {spec.name} ({spec.slots} slot(s))")
        for spec, have in drift.resized:
            name = urllib.parse.quote(spec.name, safe="")
            self._call("PATCH", f"/api/v2/pools/{name}?update_mask=slots&update_mask=description",
                       {"slots": spec.slots, "description": spec.description})
            done.append(f"resized pool {spec.name}: {have} -> {spec.slots} slot(s)")
        return done


def sync_pools(config: Config, servers: dict[str, str], api: PoolApi, *, check_only: bool = False) -> tuple[
        PoolDrift, list[str]]:
    """Compare the pools with the configuration and, unless ``check_only``, create or resize them."""
    drift = pool_drift(required_pools(config, servers), api.pools())
    if check_only or drift.ok:
        return drift, []
    return drift, api.apply(drift)
