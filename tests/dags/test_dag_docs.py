"""Every DAG's docs fit the pop-up: a few lines (what, when, what to do when it fails), no tables, and a
pointer to the section of docs/operations.md that holds the details."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

EXAMPLE = ROOT / "include" / "config" / "strongroom.example.yaml"


def test_every_dag_has_short_docs_pointing_at_an_existing_section(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRONGROOM_CONFIG", str(EXAMPLE))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    files = sorted(p.stem for p in (ROOT / "dags").glob("*.py"))
    assert sorted(bag.dags) == files  # one DAG a file, named after its dag_id
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / "operations.md").read_text(), flags=re.M)
    for dag_id, dag in bag.dags.items():
        doc = dag.doc_md or ""
        lines = [line for line in doc.strip().splitlines() if line.strip()]
        assert len(lines) <= 14 and max(len(line) for line in lines) <= 110, (dag_id, len(lines))
        assert not any(line.lstrip().startswith("|") for line in lines), f"{dag_id}: a table wraps in the pop-up"
        assert "**When it fails:**" in doc, dag_id
        section = re.search(r"`docs/operations\.md`, section \"([^\"]+)\"", doc)
        assert section, f"{dag_id}: no pointer to docs/operations.md"
        assert any(h.startswith(section.group(1)) or h.startswith(f"{section.group(1)}:") for h in headings), (
            dag_id, section.group(1))
