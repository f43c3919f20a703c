"""Exceptions of the durus package.

Owns the exception hierarchy applications catch. Messages are rendered from
``args`` so that ``str()`` never fails (Durus 4.3's ``DurusKeyError`` and
``ConflictError([])`` raised while being printed).
"""

from __future__ import annotations

from collections.abc import Iterable


def _format_oid(oid: object) -> str:
    """The oid as a decimal integer when it is 8 bytes, else its repr."""
    if isinstance(oid, (bytes, bytearray)) and len(oid) == 8:
        return str(int.from_bytes(oid, "big"))
    return repr(oid)


class DurusError(Exception):
    """Base class of every error raised by durus."""


class DurusKeyError(KeyError, DurusError):
    """No record exists for an oid. Raised as ``DurusKeyError(oid)``."""

    def __str__(self) -> str:
        if not self.args:
            return "no such oid"
        return _format_oid(self.args[0])


class ConflictError(DurusError):
    """A transaction saw or wrote objects that another client changed."""

    def __init__(self, oids: Iterable[bytes] | None = None) -> None:
        self.oids = None if oids is None else list(oids)
        DurusError.__init__(self, self.oids)

    def __str__(self) -> str:
        if self.oids is None:
            return "conflicting oids not available"
        if not self.oids:
            return "oids=[]"
        if len(self.oids) == 1:
            return f"oids=[{_format_oid(self.oids[0])}]"
        return f"oids=[{_format_oid(self.oids[0])} ...]"


class WriteConflictError(ConflictError):
    """Commit refused: an object this transaction accessed was changed by another client."""


class ReadConflictError(ConflictError):
    """Load refused: this transaction's view is stale and would mix two committed states."""


class ProtocolError(DurusError):
    """The client/server conversation broke its protocol."""


class StillConflictedError(AssertionError, DurusError):
    """A conflict was raised and abort() has not been called since.

    A subclass of AssertionError, as Durus 4.3 raised AssertionError here,
    but raised explicitly so that ``python -O`` cannot remove the guard.
    """

    def __init__(self, message: str = "still conflicted: missing abort()") -> None:
        AssertionError.__init__(self, message)


class RecordFormatError(DurusError, ValueError, AssertionError):
    """Bytes that should hold an object record (or a list of oids) do not.

    Also an AssertionError because Durus 4.3 reported these cases with
    ``assert``; catching ValueError or DurusError is the better habit.
    """
