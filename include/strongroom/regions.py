"""The region that serves a request: the one named, else the primary, else the next region that answers.

Anything one region can serve (a restore, a catalog listing, a point in time, a status record, the one
audit record) asks :func:`first_answer`, so every fallback behaves and reads the same:

- a region whose call raises a :class:`~strongroom.errors.StrongroomError` is passed over, with its
  error logged (INFO: a restore's progress, not yet a problem);
- an answer that came after passing regions over logs one WARNING naming each of them with its error;
- when no region answers, one :class:`~strongroom.errors.NoRegionError` line names every region tried
  with its error (retryable when any of those errors was). With one region to ask (named, or the only
  one configured) its own error is raised unchanged: it already says what failed, with its own type.

Work that must reach every region (replication, prune, the status of each region, results stored in
every region) loops over ``config.regions`` itself: it is no fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from strongroom.config import Config, RegionConfig
from strongroom.errors import NoRegionError, StrongroomError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Skipped:
    """A region passed over, and why."""

    region: str
    reason: str
    retryable: bool = False

    def __str__(self) -> str:
        return f"{self.region}: {self.reason}"


@dataclass(frozen=True)
class Answer(Generic[T]):
    """What the serving region returned, and the regions passed over before it (in order)."""

    region: RegionConfig
    value: T
    skipped: tuple[Skipped, ...] = ()

    @property
    def unavailable(self) -> tuple[str, ...]:
        """Each region passed over as ``"<region>: <why>"``."""
        return tuple(str(s) for s in self.skipped)


def candidates(config: Config, region: str | None = None) -> list[RegionConfig]:
    """The region named (an unknown name is a :class:`ConfigError`), else every region, the primary first."""
    return [config.region(region)] if region else list(config.regions)


def first_answer(
    config: Config,
    what: str,
    call: Callable[[RegionConfig], T],
    *,
    region: str | None = None,
    empty: Callable[[T], str | None] | None = None,
) -> Answer[T]:
    """``call(region)`` for ``region`` only, else for each region in order until one returns.

    :param what: what is asked for, as the log and the error name it (``"snapshot ... of shop"``).
    :param call: reads (or writes) in one region; raises a :class:`StrongroomError` when it cannot.
        Any other exception is a bug or a stop, not an unavailable region: it propagates at once.
    :param empty: the reason an answer holds nothing (``None``: it holds something). Such a region is
        passed over too; when no region holds anything, the first empty answer is the answer.
    :raises NoRegionError: no region answered; each one tried is named with its error (with one region
        to ask, that region's own error is raised instead).
    """
    tried = candidates(config, region)
    skipped: list[Skipped] = []
    first_empty: Answer[T] | None = None
    for where in tried:
        try:
            value = call(where)
        except StrongroomError as exc:
            if len(tried) == 1:
                raise
            skipped.append(Skipped(where.name, _one_line(exc), exc.retryable))
            log.info("%s: region %s passed over: %s", what, where.name, skipped[-1].reason)
            continue
        reason = empty(value) if empty is not None else None
        if reason is not None and len(tried) > 1:
            log.info("%s: region %s passed over: %s", what, where.name, reason)
            first_empty = first_empty or Answer(where, value)
            skipped.append(Skipped(where.name, reason))
            continue
        if skipped:
            log.warning("%s: served by region %s after passing over %s", what, where.name,
                        "; ".join(map(str, skipped)))
        return Answer(where, value, tuple(skipped))
    if first_empty is not None:
        passed = tuple(s for s in skipped if s.region != first_empty.region.name)
        return Answer(first_empty.region, first_empty.value, passed)
    raise NoRegionError(f"no region could serve {what}: " + "; ".join(map(str, skipped)),
                        retryable=any(s.retryable for s in skipped))


def first_answer_or(config: Config, what: str, call: Callable[[RegionConfig], T], default: T) -> T:
    """A best-effort read: :func:`first_answer`'s value, or ``default`` with one WARNING when no region
    could serve it (a status record that cannot be read must not fail what reads it)."""
    try:
        return first_answer(config, what, call).value
    except StrongroomError as exc:
        log.warning("%s unreadable: %s", what.removeprefix("the "), exc)
        return default


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
