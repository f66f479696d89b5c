"""The record seal (``strongroom.records``): what it binds and what it refuses."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime

import pytest

from strongroom import envelope, records
from strongroom.catalog import Manifest, StoredObject, wrap_data_key
from strongroom.errors import IntegrityError, KeyringError
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


def _keyring(key_id: str = "a") -> Keyring:
    return Keyring.from_extra({"active": key_id, "keys": {key_id: base64.b64encode(os.urandom(32)).decode()}})


def test_a_manifest_rewrapped_for_a_region_opens_with_that_regions_keyring_only() -> None:
    """The data key travels between regions as ``Manifest.rewrapped``: the copy opens under the new region's
    keyring and no longer under the first; a wrapped key moved to another snapshot does not open."""
    first, second = _keyring("a"), _keyring("b")
    data_key = envelope.new_data_key()
    key_id, wrapped = wrap_data_key(data_key, first, "shop", "20261126T140003Z-abcdef")
    manifest = Manifest(snapshot_id="20261126T140003Z-abcdef", database="shop", taken_at=datetime.now(UTC),
                        server_version="15", pg_dump_version="15", key_id=key_id, wrapped_key=wrapped,
                        dump=StoredObject("k", 1, 1, 1, "0" * 64), tables={})
    assert manifest.data_key(first) == data_key
    copy = manifest.rewrapped(data_key, second)
    assert (copy.key_id, copy.data_key(second)) == ("b", data_key)
    with pytest.raises(KeyringError):
        copy.data_key(first)
    moved = Manifest(**{**manifest.__dict__, "snapshot_id": "20261126T140003Z-fedcba"})
    with pytest.raises(IntegrityError):
        moved.data_key(first)
