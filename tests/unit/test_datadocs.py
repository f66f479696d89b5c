"""Data Docs pages lose every reference to another host and gain our inline stylesheet and script; the
alert-delivery record keeps the last success and the last failure apart."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

from strongroom.datadocs import MARKER, offline, remote_references
from strongroom.deliveries import updated

_GX = importlib.util.find_spec("great_expectations")  # located, not imported (importing takes seconds)
assert _GX is not None and _GX.submodule_search_locations
TEMPLATES = Path(next(iter(_GX.submodule_search_locations))) / "render" / "view" / "templates"


def test_the_page_template_references_cdns_and_offline_removes_them_all() -> None:
    head = (TEMPLATES / "page.j2").read_text() + (TEMPLATES / "js_script_imports.j2").read_text()
    page = f"<html><head>{head}</head><body><img src='https://example.com/x.png'><table id='t'></table>" \
           "<script>$('#t').bootstrapTable({columns: [], data: []});</script></body></html>"
    assert len(remote_references(page.encode())) >= 10  # GX's own templates load from public CDNs
    served = offline(page.encode())
    assert remote_references(served) == []
    text = served.decode()
    assert text.index(MARKER) < text.index("bootstrapTable")  # our renderer is defined before the page uses it
    assert "$('#t').bootstrapTable" in text
    assert offline(served) == served  # idempotent


def test_links_to_other_hosts_stay_links() -> None:
    page = b'<html><head></head><body><a href="https://greatexpectations.io">GX</a></body></html>'
    assert b'<a href="https://greatexpectations.io">GX</a>' in offline(page)


def test_delivery_record_keeps_the_last_success_and_the_last_failure() -> None:
    now = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    first = updated({}, "[strongroom] FAILED x", ["email to a@b"], None, now)
    assert first["last_sent"] == {"at": "2026-12-01T03:00:00+00:00", "subject": "[strongroom] FAILED x",
                                  "channels": ["email to a@b"]}
    second = updated(first, "[strongroom] y", ["email to a@b"], "email via 'smtp_default': refused\nmore",
                     now + timedelta(minutes=10))
    assert second["last_sent"] == first["last_sent"]
    assert second["last_failure"]["error"] == "email via 'smtp_default': refused more"
    assert second["attempts"] == 2
    assert len(updated({}, "s" * 1000, [], None, now)["last_sent"]["subject"]) == 300
