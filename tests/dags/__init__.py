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
