"""Data Docs that render without the internet.

Great Expectations' Data Docs pages load Bootstrap, jQuery, bootstrap-table, Vega and Font Awesome from
public CDNs; the index page even builds its tables in JavaScript from inline data. On a machine without
internet (or one that should not fetch scripts from strangers) such a page renders empty. :func:`offline`
rewrites a page as it is served: every tag that would load something from another host is removed, and
a small stylesheet and script of our own are inlined in their place. The script renders the pages'
``bootstrapTable`` data as plain tables (rows that link to a validation become real links) and makes the
other jQuery calls the pages make harmless. Nothing of the removed libraries is copied here.
"""

from __future__ import annotations

import re

# <script src="http(s)://..."></script> and <link ... href="http(s)://..."> (also protocol-relative //host)
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"'](?:https?:)?//[^\"']*[\"'][^>]*>\s*</script>", re.I)
_REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"'](?:https?:)?//[^\"']*[\"'][^>]*/?>", re.I)
_REMOTE_IMG = re.compile(r"(<img\b[^>]*\bsrc\s*=\s*)[\"'](?:https?:)?//[^\"']*[\"']", re.I)
_HEAD = re.compile(r"<head\b[^>]*>", re.I)
MARKER = "strongroom-offline-data-docs"

STYLE = """
:root { color-scheme: light dark; --sr-fg: #1f2933; --sr-muted: #52606d; --sr-bg: #ffffff;
  --sr-subtle: #f5f7fa; --sr-border: #d9e2ec; --sr-link: #0b63ce; --sr-ok: #1e7b34; --sr-bad: #c92a2a; }
@media (prefers-color-scheme: dark) { :root { --sr-fg: #e4e7eb; --sr-muted: #9aa5b1; --sr-bg: #1a1d21;
  --sr-subtle: #23272d; --sr-border: #3e4651; --sr-link: #74b3ff; --sr-ok: #69db7c; --sr-bad: #ff8787; } }
html, body { background: var(--sr-bg); color: var(--sr-fg); }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; }
a { color: var(--sr-link); text-decoration: underline; }
.container-fluid { padding: 0 1rem; }
.row { display: flex; flex-wrap: wrap; margin: 0 -0.5rem; }
.row > * { padding: 0 0.5rem; box-sizing: border-box; }
.col-12, .col-xs-12 { width: 100%; }
@media (min-width: 768px) { .col-md-2 { width: 16.66%; } .col-md-10 { width: 83.33%; } .col-md-12 { width: 100%; } }
@media (min-width: 992px) { .col-lg-2 { width: 16.66%; } .col-lg-10 { width: 83.33%; } }
.d-none, .modal, .ge-walkthrough-modal, .modal-backdrop, .btn, .cooltip { display: none !important; }
.d-flex { display: flex; } .text-center { text-align: center; } .sticky-top { position: sticky; top: 0; }
.navbar { display: flex; align-items: center; gap: 1rem; padding: 0.5rem 1rem; background: var(--sr-subtle);
  border-bottom: 1px solid var(--sr-border); }
.navbar img { max-height: 28px; }
.nav, .breadcrumb { display: flex; flex-wrap: wrap; gap: 0.75rem; list-style: none; padding: 0; margin: 0.5rem 0; }
.card { border: 1px solid var(--sr-border); border-radius: 6px; margin: 0 0 1rem; background: var(--sr-bg); }
.card-header { padding: 0.5rem 0.75rem; background: var(--sr-subtle); border-bottom: 1px solid var(--sr-border);
  font-weight: 600; }
.card-body { padding: 0.75rem; overflow-x: auto; }
.tab-content > .tab-pane { display: none; } .tab-content > .active, .tab-content > .show { display: block; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0; }
th, td { border: 1px solid var(--sr-border); padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: var(--sr-subtle); }
.text-success, .fa-check-circle { color: var(--sr-ok); } .text-danger, .fa-times { color: var(--sr-bad); }
.badge { display: inline-block; padding: 0 0.4em; border-radius: 4px; border: 1px solid var(--sr-border); }
.lead { font-size: 1.1em; } .table-sm td, .table-sm th { padding: 0.2rem 0.4rem; }
i.fas, i.far, i.fa { font-style: normal; }
img[src=""], footer { display: none !important; }  /* the removed CDN logo; GX's newsletter and tutorial footers */
i.fa-check-circle::before { content: "\\2714"; } i.fa-times::before { content: "\\2716"; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  function noop() { return undefined; }
  function Wrap(items) { this.items = items; }
  function text(v) { return v === null || v === undefined ? "" : String(v); }
  function renderTable(table, opts) {
    var columns = (opts && opts.columns) || [], rows = (opts && opts.data) || [];
    var linker = opts && opts.rowAttributes;
    if (typeof linker === "string") linker = window[linker];
    var head = "<thead><tr>" + columns.map(function (c) {
      return "<th>" + text(c.title || c.field) + "</th>";
    }).join("") + "</tr></thead>";
    var body = rows.map(function (row, i) {
      var attrs = typeof linker === "function" ? (linker(row, i) || {}) : {};
      var href = row._table_row_link_path || attrs["data-href"];
      return "<tr data-row=\"" + i + "\">" + columns.map(function (c, j) {
        var cell = text(row[c.field]);
        if (href && j === 0) cell = "<a class=\"sr-row-link\" href=\"" + text(href).replace(/"/g, "&quot;") + "\">" +
          (cell || "open") + "</a>";
        return "<td>" + cell + "</td>";
      }).join("") + "</tr>";
    }).join("");
    table.innerHTML = head + "<tbody>" + body + "</tbody>";
    table.setAttribute("data-rendered-offline", String(rows.length));
  }
  Wrap.prototype.bootstrapTable = function (opts) {
    if (typeof opts === "object") this.items.forEach(function (t) { renderTable(t, opts); });
    return this;
  };
  Wrap.prototype.prepend = function (html) {
    this.items.forEach(function (e) { e.insertAdjacentHTML("afterbegin", text(html)); });
    return this;
  };
  Wrap.prototype.ready = function (fn) { onReady(fn); return this; };
  function onReady(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { fn(); });
    else fn();
  }
  function $(selector) {
    if (typeof selector === "function") { onReady(selector); return wrap([]); }
    if (typeof selector === "string") {
      try { return wrap(Array.prototype.slice.call(document.querySelectorAll(selector))); }
      catch (e) { return wrap([]); }
    }
    return wrap(selector && (selector.nodeType || selector === window) ? [selector] : []);
  }
  function wrap(items) {
    return new Proxy(new Wrap(items), {
      get: function (target, name) {
        if (name in target) return target[name];
        return function () { return this; };  // .on, .modal, .tooltip, .popover, .collapse ...: harmless
      }
    });
  }
  $.fn = Wrap.prototype;
  window.$ = window.jQuery = $;
  window.vegaEmbed = function () { return Promise.resolve(); };
  window.strongroomOfflineDocs = true;
})();
"""


def offline(html: bytes) -> bytes:
    """The page without anything fetched from another host, with our stylesheet and script inlined."""
    text = html.decode("utf-8", errors="replace")
    if MARKER in text:
        return html
    text = _REMOTE_SCRIPT.sub("", text)
    text = _REMOTE_LINK.sub("", text)
    text = _REMOTE_IMG.sub(r'\1""', text)
    inject = f'<style id="{MARKER}">{STYLE}</style><script>{SCRIPT}</script>'
    match = _HEAD.search(text)
    text = text[: match.end()] + inject + text[match.end():] if match else inject + text
    return text.encode("utf-8")


def remote_references(html: bytes) -> list[str]:
    """What in a page would still be fetched from another host (for checks): script, link and img URLs."""
    text = html.decode("utf-8", errors="replace")
    return re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)\s*=\s*[\"']((?:https?:)?//[^\"']*)", text, re.I)
