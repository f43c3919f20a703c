"""Low-level helpers shared by every layer: integer codecs and byte I/O.

Owns the int4/int8 encodings (unsigned, big-endian), ``ROOT_OID``, and the
read/write helpers that work both on file-like objects and on sockets. Lives
at the bottom of the import graph: it imports nothing from durus.
"""

from __future__ import annotations

import struct
import sys
from io import BytesIO
from pickle import Pickler, Unpickler, dumps, loads
from typing import Any

__all__ = [
    "ROOT_OID",
    "OID_SIZE_BYTES",
    "int4_to_str",
    "str_to_int4",
    "int8_to_str",
    "str_to_int8",
    "as_bytes",
    "ShortRead",
    "read",
    "write",
    "write_all",
    "read_int4",
    "write_int4",
    "read_int8",
    "write_int8",
    "read_int4_str",
    "write_int4_str",
    "read_int8_str",
    "write_int8_str",
    "xrange",
    "next",
    "iteritems",
    "byte_string",
    "BytesIO",
    "dumps",
    "loads",
    "Pickler",
    "Unpickler",
    "IS_PYPY",
    "empty_byte_string",
    "join_bytes",
    "TRACE",
    "check_oid",
    "BitArray",
    "Byte",
    "ByteArray",
    "IntArray",
    "IntSet",
    "WordArray",
]

OID_SIZE_BYTES = 8
ROOT_OID = b"\x00" * OID_SIZE_BYTES
RECV_CHUNK_MAX_BYTES = 1_000_000
MAX_ZERO_LENGTH_SENDS = 10

_int4 = struct.Struct(">I")
_int8 = struct.Struct(">Q")

# Python 2/3 names that Durus applications and tests import from here.
xrange = range
next = next  # noqa: PLW0127 - re-exported builtin
byte_string = (bytearray, bytes)
empty_byte_string = b""
join_bytes = b"".join
IS_PYPY = sys.implementation.name == "pypy"
TRACE = False


def iteritems(x: Any) -> Any:
    """``x.items()``: kept for code written for Durus under Python 2."""
    return x.items()


def int4_to_str(n: int) -> bytes:
    """4 big-endian bytes of the unsigned 32-bit integer ``n``.

    pre: 0 <= n <= 0xFFFFFFFF
    post: len(__return__) == 4
    post: str_to_int4(__return__) == n
    """
    return _int4.pack(n)


def str_to_int4(b: bytes) -> int:
    """The unsigned 32-bit integer encoded by 4 big-endian bytes.

    pre: len(b) == 4
    post: 0 <= __return__ <= 0xFFFFFFFF
    post: int4_to_str(__return__) == b
    """
    value: int = _int4.unpack(b)[0]
    return value


def int8_to_str(n: int) -> bytes:
    """8 big-endian bytes of the unsigned 64-bit integer ``n``.

    pre: 0 <= n <= 0xFFFFFFFFFFFFFFFF
    post: len(__return__) == 8
    post: str_to_int8(__return__) == n
    """
    return _int8.pack(n)


def str_to_int8(b: bytes) -> int:
    """The unsigned 64-bit integer encoded by 8 big-endian bytes.

    pre: len(b) == 8
    post: 0 <= __return__ <= 0xFFFFFFFFFFFFFFFF
    post: int8_to_str(__return__) == b
    """
    value: int = _int8.unpack(b)[0]
    return value


def check_oid(oid: object) -> bytes:
    """``oid`` itself when it is 8 bytes; else a clear TypeError/ValueError.

    raises: TypeError, ValueError
    post: isinstance(__return__, bytes) and __return__ == oid
    post: len(__return__) == OID_SIZE_BYTES
    """
    if not isinstance(oid, (bytes, bytearray)):
        raise TypeError(f"an oid must be 8 bytes, not {type(oid).__name__}")
    if len(oid) != OID_SIZE_BYTES:
        raise ValueError(f"an oid must be 8 bytes, got {len(oid)}: {bytes(oid)!r}")
    return bytes(oid)


def as_bytes(s: str | bytes | bytearray) -> bytes | bytearray:
    """Bytes unchanged; a str encoded as latin-1."""
    if isinstance(s, (bytes, bytearray)):
        return s
    return s.encode("latin1")


class ShortRead(IOError):
    """Fewer bytes were available than the format requires."""


def read(f: Any, n: int) -> bytes:
    """Exactly ``n`` bytes from a file (one read) or a socket (recv until done)."""
    data: bytes
    if hasattr(f, "read"):
        data = f.read(n)
        if len(data) < n:
            raise ShortRead(f"wanted {n} bytes, got {len(data)}")
    else:
        chunks = []
        remaining = n
        while remaining > 0:
            chunk = f.recv(min(remaining, RECV_CHUNK_MAX_BYTES))
            if not chunk:
                raise ShortRead(f"connection closed with {remaining} of {n} bytes unread")
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    if TRACE:
        print("read", repr(data))
    assert len(data) == n
    return data


def write(f: Any, s: str | bytes | bytearray) -> None:
    """Write all of ``s`` to a file (one write) or a socket (send until done)."""
    data = as_bytes(s)
    if TRACE:
        print("write", repr(data))
    if hasattr(f, "write"):
        f.write(data)
        return
    view = memoryview(data)
    zero_sends = 0
    while view:
        sent = f.send(view)
        if sent == 0:
            zero_sends += 1
            if zero_sends > MAX_ZERO_LENGTH_SENDS:
                raise OSError("send() failed")
        view = view[sent:]


def write_all(f: Any, *parts: str | bytes | bytearray) -> None:
    """Write the concatenation of ``parts`` with one call."""
    write(f, b"".join(as_bytes(p) for p in parts))


def read_int4(f: Any) -> int:
    return str_to_int4(read(f, 4))


def write_int4(f: Any, n: int) -> None:
    write(f, int4_to_str(n))


def read_int8(f: Any) -> int:
    return str_to_int8(read(f, 8))


def write_int8(f: Any, n: int) -> None:
    write(f, int8_to_str(n))


def read_int4_str(f: Any) -> bytes:
    """A byte string preceded by its int4 length."""
    return read(f, read_int4(f))


def write_int4_str(f: Any, s: bytes) -> None:
    write_all(f, int4_to_str(len(s)), s)


def read_int8_str(f: Any) -> bytes:
    """A byte string preceded by its int8 length."""
    return read(f, read_int8(f))


def write_int8_str(f: Any, s: bytes) -> None:
    write_all(f, int8_to_str(len(s)), s)


from durus.arrays import BitArray, Byte, ByteArray, IntArray, IntSet, WordArray  # noqa: E402
