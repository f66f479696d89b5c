"""Records Strongroom keeps about itself in the buckets, sealed so that a bucket writer cannot forge them.

Status records, run records, restore-test results and sandbox leases decide what the monitor alerts on,
what the Backups page shows and which local directories a teardown removes. Anyone who can write to a
bucket could write such a JSON file, so each one carries an HMAC-SHA256 under a key derived from the
region's keyring (as manifests do, under a separate derivation so a manifest MAC is never a record MAC),
over the record's body, its kind and the object key it is stored under (a record moved to another key
does not authenticate). :func:`seal` and :func:`unseal` are the only way records are written and read.

A record whose times lie more than :data:`FUTURE_TOLERANCE` in the future is a bad record, even with a
valid MAC: a clock cannot be ahead by hours, and a future time would silence staleness alerts for good.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom import envelope
from strongroom.errors import IntegrityError, KeyringError
from strongroom.keyring import Keyring
from strongroom.storage import ObjectStore

RECORD_INFO = b"strongroom record-mac v1"
FUTURE_TOLERANCE = timedelta(minutes=5)
_SEAL = "seal"


def _record_key(kek: bytes) -> bytes:
    return envelope.hkdf(kek, RECORD_INFO)


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def seal(body: Mapping[str, Any], keyring: Keyring, *, kind: str, key: str) -> bytes:
    """The record ``body`` as JSON, authenticated for ``kind`` stored at ``key``."""
    if _SEAL in body:
        raise ValueError(f"a record body must not have a {_SEAL!r} field")
    doc = dict(body)
    doc[_SEAL] = {"kind": kind, "key": key, "mac_key_id": keyring.active_id}
    tag = envelope.mac(_record_key(keyring.active_key), _canonical(doc))
    doc[_SEAL] = dict(doc[_SEAL], mac=tag)
    return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8")


def unseal(
    raw: bytes, keyring: Keyring, *, kind: str, key: str, times: Iterable[str] = (), now: datetime | None = None,
) -> dict[str, Any]:
    """The body of a record, after checking its MAC, kind, key and times; else :class:`IntegrityError`.

    ``times`` names top-level fields holding ISO times that must not lie in the future.
    """
    where = f"{kind} record {key}"
    try:
        doc = json.loads(raw)
        seal_ = dict(doc.pop(_SEAL))
        tag = seal_.pop("mac")
        key_id = seal_["mac_key_id"]
        if not isinstance(tag, str) or not isinstance(key_id, str) or not isinstance(doc, dict):
            raise TypeError(_SEAL)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError(f"{where} is not authenticated (no valid seal)") from None
    try:
        kek = keyring.key(key_id)
    except KeyringError:
        raise IntegrityError(f"{where} is sealed with key id {key_id!r}, which the keyring lacks") from None
    if not envelope.verify_mac(_record_key(kek), _canonical(dict(doc, **{_SEAL: seal_})), tag):
        raise IntegrityError(f"{where} failed authentication (forged or altered)")
    if seal_.get("kind") != kind or seal_.get("key") != key:
        raise IntegrityError(f"{where} was sealed as a {seal_.get('kind')} record for {seal_.get('key')}")
    limit = (now or datetime.now(UTC)) + FUTURE_TOLERANCE
    for name in times:
        at = parse_time(doc.get(name))
        if at is None:
            raise IntegrityError(f"{where}: {name} is not a time")
        if at > limit:
            raise IntegrityError(f"{where}: {name} {at.isoformat()} lies in the future")
    return doc


def parse_time(value: Any) -> datetime | None:
    """An ISO time as an aware datetime (naive is taken as UTC); None for anything else."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def in_future(at: datetime, now: datetime) -> bool:
    return at > now + FUTURE_TOLERANCE


def write(store: ObjectStore, keyring: Keyring, key: str, body: Mapping[str, Any], *, kind: str) -> None:
    store.put_bytes(key, seal(body, keyring, kind=kind, key=key))


def read(
    store: ObjectStore, keyring: Keyring, key: str, *, kind: str, times: Iterable[str] = (),
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """The authenticated body at ``key``; None when there is none; :class:`IntegrityError` when it is bad."""
    if store.head(key) is None:
        return None
    return unseal(store.get_bytes(key), keyring, kind=kind, key=key, times=times, now=now)
