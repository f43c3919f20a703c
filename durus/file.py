"""The I/O edge for storage files: locking, positioned reads and writes, fsync, rename.

Owns every system call that touches a storage file's bytes or name: ``os.pwrite``,
``os.fsync``/``os.fdatasync``, ``flock``, ``os.replace`` and the directory fsync that
makes a rename last. No other durus module calls them for storage files, so the
crash behaviour of the whole package is decided here and in the few call sites of
``File``. It never interprets the bytes it moves (that is ``durus.shelf``).

The injection seam
------------------
``File`` does all of its work through a ``FileSystem`` object (default:
``OsFileSystem``), which opens ``RawFile`` objects. Tests replace the file system
with one that records, loses, tears or fails operations. The raw operations are:

``FileSystem``
    ``open(path, readonly, create)`` -> RawFile; ``open_temporary(**kwargs)`` ->
    ``(path, RawFile)``; ``replace(src, dst)`` (atomic rename over ``dst``);
    ``remove(path)``; ``exists(path)``; ``size(path)``; ``sync_directory(path)``.
``RawFile``
    ``pread(size, offset)`` (may return fewer bytes at end of file);
    ``pwrite(data, offset)`` (writes all of ``data`` or raises); ``truncate(size)``;
    ``sync()``; ``size()``; ``lock()`` (exclusive, non-blocking; raises
    ``BlockingIOError``); ``unlock()``; ``close()``.

Durability contract that callers rely on (and that a fault-injecting file system
must model): bytes written by ``pwrite`` and size changes by ``truncate`` are
durable once a later ``sync()`` of the same file returns. Until then a crash may
keep any subset of them, each torn at 512-byte sector boundaries (lost sectors
read as zeros, or the file is shorter). A ``replace`` is atomic (after a crash the
destination names either the old or the new file) and durable once
``sync_directory`` of the destination's directory returns.

Every ``File`` opened for writing holds an exclusive non-blocking BSD ``flock``
on the file for as long as it is open. It must be ``flock`` (not ``lockf``):
Durus 4.3 uses ``flock`` and Linux keeps the two kinds of lock apart. Read-only
opens take no lock and work beside a writer.
"""

from __future__ import annotations

import errno
import io
import os
from typing import Any, Protocol

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX platforms
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "File",
    "FileLockedError",
    "ReadOnlyFileError",
    "FileSystem",
    "OsFileSystem",
    "OsRawFile",
    "RawFile",
]

_sync_data = getattr(os, "fdatasync", os.fsync)


class FileLockedError(BlockingIOError):
    """Another writer (another process, or another open in this one) holds the lock."""


class RawFile(Protocol):
    """Byte-level operations on one open file (see the module docstring)."""

    def pread(self, size: int, offset: int) -> bytes: ...

    def pwrite(self, data: bytes, offset: int) -> None: ...

    def truncate(self, size: int) -> None: ...

    def sync(self) -> None: ...

    def size(self) -> int: ...

    def lock(self) -> None: ...

    def unlock(self) -> None: ...

    def close(self) -> None: ...


class FileSystem(Protocol):
    """Name-level operations and the factory of RawFile objects."""

    def open(self, path: str, readonly: bool, create: bool) -> RawFile: ...

    def open_temporary(self, **kwargs: Any) -> tuple[str, RawFile]: ...

    def replace(self, src: str, dst: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def exists(self, path: str) -> bool: ...

    def size(self, path: str) -> int: ...

    def sync_directory(self, path: str) -> None: ...


class OsRawFile:
    """A RawFile on an operating-system file descriptor (positioned I/O, no buffering)."""

    def __init__(self, fd: int, readonly: bool) -> None:
        self.fd = fd
        self.readonly = readonly

    def pread(self, size: int, offset: int) -> bytes:
        assert size >= 0 and offset >= 0
        return os.pread(self.fd, size, offset)

    def pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            if written <= 0:
                raise OSError(errno.EIO, "pwrite wrote nothing")
            view = view[written:]
            offset += written
        assert not view

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def sync(self) -> None:
        _sync_data(self.fd)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise FileLockedError(errno.EAGAIN, "locked by another process") from error

    def unlock(self) -> None:
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class OsFileSystem:
    """The real file system."""

    def open(self, path: str, readonly: bool, create: bool) -> RawFile:
        flags = os.O_RDONLY if readonly else os.O_RDWR
        if create and not readonly:
            flags |= os.O_CREAT
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
        return OsRawFile(fd, readonly)

    def open_temporary(self, **kwargs: Any) -> tuple[str, RawFile]:
        import tempfile  # only temporary storages need it (it imports shutil, random...)

        fd, path = tempfile.mkstemp(**kwargs)
        return path, OsRawFile(fd, False)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def sync_directory(self, path: str) -> None:
        try:
            fd = os.open(path or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


DEFAULT_FILE_SYSTEM = OsFileSystem()


class File:
    """A storage file: a lock for writers, a position, positioned I/O, rename.

    ``File(name=None, readonly=False, file_system=None, **kwargs)``. ``name=None``
    makes a temporary file (``kwargs`` go to ``tempfile.mkstemp``) that is
    deleted on close. Writes go straight to the file (there is no buffer), so
    ``flush()`` does nothing and ``fsync()`` makes everything written durable.
    """

    def __init__(
        self,
        name: str | os.PathLike[str] | None = None,
        readonly: bool = False,
        file_system: FileSystem | None = None,
        **kwargs: Any,
    ) -> None:
        self.file_system: FileSystem = file_system or DEFAULT_FILE_SYSTEM
        self.readonly = bool(readonly)
        self.has_lock = False
        self.position = 0
        self.raw: RawFile | None = None
        # A directory whose fsync failed after a rename (or that a caller marked):
        # fsync() and sync_owed_directory() retry it.
        self.owed_directory_sync: str | None = None
        if name is None:
            if readonly:
                raise ValueError("a temporary File cannot be read-only")
            self.name, self.raw = self.file_system.open_temporary(**kwargs)
            self.temporary = True
        else:
            self.name = os.fspath(name)
            self.temporary = False
            self.raw = self._open_named(self.name, self.readonly)
        if not self.readonly:
            self._lock_or_close()
        assert self.raw is not None and self.has_lock == (not self.readonly)

    def _open_named(self, name: str, readonly: bool) -> RawFile:
        if readonly and not self.file_system.exists(name):
            raise FileNotFoundError(f'No "{name}" found.')
        try:
            return self.file_system.open(name, readonly=readonly, create=not readonly)
        except PermissionError as error:
            if readonly:
                raise
            raise PermissionError(
                errno.EACCES,
                f'cannot open "{name}" for writing (no permission); '
                "open it with readonly=True to read it",
                name,
            ) from error

    def _lock_or_close(self) -> None:
        try:
            self.obtain_lock()
        except BaseException:
            self._close_raw()
            raise

    def __repr__(self) -> str:
        return f"File({self.name!r})"

    def _open_raw(self) -> RawFile:
        if self.raw is None:
            raise ValueError(f"I/O operation on closed file {self.name!r}")
        return self.raw

    @property
    def file(self) -> Any:
        """A binary file object on the same descriptor (bypasses the injection seam)."""
        raw = self._open_raw()
        fd = getattr(raw, "fd", None)
        if fd is None:
            return raw
        return io.FileIO(fd, "rb" if self.readonly else "r+b", closefd=False)

    def get_name(self) -> str:
        return self.name

    def is_temporary(self) -> bool:
        return self.temporary

    def is_readonly(self) -> bool:
        return self.readonly

    def is_closed(self) -> bool:
        return self.raw is None

    # Position-based interface (what Durus callers use).

    def seek(self, n: int, whence: int = 0) -> int:
        if whence == 0:
            target = n
        elif whence == 1:
            target = self.position + n
        elif whence == 2:
            target = self.size() + n
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self.position = target
        return self.position

    def seek_end(self) -> int:
        return self.seek(0, 2)

    def tell(self) -> int:
        return self.position

    def read(self, n: int | None = None) -> bytes:
        if n is None or n < 0:
            n = max(0, self.size() - self.position)
        data = self.read_at(self.position, n)
        self.position += len(data)
        return data

    def write(self, s: bytes | bytearray | memoryview) -> None:
        self.write_at(self.position, s)
        self.position += len(s)

    def truncate(self) -> None:
        self.truncate_at(self.position)

    def flush(self) -> None:
        """Nothing is buffered: every write has already reached the operating system."""
        self._open_raw()

    def fsync(self) -> None:
        """Make every byte written so far durable, and a rename whose directory fsync failed.

        Until that directory fsync succeeds the file may lose its new name at a
        crash, so nothing written to it can be called durable before then.
        """
        self._open_raw().sync()
        self.sync_owed_directory()

    def sync_owed_directory(self) -> None:
        """Retry the directory fsync that a rename (or a caller) still owes; raises
        while it fails, and then still owes it."""
        directory = self.owed_directory_sync
        if directory is not None:
            self.file_system.sync_directory(directory)
            self.owed_directory_sync = None
        assert self.owed_directory_sync is None

    # Offset-based interface (what durus.shelf uses).

    def read_at(self, offset: int, size_bytes: int) -> bytes:
        """Up to ``size_bytes`` bytes at ``offset`` (fewer only at end of file)."""
        if offset < 0 or size_bytes < 0:
            raise ValueError(f"bad read of {size_bytes} bytes at {offset}")
        data = self._open_raw().pread(size_bytes, offset)
        assert len(data) <= size_bytes
        return data

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` at ``offset`` with one raw write."""
        self._require_writable()
        if offset < 0:
            raise ValueError(f"negative write offset {offset}")
        self._open_raw().pwrite(bytes(data), offset)

    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at the end of the file with one raw write; return its offset."""
        offset = self.size()
        self.write_at(offset, data)
        return offset

    def truncate_at(self, size_bytes: int) -> None:
        self._require_writable()
        if size_bytes < 0:
            raise ValueError(f"negative truncation size {size_bytes}")
        self._open_raw().truncate(size_bytes)

    def size(self) -> int:
        """Current size in bytes."""
        return self._open_raw().size()

    def _require_writable(self) -> None:
        if self.readonly:
            raise ReadOnlyFileError(f"{self.name!r} is open read-only")
        if not self.has_lock:
            self.obtain_lock()

    def stat(self) -> os.stat_result:
        return os.stat(self.name)

    def __len__(self) -> int:
        if self.raw is not None:
            return self.raw.size()
        return self.file_system.size(self.name)

    # Locking, renaming, closing.

    def obtain_lock(self) -> None:
        """Exclusive non-blocking flock; FileLockedError when another writer holds it."""
        if self.readonly:
            raise ReadOnlyFileError(f"cannot lock {self.name!r}: it is open read-only")
        if self.has_lock:
            return
        try:
            self._open_raw().lock()
        except BlockingIOError as error:
            raise FileLockedError(
                errno.EAGAIN,
                f'"{self.name}" is locked by another process (or another writer in this process)',
                self.name,
            ) from error
        self.has_lock = True

    def release_lock(self) -> None:
        if self.has_lock and self.raw is not None:
            self.raw.unlock()
        self.has_lock = False

    def rename(self, name: str | os.PathLike[str]) -> None:
        """Atomically give this file the name ``name`` (replacing any file there).

        The open descriptor and its lock stay valid across the rename, so no
        other writer can slip in; the directory is fsynced so the rename lasts.
        If that fsync raises, the file already has its new name (``get_name()``
        says so) but the rename may not survive a crash.
        """
        target = os.fspath(name)
        if target == self.name:
            return
        if self.temporary:
            raise ReadOnlyFileError("a temporary file cannot be renamed")
        self._require_writable()
        self.file_system.replace(self.name, target)
        self.name = target  # renamed now, even if making it durable fails below
        directory = os.path.dirname(os.path.abspath(target))
        try:
            self.file_system.sync_directory(directory)
        except OSError:
            self.owed_directory_sync = directory  # fsync() retries it before anything else
            raise
        assert self.has_lock

    def _close_raw(self) -> None:
        raw, self.raw = self.raw, None
        self.has_lock = False
        if raw is not None:
            raw.close()

    def close(self) -> None:
        """Release the lock and close; a temporary file is deleted."""
        if self.raw is None:
            return
        self.release_lock()
        self._close_raw()
        if self.temporary and self.file_system.exists(self.name):
            self.file_system.remove(self.name)
        assert self.raw is None and not self.has_lock

    def __enter__(self) -> File:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ReadOnlyFileError(AssertionError, OSError):
    """A write, lock or rename was attempted on a file that does not allow it.

    An AssertionError for compatibility (Durus 4.3 asserted here), raised
    explicitly so that ``python -O`` cannot remove the guard.
    """
