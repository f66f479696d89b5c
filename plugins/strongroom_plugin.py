"""The "Backups" page in the Airflow UI: a FastAPI app behind Airflow's authentication plus a React view.

``/strongroom/api/status`` returns what ``strongroom.monitor.dashboard`` reads from the buckets (the same
catalog as ``strongroom status --json``, plus the newest restore test per database): it never reads
Airflow's database. ``/strongroom/api/files/restore-tests/<db>/<run>/docs/...`` serves a restore test's
Data Docs from the primary bucket. Every data endpoint requires an authenticated Airflow user (the UI's
``_token`` cookie or an ``Authorization: Bearer`` token); the JS bundle itself holds no data.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import Response

PREFIX = "/strongroom"
DOCS_PREFIX = "restore-tests/"

app = FastAPI(title="Strongroom backups API")


def _authenticated() -> Any:
    from airflow.api_fastapi.core_api.security import requires_authenticated

    return requires_authenticated()


@app.get("/api/status", dependencies=[Depends(_authenticated())])
def status() -> dict[str, Any]:
    """Per database and region: newest backup, age, RPO colour, gaps, last error; newest restore test."""
    from strongroom import airflow_adapter, monitor
    from strongroom.config import load_config
    from strongroom.errors import StrongroomError

    try:
        return monitor.dashboard(load_config(), airflow_adapter.connections())
    except StrongroomError as exc:  # e.g. a bad configuration: say so, one line, no traceback
        raise HTTPException(status_code=503, detail=f"{type(exc).__name__}: {exc}") from None


@app.get("/api/files/{key:path}", dependencies=[Depends(_authenticated())])
def restore_test_file(key: str) -> Response:
    """A restore test's Data Docs (HTML, no row values), from the primary region."""
    from strongroom import airflow_adapter
    from strongroom.config import load_config
    from strongroom.errors import StrongroomError

    parts = key.split("/")
    if not key.startswith(DOCS_PREFIX) or "docs" not in parts[3:4] or ".." in parts:
        raise HTTPException(status_code=404, detail="only restore-test Data Docs are served here")
    config = load_config()
    try:
        store = airflow_adapter.connections().store(config.primary, config.transfer)
        if store.head(key) is None:
            raise HTTPException(status_code=404, detail=f"{key} not found in {config.primary.name}")
        body = store.get_bytes(key)
    except StrongroomError as exc:
        raise HTTPException(status_code=503, detail=f"{type(exc).__name__}: {exc}") from None
    media = mimetypes.guess_type(key)[0] or "application/octet-stream"
    return Response(body, media_type=media, headers={"Content-Security-Policy": "sandbox allow-scripts"})


APP_JS = r"""
const React = globalThis.React;
const h = React.createElement;
const COLOURS = {green: "#2f9e44", amber: "#f59f00", red: "#e03131"};

function age(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const m = Math.floor(seconds / 60);
  if (m < 60) return m + "m";
  const hrs = Math.floor(m / 60);
  return hrs < 48 ? hrs + "h" + String(m % 60).padStart(2, "0") + "m" : Math.floor(hrs / 24) + "d";
}

function Dot(props) {
  return h("span", {title: props.rag, "data-rag": props.rag, style: {display: "inline-block", width: "0.8em",
    height: "0.8em", borderRadius: "50%", marginRight: "0.4em", background: COLOURS[props.rag] || "#868e96"}});
}

function RestoreTest(props) {
  const t = props.test;
  if (!t) return h("span", {style: {color: COLOURS.red}}, "no restore test on record");
  const docs = t.docs_key ? h("a", {href: "/strongroom/api/files/" + t.docs_key, target: "_blank",
                                    rel: "noopener"}, "Data Docs") : null;
  return h("span", null,
    h(Dot, {rag: t.success ? "green" : "red"}),
    (t.success ? "passed " : "FAILED ") + t.tested_at.replace("T", " ").slice(0, 16) + " UTC",
    t.restore_seconds !== null ? " · restored in " + t.restore_seconds + "s" : "",
    " · snapshot " + t.snapshot_id + " from " + t.region + " ", docs,
    (t.unauthenticated || []).map(u => h("div", {key: u, "data-unauthenticated": "restore-test",
                                                  style: {color: COLOURS.red}}, "UNAUTHENTICATED (ignored): " + u)));
}

function Warnings(props) {
  const items = [...(props.data.warnings || []).map(w => ["warning", w]),
                 ...(props.data.unauthenticated || []).map(u => ["unauthenticated",
                                                                 "UNAUTHENTICATED (ignored): " + u])];
  if (!items.length) return null;
  return h("ul", {role: "alert", "data-warnings": items.length, style: {color: COLOURS.amber}},
    items.map(([kind, text]) => h("li", {key: text, "data-kind": kind}, text)));
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function SizeTrend(props) {
  const points = props.trend || [];
  if (!points.length) return h("span", null, "no snapshots");
  const w = 240, ht = 28, sizes = points.map(p => p.stored_bytes);
  const lo = Math.min(...sizes), hi = Math.max(...sizes), span = hi - lo || 1;
  const xy = points.map((p, i) => [points.length > 1 ? i * w / (points.length - 1) : w / 2,
                                   ht - 3 - (p.stored_bytes - lo) * (ht - 6) / span]);
  const last = points[points.length - 1];
  return h("span", {"data-trend": points.length},
    h("svg", {width: w, height: ht, viewBox: "0 0 " + w + " " + ht, role: "img",
              "aria-label": "stored size of the last " + points.length + " snapshots",
              style: {display: "inline-block", verticalAlign: "middle", marginRight: "0.6em"}},
      h("polyline", {points: xy.map(p => p.join(",")).join(" "), fill: "none", stroke: "#4c6ef5",
                     strokeWidth: 2}),
      h("circle", {cx: xy[xy.length - 1][0], cy: xy[xy.length - 1][1], r: 3, fill: "#4c6ef5"})),
    "newest " + bytes(last.stored_bytes) + " · range " + bytes(lo) + "–" + bytes(hi) + " over " +
    points.length + " snapshots");
}

function Database(props) {
  const db = props.db, cell = {padding: "0.3em 0.8em", borderBottom: "1px solid #8884", textAlign: "left"};
  const bucket = props.kind === "bucket";
  return h("section", {"data-database": bucket ? undefined : db.name, "data-bucket": bucket ? db.name : undefined,
                       style: {marginBottom: "1.5em"}},
    h("h3", {style: {fontSize: "1.2em", fontWeight: 600}}, (bucket ? "bucket " : "") + db.name),
    bucket ? null : h("p", null, "Last restore test: ", h(RestoreTest, {test: db.restore_test})),
    bucket ? null : h("p", null, "Size trend: ", h(SizeTrend, {trend: db.size_trend})),
    h("table", {style: {borderCollapse: "collapse"}},
      h("thead", null, h("tr", null, ["region", "newest backup", "age", bucket ? "points" : "snapshots",
                                      "gaps", "last error"]
        .map(c => h("th", {key: c, style: cell}, c)))),
      h("tbody", null, db.regions.map(r => h("tr", {key: r.region, "data-region": r.region},
        h("td", {style: cell}, r.region),
        h("td", {style: cell}, r.newest || "none"),
        h("td", {style: cell}, h(Dot, {rag: r.rag}), age(r.age_seconds)),
        h("td", {style: cell}, r.snapshots),
        h("td", {style: cell}, r.gaps.length ? r.gaps.length + ": " + r.gaps.slice(0, 3).join(", ") : "none"),
        h("td", {style: cell}, r.last_error || ""))))));
}

function Backups() {
  const [data, setData] = React.useState(null);
  const [error, setError] = React.useState(null);
  const load = () => fetch("/strongroom/api/status", {credentials: "same-origin"})
    .then(r => r.ok ? r.json() : r.text().then(t => { throw new Error(r.status + " " + t); }))
    .then(d => { setData(d); setError(null); }, e => setError(String(e)));
  React.useEffect(() => { load(); const id = setInterval(load, 60000); return () => clearInterval(id); }, []);
  return h("div", {id: "strongroom-backups", style: {padding: "1rem"}},
    h("h2", {style: {fontSize: "1.5em", fontWeight: 700}}, "Strongroom backups"),
    error ? h("p", {role: "alert", style: {color: COLOURS.red}}, "Could not load the status: " + error) : null,
    !data && !error ? h("p", null, "Reading the buckets…") : null,
    data ? h("p", null, "Read from the buckets at " + data.generated_at + ". ",
      h(Dot, {rag: "green"}), "under " + age(data.rpo_seconds) + " (RPO) ",
      h(Dot, {rag: "amber"}), "up to " + age(data.threshold_seconds) + " ",
      h(Dot, {rag: "red"}), "older: the backup monitor alerts") : null,
    data ? h(Warnings, {data: data}) : null,
    data ? data.databases.map(db => h(Database, {key: db.name, db: db})) : null,
    data ? (data.buckets || []).map(b => h(Database, {key: "bucket:" + b.name, db: b, kind: "bucket"})) : null);
}

globalThis["Backups"] = Backups;  // the UI looks up globalThis[<react app name>] first
globalThis.AirflowPlugin = Backups;
"""


@app.get("/static/backups.js")
def bundle() -> Response:
    return Response(APP_JS, media_type="text/javascript")


class StrongroomPlugin(AirflowPlugin):
    name = "strongroom"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "Strongroom backups API"}]
    react_apps = [{
        "name": "Backups",
        "bundle_url": f"{PREFIX}/static/backups.js",
        "destination": "nav",
        "url_route": "backups",
        "nav_top_level": True,
    }]
