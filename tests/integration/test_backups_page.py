"""The Backups page under a real `airflow standalone`: its API refuses anonymous requests, and headless
Chromium logs in, opens the page from the navigation route and sees every database and region."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import BUCKET, PRIMARY, REGIONS, ROOT, Stack
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


def _drill_record(ledger: Path) -> str:
    """A platform drill's evidence, sealed as the drill seals it, in the primary (the page reads it first)."""
    from datetime import UTC, datetime

    from strongroom import drill, layout, records
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config

    config, conns = load_config(ledger), connections()
    now = datetime.now(UTC)
    evidence = {"drill_id": layout.new_platform_id(now), "drilled_at": now.isoformat(), "region": "eu-north-1",
                "point_id": "20261129T010000Z-a1b2c3", "total_seconds": 75.5, "rto_seconds": 14400.0,
                "within_rto": True, "success": True, "slowest": "database shop snapshot x (1m02s)", "error": None,
                "stored_in": [PRIMARY], "parts": []}
    evidence["headline"] = drill.drill_headline(evidence)
    key = layout.platform_drill_key(evidence["drill_id"])
    records.write(conns.store(config.primary, config.transfer), conns.keyring(config.keyring_conn_id(config.primary)),
                  key, evidence, kind=drill.DRILL_KIND)
    return key


def test_backups_page_in_a_real_browser(airflow_ui: Airflow, stack: Stack, ledger: Path) -> None:
    base = airflow_ui.base
    from tests.browser import Chromium

    drill_key = _drill_record(ledger)
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
        # the last platform drill: passed, when, from which region, how long against the RTO
        drill = browser.evaluate("document.querySelector('[data-panel=platform-drill]').innerText")
        assert "Platform drill" in drill and "passed" in drill and "from eu-north-1" in drill, drill
        assert "recovered in 76s (RTO 4h00m, within)" in drill, drill
        assert browser.evaluate("document.querySelector('[data-panel=platform-drill] [data-drill]').dataset.drill"
                                ) == "passed"
    except Exception:
        browser.screenshot(ARTIFACTS / "backups-page-failure.png")
        raise
    finally:
        browser.stop()
        stack.client.delete_object(Bucket=BUCKET, Key=drill_key)


def test_a_forged_restore_test_result_is_flagged_not_shown_as_passed(airflow_ui: Airflow, stack: Stack) -> None:
    """Someone with write access to the primary bucket writes a 'passed' restore-test result for ledger: the
    page's API ignores it and names it as unauthenticated, and the page says so in the browser."""
    from datetime import UTC, datetime

    from tests.browser import Chromium

    key = "restore-tests/ledger/20261231T000000Z-ffffff/result.json"
    stack.write(key, json.dumps({"database": "ledger", "snapshot_id": "20261231T000000Z-ffffff", "region": "x",
                                 "tested_at": datetime.now(UTC).isoformat(), "success": True}).encode())
    browser = None
    try:
        status, body = request(f"{airflow_ui.base}/strongroom/api/status", token=airflow_ui.token(USER))
        assert status == 200, body
        ledger = next(d for d in json.loads(body)["databases"] if d["name"] == "ledger")
        test = ledger["restore_test"]
        assert test["success"] is False and test["result_key"] != key
        assert test["unauthenticated"] == [f"restore-test record {key} is not authenticated (no valid seal)"]

        browser = Chromium().start()
        browser.goto(f"{airflow_ui.base}/auth/login?next=/plugin/backups")
        browser.wait_for("!!document.querySelector('input[name=username]')")
        browser.type_into("input[name=username]", USER)
        browser.type_into("input[name=password]", PASSWORDS[USER])
        browser.evaluate("document.querySelector('button[type=submit]').click()")
        browser.wait_for("!!document.querySelector('[data-database=ledger] [data-unauthenticated]')", timeout=60)
        flagged = browser.evaluate(
            "document.querySelector('[data-database=ledger] [data-unauthenticated]').textContent")
        assert flagged.startswith("UNAUTHENTICATED (ignored): restore-test record " + key)
        assert not browser.evaluate("!!document.querySelector('[data-database=shop] [data-unauthenticated]')")
    finally:
        if browser is not None:
            browser.stop()
        stack.client.delete_object(Bucket=BUCKET, Key=key)
