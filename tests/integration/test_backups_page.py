"""The Backups page under a real `airflow standalone`: its API refuses anonymous requests, and headless
Chromium logs in, opens the page from the navigation route and sees every database and region."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from devstack import free_port
from tests.conftest import REGIONS, ROOT, Stack

ARTIFACTS = ROOT / "tests" / "artifacts"
USER, PASSWORD = "ops", "ops-password-1"


def _request(url: str, *, token: str | None = None, body: dict | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback http
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def airflow_ui(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`airflow standalone` on a free port, with the plugins folder and the test stack's connections."""
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database

    snapshot_database(load_config(stack.config_path), "shop", connections())  # something to show
    home = tmp_path_factory.mktemp("standalone")
    (home / "dags").mkdir()  # no DAGs: this test is about the page, and parsing costs time on 2 cores
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({USER: PASSWORD}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update({
        "PATH": f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "STRONGROOM_CONFIG": str(stack.config_path),
    })
    log = (home / "standalone.log").open("wb")
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "airflow"), "standalone"], env=env, cwd=home,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                if _request(f"{base}/api/v2/monitor/health")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("airflow standalone did not come up:\n"
                                   + (home / "standalone.log").read_text(errors="replace")[-3000:])
            time.sleep(1)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _token(base: str) -> str:
    status, body = _request(f"{base}/auth/token", body={"username": USER, "password": PASSWORD})
    assert status == 201, body
    return str(json.loads(body)["access_token"])


def test_plugin_api_refuses_requests_without_a_token(airflow_ui: str, stack: Stack) -> None:
    assert _request(f"{airflow_ui}/strongroom/api/status")[0] == 401
    assert _request(f"{airflow_ui}/strongroom/api/status", token="not-a-token")[0] in (401, 403)
    assert _request(f"{airflow_ui}/strongroom/api/files/restore-tests/shop/x/docs/index.html")[0] == 401
    status, body = _request(f"{airflow_ui}/strongroom/api/status", token=_token(airflow_ui))
    assert status == 200, body
    data = json.loads(body)
    assert [d["name"] for d in data["databases"]] == ["shop", "bulk"]
    shop = {r["region"]: r for r in data["databases"][0]["regions"]}
    assert set(shop) == set(REGIONS)
    assert all(r["newest"] and r["rag"] == "green" for r in shop.values())  # just snapshotted
    # only restore-test Data Docs are served: never a manifest or snapshot data, even to a logged-in user
    manifest = next(k for k in stack.list_keys() if k.startswith("databases/shop/manifests/"))
    for key in (manifest, "restore-tests/shop/x/../../../" + manifest, "restore-tests/shop/x/result.json"):
        assert _request(f"{airflow_ui}/strongroom/api/files/{key}", token=_token(airflow_ui))[0] == 404, key
    status, body = _request(f"{airflow_ui}/api/v2/plugins", token=_token(airflow_ui))
    plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == "strongroom")
    assert plugin["react_apps"][0]["url_route"] == "backups"


def test_backups_page_in_a_real_browser(airflow_ui: str) -> None:
    from tests.browser import Chromium

    browser = Chromium().start()
    try:
        browser.goto(f"{airflow_ui}/auth/login?next=/plugin/backups")
        browser.wait_for("!!document.querySelector('input[name=username]')")
        browser.type_into("input[name=username]", USER)
        browser.type_into("input[name=password]", PASSWORD)
        browser.evaluate("document.querySelector('button[type=submit]').click()")
        browser.wait_for("location.pathname === '/plugin/backups'")
        browser.wait_for("document.querySelectorAll('#strongroom-backups [data-region]').length >= 6", timeout=60)
        shot = browser.screenshot(ARTIFACTS / "backups-page.png")
        text = browser.text()
        assert "Strongroom backups" in text
        databases = browser.evaluate(
            "[...document.querySelectorAll('[data-database]')].map(e => e.dataset.database)")
        assert databases == ["shop", "bulk"]
        for region in REGIONS:
            assert region in text
        colours = browser.evaluate("[...document.querySelectorAll('[data-database=shop] tbody [data-rag]')]"
                                   ".map(e => e.dataset.rag)")
        assert colours == ["green"] * len(REGIONS)
        assert "Backups" in text.split()  # the navigation entry (the page title says "backups")
        assert shot.stat().st_size > 10_000
    except Exception:
        browser.screenshot(ARTIFACTS / "backups-page-failure.png")
        raise
    finally:
        browser.stop()
