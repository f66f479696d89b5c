"""The local S3 server of the demo, the tests and the benchmarks: moto's, with two of its costs taken out.

moto records every model instance it ever creates in a class-level list (``BaseModel.instances_tracked``, for
its dashboard), and nothing ever removes one: every object version ever written stays in memory after it is
deleted, and so does every copy that moto makes of every version of a bucket each time its versions are
listed (``ListObjectVersions`` deep-copies the whole bucket, values included, whatever the prefix). A test
session that prunes a bucket holding a few hundred megabytes grew one server past 7 GB and the kernel killed
it (the suite run of 2026-12-07 08:27). Started through this module, moto's objects are freed like any other
Python object once S3 no longer holds them.

And moto answers a ranged GET by reading the whole stored object and returning the slice, so reading an
object in ranges costs it the number of ranges times the object's size (``bench/s3_ranges.py``: 4.3 cpu-s
for a 400 MB object in 16 MiB ranges, 0.26 for one GET), on the same cores as whatever the benchmark
measures. Real S3 serves a range at the cost of the range; so does this server: a ranged GET reads only its
range from the stored object (0.19 cpu-s for the same 16 MiB ranges). The S3 API it serves is unchanged
(status, headers and bytes are moto's own).

    python scripts/s3server.py -H 127.0.0.1 -p PORT      # the arguments of ``python -m moto.server``
"""

from __future__ import annotations

import sys
from typing import Any


def untrack() -> None:
    """Make moto's models stop recording their instances (the dashboard's registry lists nothing new)."""
    from moto.core.common_models import BaseModel

    def new(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    BaseModel.__new__ = staticmethod(new)  # type: ignore[method-assign,assignment]


class _Stored:
    """What a ranged GET's handler gets for the object's value: its length, and the bytes of a slice read from
    the stored object when moto slices it (instead of the whole object, read and then sliced)."""

    def __init__(self, key: Any) -> None:
        self._key = key

    def __len__(self) -> int:
        return int(self._key.size)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __getitem__(self, part: slice) -> bytes:
        start, stop, _ = part.indices(len(self))
        with self._key.lock:
            self._key._value_buffer.seek(start)
            return bytes(self._key._value_buffer.read(max(0, stop - start)))


def serve_ranges_by_range() -> None:
    """While moto handles a ranged GET, an object's value is a :class:`_Stored`; any answer that is not a
    slice of it (a range moto serves whole) is read in full, as moto would have."""
    import threading

    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    ranged = threading.local()
    stored_value = FakeKey.value
    handle = S3Response.key_response

    def value(key: Any) -> Any:
        return _Stored(key) if getattr(ranged, "on", False) else stored_value.fget(key)  # type: ignore[attr-defined]

    def key_response(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        ranged.on = request.method == "GET" and bool(request.headers.get("range"))
        try:
            answer = handle(self, request, full_url, headers)
        finally:
            ranged.on = False
        if isinstance(answer, tuple) and len(answer) == 3 and isinstance(answer[2], _Stored):
            status, head, body = answer
            return status, head, body[0:len(body)]
        return answer

    FakeKey.value = property(value, stored_value.fset)  # type: ignore[assignment,attr-defined]
    S3Response.key_response = key_response  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    untrack()
    serve_ranges_by_range()
    from moto.server import main as serve

    serve(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
