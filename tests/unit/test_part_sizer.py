"""The part sizer keeps any object within the provider's part-count limit, with bounded part sizes."""

from __future__ import annotations

import pytest

from strongroom.errors import StorageError
from strongroom.storage import MIN_PART_SIZE, PartSizer

MiB = 1 << 20
GiB = 1 << 30


def parts_for(sizer: PartSizer, total: int) -> list[int]:
    """The part sizes an upload of ``total`` bytes uses (the last part holds the remainder)."""
    sizes, left, number = [], total, 1
    while left > 0:
        size = min(sizer.size_for(number), left)
        sizes.append(size)
        left -= size
        number += 1
    return sizes


@pytest.mark.parametrize("max_parts", [1000, 10000])
@pytest.mark.parametrize("expected", [0, 10 * GiB])
@pytest.mark.parametrize("actual_gib", [1, 50, 400])
def test_objects_fit_the_part_limit(max_parts: int, expected: int, actual_gib: int) -> None:
    sizer = PartSizer(16 * MiB, 1 * GiB, max_parts, expected)
    sizes = parts_for(sizer, actual_gib * GiB)
    assert len(sizes) <= max_parts
    assert all(s >= MIN_PART_SIZE for s in sizes[:-1])
    assert max(sizes) <= 1 * GiB
    assert sum(sizes) == actual_gib * GiB


def test_sizes_never_shrink_and_start_from_the_configured_size() -> None:
    sizer = PartSizer(16 * MiB, 256 * MiB, 1000)
    sizes = [sizer.size_for(n) for n in range(1, 1001)]
    assert sizes[0] == 16 * MiB
    assert sizes == sorted(sizes)
    assert sizes[-1] == 256 * MiB


def test_expected_size_raises_the_starting_part_only_when_needed() -> None:
    assert PartSizer(16 * MiB, 256 * MiB, 1000, 100 * GiB).initial == 16 * MiB  # 202 GiB fit already
    big = PartSizer(16 * MiB, 1 * GiB, 1000, 500 * GiB)
    assert big.initial > 16 * MiB
    assert big.capacity() >= 2 * 500 * GiB
    capped = PartSizer(16 * MiB, 64 * MiB, 1000, 100 * GiB)
    assert capped.initial == 64 * MiB  # as large as allowed; capacity stays under the hint


def test_capacity_matches_the_largest_uploadable_object() -> None:
    sizer = PartSizer(16 * MiB, 64 * MiB, 1000)
    capacity = sizer.capacity()
    assert len(parts_for(sizer, capacity)) == 1000
    with pytest.raises(StorageError, match="more than 1000 parts"):
        parts_for(sizer, capacity + 1)


@pytest.mark.parametrize(("part", "largest"), [(4 * MiB, 64 * MiB), (64 * MiB, 16 * MiB), (16 * MiB, 6 * GiB)])
def test_invalid_settings_are_refused(part: int, largest: int) -> None:
    with pytest.raises(ValueError, match="part sizes"):
        PartSizer(part, largest, 1000)
