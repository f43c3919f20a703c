"""A real file system on which single operations can be made to fail, once each.

``FailingFileSystem`` is ``durus.file.OsFileSystem`` (real files in a test's
tmp_path) with switches: the next write writes its first ``partial_bytes`` and
raises ENOSPC, the next sync, truncate or replace raises EIO (a replace before
renaming anything). Each switch turns itself off when it fires, so a test can
check what happens after a failure and on the next attempt. ``calls`` lists the
writes and syncs of every file in order ("write", "sync"), so a test can check
the order of a commit's steps. For crash states (lost or torn writes) use
``tests.support.faulty_disk`` instead.
"""

from __future__ import annotations

import errno
from typing import Any

from durus.file import OsFileSystem


class FailingFileSystem(OsFileSystem):
    """OsFileSystem whose next write, sync, truncate or replace can be made to fail."""

    def __init__(self, partial_bytes: int = 20) -> None:
        self.partial_bytes = partial_bytes
        self.fail_write = False
        self.fail_sync = False
        self.fail_truncate = False
        self.fail_replace = False
        self.calls: list[str] = []

    def open(self, path: str, readonly: bool, create: bool) -> Any:
        return FailingRawFile(super().open(path, readonly, create), self)

    def replace(self, src: str, dst: str) -> None:
        if self.fail_replace:
            self.fail_replace = False
            raise OSError(errno.EIO, "I/O error (injected)", src)
        super().replace(src, dst)


class FailingRawFile:
    """A raw file of FailingFileSystem: every call but the failing ones goes to the real file."""

    def __init__(self, raw: Any, fs: FailingFileSystem) -> None:
        self.raw = raw
        self.fs = fs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def pwrite(self, data: bytes, offset: int) -> None:
        self.fs.calls.append("write")
        if self.fs.fail_write:
            self.fs.fail_write = False
            self.raw.pwrite(data[: self.fs.partial_bytes], offset)
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        self.raw.pwrite(data, offset)

    def sync(self) -> None:
        self.fs.calls.append("sync")
        if self.fs.fail_sync:
            self.fs.fail_sync = False
            raise OSError(errno.EIO, "I/O error (injected)")
        self.raw.sync()

    def truncate(self, size: int) -> None:
        if self.fs.fail_truncate:
            self.fs.fail_truncate = False
            raise OSError(errno.EIO, "I/O error (injected)")
        self.raw.truncate(size)
