"""Alerts for ops on call: what a message says (email and Slack carry the same facts).

This module is plain Python: composing an alert needs no Airflow. The Airflow side (the task failure
callback, sending through the smtp provider's ``SmtpNotifier`` and the slack provider's
``SlackWebhookNotifier``, resolving connections) lives in
``strongroom.airflow_adapter``, the one module of the library that imports Airflow. The task failure
callback is a plain function there rather than a ``BaseNotifier`` subclass in this module, because a
subclass would need Airflow imported at module level (and DAG-level notifiers misbehave under
``dag.test``; task-level function callbacks work everywhere).
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "[strongroom]"
MAX_ERROR_CHARS = 300
LABEL_ARROW = " → "  # map index labels read "shop" or "shop → eu-west-1" (see the DAGs' _label)


@dataclass(frozen=True)
class Alert:
    """One message to ops: a subject line and ``facts`` (label, value) pairs, in order."""

    subject: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    link: str | None = None
    details: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [self.subject, ""]
        lines += [f"{name}: {value}" for name, value in self.facts]
        if self.link:
            lines.append(f"log: {self.link}")
        if self.details:
            lines += ["", *self.details]
        return "\n".join(lines)

    def html(self) -> str:
        # one element a line: SMTP refuses lines over 1,000 characters, and a monitor alert lists every condition
        rows = "".join(
            f"<tr><th align='left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>\n"
            for name, value in self.facts
        )
        link = (f"<p><a href='{html.escape(self.link, quote=True)}'>Open the task log</a>"
                f" ({html.escape(self.link)})</p>") if self.link else ""
        details = "".join(f"<li>{html.escape(d)}</li>\n" for d in self.details)
        return (f"<p><b>{html.escape(self.subject)}</b></p>\n<table>\n{rows}</table>\n{link}"
                + (f"<ul>\n{details}</ul>\n" if details else ""))


def first_line(error: object) -> str:
    """The first non-empty line of an error, with its type, short enough for a subject or a page."""
    if error is None:
        return "unknown error (no exception was recorded; see the log)"
    text = str(error).strip()
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if isinstance(error, SystemExit) and isinstance(error.code, str):
        text = error.code.strip()  # a task ended with its one line (airflow_adapter.TaskFailed)
        error = text or None
        line = text.splitlines()[0] if text else "the task exited"
    if isinstance(error, BaseException):
        name = type(error).__name__
        line = f"{name}: {line}" if line and not line.startswith(name) else (line or name)
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def split_label(label: str | None) -> tuple[str | None, str | None]:
    """``"shop → eu-west-1"`` → (``"shop"``, ``"eu-west-1"``); ``"shop"`` → (``"shop"``, None)."""
    if not label:
        return None, None
    what, _, region = label.partition(LABEL_ARROW)
    return what.strip() or None, region.strip() or None


def task_failure(
    *, dag_id: str, task_id: str, run_id: str, label: str | None, error: object, log_url: str | None,
    try_number: int | None = None, region: str | None = None,
) -> Alert:
    """The alert for a task that failed for good (after its retries)."""
    target, label_region = split_label(label)
    region = region or label_region
    where = f" [{target}{' @ ' + region if region else ''}]" if target else ""
    line = first_line(error)
    facts = [("DAG", dag_id), ("task", task_id)]
    if target:
        facts.append(("database/bucket", target))
    if region:
        facts.append(("region", region))
    facts += [("error", line), ("run", run_id)]
    if try_number:
        facts.append(("attempts", str(try_number)))
    return Alert(subject=f"{SUBJECT_PREFIX} FAILED {dag_id}.{task_id}{where}: {line}", facts=facts, link=log_url)


def deadline_missed(
    *, dag_id: str, run_id: str, deadline_time: str | None, queued_at: str | None, budget: str | None,
    link: str | None,
) -> Alert:
    """The alert for a run still unfinished at its deadline (Airflow's DeadlineAlert)."""
    facts = [("DAG", dag_id), ("run", run_id)]
    facts += [(name, value) for name, value in (("queued at", queued_at), ("deadline", deadline_time),
                                               ("budget", budget)) if value]
    return Alert(
        subject=f"{SUBJECT_PREFIX} DEADLINE MISSED {dag_id}: run {run_id} "
                f"has not finished within {budget or 'its budget'}",
        facts=facts, link=link,
        details=["The run is still going or stuck: its snapshots are late, so the recovery point is slipping. "
                 "Open the run to see which task is slow; the backup monitor alerts when a snapshot grows stale."],
    )
