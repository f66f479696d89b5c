"""What each data stream of a restore into a new database is sent (streamload.next_send): the header and TOC,
then only its own tables' data blocks, each once its bounds are known; the rest of the file as it is when the
blocks cannot be found. Played out here on made-up block positions; tests/integration/test_dumpfile.py finds
the blocks of a real dump and loads one through the streams."""

from __future__ import annotations

from strongroom.streamload import Spooled, next_send

# a TOC ending at 100, then four data blocks starting at 100, 400, 450 and 900, the file 1000 bytes long
STARTS = (100, 400, 450, 900)


def feed(mine: list[bool], states: list[Spooled]) -> tuple[list[tuple[int, int]], bool]:
    """Run a feeder over successive states of the spool: the ranges it sends (merged) and whether it is done."""
    sent: list[tuple[int, int]] = []
    block, offset, done = 0, 100, False
    for state in states:
        while not done:
            block, start, end, done = next_send(mine, state, block, offset)
            offset = start
            if start < end:
                if sent and sent[-1][1] == start:
                    sent[-1] = (sent[-1][0], end)
                else:
                    sent.append((start, end))
                offset = end
            elif not done:
                break
    return sent, done


def grown(available: int, starts: tuple[int, ...], safe: int, *, complete: bool = False,
          failed: bool = False) -> Spooled:
    return Spooled(available, starts, safe, failed, complete)


def test_a_stream_is_sent_only_its_own_blocks_and_is_done_after_its_last() -> None:
    whole = [grown(1000, STARTS, 1000, complete=True)]
    assert feed([False, True, False, True], whole) == ([(400, 450), (900, 1000)], True)
    assert feed([True, False, True, False], whole) == ([(100, 400), (450, 900)], True)  # done before the end


def test_a_block_still_arriving_is_sent_up_to_where_no_later_block_can_start() -> None:
    states = [
        grown(120, (100,), 110),               # block 0 arriving; its end not found yet
        grown(420, (100, 400), 410),            # block 1 found at 400: block 0 ends there
        grown(700, (100, 400, 450), 690),       # block 2 arriving
        grown(1000, STARTS, 1000, complete=True),
    ]
    assert feed([True, False, True, False], states[:1]) == ([(100, 110)], False)
    assert feed([True, False, True, False], states[:2]) == ([(100, 400)], False)
    assert feed([True, False, True, False], states[:3]) == ([(100, 400), (450, 690)], False)
    assert feed([True, False, True, False], states) == ([(100, 400), (450, 900)], True)


def test_a_stream_whose_first_block_comes_late_waits_without_sending_anything() -> None:
    states = [grown(300, (100,), 290), grown(420, (100, 400), 410)]
    assert feed([False, False, False, True], states) == ([], False)
    assert feed([False, False, False, True], [*states, grown(1000, STARTS, 1000, complete=True)]) == (
        [(900, 1000)], True)


def test_when_the_blocks_cannot_be_found_the_rest_is_sent_as_it_is_from_the_block_being_read() -> None:
    states = [grown(420, (100, 400), 410), grown(1000, (100, 400), 410, complete=True, failed=True)]
    # stream of block 1: it has 400..410, then everything after
    assert feed([False, True, False, False], states) == ([(400, 1000)], True)
    # stream of block 0: all of it, then the rest whole (pg_restore skips what is not its)
    assert feed([True, False, True, False], states) == ([(100, 1000)], True)
    # found nothing at all (a dump with large objects): the whole file after the TOC
    assert feed([True, False], [grown(1000, (), 100, complete=True, failed=True)]) == ([(100, 1000)], True)


def test_a_stream_with_no_blocks_of_its_own_is_done_at_once() -> None:
    assert feed([False, False, False, False], [grown(120, (100,), 110)]) == ([], True)
