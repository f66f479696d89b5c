"""The encryption format pinned by fixed vectors, and checked against its specification.

Two independent checks of every vector in ``tests/unit/vectors/``:

(a) the library reproduces it exactly (same ciphertext from the same salt, prefix and nonce; same manifest
    bytes and MAC), and decrypts it;
(b) a reference decoder written here from ``docs/encryption-format.md`` alone (the ``ref_*`` functions), with
    only AES-GCM, HKDF-SHA256 and HMAC-SHA256 from ``cryptography``/``hmac`` and never ``strongroom.envelope``,
    decrypts and verifies it.

If (a) fails the code changed the format; if (b) fails the code and the document disagree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import random
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom import chunks, envelope, layout, objects
from strongroom.catalog import Manifest, _canonical
from strongroom.keyring import Keyring

VECTORS = Path(__file__).resolve().parent / "vectors"


# --------------------------------------------------------------------------------------------------------
# Reference decoder, written from docs/encryption-format.md. Constants are spelled out, not imported.
# --------------------------------------------------------------------------------------------------------

REF_MAGIC = bytes.fromhex("53525354524d0001")  # "SRSTRM" 0x00 0x01
REF_HEADER_SIZE = 52
REF_TAG = 16


class RefError(Exception):
    """The reference decoder refused its input."""


def ref_hkdf(ikm: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256, 32 bytes; no salt means 32 zero bytes (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or bytes(32), info=info).derive(ikm)


def ref_identity(kind: str, database: str, snapshot_id: str) -> bytes:
    """Section 3: "strongroom/v1" 0x00 kind 0x00 database 0x00 snapshot_id, UTF-8."""
    return b"strongroom/v1\x00" + kind.encode() + b"\x00" + database.encode() + b"\x00" + snapshot_id.encode()


def ref_parse_header(stream: bytes) -> tuple[bytes, int, bytes, bytes]:
    """Section 5.1: (header, segment_size, salt, nonce_prefix)."""
    if len(stream) < REF_HEADER_SIZE:
        raise RefError("truncated header")
    header = stream[:REF_HEADER_SIZE]
    if header[0:8] != REF_MAGIC or header[8] != 1:
        raise RefError("bad magic or version")
    segment_size = int.from_bytes(header[9:13], "big")
    if not 1 <= segment_size <= 2**30:
        raise RefError("bad segment size")
    return header, segment_size, header[13:45], header[45:52]


def ref_stream_subkey(data_key: bytes, identity: bytes, salt: bytes) -> bytes:
    """Section 5.2."""
    return ref_hkdf(data_key, b"strongroom stream v1\x00" + identity, salt)


def ref_decrypt_stream(data_key: bytes, identity: bytes, stream: bytes) -> bytes:
    """Section 5.4, non-streaming."""
    header, segment_size, salt, prefix = ref_parse_header(stream)
    aead = AESGCM(ref_stream_subkey(data_key, identity, salt))
    body = stream[REF_HEADER_SIZE:]
    full = segment_size + REF_TAG
    if len(body) < REF_TAG:
        raise RefError("final segment missing")
    count = -(-len(body) // full)
    if len(body) - (count - 1) * full < REF_TAG:
        raise RefError("final segment shorter than a tag")
    plain: list[bytes] = []
    for i in range(count):
        last = i == count - 1
        nonce = prefix + i.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
        try:
            plain.append(aead.decrypt(nonce, body[i * full : (i + 1) * full], header))
        except InvalidTag:
            raise RefError(f"segment {i} failed authentication") from None
    return b"".join(plain)


def ref_wrap_aad(key_id: str, context: bytes) -> bytes:
    """Section 6."""
    return b"strongroom key-wrap v1\x00" + key_id.encode() + b"\x00" + context


def ref_unwrap(kek: bytes, key_id: str, wrapped: str, context: bytes) -> bytes:
    """Section 6."""
    raw = base64.b64decode(wrapped, validate=True)
    aead = AESGCM(ref_hkdf(kek, b"strongroom key-wrap v1"))
    try:
        key = aead.decrypt(raw[:12], raw[12:], ref_wrap_aad(key_id, context))
    except InvalidTag:
        raise RefError("wrapped key failed authentication") from None
    if len(key) != 32:
        raise RefError("wrapped key has the wrong length")
    return key


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def ref_json_string(text: str) -> str:
    """Section 7.2 string rules, character by character."""
    out = ['"']
    for ch in text:
        point = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif 0x20 <= point <= 0x7E:
            out.append(ch)
        elif point > 0xFFFF:
            v = point - 0x10000
            out.append(f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}")
        else:
            out.append(f"\\u{point:04x}")
    out.append('"')
    return "".join(out)


def ref_canonical(value: Any) -> str:
    """Section 7.2: sorted keys by code point, no whitespace, ASCII only."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return ref_json_string(value)
    if isinstance(value, list):
        return "[" + ",".join(ref_canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        members = sorted(value.items())  # Python str order is code point order
        return "{" + ",".join(f"{ref_json_string(k)}:{ref_canonical(v)}" for k, v in members) + "}"
    raise TypeError(f"not in a manifest: {type(value).__name__}")


def ref_manifest_mac(kek: bytes, doc: Mapping[str, Any]) -> str:
    """Section 7.2: hex HMAC-SHA256 of the canonical document (without "mac")."""
    payload = ref_canonical({k: v for k, v in doc.items() if k != "mac"}).encode("ascii")
    return hmac.new(ref_hkdf(kek, b"strongroom manifest-mac v1"), payload, hashlib.sha256).hexdigest()


def ref_keyring(extra: Mapping[str, Any]) -> dict[str, bytes]:
    return {key_id: base64.b64decode(value, validate=True) for key_id, value in extra["keys"].items()}


def ref_verify_manifest(
    raw: str, keys: Mapping[str, bytes], database: str, snapshot_id: str, expected: str = "strongroom.snapshot/1"
) -> dict[str, Any]:
    """Section 7.2 steps 1-5."""
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("mac"), str) or "mac_key_id" not in doc:
        raise RefError("malformed manifest")
    kek = keys[doc["mac_key_id"]]
    if not hmac.compare_digest(ref_manifest_mac(kek, doc).encode(), doc["mac"].encode()):
        raise RefError("manifest MAC mismatch")
    if doc["format"] != expected:
        raise RefError("unknown manifest format")
    if doc["snapshot_id"] != snapshot_id or doc["database"] != database:
        raise RefError("manifest describes another snapshot")
    return doc


def ref_decrypt_snapshot(
    extra: Mapping[str, Any],
    manifest_json: str,
    objects: Mapping[str, bytes],
    database: str,
    snapshot_id: str,
) -> dict[str, bytes]:
    """Section 8, "decrypting a snapshot by hand": kind -> decompressed plaintext."""
    keys = ref_keyring(extra)
    doc = ref_verify_manifest(manifest_json, keys, database, snapshot_id)
    enc = doc["encryption"]
    data_key = ref_unwrap(
        keys[enc["key_id"]],
        enc["key_id"],
        enc["wrapped_key"],
        ref_identity("data-key", database, snapshot_id),
    )
    out: dict[str, bytes] = {}
    for kind in ("dump", "globals"):
        entry = doc[kind]
        if entry is None:
            continue
        stored = objects[entry["key"]]
        if len(stored) != entry["stored_size"] or hashlib.sha256(stored).hexdigest() != entry["sha256"]:
            raise RefError(f"{kind} object does not match its manifest entry")
        packed = ref_decrypt_stream(data_key, ref_identity(kind, database, snapshot_id), stored)
        if len(packed) != entry["compressed_size"]:
            raise RefError(f"{kind}: compressed size differs")
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        plain = decompressor.decompress(packed)
        if not decompressor.eof or decompressor.unused_data or len(plain) != entry["plain_size"]:
            raise RefError(f"{kind}: not exactly one complete zstd frame of the recorded size")
        out[kind] = plain
    return out


REF_OBJECT_MAGIC = bytes.fromhex("53524f424a00010a")  # "SROBJ" 0x00 0x01 "\n"


def ref_content_id(kek: bytes, plain: bytes) -> str:
    """Section 9.4: hex HMAC-SHA256 under HKDF(keyring key, no salt, "strongroom content-id v1")."""
    return hmac.new(ref_hkdf(kek, b"strongroom content-id v1"), plain, hashlib.sha256).hexdigest()


def ref_unseal_object(keys: Mapping[str, bytes], identity: bytes, blob: bytes) -> bytes:
    """Section 9.3, "opening an object container": the plaintext."""
    if len(blob) < 12 or blob[:8] != REF_OBJECT_MAGIC:
        raise RefError("not an object container")
    length = int.from_bytes(blob[8:12], "big")
    if len(blob) < 12 + length:
        raise RefError("truncated container header")
    try:
        header = json.loads(blob[12 : 12 + length].decode("utf-8"))
        key_id, wrapped = header["key_id"], header["wrapped_key"]
    except (ValueError, KeyError, TypeError):
        raise RefError("malformed container header") from None
    if not isinstance(key_id, str) or not isinstance(wrapped, str) or key_id not in keys:
        raise RefError("malformed container header or unknown key id")
    data_key = ref_unwrap(keys[key_id], key_id, wrapped, identity)  # the context is the object identity
    packed = ref_decrypt_stream(data_key, identity, blob[12 + length :])
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    plain = decompressor.decompress(packed)
    if not decompressor.eof or decompressor.unused_data:
        raise RefError("not exactly one complete zstd frame")
    return plain


def ref_inflate(packed: bytes) -> bytes:
    """Section 4: exactly one complete zstd frame, nothing after it."""
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    plain = decompressor.decompress(packed)
    if not decompressor.eof or decompressor.unused_data:
        raise RefError("not exactly one complete zstd frame")
    return plain


def ref_chunk_name(chunk_key: bytes, plain: bytes) -> str:
    """Section 12.3: hex HMAC-SHA256 under HKDF(chunk key, no salt, "strongroom chunk-name v1")."""
    return hmac.new(ref_hkdf(chunk_key, b"strongroom chunk-name v1"), plain, hashlib.sha256).hexdigest()


def ref_chunker_seed(chunk_key: bytes) -> int:
    """Section 12.4: the first 8 bytes of HKDF(chunk key, no salt, "strongroom chunker-seed v1"), big-endian,
    shifted right by one bit, lowest bit set."""
    return (int.from_bytes(ref_hkdf(chunk_key, b"strongroom chunker-seed v1")[:8], "big") >> 1) | 1


def ref_open_chunk(chunk_key: bytes, database: str, chunk_key_id: str, name: str, size: int, stored_size: int,
                   blob: bytes) -> bytes:
    """Section 12.5: a chunk's plaintext, checked for its stored length, its AEAD, its frame, its size and
    its name."""
    if len(blob) != stored_size:
        raise RefError(f"chunk {name} has the wrong stored length")
    identity = "\x00".join(("strongroom/v1", "chunk", database, chunk_key_id, name)).encode()
    plain = ref_inflate(ref_decrypt_stream(chunk_key, identity, blob))
    if len(plain) != size:
        raise RefError(f"chunk {name} has the wrong plain size")
    if not hmac.compare_digest(ref_chunk_name(chunk_key, plain).encode(), name.encode()):
        raise RefError(f"chunk {name} does not hold what its name says")
    return plain


def ref_decrypt_chunked_snapshot(
    extra: Mapping[str, Any], manifest_json: str, objects: Mapping[str, bytes], database: str, snapshot_id: str
) -> dict[str, bytes]:
    """Section 12.6, "decrypting a chunked snapshot by hand": kind -> plaintext."""
    keys = ref_keyring(extra)
    doc = ref_verify_manifest(manifest_json, keys, database, snapshot_id, "strongroom.snapshot/2")
    key_id = doc["chunk_key_id"]
    if not (len(key_id) == 16 and all(c in "0123456789abcdef" for c in key_id)):
        raise RefError("malformed chunk key id")
    enc = doc["encryption"]
    context = "\x00".join(("strongroom/v1", "chunk-key", database, key_id)).encode()
    chunk_key = ref_unwrap(keys[enc["key_id"]], enc["key_id"], enc["wrapped_key"], context)
    dump: list[bytes] = []
    for name, size, stored_size in doc["chunks"]:
        blob = objects[f"chunks/{database}/{key_id}/{name}"]
        dump.append(ref_open_chunk(chunk_key, database, key_id, name, size, stored_size, blob))
    out = {"dump": b"".join(dump)}
    if len(out["dump"]) != doc["dump"]["plain_size"]:
        raise RefError("the chunks do not add up to the dump's size")
    entry = doc["globals"]
    if entry is not None:
        stored = objects[entry["key"]]
        if len(stored) != entry["stored_size"] or hashlib.sha256(stored).hexdigest() != entry["sha256"]:
            raise RefError("globals object does not match its manifest entry")
        out["globals"] = ref_inflate(ref_decrypt_stream(chunk_key, ref_identity("globals", database, snapshot_id),
                                                        stored))
        if len(out["globals"]) != entry["plain_size"]:
            raise RefError("globals: wrong size")
    return out


# --------------------------------------------------------------------------------------------------------
# Vectors
# --------------------------------------------------------------------------------------------------------


@cache
def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return doc


def stream_vectors() -> list[dict[str, Any]]:
    return list(load("stream.json")["vectors"])


def wrap_vectors() -> list[dict[str, Any]]:
    return list(load("key-wrap.json")["vectors"])


def formula_plaintext(length: int) -> bytes:
    """``plaintext[i] = i mod 251``, as stated in the vector."""
    return (bytes(range(251)) * (length // 251 + 1))[:length]


def plaintext_of(vector: Mapping[str, Any]) -> bytes:
    if "plaintext" in vector:
        return bytes.fromhex(vector["plaintext"])
    assert vector["plaintext_formula"] == "plaintext[i] = i mod 251, for 0 <= i < plaintext_length"
    plain = formula_plaintext(vector["plaintext_length"])
    assert hashlib.sha256(plain).hexdigest() == vector["plaintext_sha256"]
    return plain


def check_ciphertext(vector: Mapping[str, Any], ciphertext: bytes) -> None:
    assert len(ciphertext) == vector["ciphertext_length"]
    if "ciphertext" in vector:
        assert ciphertext.hex() == vector["ciphertext"]
    else:
        assert hashlib.sha256(ciphertext).hexdigest() == vector["ciphertext_sha256"]


@cache
def ciphertext_of(name: str) -> bytes:
    """The vector's ciphertext; for hash-only vectors, rebuilt with the library (checked by test (a))."""
    vector = next(v for v in stream_vectors() if v["name"] == name)
    if "ciphertext" in vector:
        return bytes.fromhex(vector["ciphertext"])
    enc = envelope.StreamEncryptor(
        bytes.fromhex(vector["data_key"]),
        bytes.fromhex(vector["associated_data"]),
        vector["segment_size"],
        salt=bytes.fromhex(vector["salt"]),
        nonce_prefix=bytes.fromhex(vector["nonce_prefix"]),
    )
    ciphertext = enc.update(plaintext_of(vector)) + enc.finalize()
    check_ciphertext(vector, ciphertext)
    return ciphertext


def object_vectors() -> list[dict[str, Any]]:
    return list(load("object.json")["vectors"])


STREAM_NAMES = [v["name"] for v in stream_vectors()]
WRAP_NAMES = [v["name"] for v in wrap_vectors()]
OBJECT_NAMES = [v["name"] for v in object_vectors()]


def object_vector(name: str) -> dict[str, Any]:
    return next(v for v in object_vectors() if v["name"] == name)


def stream_vector(name: str) -> dict[str, Any]:
    return next(v for v in stream_vectors() if v["name"] == name)


def wrap_vector(name: str) -> dict[str, Any]:
    return next(v for v in wrap_vectors() if v["name"] == name)


def test_vector_set_covers_the_required_cases() -> None:
    vectors = stream_vectors()
    lengths = {(v["plaintext_length"], v["segment_size"]) for v in vectors}
    assert any(n == 0 for n, _ in lengths)
    assert any(n == 1 for n, _ in lengths)
    assert any(n == s for n, s in lengths)
    assert any(n > s and n % s for n, s in lengths)
    assert any(n > s and n % s == 0 for n, s in lengths)
    assert any(s == envelope.SEGMENT_SIZE and n > 2 * s for n, s in lengths)
    assert {v["identity"]["kind"] for v in vectors} == {"dump", "globals"}
    assert len(wrap_vectors()) >= 1
    for vector in vectors:
        assert vector["segments"] == max(1, -(-vector["plaintext_length"] // vector["segment_size"]))
        assert vector["ciphertext_length"] == 52 + vector["plaintext_length"] + 16 * vector["segments"]


# ---------- (a) the library reproduces every vector ----------


@pytest.mark.parametrize("name", STREAM_NAMES)
def test_library_reproduces_stream_vector(name: str) -> None:
    vector = stream_vector(name)
    data_key = bytes.fromhex(vector["data_key"])
    ad = bytes.fromhex(vector["associated_data"])
    ident = vector["identity"]
    assert envelope.object_identity(ident["kind"], ident["database"], ident["snapshot_id"]) == ad
    plain = plaintext_of(vector)
    enc = envelope.StreamEncryptor(
        data_key,
        ad,
        vector["segment_size"],
        salt=bytes.fromhex(vector["salt"]),
        nonce_prefix=bytes.fromhex(vector["nonce_prefix"]),
    )
    assert enc.header.hex() == vector["header"]
    ciphertext = enc.update(plain) + enc.finalize()
    check_ciphertext(vector, ciphertext)
    assert envelope.decrypt_bytes(data_key, ad, ciphertext) == plain


@pytest.mark.parametrize("name", WRAP_NAMES)
def test_library_reproduces_wrap_vector(name: str) -> None:
    vector = wrap_vector(name)
    kek = bytes.fromhex(vector["kek"])
    context = bytes.fromhex(vector["context"])
    ident = vector["identity"]
    assert envelope.object_identity(ident["kind"], ident["database"], ident["snapshot_id"]) == context
    keyring = Keyring.from_extra(
        {"active": vector["key_id"], "keys": {vector["key_id"]: vector["kek_base64"]}}
    )
    assert keyring.active_key == kek
    data_key = bytes.fromhex(vector["data_key"])
    nonce = bytes.fromhex(vector["nonce"])
    assert envelope.wrap_key(kek, vector["key_id"], data_key, context, nonce=nonce) == vector["wrapped"]
    assert envelope.unwrap_key(kek, vector["key_id"], vector["wrapped"], context) == data_key


def test_library_reproduces_manifest_mac_vector() -> None:
    vector = load("manifest-mac.json")
    keyring = Keyring.from_extra(vector["keyring"])
    raw = vector["manifest_json"].encode("ascii")
    manifest = Manifest.from_json(raw, keyring, "vector")
    assert manifest.to_json(keyring) == raw
    doc = json.loads(raw)
    assert doc.pop("mac") == vector["mac"]
    assert doc["mac_key_id"] == vector["mac_key_id"] == keyring.active_id
    assert _canonical(doc).decode("ascii") == vector["canonical_payload"]
    assert envelope.mac(keyring.key(vector["mac_key_id"]), _canonical(doc)) == vector["mac"]


def test_library_reads_snapshot_vector() -> None:
    vector = load("snapshot.json")
    keyring = Keyring.from_extra(vector["keyring"])
    raw = vector["manifest_json"].encode("ascii")
    manifest = Manifest.from_json(raw, keyring, vector["manifest_key"])
    assert manifest.to_json(keyring) == raw
    data_key = envelope.unwrap_key(
        keyring.key(manifest.key_id), manifest.key_id, manifest.wrapped_key, manifest.identity
    )
    assert data_key.hex() == vector["data_key"]
    entries = {"dump": manifest.dump, "globals": manifest.globals}
    assert set(vector["objects"]) == {entry.key for entry in entries.values() if entry is not None}
    for key, obj in vector["objects"].items():
        entry = entries[obj["kind"]]
        assert entry is not None and entry.key == key
        stored = bytes.fromhex(obj["stored"])
        assert (len(stored), hashlib.sha256(stored).hexdigest()) == (entry.stored_size, entry.sha256)
        packed = envelope.decrypt_bytes(data_key, manifest.object_identity(obj["kind"]), stored)
        assert packed.hex() == obj["compressed"] and len(packed) == entry.compressed_size
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(packed)
        assert plain.hex() == obj["plaintext"] and len(plain) == entry.plain_size
        # same salt and prefix (read from the header) give the same bytes
        _, segment_size, salt, prefix = ref_parse_header(stored)
        enc = envelope.StreamEncryptor(
            data_key, manifest.object_identity(obj["kind"]), segment_size, salt=salt, nonce_prefix=prefix
        )
        assert enc.update(packed) + enc.finalize() == stored


@pytest.mark.parametrize("name", OBJECT_NAMES)
def test_library_reproduces_object_vector(name: str) -> None:
    vector = object_vector(name)
    keyring = Keyring.from_extra(load("object.json")["keyring"])
    ident = vector["identity"]
    identity = envelope.object_identity(ident["kind"], ident["source"], ident["name"])
    assert identity.hex() == vector["associated_data"]
    stored, plain = bytes.fromhex(vector["stored"]), bytes.fromhex(vector["plaintext"])
    parts: list[bytes] = []
    sealer = envelope.ObjectSealer(
        keyring,
        identity,
        parts.append,
        data_key=bytes.fromhex(vector["data_key"]),
        wrap_nonce=base64.b64decode(vector["wrapped_key"])[:12],
        salt=bytes.fromhex(vector["salt"]),
        nonce_prefix=bytes.fromhex(vector["nonce_prefix"]),
    )
    sealer.write(plain)
    sealer.close()
    # "stored" embeds zstd output (zstandard as pinned in requirements.txt); see generate.py
    assert b"".join(parts) == stored
    assert envelope.unseal_object(stored, keyring, identity, name) == plain
    if ident["kind"] == "content":
        assert objects.content_id(objects.id_key(keyring)[1], plain) == ident["name"]


# ---------- (b) the reference decoder, written from the spec, reads every vector ----------


@pytest.mark.parametrize("name", STREAM_NAMES)
def test_reference_decrypts_stream_vector(name: str) -> None:
    vector = stream_vector(name)
    data_key = bytes.fromhex(vector["data_key"])
    ident = vector["identity"]
    identity = ref_identity(ident["kind"], ident["database"], ident["snapshot_id"])
    assert identity.hex() == vector["associated_data"]
    ciphertext = ciphertext_of(name)
    header, segment_size, salt, prefix = ref_parse_header(ciphertext)
    assert header.hex() == vector["header"]
    assert (segment_size, salt.hex(), prefix.hex()) == (
        vector["segment_size"],
        vector["salt"],
        vector["nonce_prefix"],
    )
    assert ref_stream_subkey(data_key, identity, salt).hex() == vector["subkey"]
    assert ref_decrypt_stream(data_key, identity, ciphertext) == plaintext_of(vector)


@pytest.mark.parametrize("name", WRAP_NAMES)
def test_reference_unwraps_wrap_vector(name: str) -> None:
    vector = wrap_vector(name)
    kek = base64.b64decode(vector["kek_base64"], validate=True)
    assert kek.hex() == vector["kek"]
    ident = vector["identity"]
    context = ref_identity(ident["kind"], ident["database"], ident["snapshot_id"])
    assert context.hex() == vector["context"]
    assert ref_hkdf(kek, b"strongroom key-wrap v1").hex() == vector["wrap_key"]
    assert ref_wrap_aad(vector["key_id"], context).hex() == vector["aad"]
    raw = base64.b64decode(vector["wrapped"], validate=True)
    assert len(raw) == 12 + 32 + 16 and len(vector["wrapped"]) == 80
    assert raw[:12].hex() == vector["nonce"]
    assert ref_unwrap(kek, vector["key_id"], vector["wrapped"], context).hex() == vector["data_key"]


def test_reference_verifies_manifest_mac_vector() -> None:
    vector = load("manifest-mac.json")
    keys = ref_keyring(vector["keyring"])
    doc = json.loads(vector["manifest_json"])
    kek = keys[doc["mac_key_id"]]
    assert ref_hkdf(kek, b"strongroom manifest-mac v1").hex() == vector["mac_key"]
    assert ref_canonical({k: v for k, v in doc.items() if k != "mac"}) == vector["canonical_payload"]
    assert ref_manifest_mac(kek, doc) == vector["mac"] == doc["mac"]
    ref_verify_manifest(vector["manifest_json"], keys, doc["database"], doc["snapshot_id"])


def test_manifest_mac_vector_exercises_sort_order_and_escapes() -> None:
    """The vector's table names must keep testing what section 7.2 warns about."""
    tables = json.loads(load("manifest-mac.json")["manifest_json"])["tables"]
    by_code_point = sorted(tables)
    by_utf16 = sorted(tables, key=lambda k: k.encode("utf-16-be"))
    assert by_code_point != by_utf16
    payload = load("manifest-mac.json")["canonical_payload"]
    for needle in ("\\u007f", "\\u00df", "\\ud83d\\ude00", "\\t", '\\"', "\\\\", "a/b"):
        assert needle in payload


def test_reference_decrypts_snapshot_vector() -> None:
    vector = load("snapshot.json")
    doc = json.loads(vector["manifest_json"])
    objects = {key: bytes.fromhex(obj["stored"]) for key, obj in vector["objects"].items()}
    plain = ref_decrypt_snapshot(
        vector["keyring"], vector["manifest_json"], objects, "shop", doc["snapshot_id"]
    )
    expected = {obj["kind"]: bytes.fromhex(obj["plaintext"]) for obj in vector["objects"].values()}
    assert plain == expected
    assert plain["dump"].startswith(b"PGDMP")


def test_reference_refuses_damaged_vectors() -> None:
    """The reference decoder is not vacuous: it rejects what it should."""
    vector = stream_vector("multi-segment-partial-last")
    data_key = bytes.fromhex(vector["data_key"])
    identity = bytes.fromhex(vector["associated_data"])
    ciphertext = ciphertext_of(vector["name"])
    flipped = bytearray(ciphertext)
    flipped[60] ^= 1
    segment = vector["segment_size"] + 16
    for damaged in (bytes(flipped), ciphertext[: 52 + segment], ciphertext[:-1], ciphertext + b"\x00"):
        with pytest.raises(RefError):
            ref_decrypt_stream(data_key, identity, damaged)
    with pytest.raises(RefError):
        ref_decrypt_stream(data_key, ref_identity("globals", "café", "20261126T140000Z-1a2b3c"), ciphertext)

    snapshot = load("snapshot.json")
    objects = {key: bytes.fromhex(obj["stored"]) for key, obj in snapshot["objects"].items()}
    tampered = snapshot["manifest_json"].replace('"public.orders": 3', '"public.orders": 4')
    assert tampered != snapshot["manifest_json"]
    with pytest.raises(RefError):
        ref_decrypt_snapshot(snapshot["keyring"], tampered, objects, "shop", "20261126T140000Z-1a2b3c")
    with pytest.raises(RefError):
        ref_decrypt_snapshot(
            snapshot["keyring"], snapshot["manifest_json"], objects, "shop", "20261126T140000Z-ffffff"
        )


def test_object_vector_set_covers_the_required_cases() -> None:
    vectors = object_vectors()
    assert {v["identity"]["kind"] for v in vectors} == {"content", "points"}
    assert any(v["plaintext"] == "" for v in vectors)
    assert any(len(v["plaintext"]) // 2 > len(v["compressed"]) // 2 for v in vectors)  # zstd did compress


@pytest.mark.parametrize("name", OBJECT_NAMES)
def test_reference_unseals_object_vector(name: str) -> None:
    doc = load("object.json")
    vector = object_vector(name)
    keys = ref_keyring(doc["keyring"])
    ident = vector["identity"]
    identity = ref_identity(ident["kind"], ident["source"], ident["name"])
    assert identity.hex() == vector["associated_data"]
    stored = bytes.fromhex(vector["stored"])
    assert stored[:8] == REF_OBJECT_MAGIC
    length = int.from_bytes(stored[8:12], "big")
    assert (length, stored[12 : 12 + length].decode("ascii")) == (vector["header_length"], vector["header_json"])
    assert json.loads(vector["header_json"]) == {"key_id": vector["key_id"], "wrapped_key": vector["wrapped_key"]}
    assert vector["key_id"] == doc["keyring"]["active"]
    kek = keys[vector["key_id"]]
    assert ref_unwrap(kek, vector["key_id"], vector["wrapped_key"], identity).hex() == vector["data_key"]
    stream = stored[12 + length :]
    _, segment_size, salt, prefix = ref_parse_header(stream)
    assert (segment_size, salt.hex(), prefix.hex()) == (2**20, vector["salt"], vector["nonce_prefix"])
    packed = ref_decrypt_stream(bytes.fromhex(vector["data_key"]), identity, stream)
    assert packed.hex() == vector["compressed"]
    plain = ref_unseal_object(keys, identity, stored)
    assert plain.hex() == vector["plaintext"]
    if ident["kind"] == "content":
        assert ref_hkdf(kek, b"strongroom content-id v1").hex() == doc["content_id_key"]
        assert ref_content_id(kek, plain) == ident["name"]


def test_reference_refuses_damaged_object_containers() -> None:
    doc = load("object.json")
    keys = ref_keyring(doc["keyring"])
    vector = object_vector("content")
    ident = vector["identity"]
    identity = ref_identity(ident["kind"], ident["source"], ident["name"])
    stored = bytes.fromhex(vector["stored"])
    length = vector["header_length"]
    other_key = json.dumps({"key_id": "k20250601-0a0b0c", "wrapped_key": vector["wrapped_key"]}).encode()
    flipped = bytearray(stored)
    flipped[12 + length + 60] ^= 1
    for damaged in (
        b"X" + stored[1:],  # magic
        stored[: 12 + length - 1],  # header cut short
        stored[:8] + len(other_key).to_bytes(4, "big") + other_key + stored[12 + length :],  # another key id
        bytes(flipped),  # a flipped bit in the stream
        stored[:-1],  # truncated
        stored + b"\x00",  # extended
    ):
        with pytest.raises(RefError):
            ref_unseal_object(keys, identity, damaged)
    with pytest.raises(RefError):  # moved to another name
        ref_unseal_object(keys, ref_identity("content", ident["source"], "0" * 64), stored)
    data_key = bytes.fromhex(vector["data_key"])
    packed = bytes.fromhex(vector["compressed"])
    header = stored[: 12 + length]
    for frame in (packed[:-1], packed + b"\x00"):  # authentic stream, incomplete or extended zstd frame
        with pytest.raises(RefError):
            ref_unseal_object(keys, identity, header + envelope.encrypt_bytes(data_key, identity, frame))


@pytest.mark.parametrize("segment_size", [1, 16, 64, 1000])
def test_reference_decrypts_library_output(segment_size: int) -> None:
    rng = random.Random(segment_size)
    identity = ref_identity("dump", "db", "20260101T000000Z-000000")
    for length in (
        0,
        1,
        segment_size - 1,
        segment_size,
        segment_size + 1,
        3 * segment_size,
        5 * segment_size + 3,
    ):
        data_key = rng.randbytes(32)
        plain = rng.randbytes(length)
        assert (
            ref_decrypt_stream(data_key, identity, envelope.encrypt_bytes(data_key, identity, plain)) == plain
        )


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1, -2, None, True, False], "c": {"z": "", "y": "x"}},
        {"k": "\x00\x01\x1f\x7f\x80\xff\u0100\u2028\ufffd\U00010000\U0010ffff"},
        {"\U0001f600": 1, "\uff21": 2, "\ue000": 3, "A": 4, "é": 5},
        {"quote": '"', "backslash": "\\", "controls": "\b\f\n\r\t", "slash": "/", "tilde": "~ "},
        {"big": 2**64 + 1, "negative": -(2**63), "zero": 0},
    ],
)
def test_reference_canonical_json_matches_library(value: dict[str, Any]) -> None:
    assert ref_canonical(value).encode("ascii") == _canonical(value)


# ---------- chunked snapshots (section 12) ----------


def chunked_objects(vector: Mapping[str, Any]) -> dict[str, bytes]:
    """The vector's stored objects by key: its chunks and its globals."""
    found = {chunk["key"]: bytes.fromhex(chunk["stored"]) for chunk in vector["chunks"].values()}
    return {**found, vector["globals"]["key"]: bytes.fromhex(vector["globals"]["stored"])}


def test_library_reproduces_chunked_vector() -> None:
    vector = load("chunked.json")
    keyring = Keyring.from_extra(vector["keyring"])
    key = chunks.ChunkKey(vector["chunk_key_id"], bytes.fromhex(vector["chunk_key"]))
    database = vector["database"]
    assert envelope.chunker_seed(key.key) == vector["seed"] == int(vector["seed_hex"], 16)
    manifest = Manifest.from_json(vector["manifest_json"].encode(), keyring, "vector")
    assert manifest.chunked and manifest.data_key(keyring) == key.key
    assert manifest.to_json(keyring).decode() == vector["manifest_json"]
    namer = envelope.ChunkNamer(key.key)
    for name, chunk in vector["chunks"].items():
        plain, stored = bytes.fromhex(chunk["plaintext"]), bytes.fromhex(chunk["stored"])
        assert envelope.chunk_name(key.key, plain) == name and namer.matches(plain, name)
        assert key.identity(database, name).hex() == chunk["associated_data"]
        assert chunk["key"] == layout.chunk_key(database, key.key_id, name)
        # seal_blob: one zstd frame compressed in one shot (zstandard as pinned), under fresh salt and prefix
        sealed, stats = envelope.seal_blob(key.key, key.identity(database, name), plain)
        assert (stats.compressed_size, len(sealed)) == (len(chunk["compressed"]) // 2, len(stored))
        assert envelope.unseal_blob(key.key, key.identity(database, name), sealed, name) == plain
        enc = envelope.StreamEncryptor(key.key, key.identity(database, name), salt=bytes.fromhex(chunk["salt"]),
                                       nonce_prefix=bytes.fromhex(chunk["nonce_prefix"]))
        assert enc.update(bytes.fromhex(chunk["compressed"])) + enc.finalize() == stored
        assert envelope.unseal_blob(key.key, key.identity(database, name), stored, name) == plain
    dump = b"".join(bytes.fromhex(vector["chunks"][ref.name]["plaintext"]) for ref in manifest.chunks)
    assert dump.hex() == vector["dump_plaintext"] and len(dump) == manifest.dump.plain_size


def test_library_cuts_the_chunker_vector_as_pinned() -> None:
    """The cut points: not needed to read a snapshot, but a chunker that cuts elsewhere for the same key
    stores every chunk again (section 12.4)."""
    cuts = load("chunked.json")["cuts"]
    length = cuts["input_length"]
    data = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(-(-length // 32)))[:length]
    assert hashlib.sha256(data).hexdigest() == cuts["input_sha256"]
    key = chunks.ChunkKey("0" * 16, bytes.fromhex(cuts["chunk_key"]))
    assert envelope.chunker_seed(key.key) == cuts["seed"] == ref_chunker_seed(key.key)
    assert [len(c) for c in chunks.cut(io.BytesIO(data), key, cuts["chunk_size"])] == cuts["lengths"]
    assert all(cuts["min_size"] <= n <= cuts["max_size"] for n in cuts["lengths"][:-1])


def test_reference_decrypts_chunked_vector() -> None:
    vector = load("chunked.json")
    chunk_key = bytes.fromhex(vector["chunk_key"])
    database, key_id = vector["database"], vector["chunk_key_id"]
    assert ref_hkdf(chunk_key, b"strongroom chunk-name v1").hex() == vector["name_key"]
    assert ref_hkdf(chunk_key, b"strongroom chunker-seed v1").hex() == vector["seed_okm"]
    assert ref_chunker_seed(chunk_key) == vector["seed"]
    assert vector["chunk_key_wrap_context"] == f"strongroom/v1\x00chunk-key\x00{database}\x00{key_id}"
    for name, chunk in vector["chunks"].items():
        assert chunk["identity"] == f"strongroom/v1\x00chunk\x00{database}\x00{key_id}\x00{name}"
        assert ref_chunk_name(chunk_key, bytes.fromhex(chunk["plaintext"])) == name
        assert ref_inflate(bytes.fromhex(chunk["compressed"])).hex() == chunk["plaintext"]
    plain = ref_decrypt_chunked_snapshot(vector["keyring"], vector["manifest_json"], chunked_objects(vector),
                                         database, vector["snapshot_id"])
    assert plain["dump"].hex() == vector["dump_plaintext"] and plain["dump"].startswith(b"PGDMP")
    assert plain["globals"].hex() == vector["globals"]["plaintext"]
    listed = json.loads(vector["manifest_json"])["chunks"]
    assert len(listed) > len(vector["chunks"])  # a chunk named twice is stored once


def test_reference_refuses_damaged_chunked_snapshots() -> None:
    vector = load("chunked.json")
    database, sid, key_id = vector["database"], vector["snapshot_id"], vector["chunk_key_id"]
    chunk_key = bytes.fromhex(vector["chunk_key"])
    objects = chunked_objects(vector)
    first, second = list(vector["chunks"])[:2]
    key_of = {name: chunk["key"] for name, chunk in vector["chunks"].items()}
    blob = objects[key_of[first]]
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    # another chunk's plaintext, sealed correctly under this chunk's identity: authentic, but not its name's
    other = bytes.fromhex(vector["chunks"][second]["plaintext"])
    identity = "\x00".join(("strongroom/v1", "chunk", database, key_id, first)).encode()
    impostor = envelope.encrypt_bytes(chunk_key, identity, zstandard.ZstdCompressor().compress(other))
    with pytest.raises(RefError, match="does not hold what its name says"):
        ref_open_chunk(chunk_key, database, key_id, first, len(other), len(impostor), impostor)
    for damaged in (flipped, blob[:-1], objects[key_of[second]], impostor):
        with pytest.raises(RefError):
            ref_decrypt_chunked_snapshot(vector["keyring"], vector["manifest_json"],
                                         {**objects, key_of[first]: damaged}, database, sid)
    with pytest.raises(RefError):  # the chunk list reordered: the MAC
        doc = json.loads(vector["manifest_json"])
        doc["chunks"] = list(reversed(doc["chunks"]))
        ref_decrypt_chunked_snapshot(vector["keyring"], json.dumps(doc), objects, database, sid)
    with pytest.raises(RefError):  # a chunked manifest read as a whole one
        ref_verify_manifest(vector["manifest_json"], ref_keyring(vector["keyring"]), database, sid)


def test_reference_opens_chunks_the_library_seals() -> None:
    rng = random.Random(20)
    key = chunks.ChunkKey("0123456789abcdef", rng.randbytes(32))
    for plain in (b"", b"x", rng.randbytes(3000), rng.randbytes(2**20 + 5)):  # the last: two segments
        name = envelope.chunk_name(key.key, plain)
        sealed, _ = envelope.seal_blob(key.key, key.identity("db", name), plain)
        assert ref_open_chunk(key.key, "db", key.key_id, name, len(plain), len(sealed), sealed) == plain
