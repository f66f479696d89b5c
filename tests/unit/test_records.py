"""The record seal (``strongroom.records``): what it binds and what it refuses."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime

import pytest

from strongroom import envelope, records
from strongroom.errors import IntegrityError
from strongroom.keyring import Keyring

FUTURE = "2099-01-01T00:00:00+00:00"


def test_records_are_bound_to_their_kind_and_key() -> None:
    """Altered, moved, re-kinded, unsealed and future-dated records are refused."""
    keyring = Keyring.from_extra({"active": "a", "keys": {"a": base64.b64encode(os.urandom(32)).decode()}})
    sealed = records.seal({"checked_at": datetime.now(UTC).isoformat(), "n": 1}, keyring, kind="run", key="k")
    assert records.unseal(sealed, keyring, kind="run", key="k", times=["checked_at"])["n"] == 1
    altered = sealed.replace(b'"n": 1', b'"n": 2')
    future = records.seal({"checked_at": FUTURE}, keyring, kind="run", key="k")
    for raw, kind, key, message in ((altered, "run", "k", "failed authentication"),
                                    (sealed, "run", "other", "was sealed as a run record for k"),
                                    (sealed, "lease", "k", "was sealed as a run record"),
                                    (b"{}", "run", "k", "not authenticated"),
                                    (future, "run", "k", "lies in the future")):
        with pytest.raises(IntegrityError, match=message):
            records.unseal(raw, keyring, kind=kind, key=key, times=["checked_at"])


def test_a_record_sealed_under_a_key_the_keyring_lacks_is_refused() -> None:
    ours = Keyring.from_extra({"active": "a", "keys": {"a": base64.b64encode(os.urandom(32)).decode()}})
    theirs = Keyring.from_extra({"active": "a", "keys": {"a": base64.b64encode(os.urandom(32)).decode()}})
    unknown = Keyring.from_extra({"active": "z", "keys": {"z": base64.b64encode(os.urandom(32)).decode()}})
    with pytest.raises(IntegrityError, match="failed authentication"):
        records.unseal(records.seal({}, theirs, kind="run", key="k"), ours, kind="run", key="k")
    with pytest.raises(IntegrityError, match="key id 'z', which the keyring lacks"):
        records.unseal(records.seal({}, unknown, kind="run", key="k"), ours, kind="run", key="k")


def test_a_manifest_mac_is_not_a_record_mac() -> None:
    """Records are MACed under their own derivation of the keyring key: a manifest-style MAC over the
    same bytes does not authenticate a record."""
    keyring = Keyring.from_extra({"active": "a", "keys": {"a": base64.b64encode(os.urandom(32)).decode()}})
    doc = {"seal": {"kind": "run", "key": "k", "mac_key_id": "a"}}
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    doc["seal"]["mac"] = envelope.mac(keyring.active_key, payload)
    with pytest.raises(IntegrityError, match="failed authentication"):
        records.unseal(json.dumps(doc).encode(), keyring, kind="run", key="k")
