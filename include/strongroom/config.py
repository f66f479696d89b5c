"""The one YAML configuration file: loaded, validated, and turned into frozen settings.

Every feature reads its settings from here; ``docs/configuration.md`` documents each field. Unknown keys
are refused so a typo never silently falls back to a default. Credentials never live here: the file
only names Airflow connections.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from strongroom.errors import ConfigError

ENV_VAR = "STRONGROOM_CONFIG"
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "config" / "strongroom.yaml"

_DURATION_PART = re.compile(r"(\d+)(ms|w|d|h|m|s)")
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_CONN_ID = r"^[A-Za-z0-9_.-]{1,250}$"


def require_offset(at: datetime, setting: str) -> datetime:
    """``at`` when it carries a UTC offset; a time without one is ambiguous (whose local time?) and is
    refused, the same way wherever a time is given: :class:`ConfigError` naming the setting."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ConfigError(f"{setting} {at.isoformat()} needs an explicit UTC offset, e.g. {at.isoformat()}+00:00")
    return at


def parse_time(text: str, setting: str) -> datetime:
    """A time as given by a person (a CLI option, a trigger form's field, a REST API's conf): ISO 8601 with
    a UTC offset (``Z`` or ``+01:00``). The one rule for every such time: one without an offset is refused
    by :func:`require_offset`, never taken as UTC or as local time."""
    value = str(text).strip()
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{setting} {value!r} is not an ISO 8601 time, e.g. 2026-11-26T14:00:00+00:00") from None
    return require_offset(at, setting)


def parse_duration(value: Any) -> timedelta:
    """Parse ``30d``, ``12h``, ``90s``, ``1h30m``, ``250ms`` (units w, d, h, m, s, ms) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    text = str(value).strip()
    if not text or _DURATION_PART.sub("", text) != "":
        raise ValueError(f"{value!r} is not a duration such as 30d, 12h, 45m, 90s or 500ms")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return timedelta(seconds=seconds)


def parse_size(value: Any) -> int:
    """Parse ``16MiB``, ``8MB`` or a plain byte count into bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size such as 16MiB or 8MB")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Name = Annotated[str, Field(pattern=_NAME)]
ConnId = Annotated[str, Field(pattern=_CONN_ID)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The 27 member states of the European Union (ISO 3166-1 alpha-2; Greece is GR).
EU_MEMBER_STATES = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()  # noqa: SIM905
)
# Where AWS's regions are. Other providers' regions must declare `location`.
AWS_REGION_COUNTRIES = {
    "eu-central-1": "DE", "eu-central-2": "CH", "eu-west-1": "IE", "eu-west-2": "GB", "eu-west-3": "FR",
    "eu-north-1": "SE", "eu-south-1": "IT", "eu-south-2": "ES",
    "us-east-1": "US", "us-east-2": "US", "us-west-1": "US", "us-west-2": "US", "us-gov-east-1": "US",
    "us-gov-west-1": "US", "ca-central-1": "CA", "ca-west-1": "CA", "sa-east-1": "BR", "mx-central-1": "MX",
    "af-south-1": "ZA", "il-central-1": "IL", "me-south-1": "BH", "me-central-1": "AE",
    "ap-east-1": "HK", "ap-south-1": "IN", "ap-south-2": "IN", "ap-northeast-1": "JP", "ap-northeast-2": "KR",
    "ap-northeast-3": "JP", "ap-southeast-1": "SG", "ap-southeast-2": "AU", "ap-southeast-3": "ID",
    "ap-southeast-4": "AU", "ap-southeast-5": "MY", "ap-southeast-7": "TH", "cn-north-1": "CN",
    "cn-northwest-1": "CN",
}


class RegionConfig(_Section):
    """A bucket at a provider's region. The first region listed is the primary."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    aws_conn_id: ConnId
    location: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    keyring_conn_id: ConnId | None = None
    max_parts: Annotated[int, Field(ge=2, le=10000)] = 10000
    object_lock: Literal["off", "governance", "compliance"] = "off"
    # plain HTTP or unverified TLS to a non-loopback endpoint is refused unless this is set (then warned)
    allow_insecure_transport: bool = False

    @model_validator(mode="after")
    def _in_the_eu(self) -> RegionConfig:
        known = AWS_REGION_COUNTRIES.get(self.name)
        if known and self.location and self.location != known:
            raise ValueError(f"region {self.name!r} is in {known}, not {self.location}")
        country = known or self.location
        if country is None:
            raise ValueError(
                f"region {self.name!r} is not an AWS region: declare its location (ISO country code, e.g. DE)"
            )
        if country not in EU_MEMBER_STATES:
            raise ValueError(f"region {self.name!r} is in {country}, which is not an EU member state")
        return self

    @property
    def country(self) -> str:
        return AWS_REGION_COUNTRIES.get(self.name) or self.location or ""


class EncryptionConfig(_Section):
    keyring_conn_id: ConnId


class DatabaseConfig(_Section):
    name: Name
    postgres_conn_id: ConnId
    # the server it lives on, for the dump pool (no more than N dumps against one server);
    # unset: the connection's host and port
    server: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,120}$")] | None = None


# the most objects one source reads and stores at once; every S3 client keeps that many connections open
# for reuse (a thread without a pooled connection opens a new one, TLS handshake included, and drops it)
MAX_OBJECT_CONCURRENCY = 128


class TransferConfig(_Section):
    part_size: Size = 16 * 2**20
    max_part_size: Size = 256 * 2**20
    upload_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    download_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    connect_timeout: Duration = timedelta(seconds=10)
    # control requests (head, list, small gets and puts, starting and completing uploads): the wait for
    # an answer, tried max_attempts times; "read_timeout" is its former name, still accepted
    control_timeout: Annotated[Duration, Field(validation_alias=AliasChoices("control_timeout", "read_timeout"))] = (
        timedelta(seconds=10)
    )
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    # data transfers (parts, ranges): a region that moves no byte for this long is stalled and dropped
    stall_timeout: Duration = timedelta(seconds=60)
    # attempts per part or range (503 SlowDown, 500s, resets), with backoff and jitter, within stall_timeout
    part_attempts: Annotated[int, Field(ge=1, le=20)] = 6
    retry_delay: Duration = timedelta(seconds=1)  # the first backoff; doubles per attempt, with full jitter

    @field_validator("part_size", "max_part_size")
    @classmethod
    def _part_bounds(cls, value: int) -> int:
        if not 5 * 2**20 <= value <= 5 * 2**30:
            raise ValueError("must be between 5MiB and 5GiB (the S3 multipart limits)")
        return value

    @model_validator(mode="after")
    def _part_order(self) -> TransferConfig:
        if self.part_size > self.max_part_size:
            raise ValueError("part_size must not be larger than max_part_size")
        return self


class SnapshotConfig(_Section):
    schedule: str = "0 * * * *"
    run_timeout: Duration = timedelta(minutes=50)
    # pg_dump writing nothing this long (a stalled source, a lock it waits for) is killed: the snapshot fails
    dump_stall_timeout: Duration = timedelta(minutes=5)
    # pg_dump waits this long for each table's share lock (a long ALTER TABLE holds it) before it fails
    lock_wait_timeout: Duration = timedelta(seconds=60)
    zstd_level: Annotated[int, Field(ge=1, le=19)] = 3
    zstd_threads: Annotated[int, Field(ge=0, le=64)] = 0
    capture_globals: bool = True
    pg_bin_dir: str | None = None
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    retry_delay: Duration = timedelta(minutes=1)
    # a run unfinished this long after it was queued alerts; unset: 80% of run_timeout; "off": no alert
    deadline: timedelta | Literal["off"] | None = None
    # "whole": the dump as one sealed object per snapshot; "chunked": content-defined chunks, each stored
    # once per region and shared by every snapshot that holds it (docs/encryption-format.md, docs/retention.md)
    format: Literal["whole", "chunked"] = "whole"
    # the chunker's target average (FastCDC: chunks fall between a quarter of it and four times it, about 1.5x
    # it on average); 512 KiB stored less than restic on every workload of bench/dedup.py (docs/benchmarks.md)
    chunk_size: Size = 512 * 2**10

    @field_validator("chunk_size")
    @classmethod
    def _chunk_bounds(cls, value: int) -> int:
        if not 256 * 2**10 <= value <= 4 * 2**20:
            raise ValueError("must be between 256KiB and 4MiB")
        return value

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline(cls, value: Any) -> Any:
        return value if value in (None, "off") else parse_duration(value)

    @model_validator(mode="after")
    def _deadline_before_timeout(self) -> SnapshotConfig:
        if isinstance(self.deadline, timedelta) and self.deadline >= self.run_timeout:
            raise ValueError("deadline must be shorter than run_timeout (the alert must come before the run is killed)")
        return self

    @property
    def deadline_interval(self) -> timedelta | None:
        """When the DeadlineAlert of snapshot_databases fires, after the run was queued; None: never."""
        if self.deadline == "off":
            return None
        if isinstance(self.deadline, timedelta):
            return self.deadline
        return self.run_timeout * 4 / 5


class RestoreConfig(_Section):
    jobs: Annotated[int, Field(ge=0, le=64)] = 0
    spool_dir: str | None = None
    # the default target of restore_database: a new database on this server, named after the snapshot
    sandbox_conn_id: ConnId | None = None
    # the other targets the restore_database form offers (a production source only when listed here)
    target_conn_ids: list[ConnId] = Field(default_factory=list)
    approval_timeout: Duration = timedelta(hours=4)  # a production restore waits this long for approval
    # how long a restore's or restore test's plaintext (spool, throwaway data directory) may outlive a dead owner
    lease: Duration = timedelta(hours=6)
    # the Airflow users who may approve a production (or in-place object) restore; never the one who triggered it
    approvers: list[Annotated[str, Field(min_length=1, max_length=250)]] = Field(default_factory=list)


class RestoreTestConfig(_Section):
    schedule: str = "@daily"
    expectations_dir: str = "../expectations"  # relative to the configuration file's folder
    sandbox_conn_id: ConnId | None = None
    freshness_lag: Duration = timedelta(hours=2)
    checksum_max_rows: Annotated[int, Field(ge=0)] = 100_000
    rto: Duration = timedelta(hours=4)


class ObjectSourceConfig(_Section):
    """A source bucket whose objects are backed up (uploads, attachments, generated files)."""

    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    aws_conn_id: ConnId
    prefixes: list[str] = Field(default_factory=list)
    region: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")] | None = None  # default: the connection's
    concurrency: Annotated[int, Field(ge=1, le=MAX_OBJECT_CONCURRENCY)] = 16  # objects read and stored in parallel
    allow_insecure_transport: bool = False  # as for a region


class ObjectBackupConfig(_Section):
    """The backup_object_storage DAG: its own schedule and limits (the defaults are snapshot's)."""

    schedule: str = "0 * * * *"
    # the DAG's dagrun_timeout and every task's execution_timeout; also prune's grace for content and
    # journals a pass has stored but not yet indexed
    run_timeout: Duration = timedelta(minutes=50)
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    retry_delay: Duration = timedelta(minutes=1)


class ObjectRestoreTarget(_Section):
    """A bucket restore_objects may write into (for review). The first one listed is the form's default."""

    name: Name
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    aws_conn_id: ConnId


class RecoveryBucket(_Section):
    """Where a source bucket's objects go in a platform recovery."""

    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    aws_conn_id: ConnId


class RecoveryConfig(_Section):
    """``strongroom recover``: the targets a platform recovery restores every database and bucket into."""

    databases: dict[str, ConnId] = Field(default_factory=dict)  # configured database -> target connection
    buckets: dict[str, RecoveryBucket] = Field(default_factory=dict)  # configured source bucket -> target
    concurrency: Annotated[int, Field(ge=1, le=64)] = 2  # parts (databases, buckets) restored at once
    rto: Duration = timedelta(hours=4)  # the recovery-time objective the report measures the total against
    # the platform_drill DAG (weekly: Sundays 02:00 UTC, clear of the daily restore test at midnight)
    drill_schedule: str = "0 2 * * 0"
    # how long a platform drill may run (the DAG's run timeout); unset: rto + 2h. A throwaway bucket of a
    # drill older than this, with no live lease, was left by a drill that died: the next drill removes it
    drill_timeout: Duration | None = None

    @property
    def drill_run_timeout(self) -> timedelta:
        return self.drill_timeout or self.rto + timedelta(hours=2)


class PoolsConfig(_Section):
    """Airflow pools around the work that loads a source (``strongroom init-airflow`` creates them)."""

    dumps_per_server: Annotated[int, Field(ge=1, le=64)] = 1  # concurrent dumps against one source server
    servers: dict[str, Annotated[int, Field(ge=1, le=64)]] = Field(default_factory=dict)  # per-server override
    object_passes: Annotated[int, Field(ge=1, le=64)] = 2  # concurrent object-storage passes
    # Airflow's REST API (an http connection: host = the API's base URL, login/password = an account with
    # the op role): how `strongroom init-airflow` and backup_monitor read and create pools
    api_conn_id: ConnId = "airflow_api"


class AlertsConfig(_Section):
    email_to: list[str] = Field(default_factory=list)
    smtp_conn_id: ConnId = "smtp_default"
    slack_conn_id: ConnId | None = None
    staleness_threshold: Duration = timedelta(minutes=75)
    size_jump_factor: Annotated[float, Field(gt=1)] = 2.0  # the Backups page marks a bigger change in size


class Config(_Section):
    retention: Duration = timedelta(days=30)
    regions: Annotated[list[RegionConfig], Field(min_length=1)]
    encryption: EncryptionConfig
    databases: list[DatabaseConfig] = Field(default_factory=list)
    transfer: TransferConfig = TransferConfig()
    snapshot: SnapshotConfig = SnapshotConfig()
    restore: RestoreConfig = RestoreConfig()
    restore_test: RestoreTestConfig = RestoreTestConfig()
    object_storage: list[ObjectSourceConfig] = Field(default_factory=list)
    object_backup: ObjectBackupConfig = ObjectBackupConfig()
    object_restore_targets: list[ObjectRestoreTarget] = Field(default_factory=list)
    recovery: RecoveryConfig = RecoveryConfig()
    alerts: AlertsConfig = AlertsConfig()
    pools: PoolsConfig = PoolsConfig()

    @field_validator("databases")
    @classmethod
    def _unique_databases(cls, value: list[DatabaseConfig]) -> list[DatabaseConfig]:
        _require_unique([d.name for d in value], "database name")
        return value

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, value: list[RegionConfig]) -> list[RegionConfig]:
        _require_unique([r.name for r in value], "region name")
        _require_unique([f"{r.aws_conn_id}/{r.bucket}" for r in value], "bucket location (connection/bucket)")
        return value

    @field_validator("recovery")
    @classmethod
    def _recovery_names(cls, value: RecoveryConfig, info: ValidationInfo) -> RecoveryConfig:
        """Every name in the recovery map is a configured database or source bucket (a typo restores nothing)."""
        databases = [d.name for d in info.data.get("databases", [])]
        sources = [s.bucket for s in info.data.get("object_storage", [])]
        for name in value.databases:
            if name not in databases:
                raise ValueError(f"databases names {name!r}, which is not a configured database "
                                 f"(configured: {', '.join(databases) or 'none'})")
        for name in value.buckets:
            if name not in sources:
                raise ValueError(f"buckets names {name!r}, which is not a configured object_storage source "
                                 f"(configured: {', '.join(sources) or 'none'})")
        return value

    @model_validator(mode="after")
    def _restore_targets_apart(self) -> Config:
        _require_unique([t.name for t in self.object_restore_targets], "object restore target")
        backups = {r.bucket for r in self.regions}
        sources = {s.bucket for s in self.object_storage}
        for target in self.object_restore_targets:
            if target.bucket in backups:
                raise ValueError(f"object restore target {target.name!r} is a backup bucket ({target.bucket})")
            if target.bucket in sources:
                raise ValueError(f"object restore target {target.name!r} is a source bucket ({target.bucket}): "
                                 "restore in place instead (it needs a confirmation and an approval)")
        return self

    @property
    def primary(self) -> RegionConfig:
        return self.regions[0]

    def database(self, name: str) -> DatabaseConfig:
        for db in self.databases:
            if db.name == name:
                return db
        known = ", ".join(d.name for d in self.databases) or "none"
        raise ConfigError(f"unknown database {name!r} (configured: {known})")

    def source(self, bucket: str) -> ObjectSourceConfig:
        for source in self.object_storage:
            if source.bucket == bucket:
                return source
        known = ", ".join(s.bucket for s in self.object_storage) or "none"
        raise ConfigError(f"unknown source bucket {bucket!r} (configured: {known})")

    def region(self, name: str) -> RegionConfig:
        for region in self.regions:
            if region.name == name:
                return region
        known = ", ".join(r.name for r in self.regions)
        raise ConfigError(f"unknown region {name!r} (configured: {known})")

    def keyring_conn_id(self, region: RegionConfig) -> str:
        return region.keyring_conn_id or self.encryption.keyring_conn_id


def _require_unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} {name!r} appears twice")
        seen.add(name)


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that refuses a key written twice (YAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The file to load: the argument, else ``$STRONGROOM_CONFIG``, else ``include/config/strongroom.yaml``."""
    if path:
        return Path(path)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return DEFAULT_PATH


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the configuration file; any problem is one :class:`ConfigError` line."""
    where = config_path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config {where}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config {where}: invalid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {where}: expected a mapping at the top level")
    config = parse_config(data, source=str(where))
    folder = Path(config.restore_test.expectations_dir)
    if not folder.is_absolute():  # relative paths follow the file, not the worker's current directory
        resolved = (where.resolve().parent / folder).resolve()
        config = config.model_copy(update={
            "restore_test": config.restore_test.model_copy(update={"expectations_dir": str(resolved)})
        })
    return config


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config {source}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    # an unknown key is usually a typo of a known one: report it before the "missing" it causes
    first = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")[0]
    field = ""
    for part in first["loc"]:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required field is missing"
    else:
        message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{field or '(top level)'}: {message}{more}"
