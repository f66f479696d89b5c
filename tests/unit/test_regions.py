"""``regions.first_answer``: the named region, else the primary, else the next region that answers; each
region passed over named with its error, and one error naming every region when none answers."""

from __future__ import annotations

import logging

import pytest

from strongroom.config import RegionConfig, parse_config
from strongroom.errors import ConfigError, IntegrityError, NoRegionError, NotFoundError, StorageError, StrongroomError
from strongroom.regions import candidates, first_answer, first_answer_or

NAMES = ("eu-central-1", "eu-west-1", "eu-north-1")
CONFIG = parse_config({
    "regions": [{"name": n, "bucket": f"sr-{n}", "aws_conn_id": f"s3_{n}"} for n in NAMES],
    "encryption": {"keyring_conn_id": "strongroom_keyring"},
})


def answering(outcomes: dict[str, object]):
    """A call that returns or raises what ``outcomes`` says for each region, recording the regions asked."""
    asked: list[str] = []

    def call(region: RegionConfig) -> object:
        asked.append(region.name)
        outcome = outcomes[region.name]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return call, asked


def test_the_primary_answers_and_no_other_region_is_asked(caplog: pytest.LogCaptureFixture) -> None:
    call, asked = answering({"eu-central-1": "p", "eu-west-1": "w", "eu-north-1": "n"})
    with caplog.at_level(logging.INFO, logger="strongroom.regions"):
        answer = first_answer(CONFIG, "the thing", call)
    assert (answer.region.name, answer.value, answer.skipped) == ("eu-central-1", "p", ())
    assert asked == ["eu-central-1"] and caplog.records == []


def test_regions_are_passed_over_in_order_each_named_with_its_error(caplog: pytest.LogCaptureFixture) -> None:
    call, asked = answering({"eu-central-1": StorageError("connection refused"),
                             "eu-west-1": IntegrityError("s3://sr-eu-west-1/x does not match\nits SHA-256"),
                             "eu-north-1": "n"})
    with caplog.at_level(logging.INFO, logger="strongroom.regions"):
        answer = first_answer(CONFIG, "snapshot S of shop", call)
    assert (answer.region.name, answer.value) == ("eu-north-1", "n") and asked == list(NAMES)
    assert answer.unavailable == ("eu-central-1: connection refused",
                                  "eu-west-1: s3://sr-eu-west-1/x does not match its SHA-256")  # one line each
    passed = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert passed == ["snapshot S of shop: region eu-central-1 passed over: connection refused",
                      "snapshot S of shop: region eu-west-1 passed over: s3://sr-eu-west-1/x does not match "
                      "its SHA-256"]
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == ("snapshot S of shop: served by region eu-north-1 after passing over eu-central-1: "
                       "connection refused; eu-west-1: s3://sr-eu-west-1/x does not match its SHA-256")


@pytest.mark.parametrize(("errors", "retryable"), [
    ((StorageError("down"), NotFoundError("gone"), NotFoundError("gone too")), True),  # the first may come back
    ((IntegrityError("bad"), NotFoundError("gone"), NotFoundError("gone too")), False),
])
def test_no_region_answering_is_one_error_naming_every_region(errors: tuple, retryable: bool) -> None:
    call, _ = answering(dict(zip(NAMES, errors, strict=True)))
    with pytest.raises(NoRegionError) as caught:
        first_answer(CONFIG, "the thing", call)
    assert str(caught.value) == (f"no region could serve the thing: eu-central-1: {errors[0]}; "
                                 "eu-west-1: gone; eu-north-1: gone too")
    assert caught.value.retryable is retryable and isinstance(caught.value, StrongroomError)


def test_a_named_region_is_the_only_one_asked_and_its_own_error_is_raised() -> None:
    call, asked = answering({"eu-central-1": "p", "eu-west-1": NotFoundError("no such snapshot"),
                             "eu-north-1": "n"})
    with pytest.raises(NotFoundError, match=r"^no such snapshot$"):
        first_answer(CONFIG, "the thing", call, region="eu-west-1")
    assert asked == ["eu-west-1"]
    assert first_answer(CONFIG, "the thing", call, region="eu-north-1").value == "n"
    with pytest.raises(ConfigError, match="unknown region 'mars'"):
        first_answer(CONFIG, "the thing", call, region="mars")
    assert [r.name for r in candidates(CONFIG)] == list(NAMES)


def test_only_strongroom_errors_move_on_to_the_next_region() -> None:
    """Anything else is a bug or a stop (SIGTERM, Ctrl-C): never a reason to ask another region."""
    call, asked = answering({"eu-central-1": KeyError("bug"), "eu-west-1": "w", "eu-north-1": "n"})
    with pytest.raises(KeyError):
        first_answer(CONFIG, "the thing", call)
    assert asked == ["eu-central-1"]


def test_an_empty_answer_is_passed_over_and_is_the_answer_when_no_region_holds_anything() -> None:
    def empty(rows: list[str]) -> str | None:
        return None if rows else "holds nothing"

    call, _ = answering({"eu-central-1": [], "eu-west-1": StorageError("down"), "eu-north-1": ["a"]})
    answer = first_answer(CONFIG, "the list", call, empty=empty)
    assert (answer.region.name, answer.value) == ("eu-north-1", ["a"])
    assert answer.unavailable == ("eu-central-1: holds nothing", "eu-west-1: down")

    call, _ = answering({"eu-central-1": StorageError("down"), "eu-west-1": [], "eu-north-1": []})
    answer = first_answer(CONFIG, "the list", call, empty=empty)
    assert (answer.region.name, answer.value) == ("eu-west-1", [])  # the first region that answered
    assert answer.unavailable == ("eu-central-1: down", "eu-north-1: holds nothing")

    call, _ = answering({"eu-central-1": [], "eu-west-1": ["w"], "eu-north-1": ["n"]})
    assert first_answer(CONFIG, "the list", call, empty=empty, region="eu-central-1").value == []


def test_a_best_effort_read_gives_its_default_and_one_warning_when_no_region_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    call, asked = answering({n: StorageError(f"{n} refused") for n in NAMES})
    with caplog.at_level(logging.WARNING, logger="strongroom.regions"):
        assert first_answer_or(CONFIG, "the monitor state", call, {"default": 1}) == {"default": 1}
    assert asked == list(NAMES)
    assert [r.getMessage() for r in caplog.records] == [
        "monitor state unreadable: no region could serve the monitor state: eu-central-1: eu-central-1 refused; "
        "eu-west-1: eu-west-1 refused; eu-north-1: eu-north-1 refused"]
    call, _ = answering({"eu-central-1": StorageError("down"), "eu-west-1": "w", "eu-north-1": "n"})
    assert first_answer_or(CONFIG, "the monitor state", call, "default") == "w"
