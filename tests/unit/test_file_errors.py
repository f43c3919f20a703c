"""Tests of durus.file's argument checks and error paths.

Bad arguments are explicit errors that name what was wrong and change nothing;
short and failed system calls are completed or reported, never silently dropped.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

import durus.file as file_module
from durus.file import File, FileLockedError, OsFileSystem, OsRawFile, ReadOnlyFileError
from tests.support.faulty_disk import FaultyDisk


@pytest.fixture
def six_bytes(tmp_path: Path) -> File:
    file = File(str(tmp_path / "f"))
    file.write(b"abcdef")
    return file


def test_relative_and_bad_seeks(six_bytes: File) -> None:
    six_bytes.seek(2)
    assert six_bytes.seek(3, 1) == 5 and six_bytes.read() == b"f"
    assert six_bytes.seek(-6, 1) == 0
    with pytest.raises(ValueError, match="invalid whence 3"):
        six_bytes.seek(0, 3)
    with pytest.raises(ValueError, match="negative seek position -1"):
        six_bytes.seek(-1, 1)
    assert six_bytes.tell() == 0  # a refused seek does not move
    six_bytes.close()


def test_negative_offsets_and_sizes_change_nothing(six_bytes: File) -> None:
    with pytest.raises(ValueError, match="bad read of 1 bytes at -1"):
        six_bytes.read_at(-1, 1)
    with pytest.raises(ValueError, match="bad read of -1 bytes at 0"):
        six_bytes.read_at(0, -1)
    with pytest.raises(ValueError, match="negative write offset -2"):
        six_bytes.write_at(-2, b"xy")
    with pytest.raises(ValueError, match="negative truncation size -1"):
        six_bytes.truncate_at(-1)
    assert six_bytes.read_at(0, 100) == b"abcdef"
    six_bytes.close()


def test_a_write_after_release_lock_takes_the_lock_again(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    file = File(path)
    file.obtain_lock()  # holding it already: nothing to do
    file.release_lock()
    assert not file.has_lock
    other = File(path)  # the lock is free for another writer now
    with pytest.raises(FileLockedError, match="is locked by another process"):
        file.write(b"x")
    assert len(other) == 0 and not file.has_lock
    other.close()
    file.write(b"x")
    assert file.has_lock
    with pytest.raises(FileLockedError):
        File(path)
    file.close()
    assert Path(path).read_bytes() == b"x"


def test_a_read_only_open_refused_by_permissions_keeps_the_system_error(tmp_path: Path) -> None:
    class NothingAllowed(OsFileSystem):
        def open(self, path: str, readonly: bool, create: bool) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied", path)

    path = tmp_path / "f"
    path.write_bytes(b"data")
    with pytest.raises(PermissionError) as info:
        File(str(path), readonly=True, file_system=NothingAllowed())
    assert info.value.errno == errno.EACCES and info.value.filename == str(path)
    assert "readonly=True" not in str(info.value)  # the hint is for writable opens only


def test_the_file_attribute_of_an_injected_raw_file_is_the_raw_file() -> None:
    disk = FaultyDisk()
    file = File("/sim/f", file_system=disk)
    file.write(b"abc")
    assert file.file is file.raw and file.file.pread(3, 0) == b"abc"
    file.close()
    with pytest.raises(ValueError, match="I/O operation on closed file '/sim/f'"):
        _ = file.file


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_pwrite = os.pwrite
    calls: list[int] = []

    def one_byte_at_a_time(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        return real_pwrite(fd, bytes(data[:1]), offset)

    file = File(str(tmp_path / "f"))
    monkeypatch.setattr(file_module.os, "pwrite", one_byte_at_a_time)
    file.write_at(2, b"xyz")
    monkeypatch.undo()
    assert calls == [2, 3, 4] and file.read_at(0, 10) == b"\0\0xyz"
    file.close()


def test_a_write_that_makes_no_progress_is_an_io_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = File(str(tmp_path / "f"))
    monkeypatch.setattr(file_module.os, "pwrite", lambda fd, data, offset: 0)
    with pytest.raises(OSError, match="pwrite wrote nothing") as info:
        file.write(b"abc")
    monkeypatch.undo()
    assert info.value.errno == errno.EIO and len(file) == 0 and file.tell() == 0
    file.close()


def test_closing_twice_is_harmless(tmp_path: Path) -> None:
    raw = OsFileSystem().open(str(tmp_path / "f"), readonly=False, create=True)
    assert isinstance(raw, OsRawFile)
    raw.close()
    raw.close()
    assert raw.fd == -1
    with File(str(tmp_path / "f")) as file:
        assert not file.is_closed()
    assert file.is_closed()
    file.close()


def test_without_fcntl_writers_take_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "fcntl", None)
    path = str(tmp_path / "f")
    first = File(path)
    second = File(path)  # nothing to lock with: both open (as on platforms without flock)
    assert first.has_lock and second.has_lock
    first.close()
    second.close()


def test_read_only_guards(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    reader = File(str(path), readonly=True)
    for attempt in (
        lambda: reader.truncate_at(0),
        lambda: reader.append(b"x"),
        lambda: reader.rename(str(tmp_path / "g")),
    ):
        with pytest.raises(ReadOnlyFileError, match="is open read-only"):
            attempt()
    reader.close()
    assert path.read_bytes() == b"abc" and sorted(os.listdir(tmp_path)) == ["f"]
