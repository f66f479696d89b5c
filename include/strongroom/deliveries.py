"""Where alerts went: the last alert delivered and the last delivery that failed, kept in the bucket.

The Backups page shows both, so a silent alert channel (a wrong SMTP connection, a dead webhook) is
visible to anyone who looks, not only in the log of the task that tried. The record lives next to the
monitor's state (``status/alerts.json``) in the primary region, else the next region that answers; it
holds subjects and one-line errors, never a secret (errors name channels, not URLs or passwords).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from strongroom import layout
from strongroom.config import Config, RegionConfig
from strongroom.connections import Connections
from strongroom.errors import StrongroomError
from strongroom.regions import first_answer, first_answer_or

log = logging.getLogger(__name__)

MAX_TEXT = 300


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_TEXT else line[: MAX_TEXT - 1] + "…"


def updated(record: dict[str, Any], subject: str, channels: list[str], error: str | None,
            now: datetime) -> dict[str, Any]:
    """The record after one delivery attempt (pure): ``error`` None means every channel took the alert."""
    out = dict(record)
    entry: dict[str, Any] = {"at": now.isoformat(timespec="seconds"), "subject": _short(subject),
                             "channels": channels}
    if error is None:
        out["last_sent"] = entry
    else:
        out["last_failure"] = dict(entry, error=_short(error))
    out["attempts"] = int(record.get("attempts", 0)) + 1
    return out


def read_deliveries(config: Config, conns: Connections) -> dict[str, Any]:
    """The record, from the first region that answers; ``{}`` when none was written yet."""

    def record_in(region: RegionConfig) -> dict[str, Any]:
        store = conns.store(region, config.transfer)
        if store.head(layout.DELIVERY_KEY) is None:
            return {}
        try:
            doc = json.loads(store.get_bytes(layout.DELIVERY_KEY))
        except ValueError as exc:
            raise StrongroomError(f"alert delivery record {layout.DELIVERY_KEY} is malformed: {exc}") from None
        return doc if isinstance(doc, dict) else {}

    return first_answer_or(config, "the alert delivery record", record_in, {})


def record_delivery(config: Config, conns: Connections, subject: str, channels: list[str],
                    error: str | None, now: datetime | None = None) -> str | None:
    """Record one attempt; returns the region written, or None. Never raises: the alert matters more."""
    now = now or datetime.now(UTC)
    try:
        body = json.dumps(updated(read_deliveries(config, conns), subject, channels, error, now), indent=2)
    except Exception as exc:
        log.warning("alert delivery not recorded: %s", exc)
        return None

    def write(region: RegionConfig) -> None:
        conns.store(region, config.transfer).put_bytes(layout.DELIVERY_KEY, body.encode())

    try:
        return first_answer(config, "the write of the alert delivery record", write).region.name
    except Exception as exc:  # also e.g. a connection that is not defined where the callback runs
        log.warning("alert delivery not recorded: %s", exc)
        return None
