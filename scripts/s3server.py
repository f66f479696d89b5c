"""The local S3 server of the demo, the tests and the benchmarks: moto's, without its registry of every object.

moto records every model instance it ever creates in a class-level list (``BaseModel.instances_tracked``, for
its dashboard), and nothing ever removes one: every object version ever written stays in memory after it is
deleted, and so does every copy that moto makes of every version of a bucket each time its versions are
listed (``ListObjectVersions`` deep-copies the whole bucket, values included, whatever the prefix). A test
session that prunes a bucket holding a few hundred megabytes grew one server past 7 GB and the kernel killed
it (the suite run of 2026-12-07 08:27). Started through this module, moto's objects are freed like any other
Python object once S3 no longer holds them; the S3 API it serves is unchanged.

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


def main(argv: list[str]) -> None:
    untrack()
    from moto.server import main as serve

    serve(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
