"""The one module that imports Airflow: it maps Airflow connections to plain settings.

Connections come from wherever Airflow finds them: the metadata database, a secrets backend, or
``AIRFLOW_CONN_*`` environment variables (which is what the CLI relies on when Airflow itself is down).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from strongroom.config import RegionConfig, TransferConfig
from strongroom.errors import ConfigError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.postgres import PgSettings
from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)
T = TypeVar("T")

_LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name")


def _connection(conn_id: str) -> Any:
    from airflow.sdk import Connection

    try:
        return Connection.get(conn_id)
    except Exception as exc:  # AirflowNotFoundException and friends
        missing = "isn't defined" in str(exc) or type(exc).__name__.endswith("NotFoundException")
        if missing:
            env = "AIRFLOW_CONN_" + conn_id.upper()
            raise ConfigError(
                f"connection {conn_id!r} is not defined (set {env} or configure a secrets backend; "
                "outside a task, Airflow's metadata database is not consulted)"
            ) from None
        raise


class AirflowConnections:
    """Implements :class:`strongroom.connections.Connections` from Airflow connections."""

    def postgres(self, conn_id: str) -> PgSettings:
        conn = _connection(conn_id)
        if conn.conn_type not in ("postgres", "postgresql"):
            raise ConfigError(f"connection {conn_id!r} is of type {conn.conn_type!r}, not postgres")
        if not conn.schema:
            raise ConfigError(f"connection {conn_id!r} does not name a database (its schema field)")
        extra = conn.extra_dejson or {}
        return PgSettings(
            dbname=conn.schema,
            host=conn.host or None,
            port=int(conn.port) if conn.port else None,
            user=conn.login or None,
            password=conn.password or None,
            options={k: str(extra[k]) for k in _LIBPQ_EXTRAS if k in extra},
        )

    def keyring(self, conn_id: str) -> Keyring:
        conn = _connection(conn_id)
        return Keyring.from_extra(conn.extra_dejson, source=f"keyring connection {conn_id!r}")

    def store(self, region: RegionConfig, transfer: TransferConfig) -> ObjectStore:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.config import Config

        _connection(region.aws_conn_id)  # a clear error for a missing connection
        ours = Config(
            connect_timeout=transfer.connect_timeout.total_seconds(),
            read_timeout=transfer.read_timeout.total_seconds(),
            retries={"max_attempts": transfer.max_attempts, "mode": "standard"},
            max_pool_connections=max(10, transfer.upload_concurrency, transfer.download_concurrency) + 2,
            # S3-compatible providers reject the newer default checksum headers
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        base = S3Hook(aws_conn_id=region.aws_conn_id, region_name=region.name).config
        hook = S3Hook(
            aws_conn_id=region.aws_conn_id,
            region_name=region.name,
            config=base.merge(ours) if base is not None else ours,
        )
        return ObjectStore(
            hook.get_conn(), region.bucket, region=region.name, max_parts=region.max_parts,
            lock_mode=region.object_lock,
        )


def connections() -> AirflowConnections:
    return AirflowConnections()


def run_task(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a library function from a task: errors a retry cannot fix fail the task at once."""
    from airflow.sdk.exceptions import AirflowFailException

    from strongroom.signals import terminate_on_sigterm

    try:
        with terminate_on_sigterm():
            return function(*args, **kwargs)
    except StrongroomError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from None
