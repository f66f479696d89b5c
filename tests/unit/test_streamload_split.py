"""The pure decisions of a restore into a new database while its dump arrives: how the tables' data is shared
between streams (streamload.split_data), which indexes and constraints may be built before all data is in
(streamload.ready_after)."""

from __future__ import annotations

from strongroom.dumpfile import SECTION_DATA, SECTION_POST_DATA, SECTION_PRE_DATA, TocItem
from strongroom.streamload import ready_after, split_data

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


def _items() -> list[TocItem]:
    pre, data, post = SECTION_PRE_DATA, SECTION_DATA, SECTION_POST_DATA
    return [
        TocItem(1, "TABLE", pre, ()), TocItem(2, "TABLE", pre, ()), TocItem(30, "MATERIALIZED VIEW", pre, (1,)),
        TocItem(10, "TABLE DATA", data, (1,)), TocItem(11, "TABLE DATA", data, (2,)),
        TocItem(20, "CONSTRAINT", post, (1,)), TocItem(21, "INDEX", post, (2,)),
        TocItem(22, "FK CONSTRAINT", post, (2, 1, 20)), TocItem(23, "TRIGGER", post, (1,)),
        TocItem(24, "MATERIALIZED VIEW DATA", post, (30,)),
    ]


def test_indexes_and_constraints_are_built_once_their_tables_are_loaded() -> None:
    assert ready_after(_items(), set()) == []
    assert ready_after(_items(), {10}) == [20]  # a's primary key; the foreign key also needs b
    assert ready_after(_items(), {11}) == [21]
    assert ready_after(_items(), {10, 11}) == [20, 21, 22]  # triggers and refreshes wait for all data


def test_an_entry_not_restored_holds_back_what_depends_on_it() -> None:
    assert ready_after(_items(), {10, 11}, allowed={21, 22}) == [21]
