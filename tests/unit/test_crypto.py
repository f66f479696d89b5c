"""The stream cipher, key wrap, manifest MAC and keyring: round trips, and every kind of damage refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from strongroom import envelope
from strongroom.catalog import Manifest, StoredObject, _canonical
from strongroom.errors import IntegrityError, KeyringError
from strongroom.keyring import KEY_BYTES, Keyring, generate_entry

SEG = 64  # small segments keep the multi-segment cases fast
CT_SEG = SEG + envelope.TAG_SIZE
H = envelope.HEADER_SIZE
SNAP = "20261126T140000Z-1a2b3c"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
AD = envelope.object_identity("dump", "shop", SNAP)
SALT = bytes(range(100, 132))
PREFIX = b"\x01\x02\x03\x04\x05\x06\x07"


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def encrypt(plain: bytes, segment_size: int = SEG, key: bytes = KEY, ad: bytes = AD) -> bytes:
    enc = envelope.StreamEncryptor(key, ad, segment_size, salt=SALT, nonce_prefix=PREFIX)
    return enc.update(plain) + enc.finalize()


def decrypt(ciphertext: bytes, key: bytes = KEY, ad: bytes = AD) -> bytes:
    return envelope.decrypt_bytes(key, ad, ciphertext)


def segments_of(ciphertext: bytes) -> tuple[bytes, list[bytes]]:
    body = ciphertext[H:]
    return ciphertext[:H], [body[i : i + CT_SEG] for i in range(0, len(body), CT_SEG)]


# ---------- stream: round trips and layout ----------


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 5 * SEG + 7])
def test_stream_round_trip_small_segments(size: int) -> None:
    plain = data(size, size)
    ciphertext = encrypt(plain)
    segments = max(1, -(-size // SEG))
    assert len(ciphertext) == H + size + envelope.TAG_SIZE * segments
    assert decrypt(ciphertext) == plain


def test_stream_round_trip_3_mib_default_segments() -> None:
    plain = data(3 * 2**20 + 1000)
    ciphertext = envelope.encrypt_bytes(KEY, AD, plain)
    assert len(ciphertext) == H + len(plain) + 4 * envelope.TAG_SIZE
    assert struct.unpack(">I", ciphertext[9:13])[0] == envelope.SEGMENT_SIZE == 2**20
    assert envelope.decrypt_bytes(KEY, AD, ciphertext) == plain


def test_stream_header_layout() -> None:
    header = encrypt(b"x")[:H]
    assert H == 52
    assert header[0:8] == envelope.MAGIC == b"SRSTRM\x00\x01"
    assert header[8] == envelope.VERSION == 1
    assert header[9:13] == SEG.to_bytes(4, "big")
    assert header[13:45] == SALT
    assert header[45:52] == PREFIX


def test_stream_is_randomised_per_encryption() -> None:
    plain = data(200)
    first, second = envelope.encrypt_bytes(KEY, AD, plain), envelope.encrypt_bytes(KEY, AD, plain)
    assert first != second
    assert first[13:45] != second[13:45] and first[45:52] != second[45:52]
    assert decrypt(first) == decrypt(second) == plain


def test_encryptor_rejects_a_short_data_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        envelope.StreamEncryptor(KEY[:16], AD)


def test_finalize_twice_is_refused() -> None:
    enc = envelope.StreamEncryptor(KEY, AD, SEG)
    enc.finalize()
    with pytest.raises(ValueError, match="already finalized"):
        enc.finalize()
    dec = envelope.StreamDecryptor(KEY, AD)
    dec.update(encrypt(b""))
    dec.finalize()
    with pytest.raises(ValueError, match="already finalized"):
        dec.finalize()


# ---------- stream: incremental use ----------

PLAIN = data(5 * SEG + 7, 99)


def pieces(blob: bytes, sizes: Callable[[], int]) -> list[bytes]:
    out, offset = [], 0
    while offset < len(blob):
        size = sizes()
        out.append(blob[offset : offset + size])
        offset += size
    return out


def sizes_for(seed: int | None, most: int) -> Callable[[], int]:
    """One byte at a time when ``seed`` is None, else random sizes in 0..most (empty pieces too)."""
    if seed is None:
        return lambda: 1
    rng = random.Random(seed)
    return lambda: rng.randint(0, most)


@pytest.mark.parametrize(("seed", "most"), [(None, 1), (1, 10), (2, 3 * SEG), (3, SEG + 1)])
def test_incremental_encryption_matches_one_call(seed: int | None, most: int) -> None:
    enc = envelope.StreamEncryptor(KEY, AD, SEG, salt=SALT, nonce_prefix=PREFIX)
    out = b"".join(enc.update(piece) for piece in pieces(PLAIN, sizes_for(seed, most))) + enc.finalize()
    assert out == encrypt(PLAIN)


@pytest.mark.parametrize(("seed", "most"), [(None, 1), (4, 10), (5, 3 * CT_SEG), (6, H + 1)])
def test_incremental_decryption_matches_one_call(seed: int | None, most: int) -> None:
    dec = envelope.StreamDecryptor(KEY, AD)
    out = b"".join(dec.update(piece) for piece in pieces(encrypt(PLAIN), sizes_for(seed, most)))
    assert out + dec.finalize() == PLAIN


def test_incremental_encryption_at_default_segment_size() -> None:
    plain = data(3 * 2**20 + 5, 7)
    one = envelope.StreamEncryptor(KEY, AD, salt=SALT, nonce_prefix=PREFIX)
    expected = one.update(plain) + one.finalize()
    enc = envelope.StreamEncryptor(KEY, AD, salt=SALT, nonce_prefix=PREFIX)
    out = b"".join(enc.update(p) for p in pieces(plain, sizes_for(8, 300_000))) + enc.finalize()
    assert out == expected


def test_update_emits_only_segments_known_not_to_be_last() -> None:
    enc = envelope.StreamEncryptor(KEY, AD, SEG, salt=SALT, nonce_prefix=PREFIX)
    assert enc.update(b"a" * SEG) == enc.header  # a full segment may still be the last one
    assert len(enc.update(b"b")) == CT_SEG  # now it is not
    assert len(enc.finalize()) == 1 + envelope.TAG_SIZE
    dec = envelope.StreamDecryptor(KEY, AD)
    ciphertext = encrypt(PLAIN)
    assert dec.update(ciphertext[: H + CT_SEG]) == b""
    assert dec.update(ciphertext[H + CT_SEG : H + CT_SEG + 1]) == PLAIN[:SEG]


# ---------- stream: damage of every kind raises IntegrityError ----------

CIPHERTEXT = encrypt(PLAIN)  # header + 5 full segments + a 7-byte last segment
assert len(segments_of(CIPHERTEXT)[1]) == 6


def flip(blob: bytes, offset: int) -> bytes:
    out = bytearray(blob)
    out[offset] ^= 0x01
    return bytes(out)


def swap(i: int, j: int) -> bytes:
    header, segs = segments_of(CIPHERTEXT)
    segs[i], segs[j] = segs[j], segs[i]
    return header + b"".join(segs)


def duplicate(i: int) -> bytes:
    header, segs = segments_of(CIPHERTEXT)
    return header + b"".join([*segs[: i + 1], segs[i], *segs[i + 1 :]])


def drop(i: int) -> bytes:
    header, segs = segments_of(CIPHERTEXT)
    return header + b"".join(segs[:i] + segs[i + 1 :])


def with_segment_size(size: int) -> bytes:
    return CIPHERTEXT[:9] + struct.pack(">I", size) + CIPHERTEXT[13:]


def splice_from(salt: bytes) -> bytes:
    """CIPHERTEXT with segment 1 taken from another stream (same key, identity and prefix, given salt)."""
    enc = envelope.StreamEncryptor(KEY, AD, SEG, salt=salt, nonce_prefix=PREFIX)
    other = enc.update(PLAIN[::-1]) + enc.finalize()
    return CIPHERTEXT[: H + CT_SEG] + segments_of(other)[1][1] + CIPHERTEXT[H + 2 * CT_SEG :]


def test_splice_control_only_the_salt_separates_streams() -> None:
    """Control for "segment from another stream": with the same salt the splice would decrypt."""
    spliced = decrypt(splice_from(SALT))
    assert spliced[SEG : 2 * SEG] == PLAIN[::-1][SEG : 2 * SEG] and spliced[:SEG] == PLAIN[:SEG]


DAMAGED: dict[str, bytes] = {
    "flip first segment": flip(CIPHERTEXT, H + 3),
    "flip first segment tag": flip(CIPHERTEXT, H + CT_SEG - 1),
    "flip middle segment": flip(CIPHERTEXT, H + 2 * CT_SEG + 10),
    "flip last segment": flip(CIPHERTEXT, len(CIPHERTEXT) - 20),
    "flip last byte": flip(CIPHERTEXT, len(CIPHERTEXT) - 1),
    "header magic": flip(CIPHERTEXT, 0),
    "header version": CIPHERTEXT[:8] + b"\x02" + CIPHERTEXT[9:],
    "header segment size smaller": with_segment_size(SEG - 1),
    "header segment size larger": with_segment_size(SEG + 1),
    "header segment size zero": with_segment_size(0),
    "header segment size huge": with_segment_size(2**31),
    "header salt": flip(CIPHERTEXT, 13 + 5),
    "header nonce prefix": flip(CIPHERTEXT, 45 + 2),
    "truncated to the header": CIPHERTEXT[:H],
    "truncated inside the header": CIPHERTEXT[: H - 1],
    "truncated to nothing": b"",
    "truncated at boundary 1": CIPHERTEXT[: H + CT_SEG],
    "truncated at boundary 3": CIPHERTEXT[: H + 3 * CT_SEG],
    "truncated at boundary 5 (before the last)": CIPHERTEXT[: H + 5 * CT_SEG],
    "truncated mid-segment": CIPHERTEXT[: H + 2 * CT_SEG + 30],
    "truncated by one byte": CIPHERTEXT[:-1],
    "truncated to less than a tag": CIPHERTEXT[: H + 5 * CT_SEG + 10],
    "header dropped": CIPHERTEXT[H:],
    "segments 1 and 2 swapped": swap(1, 2),
    "segments 0 and 1 swapped": swap(0, 1),
    "last two segments swapped": swap(4, 5),
    "segment 2 duplicated": duplicate(2),
    "last segment duplicated": duplicate(5),
    "segment 3 dropped": drop(3),
    "trailing byte": CIPHERTEXT + b"\x00",
    "trailing tag-sized garbage": CIPHERTEXT + bytes(16),
    "trailing segment-sized garbage": CIPHERTEXT + bytes(CT_SEG),
    "header repeated": CIPHERTEXT[:H] + CIPHERTEXT,
    "segment from another stream": splice_from(bytes(32)),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_stream_raises_integrity_error(name: str) -> None:
    assert DAMAGED[name] != CIPHERTEXT
    with pytest.raises(IntegrityError):
        decrypt(DAMAGED[name])


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_stream_raises_when_fed_byte_by_byte(name: str) -> None:
    dec = envelope.StreamDecryptor(KEY, AD)
    with pytest.raises(IntegrityError):
        for i in range(len(DAMAGED[name])):
            dec.update(DAMAGED[name][i : i + 1])
        dec.finalize()


@pytest.mark.parametrize("size", [0, 1, SEG, 2 * SEG])
def test_boundary_cases_detect_truncation_and_extension(size: int) -> None:
    """Streams whose last segment is empty or full are where a length-based parser could go wrong."""
    ciphertext = encrypt(data(size))
    for damaged in (ciphertext[:-1], ciphertext[: len(ciphertext) - CT_SEG], ciphertext + bytes(CT_SEG)):
        if damaged != ciphertext:
            with pytest.raises(IntegrityError):
                decrypt(damaged)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("header magic", "bad magic"),
        ("header version", "unsupported stream version 2"),
        ("header segment size zero", "invalid segment size"),
        ("header segment size huge", "invalid segment size"),
    ],
)
def test_bad_header_is_refused_before_any_segment_is_buffered(name: str, message: str) -> None:
    dec = envelope.StreamDecryptor(KEY, AD)
    with pytest.raises(IntegrityError, match=message):
        dec.update(DAMAGED[name][:H])


def test_wrong_data_key_raises() -> None:
    with pytest.raises(IntegrityError):
        decrypt(CIPHERTEXT, key=OTHER_KEY)


@pytest.mark.parametrize(
    "ad",
    [
        envelope.object_identity("dump", "other", SNAP),
        envelope.object_identity("dump", "shop", "20261126T140000Z-1a2b3d"),
        envelope.object_identity("globals", "shop", SNAP),
        envelope.object_identity("data-key", "shop", SNAP),
        b"",
    ],
    ids=["other database", "other snapshot", "other kind", "data-key kind", "empty"],
)
def test_wrong_associated_data_raises(ad: bytes) -> None:
    assert ad != AD
    with pytest.raises(IntegrityError):
        decrypt(CIPHERTEXT, ad=ad)


def test_object_identity_layout() -> None:
    assert envelope.object_identity("dump", "shop", SNAP) == b"strongroom/v1\x00dump\x00shop\x00" + SNAP.encode()
    assert envelope.object_identity("globals", "café", SNAP) == (
        b"strongroom/v1\x00globals\x00caf\xc3\xa9\x00" + SNAP.encode()
    )


# ---------- key wrap ----------

KEK = bytes(range(200, 232))
CONTEXT = envelope.object_identity("data-key", "shop", SNAP)
WRAPPED = envelope.wrap_key(KEK, "k1", KEY, CONTEXT, nonce=bytes(range(12)))


def test_wrap_round_trip_and_format() -> None:
    assert envelope.unwrap_key(KEK, "k1", WRAPPED, CONTEXT) == KEY
    raw = base64.b64decode(WRAPPED, validate=True)
    assert len(WRAPPED) == 80 and len(raw) == 12 + envelope.DATA_KEY_SIZE + envelope.TAG_SIZE
    first, second = envelope.wrap_key(KEK, "k1", KEY, CONTEXT), envelope.wrap_key(KEK, "k1", KEY, CONTEXT)
    assert first != second  # a fresh random nonce each time
    assert envelope.unwrap_key(KEK, "k1", first, CONTEXT) == envelope.unwrap_key(KEK, "k1", second, CONTEXT) == KEY


def rewrap(transform: Callable[[bytes], bytes]) -> str:
    return base64.b64encode(transform(base64.b64decode(WRAPPED))).decode()


@pytest.mark.parametrize(
    ("kek", "key_id", "wrapped", "context"),
    [
        (OTHER_KEY, "k1", WRAPPED, CONTEXT),
        (KEK, "k2", WRAPPED, CONTEXT),
        (KEK, "k1", WRAPPED, envelope.object_identity("data-key", "other", SNAP)),
        (KEK, "k1", WRAPPED, envelope.object_identity("data-key", "shop", "20261126T140000Z-000000")),
        (KEK, "k1", WRAPPED, envelope.object_identity("dump", "shop", SNAP)),
        (KEK, "k1", rewrap(lambda r: flip(r, 0)), CONTEXT),
        (KEK, "k1", rewrap(lambda r: flip(r, 20)), CONTEXT),
        (KEK, "k1", rewrap(lambda r: flip(r, len(r) - 1)), CONTEXT),
        (KEK, "k1", rewrap(lambda r: r[:-1]), CONTEXT),
        (KEK, "k1", rewrap(lambda r: r[:11]), CONTEXT),
        (KEK, "k1", rewrap(lambda r: r + b"\x00"), CONTEXT),
        (KEK, "k1", "", CONTEXT),
        (KEK, "k1", WRAPPED[:-2], CONTEXT),
        (KEK, "k1", WRAPPED + "!", CONTEXT),
        (KEK, "k1", "not base64 at all", CONTEXT),
        (KEK, "k1", envelope.wrap_key(KEK, "k1", KEY[:16], CONTEXT), CONTEXT),
    ],
    ids=[
        "wrong kek",
        "wrong key id",
        "other database",
        "other snapshot",
        "other kind",
        "nonce flipped",
        "ciphertext flipped",
        "tag flipped",
        "tag truncated",
        "shorter than a nonce",
        "byte appended",
        "empty",
        "base64 truncated",
        "not base64 (junk char)",
        "not base64 (spaces)",
        "wraps a 16-byte key",
    ],
)
def test_unwrap_failure_raises_integrity_error(kek: bytes, key_id: str, wrapped: str, context: bytes) -> None:
    with pytest.raises(IntegrityError):
        envelope.unwrap_key(kek, key_id, wrapped, context)


def test_unwrap_error_names_the_key_id_not_the_key() -> None:
    with pytest.raises(IntegrityError) as excinfo:
        envelope.unwrap_key(OTHER_KEY, "k1", WRAPPED, CONTEXT)
    assert "'k1'" in str(excinfo.value)
    assert base64.b64encode(OTHER_KEY).decode() not in str(excinfo.value)


def test_mac_is_hmac_under_a_derived_key() -> None:
    tag = envelope.mac(KEK, b"payload")
    assert re.fullmatch(r"[0-9a-f]{64}", tag)
    assert envelope.verify_mac(KEK, b"payload", tag)
    assert not envelope.verify_mac(KEK, b"payload!", tag)
    assert not envelope.verify_mac(OTHER_KEY, b"payload", tag)
    assert not envelope.verify_mac(KEK, b"payload", tag.upper())
    assert not envelope.verify_mac(KEK, b"payload", "é" * 64)  # non-ASCII is a mismatch, not a TypeError
    assert tag == hmac.new(envelope.hkdf(KEK, envelope.MAC_INFO), b"payload", hashlib.sha256).hexdigest()
    assert tag != hmac.new(KEK, b"payload", hashlib.sha256).hexdigest()  # the KEK is never used raw


# ---------- manifest MAC ----------

K_OLD, K_NEW = "k20250601-0a0b0c", "k20261126-a1b2c3"
B64_OLD = base64.b64encode(bytes(range(32, 64))).decode()
B64_NEW = base64.b64encode(bytes(range(64, 96))).decode()
KEYRING = Keyring.from_extra({"active": K_NEW, "keys": {K_OLD: B64_OLD, K_NEW: B64_NEW}})


def make_manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "snapshot_id": SNAP,
        "database": "shop",
        "taken_at": datetime(2026, 11, 26, 14, 0, 0, tzinfo=UTC),
        "server_version": "17.2",
        "pg_dump_version": "17.2",
        "key_id": K_NEW,
        "wrapped_key": envelope.wrap_key(KEYRING.active_key, K_NEW, KEY, CONTEXT, nonce=bytes(12)),
        "dump": StoredObject(f"databases/shop/data/{SNAP}/dump.zst.srenc", 1000, 400, 468, "ab" * 32),
        "tables": {"public.orders": 3, "public.customers": 2},
        "globals": StoredObject(f"databases/shop/data/{SNAP}/globals.sql.zst.srenc", 50, 40, 108, "cd" * 32),
        "globals_note": "roles with passwords",
        "created_at": datetime(2026, 11, 26, 14, 0, 9, tzinfo=UTC),
        "strongroom_version": "0.1.0",
    }
    fields.update(changes)
    return Manifest(**fields)


MANIFEST = make_manifest()
RAW = MANIFEST.to_json(KEYRING)


def test_manifest_round_trip() -> None:
    assert Manifest.from_json(RAW, KEYRING, "test") == MANIFEST
    no_globals = make_manifest(globals=None, globals_note="disabled in config")
    assert Manifest.from_json(no_globals.to_json(KEYRING), KEYRING, "test") == no_globals
    doc = json.loads(RAW)
    assert doc["mac_key_id"] == K_NEW and doc["encryption"]["key_id"] == K_NEW
    body = {k: v for k, v in doc.items() if k != "mac"}
    assert envelope.verify_mac(KEYRING.active_key, _canonical(body), doc["mac"])


def test_manifest_layout_does_not_matter_only_content() -> None:
    compact = json.dumps(json.loads(RAW), separators=(",", ":"), ensure_ascii=False).encode()
    assert Manifest.from_json(compact, KEYRING, "test") == MANIFEST


def test_manifest_from_an_older_key_still_verifies_after_rotation() -> None:
    old = Keyring.from_extra({"active": K_OLD, "keys": {K_OLD: B64_OLD}})
    manifest = make_manifest(key_id=K_OLD)
    assert Manifest.from_json(manifest.to_json(old), KEYRING, "test") == manifest


def edit(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return apply


def remove(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(key)


TAMPERING: dict[str, Callable[[dict[str, Any]], None]] = {
    "row count": edit(("tables", "public.orders"), 4),
    "table added": edit(("tables", "public.extra"), 0),
    "taken_at": edit(("taken_at",), "2026-11-26T14:00:01+00:00"),
    "created_at": edit(("created_at",), "2026-11-26T14:00:10+00:00"),
    "database": edit(("database",), "shop2"),
    "snapshot_id": edit(("snapshot_id",), "20261126T140000Z-1a2b3d"),
    "wrapped_key": edit(
        ("encryption", "wrapped_key"), envelope.wrap_key(KEYRING.active_key, K_NEW, KEY, CONTEXT, nonce=bytes([1]) * 12)
    ),
    "key_id": edit(("encryption", "key_id"), K_OLD),
    "dump sha256": edit(("dump", "sha256"), "cd" * 32),
    "dump stored_size": edit(("dump", "stored_size"), 469),
    "dump key": edit(("dump", "key"), "databases/shop/data/other/dump.zst.srenc"),
    "globals removed": edit(("globals",), None),
    "globals_note": edit(("globals_note",), ""),
    "format": edit(("format",), "strongroom.snapshot/9"),
    "mac_key_id to another known key": edit(("mac_key_id",), K_OLD),
    "field added": edit(("extra",), True),
    "field removed": remove("strongroom_version"),
    "mac changed": edit(("mac",), "0" * 64),
    "mac uppercase": lambda doc: doc.update(mac=doc["mac"].upper()),
    "mac not a string": edit(("mac",), 12),
    "mac non-ASCII": edit(("mac",), "é" * 64),
    "mac null": edit(("mac",), None),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_tampered_manifest_raises_integrity_error(name: str) -> None:
    doc = json.loads(RAW)
    TAMPERING[name](doc)
    raw = json.dumps(doc, indent=2, sort_keys=True).encode()
    assert raw != RAW
    with pytest.raises(IntegrityError, match="manifest where"):
        Manifest.from_json(raw, KEYRING, "where")


def test_manifest_with_a_valid_mac_but_unknown_format_raises() -> None:
    doc = json.loads(RAW)
    doc.pop("mac")
    doc["format"] = "strongroom.snapshot/9"
    doc["mac"] = envelope.mac(KEYRING.active_key, _canonical(doc))
    with pytest.raises(IntegrityError, match="unsupported format"):
        Manifest.from_json(json.dumps(doc).encode(), KEYRING, "where")


def test_manifest_under_a_foreign_keyring_raises() -> None:
    foreign = Keyring.from_extra({"active": K_NEW, "keys": {K_NEW: base64.b64encode(OTHER_KEY).decode()}})
    with pytest.raises(IntegrityError):
        Manifest.from_json(RAW, foreign, "where")


def test_unknown_mac_key_id_raises_keyring_error() -> None:
    doc = json.loads(RAW)
    doc["mac_key_id"] = "k19990101-000000"
    with pytest.raises(KeyringError, match="k19990101-000000") as excinfo:
        Manifest.from_json(json.dumps(doc).encode(), KEYRING, "where")
    assert "manifest where" in str(excinfo.value)
    only_old = Keyring.from_extra({"active": K_OLD, "keys": {K_OLD: B64_OLD}})
    with pytest.raises(KeyringError, match=K_NEW):
        Manifest.from_json(RAW, only_old, "where")


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"{", b"[]", b"null", b'"text"', b"{}", b"\xff\xfe", RAW[:-2], RAW[: len(RAW) // 2]],
    ids=["empty", "text", "open brace", "array", "null", "string", "empty object", "not utf-8", "cut", "half"],
)
def test_malformed_manifest_raises_integrity_error(raw: bytes) -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        Manifest.from_json(raw, KEYRING, "where")


@pytest.mark.parametrize("missing", ["mac", "mac_key_id"])
def test_manifest_without_mac_fields_is_malformed(missing: str) -> None:
    doc = json.loads(RAW)
    del doc[missing]
    with pytest.raises(IntegrityError, match="malformed"):
        Manifest.from_json(json.dumps(doc).encode(), KEYRING, "where")


def test_manifest_with_a_non_string_mac_key_id_is_refused() -> None:
    doc = json.loads(RAW)
    doc["mac_key_id"] = ["k1"]
    with pytest.raises(IntegrityError, match="malformed"):
        Manifest.from_json(json.dumps(doc).encode(), KEYRING, "where")


# ---------- keyring ----------


def b64(n: int, fill: int = 7) -> str:
    return base64.b64encode(bytes([fill]) * n).decode()


GOOD = b64(KEY_BYTES)


def test_keyring_from_extra_valid() -> None:
    ring = Keyring.from_extra({"active": "a", "keys": {"a": GOOD, "b.old_1-x": b64(32, 9)}}, source="conn")
    assert ring.active_id == "a" and ring.source == "conn"
    assert ring.active_key == bytes([7]) * 32
    assert ring.key("b.old_1-x") == bytes([9]) * 32
    text = json.dumps({"active": "a", "keys": {"a": f"  {GOOD}\n"}})
    assert Keyring.from_extra(text).active_key == bytes([7]) * 32
    assert GOOD not in repr(ring) and repr(bytes([7]) * 32) not in repr(ring)


def test_keyring_unknown_key_id() -> None:
    ring = Keyring.from_extra({"active": "a", "keys": {"a": GOOD}}, source="conn")
    with pytest.raises(KeyringError, match="conn: key id 'zz' is not in the keyring"):
        ring.key("zz")


SECRET_SHORT = b64(16, 3)
SECRET_LONG = b64(33, 4)
SECRET_BAD = "c2VjcmV0LW5vdC1iYXNlNjQ!!"
OTHER_GOOD = b64(32, 5)

BAD_EXTRAS: dict[str, tuple[Any, str]] = {
    "active missing from keys": ({"active": "b", "keys": {"a": GOOD}}, "active key id 'b' is not in 'keys'"),
    "no active": ({"keys": {"a": GOOD}}, "'active' must name"),
    "active empty": ({"active": "", "keys": {"a": GOOD}}, "'active' must name"),
    "active not a string": ({"active": 1, "keys": {"a": GOOD}}, "'active' must name"),
    "no keys": ({"active": "a"}, "'keys' must map"),
    "keys empty": ({"active": "a", "keys": {}}, "'keys' must map"),
    "keys a list": ({"active": "a", "keys": [GOOD]}, "'keys' must map"),
    "key too short": ({"active": "a", "keys": {"a": SECRET_SHORT, "b": OTHER_GOOD}}, "is 16 bytes"),
    "key too long": ({"active": "a", "keys": {"a": OTHER_GOOD, "b": SECRET_LONG}}, "is 33 bytes"),
    "key not base64": ({"active": "a", "keys": {"a": SECRET_BAD}}, "not valid base64"),
    "key not a string": ({"active": "a", "keys": {"a": 12345}}, "must be a base64 string"),
    "key a list of bytes": ({"active": "a", "keys": {"a": list(range(32))}}, "must be a base64 string"),
    "key null": ({"active": "a", "keys": {"a": None}}, "must be a base64 string"),
    "bad key id": ({"active": "a b", "keys": {"a b": GOOD}}, "key id 'a b' must match"),
    "key id too long": ({"active": "a", "keys": {"a" * 65: GOOD}}, "must match"),
    "extra not JSON": (f'{{"active": "a", "keys": {{"a": "{GOOD}"', "extra is not valid JSON"),
    "extra empty string": ("  ", "extra must be"),
    "extra None": (None, "extra must be"),
    "extra empty object": ({}, "extra must be"),
    "extra a list": ([GOOD], "extra must be"),
}


@pytest.mark.parametrize("name", list(BAD_EXTRAS))
def test_keyring_from_extra_rejects(name: str) -> None:
    extra, message = BAD_EXTRAS[name]
    with pytest.raises(KeyringError) as excinfo:
        Keyring.from_extra(extra, source="kr_conn")
    text = str(excinfo.value)
    assert text.startswith("kr_conn: ")
    assert message in text
    for secret in (GOOD, SECRET_SHORT, SECRET_LONG, SECRET_BAD, OTHER_GOOD):
        assert secret not in text
    assert "12345" not in text


def test_generate_entry() -> None:
    key_id, encoded = generate_entry(datetime(2026, 11, 26, 23, 59, tzinfo=UTC))
    assert re.fullmatch(r"k20261126-[0-9a-f]{6}", key_id)
    assert len(base64.b64decode(encoded, validate=True)) == KEY_BYTES
    ring = Keyring.from_extra({"active": key_id, "keys": {key_id: encoded}})
    assert ring.active_key == base64.b64decode(encoded)
    other_id, other = generate_entry()
    assert other != encoded and other_id != key_id
    assert re.fullmatch(r"k\d{8}-[0-9a-f]{6}", other_id)
