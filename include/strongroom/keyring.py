"""The keyring: key-encryption keys by id, one of them active.

It lives in an Airflow connection's extra (``{"active": "<id>", "keys": {"<id>": "<base64 of 32 bytes>"}}``),
never in the configuration file or a bucket. Older ids stay so older snapshots can still be decrypted
after a rotation. Error messages name key ids, never key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strongroom.errors import KeyringError

KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Keyring:
    active_id: str
    keys: Mapping[str, bytes] = field(repr=False)
    source: str = "keyring"

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | str | None, source: str = "keyring") -> Keyring:
        """Validate a connection extra and build the keyring; problems name ``source`` and the key id."""
        if isinstance(extra, str):
            try:
                extra = json.loads(extra) if extra.strip() else {}
            except json.JSONDecodeError:
                raise KeyringError(f"{source}: extra is not valid JSON") from None
        if not isinstance(extra, Mapping) or not extra:
            raise KeyringError(f"{source}: extra must be {{\"active\": ID, \"keys\": {{ID: BASE64}}}}")
        active = extra.get("active")
        raw_keys = extra.get("keys")
        if not isinstance(raw_keys, Mapping) or not raw_keys:
            raise KeyringError(f"{source}: 'keys' must map key ids to base64 keys")
        keys: dict[str, bytes] = {}
        for key_id, encoded in raw_keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
                raise KeyringError(f"{source}: key id {key_id!r} must match {_KEY_ID.pattern}")
            keys[key_id] = _decode_key(encoded, f"{source}: key {key_id!r}")
        if not isinstance(active, str) or not active:
            raise KeyringError(f"{source}: 'active' must name the key id that encrypts new backups")
        if active not in keys:
            raise KeyringError(f"{source}: active key id {active!r} is not in 'keys'")
        return cls(active_id=active, keys=dict(keys), source=source)

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active_id]

    def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise KeyringError(
                f"{self.source}: key id {key_id!r} is not in the keyring (was it removed after a rotation?)"
            ) from None


def _decode_key(encoded: Any, what: str) -> bytes:
    if not isinstance(encoded, str):
        raise KeyringError(f"{what} must be a base64 string")
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{what} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyringError(f"{what} is {len(key)} bytes; it must be {KEY_BYTES} random bytes (AES-256)")
    return key


def generate_entry(now: datetime | None = None) -> tuple[str, str]:
    """A new key id (sorting by creation date) and 32 random bytes, base64-encoded."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d")
    key_id = f"k{stamp}-{secrets.token_hex(3)}"
    return key_id, base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
