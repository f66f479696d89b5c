"""The manual restore DAGs' forms as Airflow parses them: nothing computed at parse time, optional fields
nullable, only configured targets offered."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLE = ROOT / "include" / "config" / "strongroom.example.yaml"
MANUAL = ("restore_database", "restore_objects", "recover_platform")


def _serialized(config: Path) -> dict[str, str]:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return {d: json.dumps(DagSerialization.to_dict(bag.dags[d]), sort_keys=True, default=str) for d in MANUAL}


def test_parsing_twice_gives_the_same_serialized_dags_and_no_default_is_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    monkeypatch.setenv("STRONGROOM_CONFIG", str(EXAMPLE))
    first = _serialized(EXAMPLE)
    time.sleep(1.1)
    assert _serialized(EXAMPLE) == first  # one DAG version while nothing changes
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    for dag_id in MANUAL:
        for name in bag.dags[dag_id].params:
            value = bag.dags[dag_id].params.get_param(name).value
            if isinstance(value, str):  # a default taken from the clock would parse as a time
                with pytest.raises(ValueError):
                    datetime.fromisoformat(value)


def test_optional_fields_are_nullable_and_targets_are_the_configured_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRONGROOM_CONFIG", str(EXAMPLE))
    dags = DagBag(dag_folder=str(ROOT / "dags")).dags
    database = dags["restore_database"].params
    for name in ("tables", "confirm_production"):
        schema = database.get_param(name).schema
        assert "null" in schema["type"] and database.get_param(name).value is None, name
    objects = dags["restore_objects"].params
    for name in ("at", "prefix", "confirm_source"):
        assert "null" in objects.get_param(name).schema["type"] and objects.get_param(name).value is None, name
    assert objects.get_param("target").schema["enum"] == ["review", "in_place"]  # no free-text bucket
    assert objects.get_param("target").value == "review"
    assert not {"target_bucket", "target_conn_id"} & set(objects.keys())
    recover = dags["recover_platform"].params
    for name in ("point", "at", "confirm_production"):  # empty: the newest complete point, nothing confirmed
        assert "null" in recover.get_param(name).schema["type"] and recover.get_param(name).value is None, name
    assert recover.get_param("region").value == "automatic"
    approve = dags["restore_database"].get_task("approve_production_restore")
    assert approve.assigned_users == [{"id": "admin", "name": "admin"}]  # restore.approvers
    assert dags["restore_objects"].get_task("approve_in_place_restore").assigned_users == approve.assigned_users
    # one approval mechanism, the same approvers
    assert dags["recover_platform"].get_task("approve_production_recovery").assigned_users == approve.assigned_users


def test_the_words_a_form_uses_for_library_settings_are_its_own_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal names the form's field (FORM_WORDS, through strongroom.errors.worded), never a CLI flag."""
    import sys

    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRONGROOM_CONFIG", str(EXAMPLE))
    dags = DagBag(dag_folder=str(ROOT / "dags")).dags
    for dag_id in MANUAL:
        module = next(m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == dags[dag_id].fileloc)
        words = module.FORM_WORDS
        assert words and set(words.values()) <= set(dags[dag_id].params.keys()), dag_id
