"""Generate the fixed test vectors of the Strongroom encryption format (docs/encryption-format.md).

Run once, from the repository root, and commit the JSON files it writes next to itself::

    .venv/bin/python tests/unit/vectors/generate.py

Everything is deterministic: keys, salts, nonce prefixes and wrap nonces are SHA-256 of fixed labels,
timestamps are fixed, and plaintexts are literals or a formula. Re-running it must not change the stream,
key-wrap or manifest-MAC files. ``snapshot.json``, ``object.json`` and ``chunked.json`` embed zstd output,
which may differ between zstd versions; the vectors stay valid either way because they store the
compressed bytes they encrypted.

The vectors pin the *format*, so regenerate only on a deliberate format change (and bump the version).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom import chunks, envelope, layout
from strongroom.catalog import ChunkRef, Manifest, StoredObject, _canonical, chunk_key_identity
from strongroom.keyring import Keyring

HERE = Path(__file__).resolve().parent
SNAPSHOT_ID = "20261126T140000Z-1a2b3c"
BIG_FORMULA = "plaintext[i] = i mod 251, for 0 <= i < plaintext_length"


def fixed(label: str, size: int) -> bytes:
    """A fixed, random-looking value: the first ``size`` bytes of SHA-256("strongroom vectors/" + label)."""
    assert size <= 32
    return hashlib.sha256(f"strongroom vectors/{label}".encode()).digest()[:size]


def big_plaintext(length: int) -> bytes:
    """``bytes(i % 251 for i in range(length))``, built faster."""
    return (bytes(range(251)) * (length // 251 + 1))[:length]


def hkdf(ikm: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def identity(kind: str, database: str, snapshot_id: str) -> dict[str, str]:
    return {"kind": kind, "database": database, "snapshot_id": snapshot_id}


def ad_of(ident: dict[str, str]) -> bytes:
    return envelope.object_identity(ident["kind"], ident["database"], ident["snapshot_id"])


def stream_vector(
    name: str,
    comment: str,
    ident: dict[str, str],
    segment_size: int,
    plaintext: bytes,
    *,
    formula: bool = False,
) -> dict[str, Any]:
    data_key = fixed(f"{name}/data key", 32)
    salt = fixed(f"{name}/salt", envelope.SALT_SIZE)
    prefix = fixed(f"{name}/nonce prefix", envelope.NONCE_PREFIX_SIZE)
    ad = ad_of(ident)
    enc = envelope.StreamEncryptor(data_key, ad, segment_size, salt=salt, nonce_prefix=prefix)
    ciphertext = enc.update(plaintext) + enc.finalize()
    assert envelope.decrypt_bytes(data_key, ad, ciphertext) == plaintext
    segments = max(1, -(-len(plaintext) // segment_size))
    vector: dict[str, Any] = {
        "name": name,
        "comment": comment,
        "data_key": data_key.hex(),
        "identity": ident,
        "associated_data": ad.hex(),
        "segment_size": segment_size,
        "salt": salt.hex(),
        "nonce_prefix": prefix.hex(),
        "header": enc.header.hex(),
        "subkey": hkdf(data_key, envelope.STREAM_INFO + b"\x00" + ad, salt).hex(),
        "segments": segments,
        "plaintext_length": len(plaintext),
        "ciphertext_length": len(ciphertext),
    }
    if formula:
        vector["plaintext_formula"] = BIG_FORMULA
        vector["plaintext_sha256"] = hashlib.sha256(plaintext).hexdigest()
        vector["ciphertext_sha256"] = hashlib.sha256(ciphertext).hexdigest()
    else:
        vector["plaintext"] = plaintext.hex()
        vector["ciphertext"] = ciphertext.hex()
    return vector


def stream_vectors() -> dict[str, Any]:
    mib = envelope.SEGMENT_SIZE
    dump = identity("dump", "shop", SNAPSHOT_ID)
    return {
        "description": "SRSTRM v1 streams: AES-256-GCM segments under an HKDF-SHA256 subkey; bytes in hex.",
        "spec": "docs/encryption-format.md",
        "vectors": [
            stream_vector("empty", "no plaintext: one final segment that is only a tag", dump, mib, b""),
            stream_vector(
                "one-byte",
                "a single byte, globals object identity",
                identity("globals", "shop", SNAPSHOT_ID),
                mib,
                b"\x2a",
            ),
            stream_vector(
                "one-full-segment",
                "exactly one full segment: it is the final one (no empty segment follows)",
                dump,
                64,
                bytes(range(64)),
            ),
            stream_vector(
                "two-full-segments",
                "exactly two full segments: the second is final and full",
                dump,
                64,
                bytes(range(128)),
            ),
            stream_vector(
                "multi-segment-partial-last",
                "three full 64-byte segments and a final 8-byte segment; non-ASCII database name",
                identity("dump", "café", SNAPSHOT_ID),
                64,
                b"Strongroom test vector, multi-segment. " * 5 + b"The end.",
            ),
            stream_vector(
                "1mib-segments",
                "the production segment size: two full 1 MiB segments and a final 12345-byte one",
                dump,
                mib,
                big_plaintext(2 * mib + 12345),
                formula=True,
            ),
        ],
    }


def wrap_vector(name: str, key_id: str, ident: dict[str, str]) -> dict[str, Any]:
    kek = fixed(f"{name}/kek", 32)
    data_key = fixed(f"{name}/data key", 32)
    nonce = fixed(f"{name}/nonce", 12)
    context = ad_of(ident)
    wrapped = envelope.wrap_key(kek, key_id, data_key, context, nonce=nonce)
    assert envelope.unwrap_key(kek, key_id, wrapped, context) == data_key
    aad = envelope.WRAP_INFO + b"\x00" + key_id.encode() + b"\x00" + context
    return {
        "name": name,
        "kek": kek.hex(),
        "kek_base64": base64.b64encode(kek).decode(),
        "key_id": key_id,
        "identity": ident,
        "context": context.hex(),
        "data_key": data_key.hex(),
        "nonce": nonce.hex(),
        "wrap_key": hkdf(kek, envelope.WRAP_INFO).hex(),
        "aad": aad.hex(),
        "wrapped": wrapped,
    }


def wrap_vectors() -> dict[str, Any]:
    return {
        "description": "Data keys wrapped under a keyring key (AES-256-GCM, HKDF-SHA256); bytes in hex.",
        "spec": "docs/encryption-format.md",
        "vectors": [
            wrap_vector("wrap-basic", "k20261126-a1b2c3", identity("data-key", "shop", SNAPSHOT_ID)),
            wrap_vector(
                "wrap-unicode", "k20250101-000000", identity("data-key", "café", "20250101T000000Z-abcdef")
            ),
        ],
    }


def stored(database: str, name: str, blob: bytes, plain: int, packed: int) -> StoredObject:
    key = f"databases/{database}/data/{SNAPSHOT_ID}/{name}"
    return StoredObject(key, plain, packed, len(blob), hashlib.sha256(blob).hexdigest())


def keyring_extra(*labels: str) -> dict[str, Any]:
    keys = {label: base64.b64encode(fixed(f"keyring/{label}", 32)).decode() for label in labels}
    return {"active": labels[-1], "keys": keys}


def manifest_mac_vector() -> dict[str, Any]:
    extra = keyring_extra("k20250601-0a0b0c", "k20261126-a1b2c3")
    keyring = Keyring.from_extra(extra)
    ident = identity("data-key", "shop", SNAPSHOT_ID)
    wrapped = envelope.wrap_key(
        keyring.active_key,
        keyring.active_id,
        fixed("mac/data key", 32),
        ad_of(ident),
        nonce=fixed("mac/nonce", 12),
    )
    # table names chosen to exercise the canonical JSON rules: escapes, non-ASCII, code point sort order
    tables = {
        "public.orders": 1200,
        "public.customers": 310,
        'public."Quote\\Back"': 3,
        "public.tab\there": 0,
        "public.a/b": 1,
        "public.straße": 7,
        "public.\uff4d\uff45\uff4d\uff4f": 5,
        "public.\U0001f600": 2,
        "public.del\x7f": 4,
    }
    manifest = Manifest(
        snapshot_id=SNAPSHOT_ID,
        database="shop",
        taken_at=datetime(2026, 11, 26, 14, 0, 0, 123456, tzinfo=UTC),
        server_version="17.2",
        pg_dump_version="17.2",
        key_id=keyring.active_id,
        wrapped_key=wrapped,
        dump=StoredObject(
            f"databases/shop/data/{SNAPSHOT_ID}/dump.zst.srenc",
            987654321,
            123456789,
            123456985,
            fixed("mac/sha256", 32).hex(),
        ),
        tables=tables,
        globals=None,
        globals_note="disabled in config",
        created_at=datetime(2026, 11, 26, 14, 3, 7, tzinfo=UTC),
        strongroom_version="0.1.0",
    )
    raw = manifest.to_json(keyring)
    doc = json.loads(raw)
    mac = doc.pop("mac")
    payload = _canonical(doc)
    assert envelope.verify_mac(keyring.active_key, payload, mac)
    return {
        "description": "A manifest authenticated with HMAC-SHA256 under HKDF-SHA256(keyring key).",
        "spec": "docs/encryption-format.md",
        "keyring": extra,
        "mac_key_id": keyring.active_id,
        "mac_key": hkdf(keyring.active_key, envelope.MAC_INFO).hex(),
        "manifest_json": raw.decode("ascii"),
        "canonical_payload": payload.decode("ascii"),
        "mac": mac,
    }


def snapshot_vector() -> dict[str, Any]:
    extra = keyring_extra("k20250601-0a0b0c", "k20261126-a1b2c3")
    keyring = Keyring.from_extra(extra)
    database = "shop"
    data_key = fixed("snapshot/data key", 32)
    dump_plain = b"PGDMP\x01\x10\x00\x04\x08\x01\x01\x01" + b"(stand-in for a pg_dump custom archive) " * 4
    globals_plain = (
        b"--\n-- PostgreSQL database cluster dump\n--\n\nCREATE ROLE app;\nALTER ROLE app WITH LOGIN;\n"
    )
    objects: dict[str, dict[str, Any]] = {}
    stored_objects: dict[str, StoredObject] = {}
    for kind, name, plain in (
        ("dump", "dump.zst.srenc", dump_plain),
        ("globals", "globals.sql.zst.srenc", globals_plain),
    ):
        packed = zstandard.ZstdCompressor(level=3).compress(plain)
        ad = envelope.object_identity(kind, database, SNAPSHOT_ID)
        enc = envelope.StreamEncryptor(
            data_key,
            ad,
            salt=fixed(f"snapshot/{kind}/salt", 32),
            nonce_prefix=fixed(f"snapshot/{kind}/prefix", 7),
        )
        blob = enc.update(packed) + enc.finalize()
        obj = stored(database, name, blob, len(plain), len(packed))
        stored_objects[kind] = obj
        objects[obj.key] = {
            "kind": kind,
            "stored": blob.hex(),
            "compressed": packed.hex(),
            "plaintext": plain.hex(),
        }
    manifest = Manifest(
        snapshot_id=SNAPSHOT_ID,
        database=database,
        taken_at=datetime(2026, 11, 26, 14, 0, 0, tzinfo=UTC),
        server_version="17.2",
        pg_dump_version="17.2",
        key_id=keyring.active_id,
        wrapped_key=envelope.wrap_key(
            keyring.active_key,
            keyring.active_id,
            data_key,
            envelope.object_identity("data-key", database, SNAPSHOT_ID),
            nonce=fixed("snapshot/wrap nonce", 12),
        ),
        dump=stored_objects["dump"],
        tables={"public.customers": 2, "public.orders": 3},
        globals=stored_objects["globals"],
        globals_note="roles with passwords",
        created_at=datetime(2026, 11, 26, 14, 0, 9, tzinfo=UTC),
        strongroom_version="0.1.0",
    )
    return {
        "description": "A whole snapshot: keyring, manifest, its two stored objects; bytes in hex.",
        "spec": "docs/encryption-format.md",
        "keyring": extra,
        "manifest_key": f"databases/{database}/manifests/{SNAPSHOT_ID}.json",
        "manifest_json": manifest.to_json(keyring).decode("ascii"),
        "data_key": data_key.hex(),
        "objects": objects,
    }


OBJECT_SOURCE = "media-prod"
CONTENT_ID_INFO = b"strongroom content-id v1"


def object_vector(
    name: str, comment: str, keyring: Keyring, kind: str, part: str | None, plain: bytes
) -> dict[str, Any]:
    """One object container, sealed by the library with fixed inputs. ``part`` None: a content, named by
    its content id."""
    id_key = hkdf(keyring.active_key, CONTENT_ID_INFO)
    part = part if part is not None else hmac.new(id_key, plain, hashlib.sha256).hexdigest()
    ad = envelope.object_identity(kind, OBJECT_SOURCE, part)
    data_key = fixed(f"object/{name}/data key", 32)
    parts: list[bytes] = []
    sealer = envelope.ObjectSealer(
        keyring,
        ad,
        parts.append,
        data_key=data_key,
        wrap_nonce=fixed(f"object/{name}/wrap nonce", 12),
        salt=fixed(f"object/{name}/salt", envelope.SALT_SIZE),
        nonce_prefix=fixed(f"object/{name}/nonce prefix", envelope.NONCE_PREFIX_SIZE),
    )
    sealer.write(plain)
    sealer.close()
    blob = b"".join(parts)
    assert envelope.unseal_object(blob, keyring, ad, name) == plain
    length = int.from_bytes(blob[8:12], "big")
    header = blob[12 : 12 + length]
    stream = blob[12 + length :]
    return {
        "name": name,
        "comment": comment,
        "identity": {"kind": kind, "source": OBJECT_SOURCE, "name": part},
        "associated_data": ad.hex(),
        "data_key": data_key.hex(),
        "key_id": json.loads(header)["key_id"],
        "wrapped_key": json.loads(header)["wrapped_key"],
        "header_length": length,
        "header_json": header.decode("ascii"),
        "salt": stream[13:45].hex(),
        "nonce_prefix": stream[45:52].hex(),
        "plaintext": plain.hex(),
        "compressed": envelope.decrypt_bytes(data_key, ad, stream).hex(),
        "stored": blob.hex(),
    }


def object_vectors() -> dict[str, Any]:
    extra = keyring_extra("k20250601-0a0b0c", "k20261126-a1b2c3")
    keyring = Keyring.from_extra(extra)
    content = b"Strongroom object container test vector: one content, stored once however many keys hold it.\n" * 3
    index = (
        b'{"format":"strongroom.points/1","source":"media-prod","taken_at":"2026-11-26T14:00:03+00:00",'
        b'"id_key_id":"k20261126-a1b2c3","entries":{"reports/2026/q4.pdf":'
        b'["2f43e224ff3965a7634d25387376947795fc7cf948fb29677b05799445b4a275","3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",279]}}'
    )
    return {
        "description": "Object-storage containers (SROBJ v1): a content and a point index, sealed; bytes in hex.",
        "spec": "docs/encryption-format.md",
        "keyring": extra,
        "content_id_key": hkdf(keyring.active_key, CONTENT_ID_INFO).hex(),
        "vectors": [
            object_vector("content", "a content: its name is its content id", keyring, "content", None, content),
            object_vector("empty-content", "an empty content: a zstd frame of no bytes", keyring, "content", None, b""),
            object_vector("point-index", "a point index, named by its UTC second", keyring, "points",
                          "20261126T140003Z", index),
        ],
    }


CUT_FORMULA = "input = SHA-256(u32be(0)) | SHA-256(u32be(1)) | ..., cut to input_length bytes"


def cut_input(length: int) -> bytes:
    """Incompressible, reproducible bytes for the chunker vector: SHA-256 of a big-endian counter."""
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(-(-length // 32)))[:length]


def chunked_vector() -> dict[str, Any]:
    """A chunked snapshot (format strongroom.snapshot/2): its chunk key, wrapped in the manifest; three
    distinct chunks, one named twice, each sealed under fixed salts and nonce prefixes; the globals sealed
    under the chunk key; and the chunker's cut lengths of a fixed input at the smallest configurable size."""
    extra = keyring_extra("k20250601-0a0b0c", "k20261126-a1b2c3")
    keyring = Keyring.from_extra(extra)
    database = "shop"
    key = chunks.ChunkKey(fixed("chunked/chunk key id", 8).hex(), fixed("chunked/chunk key", 32))
    pieces = [
        b"PGDMP\x01\x10\x00\x04\x08\x01\x01\x01" + b"(stand-in for the archive header and table of contents) " * 3,
        b"COPY public.orders (id, total) FROM stdin;\n" + b"".join(b"%d\t%d.00\n" % (i, i * 7) for i in range(40)),
        b"\\.\n" * 2,
    ]
    order = [0, 1, 2, 1]  # the dump is pieces 0, 1, 2 and 1 again: a repeated chunk is stored once
    namer = envelope.ChunkNamer(key.key)
    sealed: dict[str, dict[str, Any]] = {}
    for index, plain in enumerate(pieces):
        name = namer.name(plain)
        assert name == envelope.chunk_name(key.key, plain)
        identity = key.identity(database, name)
        packed = zstandard.ZstdCompressor(level=3).compress(plain)  # as seal_blob: one frame, content size
        salt, prefix = fixed(f"chunked/{index}/salt", 32), fixed(f"chunked/{index}/nonce prefix", 7)
        enc = envelope.StreamEncryptor(key.key, identity, salt=salt, nonce_prefix=prefix)
        blob = enc.update(packed) + enc.finalize()
        assert envelope.unseal_blob(key.key, identity, blob, name) == plain
        assert len(envelope.seal_blob(key.key, identity, plain)[0]) == len(blob)
        sealed[name] = {
            "key": layout.chunk_key(database, key.key_id, name),
            "identity": identity.decode("ascii"),
            "associated_data": identity.hex(),
            "salt": salt.hex(),
            "nonce_prefix": prefix.hex(),
            "plaintext": plain.hex(),
            "compressed": packed.hex(),
            "stored": blob.hex(),
        }
    names = list(sealed)
    refs = tuple(ChunkRef(names[i], len(pieces[i]), len(bytes.fromhex(sealed[names[i]]["stored"]))) for i in order)
    dump_plain = b"".join(pieces[i] for i in order)
    stored_total = sum(r.stored for r in refs)

    globals_plain = b"--\n-- PostgreSQL database cluster dump\n--\n\nCREATE ROLE app;\n"
    globals_packed = zstandard.ZstdCompressor(level=3).compress(globals_plain)
    globals_identity = envelope.object_identity("globals", database, SNAPSHOT_ID)
    enc = envelope.StreamEncryptor(key.key, globals_identity, salt=fixed("chunked/globals/salt", 32),
                                   nonce_prefix=fixed("chunked/globals/nonce prefix", 7))
    globals_blob = enc.update(globals_packed) + enc.finalize()
    globals_obj = stored(database, "globals.sql.zst.srenc", globals_blob, len(globals_plain), len(globals_packed))

    wrap_context = chunk_key_identity(database, key.key_id)
    manifest = Manifest(
        snapshot_id=SNAPSHOT_ID,
        database=database,
        taken_at=datetime(2026, 11, 26, 14, 0, 0, tzinfo=UTC),
        server_version="17.2",
        pg_dump_version="17.2",
        key_id=keyring.active_id,
        wrapped_key=envelope.wrap_key(keyring.active_key, keyring.active_id, key.key, wrap_context,
                                      nonce=fixed("chunked/wrap nonce", 12)),
        dump=StoredObject(layout.chunks_prefix(database, key.key_id), len(dump_plain), stored_total, stored_total, ""),
        tables={"public.orders": 40},
        globals=globals_obj,
        globals_note="roles without passwords",
        created_at=datetime(2026, 11, 26, 14, 0, 9, tzinfo=UTC),
        strongroom_version="0.1.0",
        chunk_key_id=key.key_id,
        chunks=refs,
    )
    raw = manifest.to_json(keyring)
    assert Manifest.from_json(raw, keyring, "vector").data_key(keyring) == key.key

    cut_key = chunks.ChunkKey(fixed("chunked/cut key id", 8).hex(), fixed("chunked/cut key", 32))
    chunk_size = 256 * 2**10
    data = cut_input(3 * 2**20)
    lengths = [len(piece) for piece in chunks.cut(io.BytesIO(data), cut_key, chunk_size)]
    assert sum(lengths) == len(data)
    seed = envelope.chunker_seed(key.key)
    return {
        "description": "A chunked snapshot (strongroom.snapshot/2) and the chunker's cuts; bytes in hex.",
        "spec": "docs/encryption-format.md",
        "keyring": extra,
        "database": database,
        "snapshot_id": SNAPSHOT_ID,
        "chunk_key_id": key.key_id,
        "chunk_key": key.key.hex(),
        "chunk_key_wrap_context": wrap_context.decode("ascii"),
        "name_key": hkdf(key.key, envelope.CHUNK_NAME_INFO).hex(),
        "seed_okm": hkdf(key.key, envelope.CHUNK_SEED_INFO).hex(),
        "seed": seed,
        "seed_hex": f"{seed:016x}",
        "manifest_key": layout.manifest_key(database, SNAPSHOT_ID),
        "manifest_json": raw.decode("ascii"),
        "chunks": sealed,
        "dump_plaintext": dump_plain.hex(),
        "globals": {"key": globals_obj.key, "plaintext": globals_plain.hex(), "compressed": globals_packed.hex(),
                    "stored": globals_blob.hex()},
        "cuts": {
            "chunk_key": cut_key.key.hex(),
            "seed": envelope.chunker_seed(cut_key.key),
            "chunk_size": chunk_size,
            "min_size": chunk_size // 4,
            "max_size": min(chunk_size * 4, 16 * 2**20),
            "normalized_chunking": 1,
            "input_formula": CUT_FORMULA,
            "input_length": len(data),
            "input_sha256": hashlib.sha256(data).hexdigest(),
            "lengths": lengths,
        },
    }


def write(name: str, doc: dict[str, Any]) -> None:
    path = HERE / name
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


def main() -> int:
    write("stream.json", stream_vectors())
    write("key-wrap.json", wrap_vectors())
    write("manifest-mac.json", manifest_mac_vector())
    write("snapshot.json", snapshot_vector())
    write("object.json", object_vectors())
    write("chunked.json", chunked_vector())
    return 0


if __name__ == "__main__":
    sys.exit(main())
