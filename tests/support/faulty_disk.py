"""A simulated disk that records every operation and can be crashed at any point.

Owns the fault model the crash tests hold the storage layer to:

* Every write ``(offset, bytes)``, truncate, file fsync, file creation, rename,
  unlink and directory fsync is recorded as an event, in issue order.
* A crash keeps every byte that a file fsync made durable and, of the file
  operations issued since that file's last fsync, ANY SUBSET IN ANY ORDER.
  Each kept write may also be torn: it is split at 512-byte sector boundaries
  (absolute file offsets) and any subset of its sectors persists, each sector
  whole or not at all. Unpersisted sectors of a region that extended the file
  read as zeros, and the file's length may end at any byte of such a region.
* Creations, renames and unlinks are durable only once the directory is
  fsynced; before that a crash may undo any subset of them (those kept are
  applied in issue order).
* Faults: a scheduled write may raise (ENOSPC, EIO) after part of its bytes
  reached the page cache; a scheduled fsync may raise, leaving everything it
  should have synced still pending.

A crash state is picked through a ``Chooser`` (one small integer at a time),
so the same code serves three uses: exhaustive enumeration of every crash
state of a small case (``enumerate_choices``), Hypothesis drawing one
(``HypothesisChooser``), and a seeded random pick (``RandomChooser``).

Never touches the real file system, and never imports durus: it models a disk,
not the storage, so it can judge the storage independently.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

SECTOR_BYTES = 512
MAX_ENUMERATED_CHOICE_SEQUENCES = 2_000_000


# ----------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class Write:
    inode: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class Truncate:
    inode: int
    length: int


@dataclass(frozen=True)
class FileSync:
    inode: int


@dataclass(frozen=True)
class Create:
    name: str
    inode: int


@dataclass(frozen=True)
class Rename:
    src: str
    dst: str


@dataclass(frozen=True)
class Unlink:
    name: str


@dataclass(frozen=True)
class DirSync:
    pass


FileOp = Write | Truncate
DirOp = Create | Rename | Unlink
Event = Write | Truncate | FileSync | Create | Rename | Unlink | DirSync


def sector_pieces(offset: int, data: bytes) -> list[tuple[int, bytes]]:
    """``data`` written at ``offset`` split at absolute 512-byte sector boundaries."""
    pieces = []
    position = offset
    while position < offset + len(data):
        sector_end = (position // SECTOR_BYTES + 1) * SECTOR_BYTES
        piece_end = min(sector_end, offset + len(data))
        pieces.append((position, data[position - offset : piece_end - offset]))
        position = piece_end
    assert b"".join(piece for _, piece in pieces) == data
    return pieces


def apply_write(buffer: bytearray, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset``, filling any gap past the end with zeros."""
    if offset > len(buffer):
        buffer.extend(bytes(offset - len(buffer)))
    buffer[offset : offset + len(data)] = data
    assert buffer[offset : offset + len(data)] == data


# ----------------------------------------------------------------------------
# Choosers: where a crash state's choices come from


class Chooser(Protocol):
    def below(self, n: int) -> int:
        """An integer in ``range(n)`` (``n >= 1``)."""
        ...


class RandomChooser:
    """Choices from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def below(self, n: int) -> int:
        assert n >= 1
        return self.rng.randrange(n)


class HypothesisChooser:
    """Choices drawn by Hypothesis (``data`` is the object ``st.data()`` gives)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def below(self, n: int) -> int:
        from hypothesis import strategies as st

        assert n >= 1
        if n == 1:
            return 0
        return int(self.data.draw(st.integers(0, n - 1)))


class _ReplayChooser:
    """Replays a prefix of choices, then chooses 0, recording every (choice, n)."""

    def __init__(self, prefix: list[int]) -> None:
        self.prefix = prefix
        self.taken: list[tuple[int, int]] = []

    def below(self, n: int) -> int:
        assert n >= 1
        index = len(self.taken)
        choice = self.prefix[index] if index < len(self.prefix) else 0
        assert 0 <= choice < n, "a choice sequence must not depend on anything but earlier choices"
        self.taken.append((choice, n))
        return choice


def enumerate_choices(
    function: Callable[[Chooser], Any], limit: int = MAX_ENUMERATED_CHOICE_SEQUENCES
) -> Iterator[Any]:
    """``function(chooser)`` for every sequence of choices it can make (depth first).

    ``function`` must be deterministic given its choices. Raises RuntimeError if
    there are more than ``limit`` sequences, so a test never silently samples.
    """
    prefix: list[int] = []
    for _ in range(limit):
        chooser = _ReplayChooser(prefix)
        yield function(chooser)
        taken = chooser.taken
        while taken and taken[-1][0] == taken[-1][1] - 1:
            taken.pop()
        if not taken:
            return
        prefix = [choice for choice, _ in taken[:-1]] + [taken[-1][0] + 1]
    raise RuntimeError(f"more than {limit} choice sequences: use a sampling chooser")


def choose_subset(chooser: Chooser, items: list[Any]) -> list[Any]:
    """Any subset of ``items``, in their order."""
    kept = [item for item in items if chooser.below(2)]
    assert all(item in items for item in kept)
    return kept


def choose_order(chooser: Chooser, items: list[Any]) -> list[Any]:
    """Any permutation of ``items``."""
    remaining = list(items)
    ordered = []
    while remaining:
        ordered.append(remaining.pop(chooser.below(len(remaining))))
    assert len(ordered) == len(items)
    return ordered


# ----------------------------------------------------------------------------
# Pure disk state


@dataclass
class InodeState:
    """One file's bytes: what an fsync made durable, and what happened since."""

    durable: bytes = b""
    pending: list[FileOp] = field(default_factory=list)
    current: bytearray = field(default_factory=bytearray)

    def copy(self) -> InodeState:
        return InodeState(self.durable, list(self.pending), bytearray(self.current))


def _extent(op: FileOp) -> tuple[int, int]:
    if isinstance(op, Write):
        return op.offset, op.offset + len(op.data)
    return op.length, 2**63


def _any_overlap(ops: list[FileOp]) -> bool:
    """True when the order in which ``ops`` persist can change the result."""
    if any(isinstance(op, Truncate) for op in ops) and len(ops) > 1:
        return True
    spans = sorted(_extent(op) for op in ops)
    return any(spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1))


def crash_file_content(inode: InodeState, chooser: Chooser) -> bytes:
    """The bytes one file may hold after a crash (see the module docstring)."""
    kept = choose_subset(chooser, inode.pending)
    if _any_overlap(kept):
        kept = choose_order(chooser, kept)
    content = bytearray(inode.durable)
    lowest_length = len(content)
    for op in kept:
        if isinstance(op, Truncate):
            del content[op.length :]
            content.extend(bytes(max(0, op.length - len(content))))
            lowest_length = min(lowest_length, op.length)
            continue
        pieces = sector_pieces(op.offset, op.data)
        persisted = choose_subset(chooser, pieces)
        end = op.offset + len(op.data)
        if end > len(content):
            content.extend(bytes(end - len(content)))
        for offset, piece in persisted:
            apply_write(content, offset, piece)
    if len(content) > lowest_length:
        del content[lowest_length + chooser.below(len(content) - lowest_length + 1) :]
    assert len(content) >= lowest_length
    assert kept or bytes(content) == inode.durable
    return bytes(content)


@dataclass
class DiskState:
    """Inodes, the directory as the running system sees it, and what a crash keeps."""

    inodes: dict[int, InodeState] = field(default_factory=dict)
    names: dict[str, int] = field(default_factory=dict)
    durable_names: dict[str, int] = field(default_factory=dict)
    pending_dir_ops: list[DirOp] = field(default_factory=list)

    @classmethod
    def from_image(cls, image: dict[str, bytes]) -> DiskState:
        """A disk where every file in ``image`` is durable, as after a reboot."""
        state = cls()
        for number, (name, content) in enumerate(sorted(image.items())):
            state.inodes[number] = InodeState(content, [], bytearray(content))
            state.names[name] = number
        state.durable_names = dict(state.names)
        assert state.image() == image
        return state

    def copy(self) -> DiskState:
        return DiskState(
            {number: inode.copy() for number, inode in self.inodes.items()},
            dict(self.names),
            dict(self.durable_names),
            list(self.pending_dir_ops),
        )

    def image(self) -> dict[str, bytes]:
        """What a reader sees now (no crash)."""
        return {name: bytes(self.inodes[number].current) for name, number in self.names.items()}

    def apply(self, event: Event) -> None:
        """Change the state as ``event`` does on a running system."""
        if isinstance(event, Write):
            inode = self.inodes[event.inode]
            inode.pending.append(event)
            apply_write(inode.current, event.offset, event.data)
        elif isinstance(event, Truncate):
            inode = self.inodes[event.inode]
            inode.pending.append(event)
            del inode.current[event.length :]
            if event.length > len(inode.current):
                inode.current.extend(bytes(event.length - len(inode.current)))
        elif isinstance(event, FileSync):
            inode = self.inodes[event.inode]
            inode.durable = bytes(inode.current)
            inode.pending.clear()
        elif isinstance(event, DirSync):
            self.durable_names = dict(self.names)
            self.pending_dir_ops.clear()
        else:
            if isinstance(event, Create):
                self.inodes.setdefault(event.inode, InodeState())
            _apply_dir_op(self.names, event)
            self.pending_dir_ops.append(event)

    def crash_image(self, chooser: Chooser) -> dict[str, bytes]:
        """The files a crash now may leave: name -> content."""
        names = dict(self.durable_names)
        for op in choose_subset(chooser, self.pending_dir_ops):
            _apply_dir_op(names, op)
        image = {}
        for name in sorted(names):
            image[name] = crash_file_content(self.inodes[names[name]], chooser)
        assert set(image) == set(names)
        return image


def _apply_dir_op(names: dict[str, int], op: DirOp) -> None:
    if isinstance(op, Create):
        names[op.name] = op.inode
    elif isinstance(op, Rename):
        if op.src in names:
            names[op.dst] = names.pop(op.src)
    else:
        names.pop(op.name, None)


def image_key(image: dict[str, bytes]) -> tuple[tuple[str, bytes], ...]:
    """A hashable form of an image, to count distinct crash states."""
    return tuple(sorted(image.items()))


# ----------------------------------------------------------------------------
# The live disk


class InjectedFault(OSError):
    """An OSError raised on purpose by the faulty disk."""


@dataclass
class _Fault:
    kind: str  # "write" or "fsync"
    countdown: int  # how many more calls of that kind succeed first
    error_number: int
    partial_bytes: int  # for writes: bytes that reach the page cache before the error


class FaultyDisk:
    """A running simulated disk: files, open raw files, locks, an event log and faults.

    It is a file system for ``durus.file.File(..., file_system=disk)``: it has the
    methods ``open``, ``open_temporary``, ``replace``, ``remove``, ``exists``,
    ``size`` and ``sync_directory``, and its raw files (``SimRawFile``) have
    ``pread``, ``pwrite``, ``truncate``, ``sync``, ``size``, ``lock``, ``unlock``
    and ``close``. Paths are plain strings in one flat directory: a name is the
    whole path, and ``sync_directory`` of any directory makes every directory
    operation durable.
    """

    def __init__(self, image: dict[str, bytes] | None = None) -> None:
        self.initial_image = dict(image or {})
        self.state = DiskState.from_image(self.initial_image)
        self.events: list[Event] = []
        self.checkpoints: list[tuple[int, DiskState]] = [(0, self.state.copy())]
        self.faults: list[_Fault] = []
        self.locks: dict[int, SimRawFile] = {}
        self.write_calls = 0
        self.fsync_calls = 0
        self.next_inode = len(self.state.inodes)
        self.temporary_count = 0

    # -- events and history

    def _record(self, event: Event) -> None:
        self.state.apply(event)
        self.events.append(event)

    def checkpoint(self) -> int:
        """Remember the state now, so ``state_at`` near here is cheap; returns the index."""
        index = len(self.events)
        if self.checkpoints[-1][0] != index:
            self.checkpoints.append((index, self.state.copy()))
        return index

    def state_at(self, event_index: int) -> DiskState:
        """The disk state after the first ``event_index`` events."""
        if not 0 <= event_index <= len(self.events):
            raise ValueError(f"no event index {event_index} (have {len(self.events)})")
        if event_index == len(self.events):
            return self.state.copy()
        start, base = max((c for c in self.checkpoints if c[0] <= event_index), key=lambda c: c[0])
        state = base.copy()
        for event in self.events[start:event_index]:
            state.apply(event)
        return state

    def crash_image(self, chooser: Chooser, event_index: int | None = None) -> dict[str, bytes]:
        """One crash image at ``event_index`` (default: now)."""
        if event_index is None:
            return self.state.crash_image(chooser)
        return self.state_at(event_index).crash_image(chooser)

    def crash_images(
        self, event_index: int | None = None, limit: int = MAX_ENUMERATED_CHOICE_SEQUENCES
    ) -> list[dict[str, bytes]]:
        """Every distinct crash image at ``event_index`` (default: now)."""
        state = self.state if event_index is None else self.state_at(event_index)
        distinct: dict[tuple[tuple[str, bytes], ...], dict[str, bytes]] = {}
        for image in enumerate_choices(state.crash_image, limit):
            distinct.setdefault(image_key(image), image)
        return list(distinct.values())

    def image(self) -> dict[str, bytes]:
        """The files as the running system sees them."""
        return self.state.image()

    # -- faults

    def fail_write(
        self, after_calls: int = 0, error_number: int = errno.ENOSPC, partial_bytes: int = 0
    ) -> None:
        """Make the write call ``after_calls`` from now raise, after ``partial_bytes``."""
        self.faults.append(_Fault("write", after_calls, error_number, partial_bytes))

    def fail_fsync(self, after_calls: int = 0, error_number: int = errno.EIO) -> None:
        """Make the fsync call ``after_calls`` from now raise (file or directory)."""
        self.faults.append(_Fault("fsync", after_calls, error_number, 0))

    def _due_fault(self, kind: str) -> _Fault | None:
        due = None
        for fault in self.faults:
            if fault.kind != kind:
                continue
            if fault.countdown == 0 and due is None:
                due = fault
            fault.countdown -= 1
        if due is not None:
            self.faults.remove(due)
        return due

    # -- the FileSystem interface of durus.file

    def exists(self, path: str) -> bool:
        return path in self.state.names

    def size(self, path: str) -> int:
        return len(self.state.inodes[self._inode_of(path)].current)

    def listdir(self) -> list[str]:
        return sorted(self.state.names)

    def read_file(self, path: str) -> bytes:
        return bytes(self.state.inodes[self._inode_of(path)].current)

    def _inode_of(self, path: str) -> int:
        if path not in self.state.names:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return self.state.names[path]

    def open(self, path: str, readonly: bool = False, create: bool = True) -> SimRawFile:
        """A raw file on ``path``; creating it is a directory operation."""
        if path not in self.state.names:
            if not create or readonly:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            self._record(Create(path, self.next_inode))
            self.next_inode += 1
        return SimRawFile(self, path, self.state.names[path], readonly)

    def open_temporary(self, **kwargs: Any) -> tuple[str, SimRawFile]:
        self.temporary_count += 1
        path = f"/tmp/sim-temporary-{self.temporary_count}"
        return path, self.open(path, readonly=False, create=True)

    def replace(self, src: str, dst: str) -> None:
        """Atomic replace of ``dst`` by ``src`` (durable after ``sync_directory``)."""
        self._inode_of(src)
        self._record(Rename(src, dst))

    def remove(self, path: str) -> None:
        self._inode_of(path)
        self._record(Unlink(path))

    def sync_directory(self, path: str = "") -> None:
        self.fsync_calls += 1
        fault = self._due_fault("fsync")
        if fault is not None:
            raise InjectedFault(fault.error_number, os.strerror(fault.error_number), path)
        self._record(DirSync())

    # -- what raw files call

    def _write(self, raw: SimRawFile, offset: int, data: bytes) -> None:
        self.write_calls += 1
        fault = self._due_fault("write")
        if fault is not None:
            partial = data[: fault.partial_bytes]
            if partial:
                self._record(Write(raw.inode, offset, bytes(partial)))
            raise InjectedFault(fault.error_number, os.strerror(fault.error_number), raw.path)
        if data:
            self._record(Write(raw.inode, offset, bytes(data)))

    def _sync(self, raw: SimRawFile) -> None:
        self.fsync_calls += 1
        fault = self._due_fault("fsync")
        if fault is not None:
            raise InjectedFault(fault.error_number, os.strerror(fault.error_number), raw.path)
        self._record(FileSync(raw.inode))

    def _lock(self, raw: SimRawFile) -> None:
        holder = self.locks.get(raw.inode)
        if holder is not None and holder is not raw:
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN), raw.path)
        self.locks[raw.inode] = raw

    def _unlock(self, raw: SimRawFile) -> None:
        if self.locks.get(raw.inode) is raw:
            del self.locks[raw.inode]


class SimRawFile:
    """One open file on a FaultyDisk (the RawFile interface of durus.file)."""

    def __init__(self, disk: FaultyDisk, path: str, inode: int, readonly: bool) -> None:
        self.disk = disk
        self.path = path
        self.inode = inode
        self.readonly = readonly
        self.closed = False

    def _content(self) -> bytearray:
        self._check_open()
        return self.disk.state.inodes[self.inode].current

    def pread(self, size: int, offset: int) -> bytes:
        assert size >= 0 and offset >= 0
        return bytes(self._content()[offset : offset + size])

    def pwrite(self, data: bytes, offset: int) -> None:
        self._check_writable()
        self.disk._write(self, offset, bytes(data))

    def truncate(self, size: int) -> None:
        self._check_writable()
        self.disk._record(Truncate(self.inode, size))

    def sync(self) -> None:
        self._check_open()
        self.disk._sync(self)

    def size(self) -> int:
        return len(self._content())

    def lock(self) -> None:
        self._check_open()
        self.disk._lock(self)

    def unlock(self) -> None:
        self.disk._unlock(self)

    def close(self) -> None:
        if not self.closed:
            self.disk._unlock(self)
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed file {self.path!r}")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise OSError(errno.EBADF, "file is open read-only", self.path)
