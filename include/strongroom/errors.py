"""One exception root, a few named subclasses.

Every failure Strongroom reports to a person is a :class:`StrongroomError`; its ``str()`` is the one line
the CLI prints and the first line of an Airflow failure alert. ``retryable`` tells the DAG layer whether
a retry can help (a network blip) or cannot (a tampered object, a bad config).

A message that tells the person what to change names the setting as the library calls it, in backticks:
`clean`, `missing_roles=no_owner`, `confirm_source=shop-files`; never a CLI flag or a form field, since the
same error reaches the CLI, the trigger forms and the alerts. Each surface says its own words with
:func:`worded`: the CLI its flags, a trigger form its fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SETTING = re.compile(r"`([a-z][a-z_]*)(?:=([^`\s]+))?`")


def worded(text: str, words: Mapping[str, str]) -> str:
    """``text`` with each setting it names (`name` or `name=value`) in a surface's own ``words``.

    A ``"name=value"`` entry gives the whole word (``"missing_roles=no_owner": "--no-owner"``); a ``"name"``
    entry gives the word the value follows (``"confirm_source": "--confirm-source"`` makes
    ``--confirm-source shop-files``). A setting the surface does not offer is left as the library wrote it.
    """

    def one(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if value is not None and f"{name}={value}" in words:
            return words[f"{name}={value}"]
        if name in words:
            return words[name] + (f" {value}" if value is not None else "")
        return match.group(0)

    return _SETTING.sub(one, text)


class StrongroomError(Exception):
    """Root of every error Strongroom raises on purpose."""

    retryable = False


class ConfigError(StrongroomError):
    """The configuration file, or a connection it names, is missing or invalid."""


class KeyringError(StrongroomError):
    """The keyring is missing, malformed, or lacks a key that is needed."""


class IntegrityError(StrongroomError):
    """Stored data or a manifest failed authentication or a checksum: it was tampered with or damaged."""


class NotFoundError(StrongroomError):
    """A named database, snapshot or bucket does not exist."""


class SourceError(StrongroomError):
    """The PostgreSQL server could not be reached, refused us, or a dump tool failed."""

    retryable = True


class StorageError(StrongroomError):
    """The object store failed or refused a request."""

    retryable = True


class RestoreError(StrongroomError):
    """A restore was refused or failed; the target was left as it was."""


class ReplicationError(StrongroomError):
    """A snapshot did not reach every region; the message names each region that is missing it."""


class RefusedError(StrongroomError):
    """A request that could do harm (delete early, overwrite production) was refused; nothing changed."""


class PruneError(StrongroomError):
    """Some regions could not be pruned; the others were. The message names each one and why."""

    retryable = True


class RestoreTestError(StrongroomError):
    """A restore test failed; the message names the database, snapshot, region and what broke."""


class RecoveryError(StrongroomError):
    """A platform recovery failed: the message names every part that failed (the others were restored)."""


class NoRegionError(StrongroomError):
    """No region could serve a request (:func:`strongroom.regions.first_answer`); the message names every
    region tried and its error. Retryable when any of those errors was: that region may answer again."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
