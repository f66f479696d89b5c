"""Progress lines for long work, as a person watching a task log wants them:

``shop snapshot: 412.0 MiB of ~1.2 GiB (34%), 77.9 MiB/s, about 10s left``

A line every ``every`` seconds (10 by default) on long work, and at each further tenth of the total when
that comes sooner, so small jobs show progress too (``min_gap`` can space those out; none by default).
The total may be an estimate (the database's size, the previous snapshot's size): past it, the line says
so instead of showing a percentage above 100 or a negative time left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from itertools import pairwise

log = logging.getLogger(__name__)

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def size_text(n: float) -> str:
    """Bytes as ops read them: 512 B, 3.4 MiB, 1.2 GiB."""
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{int(value)} {_UNITS[unit]}" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def duration_text(value: timedelta | float) -> str:
    """A duration (a timedelta, or seconds), the one way Strongroom writes them: 0.4s, 42s, 3m05s, 40m,
    1h02m, 2d03h, 30d. The two largest units, written as the config writes durations; a second unit that
    is zero is left out, and below 10 s a tenth of a second is kept."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        return "-" + duration_text(-seconds)
    tenths = round(seconds, 1)
    if tenths < 10 and tenths != int(tenths):
        return f"{tenths:.1f}s"
    whole = round(seconds)
    for (unit, size), (next_unit, next_size) in pairwise(_DURATION_UNITS):
        if whole >= size:
            count, rest = divmod(whole, size)
            part = rest // next_size
            return f"{count}{unit}" + (f"{part:02d}{next_unit}" if part else "")
    return f"{whole}s"


class Progress:
    """Reports ``done`` of ``total`` for one piece of work through ``emit`` (the module's logger by default).

    :param label: what is done, e.g. ``"shop snapshot"``.
    :param total: the expected amount, or None when unknown (the line then shows the amount and rate only).
    :param unit: ``"bytes"`` (amounts shown as sizes) or a plural noun such as ``"objects"``.
    :param estimated: the total is an estimate: shown with ``~``.
    """

    def __init__(
        self, label: str, total: int | None, *, unit: str = "bytes", estimated: bool = False,
        every: float = 10.0, min_gap: float = 0.0, clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.label, self.total, self.unit, self.estimated = label, total, unit, estimated
        self.every, self.min_gap, self.clock = every, min_gap, clock
        self.emit = emit or (lambda line: log.info("%s", line))
        self.started = self.last = clock()
        self.last_tenth = 0
        self.done = 0
        self.lines = 0

    def _amount(self, n: float) -> str:
        return size_text(n) if self.unit == "bytes" else f"{int(n):,}"

    def line(self, done: int, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        rate_text = f"{size_text(rate)}/s" if self.unit == "bytes" else f"{rate:,.1f} {self.unit}/s"
        if not self.total:
            return f"{self.label}: {self._amount(done)}{'' if self.unit == 'bytes' else ' ' + self.unit}, {rate_text}"
        approx = "~" if self.estimated else ""
        head = f"{self.label}: {self._amount(done)} of {approx}{self._amount(self.total)}"
        if self.unit != "bytes":
            head += f" {self.unit}"
        if done > self.total:
            return f"{head} (past the estimate), {rate_text}"
        percent = int(100 * done / self.total)
        left = (self.total - done) / rate if rate > 0 and done < self.total else None
        left_text = f", about {duration_text(left)} left" if left is not None else ""
        return f"{head} ({percent}%), {rate_text}{left_text}"

    def update(self, done: int) -> None:
        """Record that ``done`` (cumulative) is done; emits a line when one is due."""
        self.done = done
        now = self.clock()
        since = now - self.last
        tenth = int(10 * done / self.total) if self.total else 0
        due = since >= self.every or (tenth > self.last_tenth and since >= self.min_gap)
        if due:
            self.last, self.last_tenth = now, tenth
            self.lines += 1
            self.emit(self.line(done, now))

    def add(self, amount: int) -> None:
        self.update(self.done + amount)
