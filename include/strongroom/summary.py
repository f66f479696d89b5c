"""The one line a task ends its log with: what, where, how much, how long.

Built from the small dict a task returns (its XCom), so every task gets one without writing its own:
``snapshot_and_encrypt [shop] done in 3.2s: database shop; snapshot id 20261201T174000Z; region
eu-central-1; stored 1.2 MiB; plain 4.5 MiB``. Sizes read as sizes, durations as durations, lists as counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strongroom.progress import duration_text, size_text

MAX_CHARS = 400
_SKIP = {"taken_at", "seconds"}  # repeated by the snapshot id; the head says how long


def _value(key: str, value: Any) -> str | None:
    if value is None or key in _SKIP:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and (key.endswith("bytes") or key == "bytes"):
        return size_text(value)
    if isinstance(value, int | float) and key.endswith("seconds"):
        return duration_text(float(value))
    if isinstance(value, list | tuple):
        if not value:
            return "none"
        if all(isinstance(v, str) for v in value) and len(value) <= 3:
            return ", ".join(value)
        if all(isinstance(v, Mapping) and "success" in v for v in value):
            passed = sum(1 for v in value if v["success"])
            return f"{len(value)} ({passed} passed)" if passed == len(value) else f"{len(value)} ({passed} passed, " \
                f"{len(value) - passed} FAILED)"
        return str(len(value))
    if isinstance(value, Mapping):
        if not value:
            return "none"
        return ", ".join(f"{k} {v}" for k, v in value.items()) if len(value) <= 3 and all(
            isinstance(v, str | int | float) for v in value.values()) else str(len(value))
    text = str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def summary_line(task: str, label: str | None, result: Any, seconds: float | None) -> str:
    head = task + (f" [{label}]" if label else "") + " done" + (f" in {duration_text(seconds)}" if seconds else "")
    facts: list[str] = []
    if isinstance(result, Mapping):
        for key, value in result.items():
            text = _value(str(key), value)
            if text is not None:
                name = str(key)
                for suffix in ("_bytes", "_seconds"):
                    name = name.removesuffix(suffix)
                name = name.replace("_", " ")
                facts.append(f"{name} {text}")
    elif result is not None:
        facts.append(_value("result", result) or "")
    line = head + (": " + "; ".join(f for f in facts if f) if any(facts) else "")
    return line if len(line) <= MAX_CHARS else line[: MAX_CHARS - 1] + "…"
