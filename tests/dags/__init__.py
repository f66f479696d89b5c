"""DAG tests: DagBag integrity and real DAG runs (``dag.test``)."""

from __future__ import annotations

import json
from typing import Any


def returned(run: Any, task_id: str) -> Any:
    """The return value a task of a ``dag.test`` run pushed, read from the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        [row] = session.query(XComModel).filter(XComModel.run_id == run.run_id, XComModel.task_id == task_id,
                                                XComModel.key == "return_value").all()
        value = row.value
    return json.loads(value) if isinstance(value, str) else value


def assert_time_field_needs_an_offset(param: Any) -> None:
    """A form's date-time field as Airflow 3.3 checks it (the schema's format, when the run is created): the
    picker's value (UTC, with a Z) and any offset pass; a time without one is refused before a run exists,
    as strongroom.config.parse_time refuses it in the task."""
    import pytest
    from airflow.sdk.exceptions import ParamValidationError

    from strongroom.tasks import PICKED_TIME

    assert PICKED_TIME in param.description
    for good in ("2026-11-26T14:00:00.000Z", "2026-11-26T15:00:00+01:00"):
        assert param.resolve(good) == good
    for naive in ("2026-11-26T14:00:00", "2026-11-26 14:00"):
        with pytest.raises(ParamValidationError, match="is not a 'date-time'"):
            param.resolve(naive)
