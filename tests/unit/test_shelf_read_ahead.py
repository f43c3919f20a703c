"""Shelf.get_value_read_ahead: the same values as get_value, fewer reads.

The read-ahead window may only ever hold committed bytes (below the shelf's
end when read), so values written later, and a failed transaction's bytes
that were truncated and written again, are never served stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from durus import shelf as shelf_module
from durus.shelf import READ_AHEAD_MAX_BYTES, READ_PEEK_BYTES, FileFormatError, Shelf
from durus.utils import int8_to_str


def value_for(number: int, size: int = 90) -> bytes:
    name = int8_to_str(number)
    return name + bytes([number % 251]) * size


def make_shelf(path: Path, count: int, size: int = 90) -> Shelf:
    shelf = Shelf(str(path), fsync=False, check_record_names=True)
    for start in range(0, count, 50):
        numbers = range(start, min(count, start + 50))
        shelf.store((int8_to_str(n), value_for(n, size)) for n in numbers)
    return shelf


class CountingReads:
    """Counts the shelf file's read_at calls."""

    def __init__(self, shelf: Shelf, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        original = shelf.file.read_at

        def read_at(offset: int, size: int) -> bytes:
            self.sizes.append(size)
            data: bytes = original(offset, size)
            return data

        monkeypatch.setattr(shelf.file, "read_at", read_at)


def test_values_match_get_value_in_any_order(tmp_path: Path) -> None:
    shelf = make_shelf(tmp_path / "a.shelf", 400)
    order = list(range(400)) + list(range(399, -1, -7)) + [5, 300, 6, 301, 7]
    for number in order:
        name = int8_to_str(number)
        assert shelf.get_value_read_ahead(name) == shelf.get_value(name) == value_for(number)
    assert shelf.get_value_read_ahead(int8_to_str(999)) is None
    shelf.close()


def test_reading_forward_grows_the_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shelf = make_shelf(tmp_path / "a.shelf", 3000)
    reads = CountingReads(shelf, monkeypatch)
    for number in range(3000):
        assert shelf.get_value_read_ahead(int8_to_str(number)) == value_for(number)
    assert reads.sizes[0] == READ_PEEK_BYTES
    assert max(reads.sizes) == READ_AHEAD_MAX_BYTES
    assert len(reads.sizes) < 3000 * 110 // READ_AHEAD_MAX_BYTES + 10
    shelf.close()


def test_scattered_reads_stay_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shelf = make_shelf(tmp_path / "a.shelf", 3000, size=400)
    reads = CountingReads(shelf, monkeypatch)
    for number in (2900, 10, 2000, 500, 2600, 1200):
        assert shelf.get_value_read_ahead(int8_to_str(number)) == value_for(number, 400)
    assert reads.sizes == [READ_PEEK_BYTES] * 6
    shelf.close()


def test_record_longer_than_the_window(tmp_path: Path) -> None:
    shelf = make_shelf(tmp_path / "a.shelf", 20)
    big = int8_to_str(20) + b"x" * (3 * READ_AHEAD_MAX_BYTES)
    shelf.store([(int8_to_str(20), big)])
    for number in range(19):
        shelf.get_value_read_ahead(int8_to_str(number))
    assert shelf.get_value_read_ahead(int8_to_str(20)) == big
    assert shelf.get_value_read_ahead(int8_to_str(19)) == value_for(19)
    shelf.close()


def test_later_transactions_are_read_fresh(tmp_path: Path) -> None:
    """The window never holds bytes past the end: a value stored after a read is seen."""
    shelf = make_shelf(tmp_path / "a.shelf", 10)
    last = int8_to_str(9)
    assert shelf.get_value_read_ahead(last) == value_for(9)
    assert shelf._read_ahead.window[0] + len(shelf._read_ahead.window[1]) == shelf.end_offset
    shelf.store([(int8_to_str(10), value_for(10)), (last, last + b"new")])
    assert shelf.get_value_read_ahead(last) == last + b"new"
    assert shelf.get_value_read_ahead(int8_to_str(10)) == value_for(10)
    shelf.close()


def test_failed_transaction_rewritten_at_the_same_offset(tmp_path: Path) -> None:
    shelf = make_shelf(tmp_path / "a.shelf", 10)
    assert shelf.get_value_read_ahead(int8_to_str(9)) == value_for(9)
    end = shelf.end_offset
    shelf.file.write_at(end, b"\xff" * 500)  # bytes of a failed, not yet truncated commit
    shelf._tail_dirty = True
    shelf.store([(int8_to_str(10), value_for(10, 30))])
    assert shelf.get_value_read_ahead(int8_to_str(10)) == value_for(10, 30)
    shelf.close()


def test_bad_record_raises_like_get_value(tmp_path: Path) -> None:
    shelf = make_shelf(tmp_path / "a.shelf", 10)
    position = shelf.get_position(int8_to_str(4))
    assert position is not None
    shelf.file.write_at(position + 8, int8_to_str(77))  # another name in the record
    shelf._read_ahead = shelf_module._ReadAhead()
    with pytest.raises(FileFormatError, match="holds name"):
        shelf.get_value_read_ahead(int8_to_str(4))
    shelf.close()


def test_file_like_shelf(tmp_path: Path) -> None:
    path = tmp_path / "a.shelf"
    make_shelf(path, 30).close()
    with open(path, "rb") as fileobj:
        shelf: Any = Shelf(fileobj, readonly=True)
        for number in range(30):
            assert shelf.get_value_read_ahead(int8_to_str(number)) == value_for(number)
