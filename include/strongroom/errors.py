"""One exception root, a few named subclasses.

Every failure Strongroom reports to a person is a :class:`StrongroomError`; its ``str()`` is the one line
the CLI prints and the first line of an Airflow failure alert. ``retryable`` tells the DAG layer whether
a retry can help (a network blip) or cannot (a tampered object, a bad config).
"""

from __future__ import annotations


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


class NoRegionError(StrongroomError):
    """No region could serve a request (:func:`strongroom.regions.first_answer`); the message names every
    region tried and its error. Retryable when any of those errors was: that region may answer again."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
