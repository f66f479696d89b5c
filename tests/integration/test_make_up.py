"""A fresh `make up` stack, started the way `make up` starts it (scripts/up.py, here on random loopback
ports and a throwaway home), as a new ops user meets it:

* after start-up every scheduled DAG has a successful run, and backup_monitor ran after the restore test
  and succeeded (nothing red on a fresh stack);
* the task logs are for people: a restore test's log has no Great Expectations INFO chatter and no
  repeated "AWS Connection ... retrieved", and every task ends with one summary line;
* an alert reaches the local SMTP sink: up prints its subject, and the Backups page's alert panel shows it;
* the Backups page and the restore test's Data Docs render in real Chromium whose network is limited to
  loopback (no CDN), with Airflow's look in light and dark mode.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack import free_port, stop_group
from tests.conftest import ROOT
from tests.standalone import request

ARTIFACTS = ROOT / "tests" / "artifacts"
READY_TIMEOUT = 1800  # two shared cores: migrate, parse six DAGs, four start-up runs with a restore test


@dataclass
class Up:
    base: str
    home: Path
    output: Path
    proc: subprocess.Popen[bytes]

    def printed(self) -> str:
        return self.output.read_text(errors="replace")

    def token(self) -> str:
        status, body = request(f"{self.base}/auth/token", body={"username": "admin", "password": "admin"})
        assert status == 201, body
        return str(json.loads(body)["access_token"])

    def api(self, path: str, body: dict | None = None) -> Any:
        status, raw = request(f"{self.base}/api/v2{path}", token=self.token(), body=body)
        assert status < 300, (path, status, raw[:500])
        return json.loads(raw)

    def wait_printed(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.printed():
            assert self.proc.poll() is None, f"up exited:\n{self.printed()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {text!r}:\n{self.printed()[-3000:]}"
            time.sleep(2)
        return next(line for line in self.printed().splitlines() if text in line)

    def task_log(self, dag_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """The entries of the first successful try's log of ``task_id`` (a glob: ``snapshot_and_encrypt.*``
        names the per-server dump tasks): a try the S3 server failed and a retry mended has no summary."""
        folder = self.home / "logs" / f"dag_id={dag_id}"
        name = "attempt=*.log" if map_index < 0 else f"map_index={map_index}/attempt=*.log"
        files = sorted(folder.glob(f"run_id=*/task_id={task_id}/{name}"))
        assert files, f"no log of {dag_id}.{task_id} under {folder}"
        logs = [[json.loads(line) for line in f.read_text().splitlines() if line.startswith("{")] for f in files]
        ended = [entries for entries in logs if not any(e.get("level") == "error" for e in entries)]
        return (ended or logs)[0]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    home = tmp_path_factory.mktemp("up")
    port = free_port()
    # a fresh shell: none of the test session's Airflow settings, connections or configuration
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) and k not in ("AIRFLOW_HOME", "STRONGROOM_CONFIG")}
    output = home / "up.out"
    with output.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "up.py"), "--port", str(port),
                                 "--home", str(home / "airflow"), "--scale", "1"],
                                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    stack = Up(f"http://127.0.0.1:{port}", home / "airflow", output, proc)
    try:
        stack.wait_printed("up: ready", READY_TIMEOUT)
        yield stack
    finally:
        stop_group(proc)


def test_fresh_stack_is_green(up: Up) -> None:
    assert "up: ready: every DAG is green" in up.printed(), up.printed()[-3000:]
    dags = up.api("/dags?limit=100")["dags"]
    scheduled = sorted(d["dag_id"] for d in dags if d.get("timetable_summary") not in (None, "None"))
    assert scheduled == [
        "backup_monitor", "backup_object_storage", "platform_drill", "restore_test", "snapshot_databases"]
    finished: dict[str, list[dict[str, Any]]] = {}
    for dag_id in scheduled:
        runs = up.api(f"/dags/{dag_id}/dagRuns?limit=50")["dag_runs"]
        finished[dag_id] = [r for r in runs if r["state"] == "success"]
        assert finished[dag_id], (dag_id, [(r["dag_run_id"], r["state"]) for r in runs])
    tested = min(r["end_date"] for r in finished["restore_test"])
    assert any(r["start_date"] > tested for r in finished["backup_monitor"]), (tested, finished["backup_monitor"])
    assert not [d["dag_id"] for d in dags if d["is_paused"]]  # manual DAGs too: a triggered run would wait


def test_task_logs_have_no_chatter_and_end_with_a_summary_line(up: Up) -> None:
    entries = up.task_log("restore_test", "restore_and_validate", map_index=0)
    events = [str(e.get("event", "")) for e in entries]
    gx = [e for e in entries if str(e.get("logger", "")).startswith("great_expectations")
          and e.get("level") in ("info", "debug")]
    assert not gx, gx[:3]
    assert sum("credentials retrieved" in e for e in events) == 0, events
    assert not [e for e in events if "generic SQLDatasource" in e]  # GX's advice, as a py.warnings line
    assert any("restore test" in e.lower() or "passed" in e for e in events)
    summaries = [e for e in events if e.startswith("restore_and_validate [shop] done in ")]
    assert len(summaries) == 1 and "database shop" in summaries[0], events[-5:]
    assert not [e for e in events if e.startswith("Done. Returned value was")]
    for dag_id, task_id, index in (("snapshot_databases", "snapshot_and_encrypt.*", 0),
                                   ("backup_object_storage", "backup_pass", 0),
                                   ("backup_monitor", "check_backups", -1)):
        events = [str(e.get("event", "")) for e in up.task_log(dag_id, task_id, index)]
        # the summary names the task (the dump task of a server: snapshot_and_encrypt.<server>)
        assert [e for e in events if re.match(task_id.replace(".*", r"\.\S+") + " ", e)][-1:], (dag_id, events[-5:])
        assert not [e for e in events if "credentials retrieved" in e], (dag_id, events)


def test_an_alert_reaches_the_sink_and_the_backups_page(up: Up) -> None:
    conf = {"snapshot": "2000-01-01T00:00:00+00:00"}  # before any snapshot: plan fails, the callback alerts
    run = up.api("/dags/restore_database/dagRuns", {"logical_date": None, "conf": conf})
    line = up.wait_printed("FAILED restore_database.plan", 300)
    assert "alert received by oncall@example.com: [strongroom] FAILED restore_database.plan" in line
    deadline = time.monotonic() + 60
    while True:
        status, body = request(f"{up.base}/strongroom/api/status", token=up.token())
        assert status == 200, body
        alerts = json.loads(body)["alerts"]
        if "FAILED restore_database.plan" in alerts.get("last_sent", {}).get("subject", ""):
            break
        assert time.monotonic() < deadline, (alerts, run["dag_run_id"])
        time.sleep(1)
    assert alerts["last_sent"]["channels"] == ["email to oncall@example.com"]


def _grow_shop(up: Up) -> None:
    """Make the next snapshot of shop several times bigger than the last: a size jump to mark."""
    import re

    import psycopg

    port = int(re.search(r"server on 127\.0\.0\.1:(\d+) \(database shop\)", up.printed()).group(1))  # type: ignore[union-attr]
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password="demo-superuser-pw", dbname="shop",
                         autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS scans (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO scans SELECT g, string_agg(md5(random()::text || g || i), '') "
                     "FROM generate_series(1, 2500) g, generate_series(1, 40) i GROUP BY g ON CONFLICT DO NOTHING")


def _snapshot_now(up: Up) -> None:
    run = up.api("/dags/snapshot_databases/dagRuns", {"logical_date": None, "conf": {}})
    path = f"/dags/snapshot_databases/dagRuns/{run['dag_run_id']}"
    deadline = time.monotonic() + 600
    while (state := up.api(path)["state"]) not in ("success", "failed"):
        assert time.monotonic() < deadline
        time.sleep(2)
    assert state == "success"


def _colour(browser: Any, expression: str) -> str:
    return str(browser.evaluate(expression))


def test_backups_page_and_data_docs_render_offline_in_airflows_look(up: Up) -> None:
    from tests.browser import LOOPBACK_ONLY, Chromium

    _grow_shop(up)
    _snapshot_now(up)
    browser = Chromium(extra_flags=LOOPBACK_ONLY).start()
    try:
        browser.send("Network.enable")
        browser.goto(f"{up.base}/auth/login?next=/plugin/backups")
        browser.wait_for("!!document.querySelector('input[name=username]')", timeout=60)
        browser.type_into("input[name=username]", "admin")
        browser.type_into("input[name=password]", "admin")
        browser.evaluate("document.querySelector('button[type=submit]').click()")
        browser.wait_for("document.querySelectorAll('[data-database=shop] [data-region]').length === 3", timeout=90)
        browser.wait_for("!!document.querySelector('[data-panel=alerts]')")
        shot = browser.screenshot(ARTIFACTS / "backups-page-light.png")
        assert shot.stat().st_size > 10_000
        text = browser.text()
        assert "Strongroom backups" in text and "Alert delivery" in text
        # Airflow's theme: the page's text colour is the theme's --chakra-colors-fg, in light and in dark mode
        probe = ("(() => { const p = document.createElement('span'); p.style.color = 'var(--chakra-colors-fg)';"
                 " document.body.appendChild(p); const c = getComputedStyle(p).color; p.remove(); return c; })()")
        page = "getComputedStyle(document.getElementById('strongroom-backups')).color"
        assert browser.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--chakra-colors-fg')")
        light = _colour(browser, page)
        assert light == _colour(browser, probe)
        root = "document.documentElement"
        browser.evaluate(f"{root}.classList.remove('light'); {root}.classList.add('dark'); "
                         f"{root}.style.colorScheme = 'dark'")
        browser.wait_for(f"{page} !== {json.dumps(light)}")
        assert _colour(browser, page) == _colour(browser, probe)
        browser.screenshot(ARTIFACTS / "backups-page-dark.png")
        browser.evaluate(f"{root}.classList.remove('dark'); {root}.classList.add('light'); "
                         f"{root}.style.colorScheme = 'light'")
        # the size trend: an axis from zero, and the jump the grown database made is marked
        assert browser.evaluate("document.querySelector('[data-database=shop] [data-axis=zero]').textContent") == "0"
        browser.wait_for("document.querySelectorAll('[data-database=shop] circle[data-jump]').length >= 1")
        assert "size jump: snapshot" in browser.text()
        # the alert panel shows the alert the previous test sent
        sent = browser.evaluate("document.querySelector('[data-alert=sent]').innerText")
        assert "FAILED restore_database.plan" in sent and "oncall@example.com" in sent
        # Data Docs: a real link, and the page renders with no internet
        link = browser.evaluate(
            "(() => { const a = document.querySelector('[data-database=shop] a[data-link=data-docs]');"
            " return a && {href: a.href, text: a.innerText, decoration: getComputedStyle(a).textDecorationLine}; })()")
        assert link and link["href"].startswith(up.base + "/strongroom/api/files/restore-tests/shop/")
        assert "Data Docs" in link["text"] and link["decoration"] == "underline"
        browser.goto(link["href"])
        browser.wait_for("document.querySelectorAll('table[data-rendered-offline] tbody tr').length >= 1", timeout=60)
        browser.screenshot(ARTIFACTS / "data-docs-index.png")
        assert browser.evaluate("window.strongroomOfflineDocs === true")
        row_link = browser.evaluate("document.querySelector('a.sr-row-link').href")
        browser.goto(row_link)
        browser.wait_for("document.body && document.body.innerText.includes('Expectation')", timeout=60)
        docs_text = browser.text()
        assert "shop" in docs_text
        browser.screenshot(ARTIFACTS / "data-docs-validation.png")
        # nothing was fetched from another host
        urls = browser.requested_urls()
        local = (up.base, "blob:" + up.base, "data:", "about:")  # blob: URLs are made by the page itself
        assert urls and all(u.startswith(local) for u in urls), \
            [u for u in urls if not u.startswith(local)]
    except Exception:
        browser.screenshot(ARTIFACTS / "make-up-browser-failure.png")
        raise
    finally:
        browser.stop()
