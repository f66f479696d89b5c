"""What every Strongroom task shares: its ``default_args`` and the callbacks they name.

DAG files import this light module, so parsing a DAG does not load boto3 and psycopg; the callbacks load
``strongroom.airflow_adapter`` only when they run (the adapter composes alerts with ``strongroom.alerts``,
which imports neither).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

# the trigger forms' date-time fields (Param format="date-time"): how Airflow 3.3's picker reads what is
# picked (the UI's time zone, sent as UTC with a Z), and the one rule for a time without an offset
# (strongroom.config.parse_time; docs/operations.md, "Times")
PICKED_TIME = ("The picker's date and time are in the time zone the UI shows (your browser's, unless changed in "
               "the user menu) and are sent with their UTC offset. Through the REST API: ISO 8601 with an offset "
               "(2026-11-26T14:00:00+00:00 or ...Z); a time without one is refused.")


def on_task_failure(context: object) -> None:
    """The ``on_failure_callback`` of every Strongroom task.

    DAG files import it from here, a light module, so parsing a DAG does not load boto3 and psycopg; the
    work happens in ``strongroom.airflow_adapter.notify_task_failure`` when a task has failed for good.
    """
    from strongroom.airflow_adapter import notify_task_failure

    notify_task_failure(context)


def on_task_success(context: object) -> None:
    """The ``on_success_callback`` of every Strongroom task: one summary line at the end of its log."""
    from strongroom.airflow_adapter import log_task_summary

    log_task_summary(context)


def task_defaults(*, retries: int = 0, retry_delay: timedelta | None = None,
                  execution_timeout: timedelta | None = None, backoff: bool = False) -> dict[str, Any]:
    """The ``default_args`` of a Strongroom DAG: its tasks alert once when they finally fail, after
    ``retries`` (exponential ``backoff`` from ``retry_delay`` up to ten minutes when asked), and are
    stopped after ``execution_timeout``."""
    defaults: dict[str, Any] = {"owner": "strongroom", "retries": retries,
                                "on_failure_callback": [on_task_failure],  # one alert per final failure
                                "on_success_callback": [on_task_success],  # one summary line
                                "show_return_value_in_logs": False}  # instead of the raw dict
    if retry_delay is not None:
        defaults["retry_delay"] = retry_delay
    if backoff:
        defaults |= {"retry_exponential_backoff": True, "max_retry_delay": timedelta(minutes=10)}
    if execution_timeout is not None:
        defaults["execution_timeout"] = execution_timeout
    return defaults
