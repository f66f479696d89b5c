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


def _grow(piped: Path, steps: list[int]) -> tuple[list[int], dumpfile.BlockFinder]:
    """Replay ``piped`` being written in ``steps`` (sizes), scanning after each write as a restore does;
    at every step no block that is not found yet may start before ``safe``. Returns the true block starts."""
    data = piped.read_bytes()
    with open(piped, "rb") as f:
        toc = dumpfile.read_toc(f)
        truth = dumpfile.locate_data_blocks(f, toc)
    growing = piped.with_suffix(".growing")
    fd = os.open(growing, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        finder = dumpfile.BlockFinder(toc, fd)
        written = 0
        for size in steps:
            os.pwrite(fd, data[written:size], written)
            written = size
            finder.scan(size, complete=size == len(data))
            assert finder.starts == truth[: len(finder.starts)]
            assert all(start >= finder.safe for start in truth[len(finder.starts):]), (size, finder.safe)
            assert finder.safe <= size
    finally:
        os.close(fd)
    return truth, finder


def test_data_blocks_are_found_while_the_dump_is_written(stack, tmp_path):
    """The blocks a data stream is sent (strongroom.streamload) are found as the spool grows, exactly where
    the whole-file search finds them, in writes of any size, and never claimed before they are known."""
    piped = tmp_path / "piped.dump"
    dump_through_pipe(stack, "shop", piped)
    size = piped.stat().st_size
    for step in (1, 7, 4093, 65536, 1 << 20):
        if step == 1:  # byte by byte only around the TOC's end and the first blocks
            with open(piped, "rb") as f:
                end = dumpfile.read_toc(f).end
            steps = [*range(end - 20, end + 400), size]
        else:
            steps = [*range(step, size, step), size]
        truth, finder = _grow(piped, steps)
        assert len(truth) >= 5 and finder.found_all and finder.failed is None
        assert finder.starts == truth and finder.safe == size

    cut = tmp_path / "cut.dump"  # said to be whole, but ends inside a block: the rest cannot be found
    cut.write_bytes(piped.read_bytes()[: (truth[2] + truth[3]) // 2])
    with open(cut, "rb") as f:
        finder = dumpfile.BlockFinder(dumpfile.read_toc(f), f.fileno())
        finder.scan(cut.stat().st_size, complete=True)
    assert finder.starts == truth[:3] and finder.failed is not None and "not found in order" in finder.failed


def test_a_dump_with_large_objects_is_not_searched(stack, tmp_path, lob_database):
    piped = tmp_path / "lob.dump"
    dump_through_pipe(stack, lob_database, piped)
    with open(piped, "rb") as f:
        finder = dumpfile.BlockFinder(dumpfile.read_toc(f), f.fileno())
        finder.scan(piped.stat().st_size, complete=True)
    assert finder.starts == [] and finder.failed is not None and "other than table rows" in finder.failed


def test_each_data_stream_of_a_new_database_is_sent_only_its_own_blocks(stack, tmp_path):
    """A restore into a new database with two data streams: each is sent the header and TOC and its own
    tables' blocks, so together they are sent the dump about once (not once each), and the database is whole."""
    import logging
    import re

    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.postgres import PgSettings
    from strongroom.restore import restore_snapshot
    from strongroom.snapshot import snapshot_database
    from tests.conftest import PRIMARY, write_config

    config = load_config(write_config(tmp_path / "strongroom.yaml", restore={"jobs": 2}))
    taken = snapshot_database(config, "shop", connections())
    target = PgSettings(dbname="shop_streams", host="127.0.0.1", port=stack.pg.port, user="postgres",
                        password=stack.pg.password)
    stack.pg.execute("DROP DATABASE IF EXISTS shop_streams")
    try:
        lines: list[str] = []
        handler = logging.Handler(logging.INFO)
        handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
        streamload = logging.getLogger("strongroom.streamload")
        level = streamload.level
        streamload.addHandler(handler)  # on the logger itself: Airflow's logging set-up replaces the root's
        streamload.setLevel(logging.INFO)
        try:
            result = restore_snapshot(config, "shop", target, connections(), snapshot_id=taken["snapshot_id"],
                                      region=PRIMARY)
        finally:
            streamload.removeHandler(handler)
            streamload.setLevel(level)
        line = next((text for text in lines if "were sent" in text), "\n".join(lines))
        found = re.search(r"(\d+) data stream.* sent (\d+) bytes of the (\d+)-byte", line)
        assert found, line
        streams, sent, whole = (int(n) for n in found.groups())
        assert streams == 2, line
        piped = tmp_path / "piped.dump"
        dump_through_pipe(stack, "shop", piped)
        with open(piped, "rb") as f:
            toc_end = dumpfile.read_toc(f).end
        # every data byte once, the header and TOC once per stream (sent whole, each stream reads far more)
        assert whole < sent <= whole + streams * toc_end, line
        assert result.rows > 0
        for dbname in ("shop", "shop_streams"):
            with psycopg.connect(**stack.pg.connect_kwargs(dbname)) as conn:
                counts = [conn.execute(f"SELECT count(*), sum(hashtext(t::text)) FROM {table} t").fetchone()
                          for table in ("customers", "orders", "order_items", "events")]
            if dbname == "shop":
                expected = counts
        assert counts == expected
    finally:
        stack.pg.execute("DROP DATABASE IF EXISTS shop_streams")
