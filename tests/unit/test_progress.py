"""The progress reporter: done of total, percentage, rate and time left, every 10 s on long work and at
each further tenth on small work; and the summary line a task ends with."""

from __future__ import annotations

from datetime import timedelta

from strongroom.progress import Progress, duration_text, size_text

MiB = 2**20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reporter(total: int | None, **kwargs: object) -> tuple[Progress, Clock, list[str]]:
    clock, lines = Clock(), []
    return Progress("shop snapshot", total, clock=clock, emit=lines.append, **kwargs), clock, lines  # type: ignore[arg-type]


def test_line_says_done_of_total_percentage_rate_and_time_left() -> None:
    progress, clock, lines = reporter(1000 * MiB, estimated=True)
    clock.now += 10
    progress.update(250 * MiB)
    assert lines == ["shop snapshot: 250.0 MiB of ~1000.0 MiB (25%), 25.0 MiB/s, about 30s left"]


def test_long_work_reports_at_most_every_ten_seconds() -> None:
    progress, clock, lines = reporter(100_000 * MiB)  # 1% per 10 s: tenths come slowly
    for second in range(1, 61):
        clock.now += 1
        progress.update(second * 100 * MiB)
    assert len(lines) == 6  # one per 10 s
    assert "(6%)" in lines[-1] and "100.0 MiB/s" in lines[-1]


def test_fast_work_reports_each_tenth_once() -> None:
    progress, clock, lines = reporter(10 * MiB)
    for step in range(1, 101):  # 100 updates of 0.1 MiB, 0.25 s apart: 25 s in all
        clock.now += 0.25
        progress.update(step * MiB // 10)
    percents = [int(line.split("(")[1].split("%")[0]) for line in lines]
    assert percents == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def test_small_fast_work_still_shows_each_tenth_and_a_gap_can_space_them() -> None:
    progress, clock, lines = reporter(10 * MiB)
    for step in range(1, 21):  # a tenth every 0.1 s, in two updates each
        clock.now += 0.05
        progress.update(step * MiB // 2)
    assert len(lines) == 10  # one per tenth, not one per update
    spaced, clock, lines = reporter(10 * MiB, min_gap=1.0)
    for step in range(1, 11):
        clock.now += 0.1
        spaced.update(step * MiB)
    assert len(lines) == 1  # the tenth reached a second after the start


def test_past_the_estimate_says_so_instead_of_a_percentage_above_100() -> None:
    progress, clock, lines = reporter(100 * MiB, estimated=True)
    clock.now += 20
    progress.update(150 * MiB)
    assert lines == ["shop snapshot: 150.0 MiB of ~100.0 MiB (past the estimate), 7.5 MiB/s"]


def test_finished_work_says_no_time_left() -> None:
    progress, clock, lines = reporter(4 * MiB)
    clock.now += 2
    progress.update(4 * MiB)
    assert lines == ["shop snapshot: 4.0 MiB of 4.0 MiB (100%), 2.0 MiB/s"]


def test_counts_of_objects_and_an_unknown_total() -> None:
    progress, clock, lines = reporter(400, unit="objects")
    clock.now += 10
    progress.update(100)
    assert lines == ["shop snapshot: 100 of 400 objects (25%), 10.0 objects/s, about 30s left"]
    unknown, clock, lines = reporter(None)
    clock.now += 10
    unknown.add(5 * MiB)
    assert lines == ["shop snapshot: 5.0 MiB, 512.0 KiB/s"]


def test_texts() -> None:
    assert [size_text(n) for n in (0, 1023, 1024, 5 * MiB // 2, 3 * 2**30)] == [
        "0 B", "1023 B", "1.0 KiB", "2.5 MiB", "3.0 GiB"]
    assert [duration_text(s) for s in (0.42, 5, 42, 75, 185, 2400, 3725, 7200, 183600, 2592000, -30)] == [
        "0.4s", "5s", "42s", "1m15s", "3m05s", "40m", "1h02m", "2h", "2d03h", "30d", "-30s"]
    assert duration_text(timedelta(minutes=90)) == "1h30m"  # a timedelta reads the same as its seconds


def test_summary_line_says_what_where_how_much_and_how_long() -> None:
    from strongroom.summary import summary_line

    result = {"database": "shop", "snapshot_id": "20261201T174000Z", "taken_at": "2026-12-01T17:40:00+00:00",
              "region": "eu-central-1", "stored_bytes": 3 * MiB // 2, "plain_bytes": 9 * MiB, "seconds": 3.21}
    assert summary_line("snapshot_and_encrypt", "shop", result, 3.5) == (
        "snapshot_and_encrypt [shop] done in 3.5s: database shop; snapshot id 20261201T174000Z; "
        "region eu-central-1; stored 1.5 MiB; plain 9.0 MiB")
    assert summary_line("prune", None, {"regions": [{"region": "a"}, {"region": "b"}], "removed": []}, 75) == (
        "prune done in 1m15s: regions 2; removed none")
    assert summary_line("restore", None, {"download_seconds": 12.5, "bytes": 2048}, 20) == (
        "restore done in 20s: download 12s; bytes 2.0 KiB")
    assert summary_line("check", None, None, None) == "check done"
    tests = {"database": "shop", "tests": [{"success": True}, {"success": False}]}
    assert summary_line("restore_and_validate", "shop", tests, 20) == (
        "restore_and_validate [shop] done in 20s: database shop; tests 2 (1 passed, 1 FAILED)")
    assert len(summary_line("x", None, {"k": "v" * 70, **{f"k{i}": "v" * 70 for i in range(9)}}, 1)) == 400
