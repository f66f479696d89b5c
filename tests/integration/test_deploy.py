"""deploy/: the compose stack as docker-compose itself reads it, its configuration, and the Helm values.

``docker-compose config`` (Debian's docker-compose 1.29, which needs no daemon) interpolates and validates the
compose file against a copy of ``deploy/strongroom.env.example`` whose every placeholder got its own random
value, so the test can see where each password ends up. Helm is not installable here: its values file is
checked as YAML, for the settings Strongroom needs and for literal secrets. Each check is shown to fail on a
broken copy.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from strongroom.config import RegionConfig, load_config, parse_duration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yaml"
EXAMPLE = DEPLOY / "strongroom.env.example"
STACK_CONFIG = DEPLOY / "config" / "strongroom.yaml"
HELM = DEPLOY / "helm" / "values.yaml"

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init")
STACK_PASSWORDS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "STRONGROOM_API_PASSWORD",
                   "SAMPLE_DB_PASSWORD", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY")


# --- the literal-secret scanner ---------------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"pass(word|wd)?$|password|secret|token|fernet|requirepass|(^|_)auth$|(^|_)key$", re.I)
_NOT_SECRET_NAME = re.compile(r"(SecretName|_FILE|^secretKey|^envName)$")
# a whole value that is a reference to the env file: ${VAR} or ${VAR:?message} (never ${VAR:-literal})
_REFERENCE = re.compile(r"^\$\$?\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$|^\$\$?[A-Za-z_][A-Za-z0-9_]*$")
_URL_CREDENTIAL = re.compile(r"://[^/@\s:]*:(\$\{[^}]*\}|[^@\s/]+)@")
_JSON_PASSWORD = re.compile(r'"(?:password|secret|token)"\s*:\s*"([^"]*)"', re.I)
_REQUIREPASS = re.compile(r"--requirepass\s+(\S+)")


def literal_secrets(document: Any, where: str = "") -> list[str]:
    """Every place in a parsed YAML document where a secret is written out instead of referenced."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            path = f"{where}.{key}" if where else str(key)
            if (isinstance(value, (str, int, float)) and _SECRET_NAME.search(str(key))
                    and not _NOT_SECRET_NAME.search(str(key)) and value != ""
                    and not _REFERENCE.match(str(value))):
                found.append(f"{path}: secret-named key holds a literal")
            found += literal_secrets(value, path)
    elif isinstance(document, list):
        for index, item in enumerate(document):
            found += literal_secrets(item, f"{where}[{index}]")
        if all(isinstance(item, str) for item in document):  # a command: its words together
            found += _in_text(" ".join(document), where)
    elif isinstance(document, str):
        if "=" in document and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", document):  # environment as a list
            name, _, value = document.partition("=")
            found += literal_secrets({name: value}, where)
        found += _in_text(document, where)
    return found


def _in_text(text: str, where: str) -> list[str]:
    found = []
    for pattern, what in ((_URL_CREDENTIAL, "password in a URL"), (_JSON_PASSWORD, "password in JSON"),
                          (_REQUIREPASS, "password on a command line")):
        for match in pattern.finditer(text):
            if not _REFERENCE.match(match.group(1)) and not match.group(1).startswith(('"$', "$")):
                found.append(f"{where}: {what}")
    return found


class _UniqueKeys(yaml.SafeLoader):  # type: ignore[misc]
    """YAML as a strict reader sees it: a key written twice in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [k.value if isinstance(k, yaml.ScalarNode) else id(k) for k, _ in node.value]  # "<<" included
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(None, None, f"keys written twice: {twice}", node.start_mark)
        return dict(super().construct_mapping(node, deep=deep))


def strict_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 - a SafeLoader subclass


# --- docker-compose config -------------------------------------------------------------------------------------

def env_with_unique_secrets(folder: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the example in which each placeholder (change-me-...) becomes its own random value."""
    text = EXAMPLE.read_text()
    values: dict[str, str] = {}
    for placeholder in sorted(set(re.findall(r"change-me[A-Za-z0-9-]*", text)), key=len, reverse=True):
        values[placeholder] = "s" + secrets.token_hex(12)
        text = text.replace(placeholder, values[placeholder])
    path = folder / "strongroom.env"
    path.write_text(text)
    assigned = dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Z_][A-Z0-9_]*=", line))
    return path, assigned


def compose_config(env_file: Path, compose: Path = COMPOSE, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (make system-deps installs Debian's package)"
    # a clean environment: every value must come from the env file, none from the developer's shell
    env = {"PATH": os.environ["PATH"], "HOME": str(env_file.parent), "STRONGROOM_ENV_FILE": str(env_file)}
    return subprocess.run([binary, "--env-file", str(env_file), "-f", str(compose), *args, "config"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, str]]:
    env_file, assigned = env_with_unique_secrets(tmp_path_factory.mktemp("compose"))
    result = compose_config(env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout), assigned


def longest_task_seconds() -> float:
    raw = yaml.safe_load(STACK_CONFIG.read_text())
    run_timeout = parse_duration(raw.get("snapshot", {}).get("run_timeout", "50m"))
    rto = parse_duration(raw.get("restore_test", {}).get("rto", "4h"))
    drill = parse_duration(raw.get("recovery", {}).get("rto", "4h")) + parse_duration("1h")  # platform_drill's timeout
    return max(run_timeout, rto, drill).total_seconds()


def test_compose_runs_strongrooms_image_with_celery_in_airflow_3s_layout(rendered: tuple[dict[str, Any], Any]) -> None:
    config, _ = rendered
    services = config["services"]
    assert set(services) >= {"postgres", "redis", *AIRFLOW_SERVICES}
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert Path(service["build"]["context"]) == ROOT, name
        assert service["build"].get("dockerfile", "Dockerfile") == "Dockerfile", name
        environment = service["environment"]
        assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert environment["STRONGROOM_CONFIG"] == "/opt/airflow/config/strongroom.yaml", name
        mounts = [v for v in service["volumes"] if str(v).split(":")[1:2] == ["/opt/airflow/config"]]
        assert mounts and all(str(v).endswith(":ro") for v in mounts), f"{name}: configuration not read-only"
        assert Path(str(mounts[0]).split(":")[0]) == STACK_CONFIG.parent, name
    assert (ROOT / "Dockerfile").read_text().startswith("# Strongroom")
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES}
    assert commands["airflow-scheduler"] == "scheduler" and commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer" and commands["airflow-worker"] == "celery worker"
    assert commands["airflow-apiserver"] == "api-server"
    # workers scale: no fixed name, no published port, and the restore spool is an anonymous volume per replica
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "/var/lib/strongroom/spool" in worker["volumes"]
    assert yaml.safe_load(STACK_CONFIG.read_text())["restore"]["spool_dir"] == "/var/lib/strongroom/spool"


def test_compose_sets_the_broker_and_token_settings_for_long_tasks(rendered: tuple[dict[str, Any], Any]) -> None:
    config, _ = rendered
    longest = longest_task_seconds()
    for name in AIRFLOW_SERVICES:
        environment = config["services"][name]["environment"]
        visibility = float(environment["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"])
        assert visibility > longest, f"{name}: a task longer than {visibility}s would be delivered twice"
        assert float(environment["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]) >= visibility, name
        # renewed on heartbeats (every 5 s by default): far above them
        assert int(environment["AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME"]) >= 300, name
        assert environment["AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER"] == "1", name


def test_every_password_of_the_stack_comes_from_the_env_file(rendered: tuple[dict[str, Any], dict[str, str]]) -> None:
    config, assigned = rendered
    services = config["services"]
    for name in STACK_PASSWORDS:
        assert assigned.get(name, "").startswith("s"), f"{name} is not set by the example env file"
    postgres_password, redis_password = assigned["POSTGRES_PASSWORD"], assigned["REDIS_PASSWORD"]
    api_password = assigned["STRONGROOM_API_PASSWORD"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == postgres_password
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == redis_password
    assert services["sample-db"]["environment"]["POSTGRES_PASSWORD"] == assigned["SAMPLE_DB_PASSWORD"]
    assert "env_file" not in services["postgres"] and "env_file" not in services["redis"]
    for name in AIRFLOW_SERVICES:
        environment = services[name]["environment"]
        assert f"airflow:{postgres_password}@postgres" in environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert f"airflow:{postgres_password}@postgres" in environment["AIRFLOW__CELERY__RESULT_BACKEND"]
        assert environment["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{redis_password}@redis:6379/0"
        assert environment["AIRFLOW__API_AUTH__JWT_SECRET"] == assigned["AIRFLOW__API_AUTH__JWT_SECRET"]
        assert environment["AIRFLOW__CORE__FERNET_KEY"] == assigned["AIRFLOW__CORE__FERNET_KEY"]
        api = json.loads(environment["AIRFLOW_CONN_AIRFLOW_API"])
        assert (api["conn_type"], api["login"], api["password"]) == ("http", "strongroom", api_password)
    init = services["airflow-init"]["environment"]
    assert init["AIRFLOW_ADMIN_PASSWORD"] == assigned["AIRFLOW_ADMIN_PASSWORD"]


def test_a_password_missing_from_the_env_file_stops_the_stack(tmp_path: Path) -> None:
    env_file, _ = env_with_unique_secrets(tmp_path)
    env_file.write_text("".join(line for line in env_file.read_text().splitlines(keepends=True)
                                if not line.startswith("REDIS_PASSWORD=")))
    result = compose_config(env_file)
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr  # not an empty password silently


def test_the_compose_file_holds_no_literal_secret() -> None:
    text = COMPOSE.read_text()
    assert literal_secrets(strict_yaml(text)) == []
    placeholders = set(re.findall(r"change-me[A-Za-z0-9-]*", EXAMPLE.read_text()))
    assert placeholders and not [p for p in placeholders if p in text]


@pytest.mark.parametrize(("old", "new"), [
    ("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in the env file}@postgres/airflow\n    AIRFLOW__CELERY__RESULT",
     "hunter2@postgres/airflow\n    AIRFLOW__CELERY__RESULT"),
    ("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in the env file}\n      POSTGRES_DB",
     "POSTGRES_PASSWORD: hunter2\n      POSTGRES_DB"),
    ("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in the env file}\n      POSTGRES_DB",
     "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-hunter2}\n      POSTGRES_DB"),
    ('"password": "${STRONGROOM_API_PASSWORD:?set STRONGROOM_API_PASSWORD in the env file}"',
     '"password": "hunter2"'),
    ('exec redis-server --requirepass \\"$$REDIS_PASSWORD\\"', "exec redis-server --requirepass hunter2"),
    ("AIRFLOW__CORE__EXECUTOR: CeleryExecutor", "AIRFLOW__CORE__EXECUTOR: CeleryExecutor\n"
     "    AIRFLOW__API_AUTH__JWT_SECRET: 0123456789abcdef"),
    ("    AIRFLOW__CORE__EXECUTOR: CeleryExecutor", "    AIRFLOW__CORE__EXECUTOR: CeleryExecutor\n"
     "    AIRFLOW__CORE__FERNET_KEY: change-me-fernet-key"),
])
def test_the_secret_check_catches_an_inline_secret_in_the_compose_file(old: str, new: str) -> None:
    text = COMPOSE.read_text()
    assert old in text
    assert literal_secrets(strict_yaml(text.replace(old, new, 1)))


def test_a_key_written_twice_in_the_compose_file_is_caught() -> None:
    # the draft's fault: a service folded into another's depends_on, two merge keys in one mapping
    head = "    depends_on:\n      <<: *airflow-depends\n      airflow-init:\n"
    broken = COMPOSE.read_text().replace(
        head + "        condition: service_completed_successfully\n\n  airflow-scheduler:",
        head + "    <<: *airflow-common\n\n  airflow-scheduler:", 1)
    assert broken != COMPOSE.read_text()
    with pytest.raises(yaml.YAMLError, match="twice"):
        strict_yaml(broken)


def test_a_broker_timeout_below_the_longest_task_is_caught(tmp_path: Path) -> None:
    env_file, _ = env_with_unique_secrets(tmp_path)
    compose = tmp_path / "docker-compose.yaml"
    compose.write_text(COMPOSE.read_text().replace(
        'VISIBILITY_TIMEOUT: "21600"', 'VISIBILITY_TIMEOUT: "3600"').replace("context: ..", f"context: {ROOT}")
        .replace("${STRONGROOM_CONFIG_DIR:-./config}", str(STACK_CONFIG.parent)))
    result = compose_config(env_file, compose)
    assert result.returncode == 0, result.stderr
    worker = yaml.safe_load(result.stdout)["services"]["airflow-worker"]["environment"]
    assert float(worker["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) <= longest_task_seconds()


# --- the env example, .gitignore, the stack's configuration ---------------------------------------------------

def test_the_env_example_sets_every_variable_and_connection_the_stack_needs() -> None:
    example = EXAMPLE.read_text()
    assigned = {line.split("=", 1)[0]: line.split("=", 1)[1]
                for line in example.splitlines() if re.match(r"^[A-Z_][A-Z0-9_]*=", line)}
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", COMPOSE.read_text()))
    assert required and required <= set(assigned), f"not in the example: {sorted(required - set(assigned))}"
    raw = yaml.safe_load(STACK_CONFIG.read_text())
    conn_ids = {r["aws_conn_id"] for r in raw["regions"]} | {d["postgres_conn_id"] for d in raw["databases"]}
    conn_ids |= {raw["encryption"]["keyring_conn_id"], raw["restore"]["sandbox_conn_id"],
                 raw["restore_test"]["sandbox_conn_id"], raw["alerts"]["smtp_conn_id"]}
    for conn_id in conn_ids:
        name = "AIRFLOW_CONN_" + conn_id.upper()
        assert name in assigned, f"connection {conn_id} is not documented in the example"
        assert isinstance(json.loads(assigned[name]), dict), name
    # the API connection for pools is built by the compose file from STRONGROOM_API_PASSWORD
    assert raw["pools"]["api_conn_id"] == "airflow_api" and "AIRFLOW_CONN_AIRFLOW_API:" in COMPOSE.read_text()


def test_the_real_env_file_is_never_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/strongroom.env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "deploy/strongroom.env is not in .gitignore"
    example = subprocess.run(["git", "check-ignore", "-q", "deploy/strongroom.env.example"], cwd=ROOT, check=False)
    assert example.returncode == 1


def test_the_stack_configuration_loads_and_allows_plain_http_only_explicitly(tmp_path: Path) -> None:
    raw = yaml.safe_load(STACK_CONFIG.read_text())
    assert raw["regions"] and all(region.get("allow_insecure_transport") is True for region in raw["regions"])
    if "allow_insecure_transport" in RegionConfig.model_fields:
        config = load_config(STACK_CONFIG)
        assert all(region.model_dump()["allow_insecure_transport"] is True for region in config.regions)
    else:  # until the transport key lands: everything else of the file is valid today
        for region in raw["regions"]:
            del region["allow_insecure_transport"]
        copy = tmp_path / "strongroom.yaml"
        copy.write_text(yaml.safe_dump(raw))
        config = load_config(copy)
    assert [r.name for r in config.regions] == [r["name"] for r in raw["regions"]]
    # each database names its server, so the DAG processor builds the dump pools without connection look-ups
    assert config.databases and all(db.server for db in config.databases)


# --- Helm -----------------------------------------------------------------------------------------------------

def test_the_helm_values_deploy_strongroom_on_celery_without_a_literal_secret() -> None:
    values = strict_yaml(HELM.read_text())
    assert literal_secrets(values) == []
    assert values["executor"] == "CeleryExecutor"
    assert values["images"]["airflow"]["repository"] != "apache/airflow"
    assert values["airflowVersion"].startswith("3.")
    assert values["workers"]["persistence"]["enabled"] is False
    assert values["jwtSecretName"] and values["fernetKeySecretName"] and values["data"]["metadataSecretName"]
    assert values["redis"]["passwordSecretName"] and values["data"]["brokerUrlSecretName"]
    config = values["config"]
    assert float(config["celery_broker_transport_options"]["visibility_timeout"]) > longest_task_seconds()
    assert float(config["scheduler"]["task_queued_timeout"]) >= float(
        config["celery_broker_transport_options"]["visibility_timeout"])
    mounts = [m for m in values["volumeMounts"] if m["mountPath"] == "/opt/airflow/config"]
    assert mounts and mounts[0]["readOnly"] is True
    volume = next(v for v in values["volumes"] if v["name"] == mounts[0]["name"])
    assert "configMap" in volume
    assert "secretRef" in values["extraEnvFrom"]
    placeholders = set(re.findall(r"change-me[A-Za-z0-9-]*", EXAMPLE.read_text()))
    assert not [p for p in placeholders if p in HELM.read_text()]


@pytest.mark.parametrize(("old", "new"), [
    ("fernetKeySecretName: strongroom-fernet-key", "fernetKey: Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZg=="),
    ("jwtSecretName: strongroom-jwt-secret", "jwtSecret: 0123456789abcdef"),
    ("  passwordSecretName: strongroom-redis-password", "  password: hunter2"),
    ("postgresql:\n  enabled: false", "postgresql:\n  enabled: false\n  auth:\n    password: hunter2"),
    ("env:\n  - name: STRONGROOM_CONFIG", "env:\n  - name: AIRFLOW_CONN_PG_SHOP\n"
     "    value: postgresql://backup:hunter2@db1/shop\n  - name: STRONGROOM_CONFIG"),
])
def test_the_secret_check_catches_an_inline_secret_in_the_helm_values(old: str, new: str) -> None:
    text = HELM.read_text()
    assert old in text
    assert literal_secrets(strict_yaml(text.replace(old, new, 1)))
