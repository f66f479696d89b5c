"""Per-part retries: transient failures are retried alone, with backoff; the stall deadline ends them."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from strongroom.errors import StorageError
from strongroom.storage import ObjectStore, Progress, RetryPolicy


class _Client:
    class meta:
        endpoint_url = "http://s3.invalid"


def _store(**policy: float) -> ObjectStore:
    return ObjectStore(_Client(), "bkt", region="eu-west-1",
                       retry=RetryPolicy(**{"stall_seconds": 5.0, "attempts": 4, "delay": 0.01, **policy}))


def _error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "UploadPart")


def _failing(*errors: BaseException):
    calls = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return call, calls


@pytest.mark.parametrize("error", [_error("SlowDown", 503), _error("InternalError", 500),
                                   ReadTimeoutError(endpoint_url="http://s3.invalid"), ConnectionResetError()])
def test_a_transient_failure_is_retried_and_succeeds(error: BaseException) -> None:
    call, calls = _failing(error, error)
    assert _store().transfer(call, Progress(), "uploading part 1 of", "k") == "ok"
    assert len(calls) == 3


def test_a_refusal_is_not_retried() -> None:
    call, calls = _failing(_error("AccessDenied", 403))
    with pytest.raises(StorageError, match="AccessDenied"):
        _store().transfer(call, Progress(), "uploading part 1 of", "k")
    assert len(calls) == 1


def test_the_attempts_run_out_naming_the_region() -> None:
    call, calls = _failing(*[_error("SlowDown", 503)] * 10)
    with pytest.raises(StorageError, match=r"failed after 4 attempts \(region eu-west-1\).*SlowDown"):
        _store().transfer(call, Progress(), "uploading part 1 of", "k")
    assert len(calls) == 4


def test_no_progress_for_the_stall_deadline_ends_the_retries() -> None:
    progress = Progress()
    progress.last = time.monotonic() - 10  # nothing moved for 10 s; the deadline is 5 s
    call, calls = _failing(*[_error("SlowDown", 503)] * 10)
    with pytest.raises(StorageError, match=r"eu-west-1\) stalled: no progress for 10s"):
        _store().transfer(call, progress, "uploading part 1 of", "k")
    assert len(calls) == 1


def test_backoff_is_jittered_and_grows() -> None:
    policy = RetryPolicy(delay=1.0)
    assert all(0 <= policy.backoff(1) <= 1.0 for _ in range(50))
    assert max(policy.backoff(4) for _ in range(200)) > 1.0  # up to 8 s on the fourth attempt
