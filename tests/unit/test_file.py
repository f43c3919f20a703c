"""Tests of durus.file: locking, positioned I/O, temporary files, rename, injection."""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Any

import pytest

from durus.file import (
    DEFAULT_FILE_SYSTEM,
    File,
    FileLockedError,
    OsFileSystem,
    ReadOnlyFileError,
)


class RecordingFileSystem(OsFileSystem):
    """The real file system, logging every raw operation."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def open(self, path: str, readonly: bool, create: bool) -> Any:
        return RecordingRaw(super().open(path, readonly, create), self.events)

    def replace(self, src: str, dst: str) -> None:
        self.events.append(("replace", src, dst))
        super().replace(src, dst)

    def sync_directory(self, path: str) -> None:
        self.events.append(("sync_directory", path))
        super().sync_directory(path)


class RecordingRaw:
    def __init__(self, raw: Any, events: list[tuple[Any, ...]]) -> None:
        self.raw = raw
        self.events = events

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def pwrite(self, data: bytes, offset: int) -> None:
        self.events.append(("pwrite", offset, bytes(data)))
        self.raw.pwrite(data, offset)

    def sync(self) -> None:
        self.events.append(("sync",))
        self.raw.sync()

    def truncate(self, size: int) -> None:
        self.events.append(("truncate", size))
        self.raw.truncate(size)


def test_writer_holds_exclusive_flock(tmp_path: Any) -> None:
    path = str(tmp_path / "f")
    writer = File(path)
    assert writer.has_lock
    with pytest.raises(BlockingIOError) as info:
        File(path)
    error = info.value
    assert isinstance(error, FileLockedError) and isinstance(error, OSError)
    assert error.errno == errno.EAGAIN
    assert "locked by another process" in str(error) and path in str(error)
    # It is a BSD flock: another flock fails, a POSIX lock on the same file does not.
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    writer.close()
    again = File(path)
    assert again.has_lock
    again.close()


def test_reader_beside_writer_takes_no_lock(tmp_path: Any) -> None:
    path = str(tmp_path / "f")
    writer = File(path)
    writer.write(b"hello")
    reader = File(path, readonly=True)
    assert not reader.has_lock and reader.is_readonly()
    assert reader.read() == b"hello"
    with pytest.raises(AssertionError):
        reader.write(b"x")
    with pytest.raises(ReadOnlyFileError):
        reader.obtain_lock()
    reader.close()
    writer.close()


def test_missing_file_read_only_and_created_writable(tmp_path: Any) -> None:
    path = str(tmp_path / "missing")
    with pytest.raises(OSError) as info:
        File(path, readonly=True)
    assert str(info.value) == f'No "{path}" found.'
    f = File(path)
    assert os.path.exists(path) and len(f) == 0
    f.close()


def test_no_write_permission_is_a_clear_error(tmp_path: Any) -> None:
    class DeniedFileSystem(OsFileSystem):
        def open(self, path: str, readonly: bool, create: bool) -> Any:
            if not readonly:
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return super().open(path, readonly, create)

    path = str(tmp_path / "f")
    open(path, "wb").close()
    with pytest.raises(PermissionError) as info:
        File(path, file_system=DeniedFileSystem())
    assert "readonly=True" in str(info.value) and path in str(info.value)
    File(path, readonly=True, file_system=DeniedFileSystem()).close()


def test_positioned_and_sequential_io(tmp_path: Any) -> None:
    f = File(str(tmp_path / "f"))
    f.write(b"abcdef")
    assert f.tell() == 6 and len(f) == 6 and f.size() == 6
    f.seek(2)
    assert f.read(2) == b"cd" and f.tell() == 4
    assert f.read() == b"ef"
    assert f.read_at(1, 3) == b"bcd"
    assert f.read_at(5, 10) == b"f"
    f.write_at(6, b"gh")
    assert f.append(b"ij") == 8
    assert f.seek_end() == 10
    f.seek(-3, 2)
    assert f.read() == b"hij"
    f.seek(4)
    f.truncate()
    assert len(f) == 4 and f.stat().st_size == 4
    f.flush()
    f.fsync()
    with pytest.raises(ValueError):
        f.seek(-1)
    f.close()
    with pytest.raises(ValueError):
        f.read_at(0, 1)
    f.close()  # closing twice is harmless


def test_temporary_file_deleted_on_close() -> None:
    f = File(prefix="durus-test-")
    name = f.get_name()
    assert f.is_temporary() and os.path.basename(name).startswith("durus-test-")
    f.write(b"x")
    f.close()
    assert not os.path.exists(name)
    with pytest.raises(OSError):
        f.stat()
    with pytest.raises(OSError):
        len(f)
    with pytest.raises(ValueError):
        File(None, readonly=True)


def test_rename_is_atomic_keeps_lock_and_syncs_directory(tmp_path: Any) -> None:
    fs = RecordingFileSystem()
    old, new = str(tmp_path / "a"), str(tmp_path / "b")
    open(new, "wb").write(b"old contents")
    f = File(old, file_system=fs)
    f.write(b"data")
    f.rename(new)
    assert f.get_name() == new and f.has_lock
    assert not os.path.exists(old)
    assert ("replace", old, new) in fs.events
    assert fs.events[-1] == ("sync_directory", str(tmp_path))
    with pytest.raises(FileLockedError):
        File(new)
    f.write(b"more")
    f.close()
    assert open(new, "rb").read() == b"datamore"
    f.rename(new)  # the current name: a no-op
    temporary = File()
    with pytest.raises(AssertionError):
        temporary.rename(str(tmp_path / "c"))
    temporary.close()


def test_raw_operations_go_through_the_injected_file_system(tmp_path: Any) -> None:
    fs = RecordingFileSystem()
    f = File(str(tmp_path / "f"), file_system=fs)
    f.write(b"abc")
    f.append(b"de")
    f.fsync()
    f.truncate_at(2)
    assert fs.events == [("pwrite", 0, b"abc"), ("pwrite", 3, b"de"), ("sync",), ("truncate", 2)]
    f.close()


def test_failed_lock_closes_the_file(tmp_path: Any) -> None:
    closed = []

    class LockedRaw:
        def __init__(self, raw: Any) -> None:
            self.raw = raw

        def __getattr__(self, name: str) -> Any:
            return getattr(self.raw, name)

        def lock(self) -> None:
            raise BlockingIOError(errno.EAGAIN, "busy")

        def close(self) -> None:
            closed.append(True)
            self.raw.close()

    class LockedFileSystem(OsFileSystem):
        def open(self, path: str, readonly: bool, create: bool) -> Any:
            return LockedRaw(super().open(path, readonly, create))

    with pytest.raises(FileLockedError):
        File(str(tmp_path / "f"), file_system=LockedFileSystem())
    assert closed == [True]


def test_file_attribute_shares_the_descriptor(tmp_path: Any) -> None:
    f = File(str(tmp_path / "f"))
    f.write(b"xyz")
    assert f.file.read() == b"xyz"
    assert repr(f).startswith("File(")
    f.close()
    assert DEFAULT_FILE_SYSTEM.exists(str(tmp_path / "f"))


def test_a_rename_whose_directory_fsync_failed_is_made_durable_by_the_next_fsync(
    tmp_path: Any,
) -> None:
    class FailingDirectorySync(OsFileSystem):
        failures = 1
        syncs: list[str] = []

        def sync_directory(self, path: str) -> None:
            self.syncs.append(path)
            if self.failures:
                self.failures -= 1
                raise OSError(errno.EIO, "I/O error", path)
            super().sync_directory(path)

    fs = FailingDirectorySync()
    new = File(str(tmp_path / "new"), file_system=fs)
    new.write(b"data")
    with pytest.raises(OSError):
        new.rename(str(tmp_path / "live"))
    assert new.get_name() == str(tmp_path / "live")  # renamed, not yet durable
    assert new.owed_directory_sync == str(tmp_path)
    new.fsync()
    assert new.owed_directory_sync is None and fs.syncs == [str(tmp_path)] * 2
    new.close()
