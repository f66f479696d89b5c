"""A dump written through a pipe gets the data offsets pg_dump writes into a seekable file (real pg_dump)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from devstack import PG_BIN
from strongroom import dumpfile

DUMP = [str(PG_BIN / "pg_dump"), "--format=custom", "--compress=0", "--no-password", "--host=127.0.0.1"]


def _env(stack) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": stack.pg.password, "PGUSER": "postgres", "PGPORT": str(stack.pg.port)}


def dump_seekable(stack, dbname: str, path: Path) -> None:
    subprocess.run([*DUMP, f"--file={path}", dbname], env=_env(stack), check=True)


def dump_through_pipe(stack, dbname: str, path: Path) -> None:
    proc = subprocess.Popen([*DUMP, dbname], env=_env(stack), stdout=subprocess.PIPE)
    with open(path, "wb") as out:
        assert proc.stdout is not None
        while block := proc.stdout.read(1 << 20):
            out.write(block)
    assert proc.wait() == 0


def offsets(path: Path) -> list[tuple[int, int, int]]:
    """(dump id, offset flag, offset) of every TOC entry with data, read back from the file."""
    with open(path, "rb") as f:
        toc = dumpfile.read_toc(f)
        data = path.read_bytes()
        return [(e.dump_id, data[e.flag_at], int.from_bytes(data[e.flag_at + 1 : e.flag_at + 1 + toc.off_size],
                                                            "little")) for e in toc.entries]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_piped_dump_gets_the_offsets_pg_dump_writes_itself_and_restores_in_parallel(stack, tmp_path):
    seekable, piped = tmp_path / "seekable.dump", tmp_path / "piped.dump"
    dump_seekable(stack, "shop", seekable)
    dump_through_pipe(stack, "shop", piped)
    before = offsets(piped)
    assert before and all(flag == dumpfile.OFFSET_NOT_SET for _, flag, _ in before)

    assert dumpfile.index_data_blocks(str(piped)) == len(before)

    assert offsets(piped) == offsets(seekable)
    assert all(flag == dumpfile.OFFSET_SET for _, flag, _ in offsets(piped))
    assert piped.stat().st_size == seekable.stat().st_size
    assert dumpfile.index_data_blocks(str(piped)) == 0  # already indexed: nothing to do

    stack.pg.execute("DROP DATABASE IF EXISTS shop_indexed")
    stack.pg.execute("CREATE DATABASE shop_indexed")
    try:
        subprocess.run([str(PG_BIN / "pg_restore"), "--jobs=2", "--exit-on-error", "--no-password",
                        "--host=127.0.0.1", "--dbname=shop_indexed", str(piped)], env=_env(stack), check=True)
        counts = {}
        for dbname in ("shop", "shop_indexed"):
            with psycopg.connect(**stack.pg.connect_kwargs(dbname)) as conn:
                counts[dbname] = [conn.execute(f"SELECT count(*), sum(hashtext(t::text)) FROM {table} t").fetchone()
                                  for table in ("customers", "orders", "order_items")]
        assert counts["shop_indexed"] == counts["shop"]
    finally:
        stack.pg.execute("DROP DATABASE IF EXISTS shop_indexed")


@pytest.fixture(scope="module")
def lob_database(stack):
    stack.pg.execute("DROP DATABASE IF EXISTS with_lob")
    stack.pg.execute("CREATE DATABASE with_lob")
    stack.pg.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1); "
                     "SELECT lo_from_bytea(0, '\\x0000000000010002'::bytea)", "with_lob")
    yield "with_lob"
    stack.pg.execute("DROP DATABASE IF EXISTS with_lob")


def test_data_that_may_hold_any_byte_is_left_alone(stack, tmp_path, lob_database):
    piped = tmp_path / "lob.dump"
    dump_through_pipe(stack, lob_database, piped)
    digest = sha(piped)
    with pytest.raises(dumpfile.DumpLayoutError, match="other than table rows"):
        dumpfile.index_data_blocks(str(piped))
    assert sha(piped) == digest


def test_a_compressed_truncated_or_foreign_file_is_refused_unchanged(stack, tmp_path):
    compressed = tmp_path / "compressed.dump"
    subprocess.run([*[a for a in DUMP if a != "--compress=0"], "--compress=6", "shop"], env=_env(stack),
                   check=True, stdout=compressed.open("wb"))
    piped = tmp_path / "piped.dump"
    dump_through_pipe(stack, "shop", piped)
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(piped.read_bytes()[: piped.stat().st_size - 100])
    early = tmp_path / "early.dump"
    early.write_bytes(piped.read_bytes()[:200])
    foreign = tmp_path / "foreign.dump"
    foreign.write_bytes(b"-- PostgreSQL database dump\nSELECT 1;\n")
    cases = {compressed: "compressed", truncated: "does not end", early: "ends inside",
             foreign: "not a pg_dump"}
    for path, reason in cases.items():
        digest = sha(path)
        with pytest.raises(dumpfile.DumpLayoutError, match=reason):
            dumpfile.index_data_blocks(str(path))
        assert sha(path) == digest, path.name
