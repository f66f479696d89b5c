"""The one module that imports Airflow: it maps Airflow connections to plain settings.

Connections come from wherever Airflow finds them: the metadata database, a secrets backend, or
``AIRFLOW_CONN_*`` environment variables (which is what the CLI relies on when Airflow itself is down).
"""

from __future__ import annotations

import configparser
import importlib
import json
import logging
import os
import sys
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from strongroom import transport
from strongroom.alerts import Alert, deadline_missed, first_line, task_failure
from strongroom.config import MAX_OBJECT_CONCURRENCY, Config, ObjectSourceConfig, RegionConfig, TransferConfig
from strongroom.errors import ConfigError, StrongroomError, worded
from strongroom.keyring import Keyring
from strongroom.metrics import Metric
from strongroom.pools import ApiSettings, PoolApi, PoolDrift, sync_pools
from strongroom.postgres import PgSettings
from strongroom.storage import ObjectStore, RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

_LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name")


@dataclass(frozen=True)
class EnvConnection:
    """An Airflow connection read from its ``AIRFLOW_CONN_<ID>`` variable without importing Airflow (the
    CLI's start-up), parsed as ``airflow.sdk.Connection.from_json``/``from_uri`` parse it."""

    conn_type: str | None = None
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    extra: str | None = field(default=None, repr=False)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        try:
            value = json.loads(self.extra) if self.extra else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @classmethod
    def parse(cls, value: str) -> EnvConnection:
        """A connection's JSON (``{"conn_type": ...}``) or URI, as Airflow's environment backend reads it."""
        if value.startswith("{"):
            fields = json.loads(value)
            extra = fields.pop("extra", None)
            port = fields.pop("port", None)
            conn_type = fields.pop("conn_type", None)
            known = {k: fields.pop(k) for k in ("host", "schema", "login", "password") if k in fields}
            fields.pop("description", None)
            if fields:
                raise ValueError(f"unexpected fields {sorted(fields)}")
            return cls(conn_type=_conn_type(conn_type) if conn_type else None, port=int(port) if port else None,
                       extra=(extra if isinstance(extra, str) else json.dumps(extra)) if extra else None, **known)
        if value.count("://") != 1:  # a host with its own protocol: left to Airflow
            raise ValueError("not a plain connection URI")
        parts = urllib.parse.urlsplit(value)
        hostname = urllib.parse.unquote(parts.hostname or "")
        if "/" in hostname:
            raise ValueError("host with a path")
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)) if parts.query else None
        extra = (query["__extra__"] if "__extra__" in query else json.dumps(query)) if query is not None else None
        schema = parts.path[1:]
        return cls(
            conn_type=_conn_type(parts.scheme), host=hostname,
            schema=urllib.parse.unquote(schema) if schema else schema,
            login=urllib.parse.unquote(parts.username) if parts.username else parts.username,
            password=urllib.parse.unquote(parts.password) if parts.password else parts.password,
            port=parts.port, extra=extra,
        )


def _conn_type(conn_type: str) -> str:
    return "postgres" if conn_type == "postgresql" else conn_type.replace("-", "_")


def _secrets_backend_configured() -> bool:
    """Is a secrets backend configured (``[secrets] backend``)? Airflow asks it before the environment."""
    if os.environ.get("AIRFLOW__SECRETS__BACKEND") or os.environ.get("AIRFLOW__SECRETS__BACKEND_CMD"):
        return True
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    path = os.environ.get("AIRFLOW_CONFIG") or os.path.join(home, "airflow.cfg")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error):
        return True  # unreadable: let Airflow decide
    return bool(parser.get("secrets", "backend", fallback="").strip())


def _from_environment(conn_id: str) -> EnvConnection | None:
    """The connection from its environment variable, when Airflow would read it from there too (no secrets
    backend ahead of it) and it parses; None: ask Airflow."""
    value = os.environ.get("AIRFLOW_CONN_" + conn_id.upper())
    if value is None or _secrets_backend_configured():
        return None
    try:
        return EnvConnection.parse(value)
    except (ValueError, TypeError):
        return None  # Airflow reads it, and says what is wrong with it


# the extras of an AWS connection that the environment path builds a client for; any other (a role to
# assume, a profile, botocore settings, per-service settings) goes through the amazon provider's hook
_PLAIN_AWS_EXTRAS = frozenset({"region_name", "endpoint_url", "verify"})


def _plain_aws(conn: EnvConnection | None) -> EnvConnection | None:
    """``conn`` when it is an AWS connection with keys and only :data:`_PLAIN_AWS_EXTRAS`."""
    if conn is None or conn.conn_type != "aws" or not (conn.login and conn.password):
        return None
    return conn if set(conn.extra_dejson) <= _PLAIN_AWS_EXTRAS else None


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
    """Implements :class:`strongroom.connections.Connections` from Airflow connections.

    With ``environment_first`` (the CLI) a connection set as an ``AIRFLOW_CONN_*`` variable is read from
    there without importing Airflow, when Airflow would read it from there too, and a plain AWS connection
    (keys, region, endpoint, verify) gets its S3 client from boto3 directly: a restore then starts without
    Airflow's import (seconds). Anything else goes through Airflow, as in a task.
    """

    def __init__(self, *, environment_first: bool = False) -> None:
        self.environment_first = environment_first

    def _get(self, conn_id: str) -> Any:
        found = _from_environment(conn_id) if self.environment_first else None
        return found if found is not None else _connection(conn_id)

    def _env_aws(self, conn_id: str) -> EnvConnection | None:
        return _plain_aws(_from_environment(conn_id)) if self.environment_first else None

    def postgres(self, conn_id: str) -> PgSettings:
        """The connection's settings; a remote host gets ``sslmode=verify-full`` unless the extra sets one."""
        return self._postgres(conn_id)[0]

    def _postgres(self, conn_id: str) -> tuple[PgSettings, str | None]:
        conn = self._get(conn_id)
        if conn.conn_type not in ("postgres", "postgresql"):
            raise ConfigError(f"connection {conn_id!r} is of type {conn.conn_type!r}, not postgres")
        if not conn.schema:
            raise ConfigError(f"connection {conn_id!r} does not name a database (its schema field)")
        extra = conn.extra_dejson or {}
        settings = PgSettings(
            dbname=conn.schema,
            host=conn.host or None,
            port=int(conn.port) if conn.port else None,
            user=conn.login or None,
            password=conn.password or None,
            options={k: str(extra[k]) for k in _LIBPQ_EXTRAS if k in extra},
        )
        return transport.secure_postgres(settings, f"connection {conn_id!r}")

    def keyring(self, conn_id: str) -> Keyring:
        conn = self._get(conn_id)
        return Keyring.from_extra(conn.extra_dejson, source=f"keyring connection {conn_id!r}")

    def store(self, region: RegionConfig, transfer: TransferConfig) -> ObjectStore:
        client = self._client(region.aws_conn_id, region.name, transfer, region.allow_insecure_transport,
                              f"region {region.name} (connection {region.aws_conn_id!r})")
        return ObjectStore(client, region.bucket, region=region.name, max_parts=region.max_parts,
                           lock_mode=region.object_lock, retry=RetryPolicy.of(transfer),
                           data_client=lambda: self._client(region.aws_conn_id, region.name, transfer,
                                                            region.allow_insecure_transport, region.name, data=True))

    def source_store(self, source: ObjectSourceConfig, transfer: TransferConfig) -> ObjectStore:
        where = f"source bucket {source.bucket} (connection {source.aws_conn_id!r})"
        client = self._client(source.aws_conn_id, source.region, transfer, source.allow_insecure_transport, where)
        return ObjectStore(client, source.bucket, region=str(client.meta.region_name or source.region or ""),
                           data_client=lambda: self._client(source.aws_conn_id, source.region, transfer,
                                                            source.allow_insecure_transport, where, data=True),
                           retry=RetryPolicy.of(transfer))

    def bucket_store(self, aws_conn_id: str, bucket: str, region: str | None, transfer: TransferConfig) -> ObjectStore:
        where = f"bucket {bucket} (connection {aws_conn_id!r})"
        client = self._client(aws_conn_id, region, transfer, False, where)
        return ObjectStore(client, bucket, region=str(client.meta.region_name or region or ""),
                           data_client=lambda: self._client(aws_conn_id, region, transfer, False, where, data=True),
                           retry=RetryPolicy.of(transfer))

    def transport_warnings(self, config: Config) -> list[str]:
        """What is allowed but insecure: PostgreSQL connections that lowered ``sslmode`` for a remote host,
        and S3 endpoints allowed plain HTTP or unverified TLS; an endpoint refused (its store is never
        built) is listed as ``REFUSED: ...``. Never raises: ``status`` and the page show what they can."""
        warnings: list[str] = []
        pg_ids = [db.postgres_conn_id for db in config.databases]
        pg_ids += [c for c in (config.restore.sandbox_conn_id, config.restore_test.sandbox_conn_id) if c]
        for conn_id in dict.fromkeys(pg_ids + list(config.restore.target_conn_ids)):
            try:
                warning = self._postgres(conn_id)[1]
            except ConfigError as exc:  # e.g. not visible to the API server: say so, show the rest
                warning = f"transport of connection {conn_id!r} not checked: {exc}"
            if warning:
                warnings.append(warning)
        try:
            return warnings + self.s3_transport(config)
        except ConfigError as exc:  # shown, not raised: the page still shows everything else
            return [*warnings, f"REFUSED: {exc}"]

    def s3_transport(self, config: Config) -> list[str]:
        """Each region's and source bucket's S3 transport warning; :class:`ConfigError` for one refused."""
        warnings: list[str] = []
        places: list[tuple[str, str | None, bool, str]] = [
            (r.aws_conn_id, r.name, r.allow_insecure_transport, f"region {r.name} (connection {r.aws_conn_id!r})")
            for r in config.regions]
        places += [(s.aws_conn_id, s.region, s.allow_insecure_transport,
                    f"source bucket {s.bucket} (connection {s.aws_conn_id!r})") for s in config.object_storage]
        for conn_id, region_name, allowed, where in places:
            warning = self._transport(conn_id, region_name, allowed, where)[1]
            if warning:
                warnings.append(warning)
        return warnings

    def _transport(
        self, aws_conn_id: str, region_name: str | None, allowed: bool, where: str
    ) -> tuple[Any, str | None]:
        """The provider's hook for the connection (None for a plain connection from the environment), and
        its transport warning (or ConfigError)."""
        plain = self._env_aws(aws_conn_id)
        if plain is not None:
            extra = plain.extra_dejson
            return None, transport.check_s3(extra.get("endpoint_url"), extra.get("verify"), allow_insecure=allowed,
                                            where=where)
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        _connection(aws_conn_id)  # a clear error for a missing connection
        hook = S3Hook(aws_conn_id=aws_conn_id, region_name=region_name)
        endpoint = hook.conn_config.get_service_endpoint_url("s3")
        return hook, transport.check_s3(endpoint, hook.verify, allow_insecure=allowed, where=where)

    def _client(
        self, aws_conn_id: str, region_name: str | None, transfer: TransferConfig, allow_insecure: bool, where: str,
        *, data: bool = False,
    ) -> Any:
        """A control client (short timeout, botocore's retries) or a data client (the stall timeout, one
        attempt: :class:`strongroom.storage.RetryPolicy` retries each part or range itself); refused when its
        transport is insecure and not allowed."""
        from botocore.config import Config

        hook, _ = self._transport(aws_conn_id, region_name, allow_insecure, where)
        ours = Config(
            connect_timeout=transfer.connect_timeout.total_seconds(),
            read_timeout=(transfer.stall_timeout if data else transfer.control_timeout).total_seconds(),
            retries={"total_max_attempts": 1 if data else transfer.max_attempts, "mode": "standard"},
            # every thread that shares this client keeps its connection: object sources run up to
            # MAX_OBJECT_CONCURRENCY at once (a pool holds only the connections that were in use together)
            max_pool_connections=max(MAX_OBJECT_CONCURRENCY, transfer.upload_concurrency,
                                     transfer.download_concurrency) + 2,
            # S3-compatible providers reject the newer default checksum headers
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        plain = self._env_aws(aws_conn_id) if hook is None else None
        if plain is not None:  # as the hook builds it: the hook's region first, then the extra's
            import boto3

            extra = plain.extra_dejson
            session = boto3.session.Session(aws_access_key_id=plain.login, aws_secret_access_key=plain.password,
                                            region_name=region_name or extra.get("region_name"))
            return session.client("s3", endpoint_url=extra.get("endpoint_url"), config=ours,
                                  verify=extra.get("verify"))
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        base = hook.config
        hook = S3Hook(aws_conn_id=aws_conn_id, region_name=region_name,
                      config=base.merge(ours) if base is not None else ours)
        return hook.get_conn()


def connections(*, environment_first: bool = False) -> AirflowConnections:
    """The connections (see :class:`AirflowConnections` for ``environment_first``, the CLI's choice)."""
    quiet_third_party(airflow=not environment_first)
    return AirflowConnections(environment_first=environment_first)


def database_servers(config: Config) -> dict[str, str]:
    """Database name -> the server it lives on (``server``, else its connection's host and port).

    Called when ``snapshot_databases`` is parsed, to give each server's dump task its pool: set ``server``
    in the configuration to spare the connection look-ups (and a secrets backend's calls) at parse time.
    A connection that cannot be read falls back to one pool per connection id.
    """
    from strongroom.pools import default_server

    servers = {}
    for db in config.databases:
        host, port = None, None
        if not db.server:
            try:
                pg = AirflowConnections().postgres(db.postgres_conn_id)
                host, port = pg.host, pg.port
            except Exception as exc:  # parse time: a missing connection must not break the DAG
                log.warning("server of database %s unknown (%s): one pool for its connection", db.name,
                            first_line(exc))
        servers[db.name] = default_server(db, host, port)
    return servers


def check_pools(config: Config) -> PoolDrift:
    """What ``strongroom init-airflow --check`` reports: pools missing or sized unlike the configuration."""
    return sync_pools(config, database_servers(config), pool_api(config), check_only=True)[0]


def pool_api(config: Config) -> PoolApi:
    """Airflow's REST API for pools, from the ``pools.api_conn_id`` connection (an http connection)."""
    conn = _connection(config.pools.api_conn_id)
    host = (conn.host or "").rstrip("/")
    if not host or not conn.login or not conn.password:
        raise ConfigError(f"connection {config.pools.api_conn_id!r} needs host (the API's base URL), login and "
                          "password")
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}"
    if conn.port and urllib.parse.urlsplit(host).port is None:
        parts = urllib.parse.urlsplit(host)
        host = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.netloc}:{conn.port}"))
    return PoolApi(ApiSettings(host, conn.login, conn.password))


# Third-party loggers whose INFO lines bury ours in a task log: Great Expectations (a thousand lines a
# restore test), the amazon provider's "AWS Connection ... credentials retrieved" (once per client), boto.
QUIET_LOGGERS = (
    "great_expectations",
    "airflow.providers.amazon.aws.utils.connection_wrapper",
    "airflow.task.hooks.airflow.providers.amazon.aws.hooks",
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
)


def quiet_third_party(level: int = logging.WARNING, *, airflow: bool = True) -> None:
    """Raise the level of :data:`QUIET_LOGGERS`: their warnings and errors still show, their INFO does not.

    Libraries that log through the standard library (Great Expectations, boto) obey the logger level.
    Airflow's own classes log through structlog, whose per-logger levels come from ``[logging]
    namespace_levels`` when logging is configured; the same table is updated here so a deployment needs no
    setting (Airflow-internal: if it moves, only the ``namespace_levels`` setting silences them).
    """
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # GX's advice on every restore test (the generic SQL data source is chosen on purpose): not for ops
    warnings.filterwarnings("ignore", message="You are using a generic SQLDatasource")
    if not airflow and "airflow" not in sys.modules:  # nothing to set before Airflow is imported
        return
    for module in ("airflow.sdk._shared.logging.structlog", "airflow._shared.logging.structlog"):
        try:
            levels = importlib.import_module(module).PER_LOGGER_LEVELS
            for name in QUIET_LOGGERS:
                if name.startswith("airflow.") and levels.get(name, 0) < level:
                    levels[name] = level
        except Exception:  # noqa: S112 - an Airflow without that table: the setting remains
            continue


class TaskFailed(SystemExit):
    """Ends a task with one line and no traceback.

    The task runner logs the traceback of every exception a task raises, AirflowFailException included;
    for ``SystemExit`` it logs only "Task exited" with the code, here the one line, and then retries it
    like any failure (when retries are left). For an error a retry cannot fix, :func:`fail_task` also
    sets a retry policy that fails the task at once.
    """


def _current_task() -> Any:
    from airflow.sdk import get_current_context

    try:
        return get_current_context()["ti"].task
    except Exception:  # not inside a task (a test calling a task body)
        return None


def fail_task(line: str, *, retry: bool = False) -> NoReturn:
    """End the running task with ``line`` (logged once, at ERROR) and no traceback; no retry unless
    ``retry``. Outside a task it raises AirflowFailException (or RuntimeError when ``retry``)."""
    from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy
    from airflow.sdk.exceptions import AirflowFailException

    class _NoRetry(RetryPolicy):
        def evaluate(self, exception: BaseException, try_number: int, max_tries: int,
                     context: Any = None) -> RetryDecision:
            return RetryDecision.fail()

    log.error("%s", line)
    task = _current_task()
    if task is None:
        raise RuntimeError(line) if retry else AirflowFailException(line)
    if not retry:
        task.retry_policy = _NoRetry()
    raise TaskFailed(line)


def run_task(function: Callable[..., T], *args: Any, words: Mapping[str, str] | None = None, **kwargs: Any) -> T:
    """Call a library function from a task. A Strongroom error ends the task with its one line and no
    traceback: at once for errors a retry cannot fix (refusals, bad input, integrity), through Airflow's
    retries for transient ones (``retryable``: network, throttling).

    :param words: a trigger form's names for the settings the library's messages name (see
        :func:`strongroom.errors.worded`), so the line names the form's own fields.
    """
    from strongroom.signals import terminate_on_sigterm

    quiet_third_party()
    try:
        with terminate_on_sigterm():
            return function(*args, **kwargs)
    except StrongroomError as exc:
        if exc.retryable and _current_task() is None:
            raise  # outside a task, as before: the caller sees the error itself
        fail_task(f"{type(exc).__name__}: {' '.join(worded(str(exc), words or {}).split())}", retry=exc.retryable)


def log_task_summary(context: Any) -> None:
    """``on_success_callback``: the task's one summary line (what, where, how much, how long), built from
    its return value (XCom) by :func:`strongroom.summary.summary_line`."""
    from datetime import UTC, datetime

    from strongroom.summary import summary_line

    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    try:
        result = ti.xcom_pull(task_ids=ti.task_id, map_indexes=map_index if map_index >= 0 else None)
    except Exception:  # a summary is never worth failing a task for
        result = None
    started = getattr(ti, "start_date", None)
    seconds = (datetime.now(UTC) - started).total_seconds() if started else None
    label = _safe(lambda: ti.rendered_map_index) or None
    log.info("%s", summary_line(ti.task_id, label, result, seconds))


# --- approvals ----------------------------------------------------------------------------------------


def approval_task(*, task_id: str, subject: str, body: str, approved: str, approvers: list[str],
                  response_timeout: timedelta) -> Any:
    """Airflow's ``ApprovalOperator`` that only ``approvers`` may answer, and that checks the answer itself.

    On completion the task gets the response from Airflow's own record (not from an XCom) and, when
    approved, calls :func:`strongroom.approval.grant`: an approver who is not the triggering user gets a
    sealed clearance (the task's XCom), anyone else fails the task. ``approved`` names what is approved.
    """
    return _approval_class()(
        task_id=task_id, subject=subject, body=body, approved=approved,
        assigned_users=[{"id": user, "name": user} for user in approvers],
        ignore_downstream_trigger_rules=True,  # a rejection skips everything after it
        response_timeout=response_timeout,
    )


_APPROVAL_CLASS: Any = None


def _approval_class() -> Any:
    global _APPROVAL_CLASS
    if _APPROVAL_CLASS is not None:
        return _APPROVAL_CLASS
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    class SecondPersonApproval(ApprovalOperator):  # type: ignore[misc]
        template_fields = (*ApprovalOperator.template_fields, "approved")

        def __init__(self, *, approved: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.approved = approved

        def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
            response = super().execute_complete(context=context, event=event)
            if list(response["chosen_options"]) != ["Approve"]:
                return {"chosen_options": list(response["chosen_options"])}  # rejected: nothing runs after
            from strongroom import approval
            from strongroom.config import load_config

            config = load_config()
            run = approval.Run(context["dag_run"].dag_id, context["dag_run"].run_id,
                               context["dag_run"].triggering_user_name)
            keyring = connections().keyring(config.encryption.keyring_conn_id)
            granted = run_task(approval.grant, response, run, config.restore.approvers, keyring, self.approved)
            print(f"approved by {granted['approved_by']} for {self.approved} (triggered by {run.triggered_by})")
            return granted

    _APPROVAL_CLASS = SecondPersonApproval
    return _APPROVAL_CLASS


def clearance_run(context: Any) -> Any:
    """The :class:`strongroom.approval.Run` of a task's context."""
    from strongroom import approval

    dag_run = context["dag_run"]
    return approval.Run(dag_run.dag_id, dag_run.run_id, dag_run.triggering_user_name)


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
    channels = ([f"email to {', '.join(settings.email_to)}"] if settings.email_to else []) + (
        ["Slack"] if settings.slack_conn_id else [])
    _record_delivery(config, alert, channels, "; ".join(failures) if failures else None)
    if failures:
        raise ConfigError("alert not delivered: " + "; ".join(failures))
    log.info("alert delivered (%s): %s", ", ".join(channels) or "no channel", alert.subject)


def _record_delivery(config: Config, alert: Alert, channels: list[str], error: str | None) -> None:
    from strongroom.deliveries import record_delivery

    try:
        record_delivery(config, connections(), alert.subject, channels, error)
    except Exception as exc:  # the record is for the Backups page; the alert itself matters more
        log.warning("alert delivery not recorded: %s", first_line(exc))


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
