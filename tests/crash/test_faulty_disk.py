"""The fault model itself (tests/support/faulty_disk.py): is it as cruel as it claims?

Each property of the model in the module docstring is checked against an
independent brute-force description of the allowed crash images.
"""

from __future__ import annotations

import errno
import functools
import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durus.file import File
from tests.crash.crash_points import count
from tests.support.faulty_disk import (
    SECTOR_BYTES,
    FaultyDisk,
    HypothesisChooser,
    InjectedFault,
    RandomChooser,
    enumerate_choices,
    image_key,
    sector_pieces,
)

PATH = "/sim/db"


def test_sector_pieces_split_at_absolute_boundaries() -> None:
    pieces = sector_pieces(500, bytes(1100))
    assert [(offset, len(piece)) for offset, piece in pieces] == [
        (500, 12),
        (512, 512),
        (1024, 512),
        (1536, 64),
    ]
    assert sector_pieces(512, bytes(512)) == [(512, bytes(512))]
    assert sector_pieces(7, b"") == []


def test_enumerate_choices_visits_every_sequence_once() -> None:
    def two_then_three(chooser):  # type: ignore[no-untyped-def]
        first = chooser.below(2)
        return (first, chooser.below(3)) if first else (first,)

    assert list(enumerate_choices(two_then_three)) == [(0,), (1, 0), (1, 1), (1, 2)]
    with pytest.raises(RuntimeError):
        list(enumerate_choices(lambda c: c.below(10), limit=5))


def test_synced_bytes_survive_every_crash() -> None:
    disk = FaultyDisk()
    raw = disk.open(PATH)
    raw.pwrite(b"a" * 1000, 0)
    raw.sync()
    disk.sync_directory("/sim")
    images = disk.crash_images()
    assert images == [{PATH: b"a" * 1000}]
    count("[other] fault model self-test images", len(images))


def _expected_append_images(durable: bytes, offset: int, data: bytes) -> set[bytes]:
    """Brute force: the write lost, or any sector subset and any length cut."""
    expected = {durable}
    pieces = sector_pieces(offset, data)
    end = offset + len(data)
    for mask in itertools.product((0, 1), repeat=len(pieces)):
        content = bytearray(durable) + bytes(end - len(durable))
        for keep, (piece_offset, piece) in zip(mask, pieces, strict=True):
            if keep:
                content[piece_offset : piece_offset + len(piece)] = piece
        for length in range(len(durable), end + 1):
            expected.add(bytes(content[:length]))
    return expected


@pytest.mark.parametrize("offset, size", [(0, 10), (100, 1000), (510, 4), (512, 1024)])
def test_unsynced_append_may_be_torn_cut_or_lost(offset: int, size: int) -> None:
    durable = bytes(range(256)) * (offset // 256) + bytes(range(offset % 256))
    disk = FaultyDisk({PATH: durable})
    data = bytes((i * 7 + 1) % 256 or 1 for i in range(size))
    disk.open(PATH).pwrite(data, offset)
    images = {image[PATH] for image in disk.crash_images()}
    assert images == _expected_append_images(durable, offset, data)
    count("[other] fault model self-test images", len(images))


def test_unsynced_overwrite_straddling_a_sector_keeps_old_or_new_per_sector() -> None:
    old = bytes(1024)
    disk = FaultyDisk({PATH: old})
    disk.open(PATH).pwrite(b"\x11" * 8, SECTOR_BYTES - 3)
    images = {image[PATH][SECTOR_BYTES - 3 : SECTOR_BYTES + 5] for image in disk.crash_images()}
    assert images == {bytes(8), b"\x11" * 3 + bytes(5), bytes(3) + b"\x11" * 5, b"\x11" * 8}
    count("[other] fault model self-test images", len(images))


def test_unsynced_writes_persist_in_any_order() -> None:
    disk = FaultyDisk({PATH: b"...."})
    raw = disk.open(PATH)
    raw.pwrite(b"AB", 0)
    raw.pwrite(b"CD", 1)
    images = {image[PATH] for image in disk.crash_images()}
    assert images == {b"....", b"AB..", b".CD.", b"ACD.", b"ABD."}
    # "ABD." only arises when the later write persists first.
    count("[other] fault model self-test images", len(images))


def test_unsynced_truncate_may_be_lost() -> None:
    disk = FaultyDisk({PATH: b"0123456789"})
    disk.open(PATH).truncate(4)
    assert {image[PATH] for image in disk.crash_images()} == {b"0123", b"0123456789"}


def test_rename_and_create_last_only_after_directory_sync() -> None:
    disk = FaultyDisk({PATH: b"old"})
    raw = disk.open(PATH + ".pack")
    raw.pwrite(b"new", 0)
    raw.sync()
    disk.replace(PATH + ".pack", PATH)
    images = {image_key(image) for image in disk.crash_images()}
    assert images == {
        ((PATH, b"old"),),  # neither the creation nor the rename lasted
        ((PATH, b"old"), (PATH + ".pack", b"new")),  # the creation lasted
        ((PATH, b"new"),),  # both lasted
    }
    disk.sync_directory("/sim")
    assert disk.crash_images() == [{PATH: b"new"}]


def test_new_file_may_vanish_until_directory_sync() -> None:
    disk = FaultyDisk()
    raw = disk.open(PATH)
    raw.pwrite(b"data", 0)
    raw.sync()
    assert {image_key(i) for i in disk.crash_images()} == {(), ((PATH, b"data"),)}
    disk.sync_directory("/sim")
    assert disk.crash_images() == [{PATH: b"data"}]


def test_failed_write_leaves_a_partial_unsynced_prefix() -> None:
    disk = FaultyDisk({PATH: b""})
    raw = disk.open(PATH)
    disk.fail_write(after_calls=1, error_number=errno.ENOSPC, partial_bytes=3)
    raw.pwrite(b"first", 0)
    with pytest.raises(InjectedFault) as caught:
        raw.pwrite(b"second", 5)
    assert caught.value.errno == errno.ENOSPC
    assert disk.read_file(PATH) == b"firstsec"
    raw.pwrite(b"third", 8)  # the fault fired once
    assert disk.read_file(PATH) == b"firstsecthird"


def test_failed_fsync_makes_nothing_durable() -> None:
    disk = FaultyDisk({PATH: b""})
    raw = disk.open(PATH)
    raw.pwrite(b"data", 0)
    disk.fail_fsync(error_number=errno.EIO)
    with pytest.raises(InjectedFault):
        raw.sync()
    assert b"" in {image[PATH] for image in disk.crash_images()}
    raw.sync()
    assert disk.crash_images() == [{PATH: b"data"}]


def test_locks_are_exclusive_until_close() -> None:
    disk = FaultyDisk({PATH: b""})
    first, second = disk.open(PATH), disk.open(PATH)
    first.lock()
    with pytest.raises(BlockingIOError):
        second.lock()
    first.close()
    second.lock()


def test_state_at_replays_history() -> None:
    disk = FaultyDisk({PATH: b"x"})
    raw = disk.open(PATH)
    images = {len(disk.events): disk.image()}
    for step in range(6):
        raw.pwrite(bytes([65 + step]) * 300, 300 * step)
        images[len(disk.events)] = disk.image()
        if step % 2:
            raw.sync()
        if step == 3:
            disk.checkpoint()
    for index, image in images.items():
        assert disk.state_at(index).image() == image


def _two_overlapping_writes() -> FaultyDisk:
    disk = FaultyDisk({PATH: b"durable" * 80})
    raw = disk.open(PATH)
    raw.pwrite(b"p" * 700, 560)
    raw.pwrite(b"q" * 8, 560)
    return disk


@functools.cache
def _every_image_of_two_overlapping_writes() -> frozenset[tuple[tuple[str, bytes], ...]]:
    return frozenset(image_key(image) for image in _two_overlapping_writes().crash_images())


@given(st.data())
def test_drawn_crash_images_are_among_the_enumerated_ones(data: st.DataObject) -> None:
    disk = _two_overlapping_writes()
    everything = _every_image_of_two_overlapping_writes()
    drawn = disk.crash_image(HypothesisChooser(data))
    assert image_key(drawn) in everything
    picked = disk.crash_image(RandomChooser(random.Random(data.draw(st.integers(0, 99)))))
    assert image_key(picked) in everything
    count("[other] fault model self-test images", 2)


def test_durus_file_runs_on_the_faulty_disk() -> None:
    disk = FaultyDisk()
    storage_file = File(PATH, file_system=disk)
    assert storage_file.append(b"hello") == 0
    storage_file.fsync()
    with pytest.raises(BlockingIOError):
        File(PATH, file_system=disk)
    assert File(PATH, readonly=True, file_system=disk).read() == b"hello"
    storage_file.close()
    assert disk.read_file(PATH) == b"hello"
