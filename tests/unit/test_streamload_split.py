"""How a restore into a new database shares the tables' data between its streams (streamload.split_data)."""

from __future__ import annotations

from strongroom.streamload import split_data

TOC = [
    "200; 2615 2200 SCHEMA - public pg_database_owner",
    "210; 1259 16390 TABLE public events shop",
    "3400; 0 16390 TABLE DATA public customers shop",
    "3401; 0 16391 TABLE DATA public events shop",
    "3402; 0 16392 TABLE DATA public order_items shop",
    "3403; 0 16393 TABLE DATA public orders shop",
    "3410; 0 0 SEQUENCE SET public orders_id_seq shop",
    "3420; 0 0 BLOBS - BLOBS ",
]
ROWS = {"public.customers": 100, "public.events": 3000, "public.order_items": 2000, "public.orders": 700}


def _tables(entries: list[str]) -> list[str]:
    return [line.split()[6] for line in entries if " TABLE DATA " in line]


def test_largest_tables_go_to_different_streams_and_each_list_keeps_the_file_order() -> None:
    first, second = split_data(TOC, ROWS, 2)
    assert _tables(first) == ["events"]
    assert _tables(second) == ["customers", "order_items", "orders"]  # 2000 + 700 + 100 < 3000 + ...
    assert second == [line for line in TOC if line in second]  # the order of the file: a pipe is read once
    # everything that is not a table's data is restored by the first stream, in file order
    assert [line for line in first if " TABLE DATA " not in line] == [
        line for line in TOC if " TABLE DATA " not in line]


def test_every_entry_is_in_exactly_one_list() -> None:
    for streams in (1, 2, 3, 8):
        lists = split_data(TOC, ROWS, streams)
        assert sorted(line for entries in lists for line in entries) == sorted(TOC)


def test_no_more_streams_than_tables_and_at_least_one() -> None:
    assert len(split_data(TOC, ROWS, 8)) == 4
    assert split_data(TOC, ROWS, 0) == [TOC]
    only_schema = TOC[:2]
    assert split_data(only_schema, {}, 2) == [only_schema]


def test_a_table_the_snapshot_did_not_count_still_gets_a_stream() -> None:
    lists = split_data(TOC, {}, 2)
    assert sorted(_tables(lists[0]) + _tables(lists[1])) == ["customers", "events", "order_items", "orders"]
    assert len(_tables(lists[0])) == len(_tables(lists[1])) == 2
