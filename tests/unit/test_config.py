"""Configuration loading: durations, sizes, defaults, and one clear line naming the field of every mistake."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from strongroom import config as config_module
from strongroom.config import Config, config_path, load_config, parse_duration, parse_size
from strongroom.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "include" / "config" / "strongroom.example.yaml"
MiB = 2**20
GiB = 2**30

PRIMARY = {"name": "eu-central-1", "bucket": "strongroom-eu-central-1", "aws_conn_id": "s3_eu_central_1"}
MINIMAL: dict[str, Any] = {
    "regions": [PRIMARY],
    "encryption": {"keyring_conn_id": "strongroom_keyring"},
    "databases": [{"name": "shop", "postgres_conn_id": "pg_shop"}],
}


def write(tmp_path: Path, data: Any, name: str = "strongroom.yaml") -> Path:
    path = tmp_path / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# --- the shipped example -------------------------------------------------------------------------------


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.retention == timedelta(days=30)
    assert [r.name for r in config.regions] == ["eu-central-1", "eu-west-1", "eu-north-1"]
    assert config.primary.bucket == "strongroom-eu-central-1"
    assert config.keyring_conn_id(config.primary) == "strongroom_keyring"
    assert config.database("shop").postgres_conn_id == "pg_shop"
    assert config.transfer.part_size == 16 * MiB
    assert config.transfer.max_part_size == 256 * MiB
    assert config.snapshot.run_timeout == timedelta(minutes=50)
    assert config.snapshot.schedule == "0 * * * *"
    assert config.restore_test.rto == timedelta(hours=4)
    assert config.alerts.staleness_threshold == timedelta(minutes=75)
    assert config.alerts.email_to == ["oncall@example.com"]


def test_defaults_match_the_documentation(tmp_path: Path) -> None:
    minimal = {k: v for k, v in MINIMAL.items() if k != "databases"}
    config = load_config(write(tmp_path, minimal))
    assert config.retention == timedelta(days=30)
    assert config.databases == []
    assert config.object_storage == []
    region = config.primary
    assert (region.location, region.keyring_conn_id, region.max_parts) == (None, None, 10000)
    t = config.transfer
    assert (t.part_size, t.max_part_size) == (16 * MiB, 256 * MiB)
    assert (t.upload_concurrency, t.download_concurrency, t.max_attempts) == (4, 4, 3)
    assert (t.connect_timeout, t.control_timeout) == (timedelta(seconds=10), timedelta(seconds=10))
    assert (t.stall_timeout, t.part_attempts, t.retry_delay) == (timedelta(seconds=60), 6, timedelta(seconds=1))
    s = config.snapshot
    assert (s.schedule, s.run_timeout) == ("0 * * * *", timedelta(minutes=50))
    assert (s.zstd_level, s.zstd_threads, s.capture_globals, s.pg_bin_dir) == (3, 0, True, None)
    assert (config.restore.jobs, config.restore.spool_dir) == (0, None)
    rt = config.restore_test
    assert (rt.schedule, rt.sandbox_conn_id) == ("@daily", None)
    assert Path(rt.expectations_dir).is_absolute()  # resolved against the configuration file's folder
    assert (rt.freshness_lag, rt.rto) == (timedelta(hours=2), timedelta(hours=4))
    assert rt.checksum_max_rows == 100_000
    a = config.alerts
    assert (a.email_to, a.smtp_conn_id, a.slack_conn_id) == ([], "smtp_default", None)
    assert a.staleness_threshold == timedelta(minutes=75)


def test_config_is_frozen() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(ValidationError):
        config.retention = timedelta(days=1)  # type: ignore[misc]


def test_region_keyring_overrides_the_default(tmp_path: Path) -> None:
    data = copy.deepcopy(MINIMAL)
    west = {"name": "eu-west-1", "bucket": "strongroom-eu-west-1", "aws_conn_id": "s3_w"}
    data["regions"].append(dict(west, keyring_conn_id="kr_w"))
    config = load_config(write(tmp_path, data))
    assert config.keyring_conn_id(config.region("eu-central-1")) == "strongroom_keyring"
    assert config.keyring_conn_id(config.region("eu-west-1")) == "kr_w"


# --- durations and sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("45m", timedelta(minutes=45)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 30d ", timedelta(days=30)),
        (timedelta(minutes=5), timedelta(minutes=5)),
    ],
)
def test_parse_duration_accepts(text: Any, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "abc", "0s", "-1d", "1x", "1h 30m", "1H", "1.5h", 30, None])
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16MiB", 16 * MiB),
        ("8MB", 8_000_000),
        ("512KiB", 512 * 1024),
        ("1 GiB", GiB),
        ("2GB", 2_000_000_000),
        ("1TiB", 2**40),
        ("10B", 10),
        ("5242880", 5 * MiB),
        (5 * MiB, 5 * MiB),
    ],
)
def test_parse_size_accepts(text: Any, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "16M", "16mib", "1.5GiB", "MiB", "-5MiB", "16 MiB extra", True, 16.5])
def test_parse_size_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


# --- validation errors: ConfigError, one line, naming the field -----------------------------------------


def _parent(data: dict[str, Any], path: tuple[Any, ...]) -> Any:
    target: Any = data
    for part in path:
        target = target.setdefault(part, {}) if isinstance(target, dict) else target[part]
    return target


def drop(*path: Any) -> Any:
    return lambda data: _parent(data, path[:-1]).pop(path[-1])


def put(*path_and_value: Any) -> Any:
    *path, value = path_and_value
    return lambda data: _parent(data, tuple(path[:-1])).__setitem__(path[-1], value)


def rename(*path: Any, to: str) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        parent = _parent(data, path[:-1])
        parent[to] = parent.pop(path[-1])

    return mutate


def duplicate(section: str) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        copy_of_first = dict(data[section][0])
        if section == "regions":
            copy_of_first["bucket"] = "another-bucket"
        data[section].append(copy_of_first)

    return mutate


R0 = ("regions", 0)
T = ("transfer",)
INVALID = [
    ("missing bucket", drop(*R0, "bucket"), "regions[0].bucket: required field is missing"),
    ("missing regions", drop("regions"), "regions: required field is missing"),
    ("missing encryption", drop("encryption"), "encryption: required field is missing"),
    ("missing keyring id", drop("encryption", "keyring_conn_id"), "encryption.keyring_conn_id: required"),
    ("missing pg conn", drop("databases", 0, "postgres_conn_id"), "databases[0].postgres_conn_id: required"),
    ("typo in region key", rename(*R0, "bucket", to="bukket"), "regions[0].bukket: unknown key"),
    ("typo at top level", put("retension", "30d"), "retension: unknown key"),
    ("typo in section", put(*T, "part_sise", "8MiB"), "transfer.part_sise: unknown key"),
    ("duplicate database", duplicate("databases"), "databases: database name 'shop' appears twice"),
    ("duplicate region", duplicate("regions"), "regions: region name 'eu-central-1' appears twice"),
    ("no regions", put("regions", []), "regions: List should have at least 1 item"),
    ("bucket uppercase", put(*R0, "bucket", "Strongroom_EU"), "regions[0].bucket: String should match"),
    ("bucket too short", put(*R0, "bucket", "ab"), "regions[0].bucket: String should match"),
    ("bucket ends in dash", put(*R0, "bucket", "backups-"), "regions[0].bucket: String should match"),
    ("region name", put(*R0, "name", "EU Central"), "regions[0].name: String should match"),
    ("location lowercase", put(*R0, "location", "de"), "regions[0].location: String should match"),
    ("location boolean", put(*R0, "location", False), "regions[0].location: Input should be a valid string"),
    ("max_parts 1", put(*R0, "max_parts", 1), "regions[0].max_parts: Input should be greater than"),
    ("conn id space", put("encryption", "keyring_conn_id", "my kr"), "encryption.keyring_conn_id: String"),
    ("database name", put("databases", 0, "name", "shop/eu"), "databases[0].name: String should match"),
    ("part_size < 5MiB", put(*T, "part_size", "4MiB"), "transfer.part_size: must be between 5MiB and 5GiB"),
    ("max_part_size > 5GiB", put(*T, "max_part_size", "6GiB"), "transfer.max_part_size: must be between"),
    ("part_size no unit", put(*T, "part_size", "16M"), "transfer.part_size: '16M' is not a size"),
    ("part_size > max", put(*T, "part_size", "512MiB"), "transfer: part_size must not be larger than max_part"),
    ("concurrency 0", put(*T, "upload_concurrency", 0), "transfer.upload_concurrency: Input should be"),
    ("retention number", put("retention", 30), "retention: 30 is not a duration such as 30d"),
    ("retention zero", put("retention", "0s"), "retention: '0s' must be longer than zero"),
    ("run_timeout words", put("snapshot", "run_timeout", "50 min"), "snapshot.run_timeout: '50 min' is not"),
    ("zstd level", put("snapshot", "zstd_level", 22), "snapshot.zstd_level: Input should be less than"),
    ("deadline words", put("snapshot", "deadline", "of"), "snapshot.deadline: 'of' is not a duration"),
    ("deadline too late", put("snapshot", "deadline", "50m"), "snapshot: deadline must be shorter than run_timeout"),
    ("sandbox conn id", put("restore", "sandbox_conn_id", "my db"), "restore.sandbox_conn_id: String"),
    ("section not a mapping", put("transfer", 5), "transfer: Input should be a valid dictionary"),
    ("databases null", put("databases", None), "databases: Input should be a valid list"),
    ("source bucket", put("object_storage", [{"bucket": "S", "aws_conn_id": "s"}]), "object_storage[0].bucket:"),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_config_names_the_field(tmp_path: Path, mutate: Any, expected: str) -> None:
    data = copy.deepcopy(MINIMAL)
    mutate(data)
    path = write(tmp_path, data)
    assert load_error(path).startswith(f"config {path}: {expected}")


def test_several_problems_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    data = copy.deepcopy(MINIMAL)
    del data["regions"][0]["bucket"]
    data["transfer"] = {"part_size": "1MiB"}
    path = write(tmp_path, data)
    assert load_error(path).endswith("(and 1 more problem(s))")


# --- the file itself -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("retention: 30d\nregions: x: y\n", "invalid YAML at line 2: mapping values are not allowed here"),
        ("retention: 30d\nregions:\n\t- name: x\n", "invalid YAML at line 3: found character"),
        ("a: 1\nb: [1, 2\nc: 3\n", "invalid YAML at line 3:"),
        ("snapshot:\n  schedule: @daily\n", "invalid YAML at line 2: found character '@'"),
    ],
)
def test_invalid_yaml_gives_the_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path).startswith(f"config {path}: {expected}")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path) == f"config {path}: expected a mapping at the top level"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert load_error(path) == f"config {path}: cannot read: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert load_error(tmp_path).startswith(f"config {tmp_path}: cannot read:")


# --- where the file is found ---------------------------------------------------------------------------


def test_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRONGROOM_CONFIG", raising=False)
    assert config_path() == config_module.DEFAULT_PATH
    assert config_module.DEFAULT_PATH.parts[-3:] == ("include", "config", "strongroom.yaml")
    from_env = write(tmp_path, MINIMAL, "env.yaml")
    monkeypatch.setenv("STRONGROOM_CONFIG", str(from_env))
    assert config_path() == from_env
    explicit = tmp_path / "explicit.yaml"
    assert config_path(explicit) == explicit
    assert load_config().database("shop").postgres_conn_id == "pg_shop"


# --- lookups -------------------------------------------------------------------------------------------


def test_unknown_database_lists_configured_names() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(ConfigError) as caught:
        config.database("nope")
    assert str(caught.value) == "unknown database 'nope' (configured: shop)"


def test_unknown_database_with_none_configured(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {k: v for k, v in MINIMAL.items() if k != "databases"}))
    with pytest.raises(ConfigError, match=r"configured: none\)$"):
        config.database("shop")


def test_unknown_region_lists_configured_names() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(ConfigError) as caught:
        config.region("us-east-1")
    assert str(caught.value) == "unknown region 'us-east-1' (configured: eu-central-1, eu-west-1, eu-north-1)"


def test_parse_config_takes_an_already_parsed_mapping() -> None:
    assert isinstance(config_module.parse_config(copy.deepcopy(MINIMAL)), Config)
    with pytest.raises(ConfigError, match=r"^config inline: retension: unknown key$"):
        config_module.parse_config(dict(MINIMAL, retension="30d"), source="inline")


def test_unquoted_yaml_boolean_words_are_not_strings(tmp_path: Path) -> None:
    """YAML 1.1 reads NO, yes, on, off as booleans: country codes such as NO must be quoted."""
    text = yaml.safe_dump(MINIMAL, sort_keys=False).replace(
        "aws_conn_id: s3_eu_central_1", "aws_conn_id: s3_eu_central_1\n  location: NO"
    ).replace("name: eu-central-1", "name: osl-1")
    path = write(tmp_path, text)
    assert load_error(path) == f"config {path}: regions[0].location: Input should be a valid string"
    quoted = write(tmp_path, text.replace("location: NO", "location: 'NO'"), "quoted.yaml")
    # read as a string, Norway is then refused for what it is: outside the EU
    assert load_error(quoted).endswith("region 'osl-1' is in NO, which is not an EU member state")


def test_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(
        "retention: 30d\nregions:\n  - {name: eu-west-1, bucket: bkt-one, aws_conn_id: s3}\n"
        "encryption: {keyring_conn_id: kr}\nretention: 1d\n"
    )
    with pytest.raises(ConfigError, match="key 'retention' appears twice") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


EU_CASES = [
    ({"name": "us-east-1"}, "region 'us-east-1' is in US, which is not an EU member state"),
    ({"name": "eu-west-2"}, "region 'eu-west-2' is in GB, which is not an EU member state"),
    ({"name": "eu-central-2"}, "region 'eu-central-2' is in CH, which is not an EU member state"),
    ({"name": "fr-par"}, "region 'fr-par' is not an AWS region: declare its location"),
    ({"name": "fr-par", "location": "CH"}, "region 'fr-par' is in CH, which is not an EU member state"),
    ({"name": "eu-west-1", "location": "DE"}, "region 'eu-west-1' is in IE, not DE"),
]


@pytest.mark.parametrize(("region", "message"), EU_CASES)
def test_regions_outside_the_eu_are_refused(tmp_path: Path, region: dict[str, str], message: str) -> None:
    data = copy.deepcopy(MINIMAL)
    data["regions"][0].update(region)
    assert message in load_error(write(tmp_path, data))


@pytest.mark.parametrize("region", [{"name": "eu-north-1"}, {"name": "fr-par", "location": "FR"},
                                    {"name": "waw", "location": "PL"}, {"name": "eu-south-2"}])
def test_eu_regions_are_accepted(tmp_path: Path, region: dict[str, str]) -> None:
    data = copy.deepcopy(MINIMAL)
    data["regions"][0].update(region)
    assert load_config(write(tmp_path, data)).primary.country in {"SE", "FR", "PL", "ES"}


def test_the_same_bucket_location_twice_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(MINIMAL)
    twin = dict(data["regions"][0], name="eu-west-1")
    data["regions"].append(twin)
    assert "appears twice" in load_error(write(tmp_path, data))


def test_a_relative_expectations_dir_follows_the_config_file(tmp_path: Path) -> None:
    data = dict(copy.deepcopy(MINIMAL), restore_test={"expectations_dir": "suites"})
    config = load_config(write(tmp_path, data))
    assert config.restore_test.expectations_dir == str((tmp_path / "suites").resolve())


@pytest.mark.parametrize(("snapshot", "expected"), [
    ({}, timedelta(minutes=40)),  # 80% of the 50m run_timeout
    ({"run_timeout": "20m"}, timedelta(minutes=16)),
    ({"deadline": "30m"}, timedelta(minutes=30)),
    ({"deadline": "off"}, None),
])
def test_snapshot_deadline(tmp_path: Path, snapshot: dict, expected: timedelta | None) -> None:
    config = load_config(write(tmp_path, {**MINIMAL, "snapshot": snapshot}))
    assert config.snapshot.deadline_interval == expected


def test_object_backup_has_its_own_settings_with_the_snapshot_defaults(tmp_path: Path) -> None:
    """backup_object_storage reads object_backup, never snapshot: the defaults are snapshot's (nothing
    changes unless set), and setting one section leaves the other as it was."""
    defaults = load_config(write(tmp_path, MINIMAL))
    o, s = defaults.object_backup, defaults.snapshot
    assert (o.schedule, o.run_timeout, o.retries, o.retry_delay) == (
        s.schedule, s.run_timeout, s.retries, s.retry_delay) == ("0 * * * *", timedelta(minutes=50), 2,
                                                                  timedelta(minutes=1))
    own = {"schedule": "30 */2 * * *", "run_timeout": "110m", "retries": 4, "retry_delay": "5m"}
    config = load_config(write(tmp_path, {**MINIMAL, "object_backup": own}, "own.yaml"))
    o = config.object_backup
    assert (o.schedule, o.run_timeout, o.retries, o.retry_delay) == (
        "30 */2 * * *", timedelta(minutes=110), 4, timedelta(minutes=5))
    assert config.snapshot == defaults.snapshot
    assert load_config(EXAMPLE).object_backup.schedule == "0 * * * *"
    assert load_error(write(tmp_path, {**MINIMAL, "object_backup": {"retries": 11}}, "bad.yaml")).endswith(
        "object_backup.retries: Input should be less than or equal to 10")
    assert "object_backup.scheduel: unknown key" in load_error(
        write(tmp_path, {**MINIMAL, "object_backup": {"scheduel": "@daily"}}, "typo.yaml"))


# --- object restore targets and approvers ----------------------------------------------------------------


def test_object_restore_targets_are_never_a_backup_or_source_bucket(tmp_path: Path) -> None:
    source = {"bucket": "shop-uploads", "aws_conn_id": "s3_uploads"}
    review = {"name": "review", "bucket": "shop-review", "aws_conn_id": "s3_uploads"}
    ok = load_config(write(tmp_path, {**MINIMAL, "object_storage": [source], "object_restore_targets": [review],
                                      "restore": {"approvers": ["alice", "bob"]}}))
    assert [t.name for t in ok.object_restore_targets] == ["review"]
    assert ok.restore.approvers == ["alice", "bob"]
    assert load_config(EXAMPLE).object_restore_targets[0].name == "review"
    for bucket, message in ((PRIMARY["bucket"], "is a backup bucket (strongroom-eu-central-1)"),
                            ("shop-uploads", "is a source bucket (shop-uploads)")):
        bad = {**MINIMAL, "object_storage": [source],
               "object_restore_targets": [{**review, "bucket": bucket}]}
        assert message in load_error(write(tmp_path, bad, f"{bucket}.yaml"))
    twice = {**MINIMAL, "object_restore_targets": [review, {**review, "bucket": "other-review"}]}
    assert "object restore target 'review' appears twice" in load_error(write(tmp_path, twice, "twice.yaml"))


def test_a_time_without_a_utc_offset_is_one_config_error_wherever_it_is_given() -> None:
    """Restore (--at), object point-in-time (--at), prune (--now), the restore form's snapshot time, the
    recovery form's and the object-restore form's `at`, platform recovery (--at): the same error class and
    message shape, raised before anything is read."""
    from datetime import UTC, datetime

    from strongroom import catalog, objects, recovery, retention
    from strongroom.cli import parse_at
    from strongroom.config import parse_time, require_offset
    from strongroom.errors import ConfigError
    from strongroom.restore import parse_snapshot_choice

    naive = datetime(2026, 11, 26, 14, 0)
    assert require_offset(naive.replace(tzinfo=UTC), "at") == naive.replace(tzinfo=UTC)
    assert parse_time(" 2026-11-26T14:00:00Z ", "at") == naive.replace(tzinfo=UTC)
    calls = {
        "at": lambda: catalog.select_snapshot(None, None, "shop", at=naive),  # type: ignore[arg-type]
        "at ": lambda: objects.point_at(None, None, "uploads", naive),  # type: ignore[arg-type]
        "now": lambda: retention.prune(None, None, now=naive),  # type: ignore[arg-type]
        "snapshot time": lambda: parse_snapshot_choice("2026-11-26T14:00:00"),
        "at  ": lambda: recovery.parse_form_choice(None, "2026-11-26T14:00:00"),  # recover_platform's form
        "at   ": lambda: parse_time("2026-11-26T14:00:00", "at"),  # restore_objects' form
        "--at": lambda: parse_at("2026-11-26T14:00:00"),  # restore, objects, recover
    }
    for setting, call in calls.items():
        with pytest.raises(ConfigError) as raised:
            call()
        assert str(raised.value).startswith(f"{setting.strip()} 2026-11-26T14:00:00 needs an explicit UTC offset")
