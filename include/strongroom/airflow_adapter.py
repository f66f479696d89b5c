"""The one module that imports Airflow: it maps Airflow connections to plain settings.

Connections come from wherever Airflow finds them: the metadata database, a secrets backend, or
``AIRFLOW_CONN_*`` environment variables (which is what the CLI relies on when Airflow itself is down).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from strongroom.alerts import Alert, deadline_missed, first_line, task_failure
from strongroom.config import Config, ObjectSourceConfig, RegionConfig, TransferConfig
from strongroom.errors import ConfigError, StrongroomError
from strongroom.keyring import Keyring
from strongroom.metrics import Metric
from strongroom.postgres import PgSettings
from strongroom.storage import ObjectStore, RetryPolicy

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
        client = self._client(region.aws_conn_id, region.name, transfer)
        return ObjectStore(client, region.bucket, region=region.name, max_parts=region.max_parts,
                           lock_mode=region.object_lock, retry=RetryPolicy.of(transfer),
                           data_client=lambda: self._client(region.aws_conn_id, region.name, transfer, data=True))

    def source_store(self, source: ObjectSourceConfig, transfer: TransferConfig) -> ObjectStore:
        return self.bucket_store(source.aws_conn_id, source.bucket, source.region, transfer)

    def bucket_store(self, aws_conn_id: str, bucket: str, region: str | None, transfer: TransferConfig) -> ObjectStore:
        client = self._client(aws_conn_id, region, transfer)
        return ObjectStore(client, bucket, region=str(client.meta.region_name or region or ""),
                           data_client=lambda: self._client(aws_conn_id, region, transfer, data=True),
                           retry=RetryPolicy.of(transfer))

    def _client(
        self, aws_conn_id: str, region_name: str | None, transfer: TransferConfig, *, data: bool = False
    ) -> Any:
        """A control client (short timeout, botocore's retries) or a data client (the stall timeout, one
        attempt: :class:`strongroom.storage.RetryPolicy` retries each part or range itself)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.config import Config

        _connection(aws_conn_id)  # a clear error for a missing connection
        ours = Config(
            connect_timeout=transfer.connect_timeout.total_seconds(),
            read_timeout=(transfer.stall_timeout if data else transfer.control_timeout).total_seconds(),
            retries={"total_max_attempts": 1 if data else transfer.max_attempts, "mode": "standard"},
            max_pool_connections=max(10, transfer.upload_concurrency, transfer.download_concurrency) + 2,
            # S3-compatible providers reject the newer default checksum headers
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        base = S3Hook(aws_conn_id=aws_conn_id, region_name=region_name).config
        hook = S3Hook(aws_conn_id=aws_conn_id, region_name=region_name,
                      config=base.merge(ours) if base is not None else ours)
        return hook.get_conn()


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


# --- metrics ------------------------------------------------------------------------------------------
_stats_settings: tuple[str, ...] | None = None


def emit_metrics(metrics: Iterable[Metric]) -> None:
    """Send metrics through Airflow's StatsD client (``[metrics] statsd_on``, host, port, prefix).

    A task process initializes Airflow's metrics on start; anything else (``dag.test``, a callback) is
    initialized here, from the same configuration, again only when that configuration changed. A metric
    that cannot be sent is logged, never fatal: a backup does not fail for its metrics.
    """
    global _stats_settings
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    try:
        settings = tuple(conf.get("metrics", key, fallback="") or "" for key in
                         ("statsd_on", "statsd_host", "statsd_port", "statsd_prefix"))
        if settings != _stats_settings:
            stats.initialize(factory=stats_utils.get_stats_factory(),
                             export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=False))
            _stats_settings = settings
        for metric in metrics:
            if metric.kind == "gauge":
                stats.gauge(metric.name, metric.value)
            elif metric.kind == "timing":
                stats.timing(metric.name, timedelta(milliseconds=metric.value))
            else:
                stats.incr(metric.name, int(metric.value))
    except Exception as exc:
        log.warning("metrics not sent: %s", first_line(exc))


# --- alerts -------------------------------------------------------------------------------------------
# The failure callback is a plain function here, not a BaseNotifier subclass in strongroom.alerts: a
# subclass needs Airflow imported at module level, and this is the one module allowed to import Airflow
# (lazily, so the CLI stays light). What an alert says is composed by strongroom.alerts (no Airflow).


def send_alert(config: Config, alert: Alert) -> None:
    """Email the alert through the smtp provider's SmtpNotifier and, when configured, post it to Slack
    through the slack provider's SlackWebhookNotifier (the webhook lives in an Airflow connection).

    Both are tried; an error is raised afterwards (naming the channel, never a secret) if either failed.
    """
    import socket

    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    settings = config.alerts
    failures: list[str] = []
    if settings.email_to:
        try:
            extra = _connection(settings.smtp_conn_id).extra_dejson or {}
            sender = extra.get("from_email") or f"strongroom@{socket.getfqdn()}"
            SmtpNotifier(
                to=list(settings.email_to), from_email=sender, subject=alert.subject, html_content=alert.html(),
                smtp_conn_id=settings.smtp_conn_id,
            ).notify({})  # type: ignore[arg-type]  # nothing left to render: the content is final
        except Exception as exc:
            log.error("could not email the alert via %r: %s", settings.smtp_conn_id, first_line(exc))
            failures.append(f"email via {settings.smtp_conn_id!r}: {first_line(exc)}")
    else:
        log.warning("alerts.email_to is empty: alert not emailed: %s", alert.subject)
    if settings.slack_conn_id:
        try:
            SlackWebhookNotifier(
                slack_webhook_conn_id=settings.slack_conn_id, text=alert.text(), timeout=10,
            ).notify({})  # type: ignore[no-untyped-call]  # untyped in the provider
        except Exception as exc:  # the type only: a webhook error may carry its URL, which is the secret
            log.error("could not post the alert to Slack via %r: %s", settings.slack_conn_id, type(exc).__name__)
            failures.append(f"Slack via {settings.slack_conn_id!r}: {type(exc).__name__}")
    if failures:
        raise ConfigError("alert not delivered: " + "; ".join(failures))


def notify_task_failure(context: Any) -> None:
    """``on_failure_callback`` of every Strongroom task: runs once, when a task fails for good.

    Airflow calls failure callbacks only for the final failure (retries call ``on_retry_callback``),
    so a task that fails after its retries alerts exactly once.
    """
    from strongroom.config import load_config

    ti = context["ti"]
    label = getattr(ti, "rendered_map_index", None) or context.get("label") or context.get("database")
    alert = task_failure(
        dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, label=label, error=context.get("exception"),
        log_url=_safe(lambda: ti.log_url), try_number=_safe(lambda: ti.try_number),
        region=context.get("region"),
    )
    log.error("%s", alert.subject)
    send_alert(load_config(), alert)


def notify_deadline_missed(context: dict[str, Any] | None = None, budget: str | None = None) -> None:
    """DeadlineAlert callback (a SyncCallback: it runs on the executor, importable from this package).

    Airflow passes a small context: ``dag_run`` (the run as JSON) and ``deadline`` (``deadline_time``).
    """
    from airflow.configuration import conf

    from strongroom.config import load_config

    context = context or {}
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    dag_id, run_id = str(run.get("dag_id", "?")), str(run.get("dag_run_id") or run.get("run_id") or "?")
    base = conf.get("api", "base_url", fallback="") or ""
    link = f"{base.rstrip('/')}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}" if base else None
    alert = deadline_missed(
        dag_id=dag_id, run_id=run_id, deadline_time=_text(deadline.get("deadline_time")),
        queued_at=_text(run.get("queued_at")), budget=budget, link=link,
    )
    log.error("%s", alert.subject)
    send_alert(load_config(), alert)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _safe(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except Exception:  # a missing attribute must not cost the alert
        return None
