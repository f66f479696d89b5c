"""The "Backups" page in the Airflow UI: a FastAPI app behind Airflow's authentication plus a React view.

``/strongroom/api/status`` returns what ``strongroom.monitor.dashboard`` reads from the buckets (the same
catalog as ``strongroom status --json``, plus the newest restore test per database and the last platform
drill): it never reads Airflow's database. ``/strongroom/api/files/restore-tests/<db>/<run>/docs/...``
serves a restore test's Data Docs from the primary bucket. Every data endpoint requires an authenticated
Airflow user (the UI's ``_token`` cookie or an ``Authorization: Bearer`` token); the JS bundle itself holds
no data.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import Response

PREFIX = "/strongroom"

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
    from strongroom import airflow_adapter, datadocs, layout
    from strongroom.config import load_config
    from strongroom.errors import StrongroomError

    if not layout.is_restore_test_doc(key):
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
    if media == "text/html":  # rendered without the CDNs it would load (no internet needed, nothing fetched)
        body = datadocs.offline(body)
    return Response(body, media_type=media, headers={"Content-Security-Policy": "sandbox allow-scripts"})


APP_JS = r"""
const React = globalThis.React;
const h = React.createElement;
// Airflow's own theme (Chakra UI CSS variables): the page follows its light and dark mode
const C = {
  fg: "var(--chakra-colors-fg, #1a202c)", muted: "var(--chakra-colors-fg-muted, #4a5568)",
  border: "var(--chakra-colors-border, #e2e8f0)", subtle: "var(--chakra-colors-bg-subtle, #f7fafc)",
  panel: "var(--chakra-colors-bg-panel, var(--chakra-colors-bg, #ffffff))",
  link: "var(--chakra-colors-fg-info, var(--chakra-colors-blue-600, #2b6cb0))",
  green: "var(--chakra-colors-success-solid, var(--chakra-colors-green-600, #2f9e44))",
  amber: "var(--chakra-colors-warning-solid, var(--chakra-colors-orange-500, #f59f00))",
  red: "var(--chakra-colors-danger-solid, var(--chakra-colors-red-600, #e03131))",
  line: "var(--chakra-colors-blue-500, #4c6ef5)", font: "var(--chakra-fonts-body, system-ui, sans-serif)",
};
const RAG = {green: C.green, amber: C.amber, red: C.red};
const card = {border: "1px solid " + C.border, borderRadius: "var(--chakra-radii-md, 6px)", background: C.panel,
              padding: "0.75rem 1rem", marginBottom: "1rem"};
const linkStyle = {color: C.link, textDecoration: "underline", fontWeight: 500};

function age(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const m = Math.floor(seconds / 60);
  if (m < 60) return m + "m";
  const hrs = Math.floor(m / 60);
  return hrs < 48 ? hrs + "h" + String(m % 60).padStart(2, "0") + "m" : Math.floor(hrs / 24) + "d";
}

function when(iso) { return iso ? iso.replace("T", " ").slice(0, 16) + " UTC" : ""; }

function Dot(props) {
  return h("span", {title: props.rag, "data-rag": props.rag, style: {display: "inline-block", width: "0.75em",
    height: "0.75em", borderRadius: "50%", marginRight: "0.4em", verticalAlign: "baseline",
    background: RAG[props.rag] || C.muted}});
}

function Link(props) {
  return h("a", {href: props.href, target: props.blank ? "_blank" : undefined,
                 rel: props.blank ? "noopener" : undefined, style: linkStyle, "data-link": props.kind}, props.children);
}

function RestoreTest(props) {
  const t = props.test;
  if (!t) return h("span", {style: {color: C.muted}}, "no restore test on record yet");
  return h("span", null,
    h(Dot, {rag: t.success ? "green" : "red"}),
    (t.success ? "passed " : "FAILED ") + when(t.tested_at),
    t.restore_seconds !== null ? " · restored in " + t.restore_seconds + "s" : "",
    " · snapshot " + t.snapshot_id + " from " + t.region + " · ",
    t.docs_key ? h(Link, {href: "/strongroom/api/files/" + t.docs_key, blank: true, kind: "data-docs"},
                   "Open Data Docs ↗") : h("span", {style: {color: C.muted}}, "no Data Docs"),
    (t.unauthenticated || []).map(u => h("div", {key: u, "data-unauthenticated": "restore-test",
                                                  style: {color: C.red}}, "UNAUTHENTICATED (ignored): " + u)));
}

function Warnings(props) {
  const items = [...(props.data.warnings || []).map(w => ["warning", w]),
                 ...(props.data.unauthenticated || []).map(u => ["unauthenticated",
                                                                 "UNAUTHENTICATED (ignored): " + u])];
  if (!items.length) return null;
  return h("ul", {role: "alert", "data-warnings": items.length, style: {color: C.amber}},
    items.map(([kind, text]) => h("li", {key: text, "data-kind": kind}, text)));
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function ratio(r) {
  const f = r >= 1 ? r : 1 / r;
  return f.toFixed(f >= 10 ? 0 : 1) + "× " + (r >= 1 ? "larger" : "smaller");
}

function SizeTrend(props) {
  const points = props.trend || [];
  if (!points.length) return h("span", {style: {color: C.muted}}, "no snapshots yet");
  const w = 380, ht = 90, left = 80, top = 8, bottom = 14, plotW = w - left - 8, plotH = ht - top - bottom;
  const max = Math.max(...points.map(p => p.stored_bytes), 1);
  const xy = points.map((p, i) => [left + (points.length > 1 ? i * plotW / (points.length - 1) : plotW / 2),
                                   top + plotH - p.stored_bytes * plotH / max]);  // the axis starts at zero
  const jumps = points.map((p, i) => [p, i]).filter(([p]) => p.jump);
  const last = points[points.length - 1];
  const axis = {stroke: C.border, strokeWidth: 1};
  const label = {fill: C.muted, fontSize: 10, fontFamily: C.font};
  return h("div", {"data-trend": points.length, "data-jumps": jumps.length},
    h("svg", {width: w, height: ht, viewBox: "0 0 " + w + " " + ht, role: "img",
              "aria-label": "stored size of the last " + points.length + " snapshots, axis from zero",
              style: {display: "block", margin: "0.25rem 0"}},
      h("line", Object.assign({x1: left, y1: top, x2: left, y2: top + plotH}, axis)),
      h("line", Object.assign({x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH}, axis)),
      h("line", {x1: left, y1: top, x2: left + plotW, y2: top, stroke: C.border, strokeDasharray: "3 3"}),
      h("text", Object.assign({x: left - 6, y: top + 4, textAnchor: "end", "data-axis": "max"}, label), bytes(max)),
      h("text", Object.assign({x: left - 6, y: top + plotH, textAnchor: "end", "data-axis": "zero"}, label), "0"),
      h("polyline", {points: xy.map(p => p.join(",")).join(" "), fill: "none", stroke: C.line, strokeWidth: 2}),
      xy.map((p, i) => h("circle", {key: i, cx: p[0], cy: p[1], r: points[i].jump ? 5 : 2.5,
        fill: points[i].jump ? C.red : C.line, "data-jump": points[i].jump ? points[i].jump : undefined},
        h("title", null, points[i].snapshot_id + ": " + bytes(points[i].stored_bytes) +
          (points[i].jump ? " (" + ratio(points[i].jump) + " than the previous snapshot)" : ""))))),
    h("div", {style: {color: C.muted, fontSize: "0.9em"}},
      "newest " + bytes(last.stored_bytes) + " · " + points.length +
      (points.length === 1 ? " snapshot" : " snapshots")),
    jumps.map(([p, i]) => h("div", {key: "j" + i, role: "note", style: {color: C.red, fontSize: "0.9em"}},
      "⚠ size jump: snapshot " + p.snapshot_id + " is " + ratio(p.jump) + " than the one before (" +
      bytes(points[i - 1].stored_bytes) + " → " + bytes(p.stored_bytes) + ")")));
}

function Table(props) {
  const cell = {padding: "0.35rem 0.75rem", borderBottom: "1px solid " + C.border, textAlign: "left"};
  const bucket = props.kind === "bucket";
  return h("table", {style: {borderCollapse: "collapse", width: "100%", marginTop: "0.5rem"}},
    h("thead", null, h("tr", null, ["region", "newest backup", "age", bucket ? "points" : "snapshots",
                                    "gaps", "last error"]
      .map(c => h("th", {key: c, style: Object.assign({}, cell, {color: C.muted, fontWeight: 600,
                                                                 background: C.subtle})}, c)))),
    h("tbody", null, props.rows.map(r => h("tr", {key: r.region, "data-region": r.region},
      h("td", {style: cell}, r.region),
      h("td", {style: cell}, r.newest || "none"),
      h("td", {style: cell}, h(Dot, {rag: r.rag}), age(r.age_seconds)),
      h("td", {style: cell}, r.snapshots),
      h("td", {style: cell}, r.gaps.length ? r.gaps.length + ": " + r.gaps.slice(0, 3).join(", ") : "none"),
      h("td", {style: Object.assign({}, cell, {color: r.last_error ? C.red : C.fg})}, r.last_error || "")))));
}

function Database(props) {
  const db = props.db, bucket = props.kind === "bucket";
  return h("section", {"data-database": bucket ? undefined : db.name, "data-bucket": bucket ? db.name : undefined,
                       style: card},
    h("h3", {style: {fontSize: "1.15em", fontWeight: 600, margin: "0 0 0.5rem"}},
      (bucket ? "Bucket " : "Database ") + db.name),
    bucket ? null : h("p", {style: {margin: "0.25rem 0"}}, h("b", null, "Last restore test: "),
                      h(RestoreTest, {test: db.restore_test})),
    bucket ? null : h("div", {style: {margin: "0.25rem 0"}}, h("b", null, "Stored size per snapshot"),
                      h(SizeTrend, {trend: db.size_trend})),
    h(Table, {rows: db.regions, kind: props.kind}));
}

function Alerts(props) {
  const a = props.alerts || {};
  const sent = a.last_sent, failed = a.last_failure;
  const failing = failed && (!sent || failed.at > sent.at);
  return h("section", {"data-panel": "alerts", style: card},
    h("h3", {style: {fontSize: "1.15em", fontWeight: 600, margin: "0 0 0.5rem"}}, "Alert delivery"),
    h("p", {"data-alert": "sent", style: {margin: "0.25rem 0"}}, h("b", null, "Last alert sent: "),
      sent ? [h(Dot, {key: "d", rag: "green"}), when(sent.at) + " to " + sent.channels.join(", ") + ": " + sent.subject]
           : h("span", {style: {color: C.muted}}, "none yet")),
    h("p", {"data-alert": "failure", style: {margin: "0.25rem 0", color: failing ? C.red : C.fg}},
      h("b", null, "Last delivery failure: "),
      failed ? [h(Dot, {key: "d", rag: failing ? "red" : "amber"}), when(failed.at) + ": " + failed.error +
                (failing ? " (alerts are NOT reaching on-call)" : " (delivered since)")]
             : h("span", {style: {color: C.muted}}, "none")));
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 90) return Math.round(seconds) + "s";
  const m = Math.round(seconds / 60);
  return m < 120 ? m + "m" : Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
}

function PlatformDrill(props) {
  const d = props.drill;
  const body = !d || !d.drilled_at ? h("span", {style: {color: C.muted}}, "no platform drill on record yet") :
    h("span", null,
      h(Dot, {rag: d.success ? "green" : "red"}),
      h("b", {"data-drill": d.success ? "passed" : "failed"}, d.success ? "passed" : "FAILED"),
      " " + when(d.drilled_at) + " · from " + d.region + " · ",
      h("span", {"data-drill-time": d.total_seconds,
                 style: {color: d.within_rto === false ? C.red : C.fg}},
        "recovered in " + duration(d.total_seconds) + " (RTO " + duration(d.rto_seconds) + ", " +
        (d.within_rto ? "within" : "OVER") + ")"),
      d.point_id ? " · point " + d.point_id : "",
      d.success ? null : h("div", {style: {color: C.red}}, d.headline));
  return h("section", {"data-panel": "platform-drill", style: card},
    h("h3", {style: {fontSize: "1.15em", fontWeight: 600, margin: "0 0 0.5rem"}}, "Platform drill"),
    h("p", {style: {margin: "0.25rem 0"}}, h("b", null, "Last drill: "), body),
    ((d && d.unauthenticated) || []).map(u => h("div", {key: u, "data-unauthenticated": "platform-drill",
                                                        style: {color: C.red}}, "UNAUTHENTICATED (ignored): " + u)));
}

function Backups() {
  const [data, setData] = React.useState(null);
  const [error, setError] = React.useState(null);
  const load = () => fetch("/strongroom/api/status", {credentials: "same-origin"})
    .then(r => r.ok ? r.json() : r.text().then(t => { throw new Error(r.status + " " + t); }))
    .then(d => { setData(d); setError(null); }, e => setError(String(e)));
  React.useEffect(() => { load(); const id = setInterval(load, 60000); return () => clearInterval(id); }, []);
  return h("div", {id: "strongroom-backups", style: {padding: "1rem 1.25rem", color: C.fg, fontFamily: C.font,
                                                     maxWidth: "1200px"}},
    h("h2", {style: {fontSize: "1.5em", fontWeight: 700, margin: "0 0 0.5rem"}}, "Strongroom backups"),
    error ? h("p", {role: "alert", style: {color: C.red}}, "Could not load the status: " + error) : null,
    !data && !error ? h("p", {style: {color: C.muted}}, "Reading the buckets…") : null,
    data ? h("p", {style: {color: C.muted, margin: "0 0 1rem"}}, "Read from the buckets at " + when(data.generated_at) +
      ". ", h(Dot, {rag: "green"}), "under " + age(data.rpo_seconds) + " (RPO) ",
      h(Dot, {rag: "amber"}), "up to " + age(data.threshold_seconds) + " ",
      h(Dot, {rag: "red"}), "older: the backup monitor alerts. DAGs: ",
      h(Link, {href: "/dags/snapshot_databases", kind: "dag"}, "snapshots"), " · ",
      h(Link, {href: "/dags/restore_test", kind: "dag"}, "restore tests"), " · ",
      h(Link, {href: "/dags/platform_drill", kind: "dag"}, "platform drill"), " · ",
      h(Link, {href: "/dags/backup_monitor", kind: "dag"}, "monitor")) : null,
    data ? h(Warnings, {data: data}) : null,
    data ? h(Alerts, {alerts: data.alerts}) : null,
    data ? h(PlatformDrill, {drill: data.platform_drill}) : null,
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
