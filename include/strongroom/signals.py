"""Turn SIGTERM into an exception, so a stopped task or CLI run unwinds and aborts its upload.

Airflow 3's task runner answers SIGTERM by calling ``on_kill()`` and nothing else; a ``@task`` has no
``on_kill`` of its own, so without this the pipeline would keep running until SIGKILL and leave an
unfinished multipart upload behind.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM."""


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> Any:
        if callable(previous):
            previous(signum, frame)
        raise Terminated("stopped by SIGTERM")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
