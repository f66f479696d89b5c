"""The Backups page under a real `airflow standalone`: its API refuses anonymous requests, and headless
Chromium logs in, opens the page from the navigation route and sees every database and region."""

from __future__ import annotations

import json

from tests.conftest import REGIONS, ROOT, Stack
from tests.standalone import PASSWORDS, Airflow, request

ARTIFACTS = ROOT / "tests" / "artifacts"
USER = "ops"  # a viewer


def test_plugin_api_refuses_requests_without_a_token(airflow_ui: Airflow, stack: Stack) -> None:
    base = airflow_ui.base
    assert request(f"{base}/strongroom/api/status")[0] == 401
    assert request(f"{base}/strongroom/api/status", token="not-a-token")[0] in (401, 403)
    assert request(f"{base}/strongroom/api/files/restore-tests/shop/x/docs/index.html")[0] == 401
    status, body = request(f"{base}/strongroom/api/status", token=airflow_ui.token(USER))
    assert status == 200, body
    data = json.loads(body)
    assert [d["name"] for d in data["databases"]] == ["shop", "bulk", "ledger"]
    shop = {r["region"]: r for r in data["databases"][0]["regions"]}
    assert set(shop) == set(REGIONS)
    assert all(r["newest"] and r["rag"] == "green" for r in shop.values())  # just snapshotted
    # only restore-test Data Docs are served: never a manifest or snapshot data, even to a logged-in user
    manifest = next(k for k in stack.list_keys() if k.startswith("databases/shop/manifests/"))
    for key in (manifest, "restore-tests/shop/x/../../../" + manifest, "restore-tests/shop/x/result.json"):
        assert request(f"{base}/strongroom/api/files/{key}", token=airflow_ui.token(USER))[0] == 404, key
    status, body = request(f"{base}/api/v2/plugins", token=airflow_ui.token(USER))
    plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == "strongroom")
    assert plugin["react_apps"][0]["url_route"] == "backups"


def test_backups_page_in_a_real_browser(airflow_ui: Airflow, stack: Stack) -> None:
    base = airflow_ui.base
    from tests.browser import Chromium

    browser = Chromium().start()
    try:
        browser.goto(f"{base}/auth/login?next=/plugin/backups")
        browser.wait_for("!!document.querySelector('input[name=username]')")
        browser.type_into("input[name=username]", USER)
        browser.type_into("input[name=password]", PASSWORDS[USER])
        browser.evaluate("document.querySelector('button[type=submit]').click()")
        browser.wait_for("location.pathname === '/plugin/backups'")
        browser.wait_for("document.querySelectorAll('#strongroom-backups [data-region]').length >= 6", timeout=60)
        shot = browser.screenshot(ARTIFACTS / "backups-page.png")
        text = browser.text()
        assert "Strongroom backups" in text
        databases = browser.evaluate(
            "[...document.querySelectorAll('[data-database]')].map(e => e.dataset.database)")
        assert databases == ["shop", "bulk", "ledger"]
        for region in REGIONS:
            assert region in text
        colours = browser.evaluate("[...document.querySelectorAll('[data-database=shop] tbody [data-rag]')]"
                                   ".map(e => e.dataset.rag)")
        assert colours == ["green"] * len(REGIONS)
        # the size trend: one point per committed snapshot of shop in the primary, drawn as a line
        trend = browser.evaluate("document.querySelector('[data-database=shop] [data-trend]').dataset.trend")
        assert int(trend) == len([k for k in stack.list_keys() if k.startswith("databases/shop/manifests/")])
        assert browser.evaluate("!!document.querySelector('[data-database=shop] svg polyline')")
        assert "Stored size per snapshot" in text and "newest" in text
        assert "Backups" in text.split()  # the navigation entry (the page title says "backups")
        assert shot.stat().st_size > 10_000
    except Exception:
        browser.screenshot(ARTIFACTS / "backups-page-failure.png")
        raise
    finally:
        browser.stop()
