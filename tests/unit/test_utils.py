"""durus.utils: integer codecs, byte I/O over files and sockets, oid checks."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durus import utils
from durus.utils import (
    ROOT_OID,
    ShortRead,
    as_bytes,
    check_oid,
    int4_to_str,
    int8_to_str,
    read,
    read_int4,
    read_int4_str,
    read_int8,
    read_int8_str,
    str_to_int4,
    str_to_int8,
    write,
    write_all,
    write_int4,
    write_int4_str,
    write_int8,
    write_int8_str,
)


@given(st.integers(0, 2**32 - 1))
def test_int4_round_trip(n: int) -> None:
    assert str_to_int4(int4_to_str(n)) == n
    assert len(int4_to_str(n)) == 4


@given(st.integers(0, 2**64 - 1))
def test_int8_round_trip_and_order(n: int) -> None:
    encoded = int8_to_str(n)
    assert str_to_int8(encoded) == n
    assert (encoded < int8_to_str(min(n + 1, 2**64 - 1))) or n == 2**64 - 1


def test_codec_errors() -> None:
    with pytest.raises(struct.error):
        int4_to_str(2**32)
    with pytest.raises(struct.error):
        int8_to_str(-1)
    with pytest.raises(struct.error):
        str_to_int8(b"\x00" * 7)


def test_root_oid_and_check_oid() -> None:
    assert ROOT_OID == b"\x00" * 8
    assert check_oid(bytearray(8)) == ROOT_OID
    with pytest.raises(TypeError):
        check_oid(0)
    with pytest.raises(ValueError):
        check_oid(b"123")


def test_as_bytes() -> None:
    assert as_bytes(b"ab") == b"ab"
    assert as_bytes("\xff") == b"\xff"
    with pytest.raises(UnicodeEncodeError):
        as_bytes("\u0100")


class FakeSocket:
    """recv returns at most ``chunk`` bytes; send accepts at most ``chunk``."""

    def __init__(self, data: bytes = b"", chunk: int = 3, zero_sends: int = 0) -> None:
        self.incoming = data
        self.outgoing = b""
        self.chunk = chunk
        self.zero_sends = zero_sends

    def recv(self, n: int) -> bytes:
        piece, self.incoming = (
            self.incoming[: min(n, self.chunk)],
            self.incoming[min(n, self.chunk) :],
        )
        return piece

    def send(self, data: bytes) -> int:
        if self.zero_sends:
            self.zero_sends -= 1
            return 0
        piece = bytes(data[: self.chunk])
        self.outgoing += piece
        return len(piece)


def test_read_from_file_and_socket() -> None:
    assert read(BytesIO(b"abcdef"), 4) == b"abcd"
    with pytest.raises(ShortRead):
        read(BytesIO(b"ab"), 4)
    assert read(FakeSocket(b"abcdefgh"), 7) == b"abcdefg"
    with pytest.raises(ShortRead):
        read(FakeSocket(b"ab"), 4)


def test_write_to_file_and_socket() -> None:
    f = BytesIO()
    write_all(f, b"ab", "cd")
    assert f.getvalue() == b"abcd"
    sock = FakeSocket()
    write(sock, b"0123456789")
    assert sock.outgoing == b"0123456789"
    stuck = FakeSocket(zero_sends=100)
    with pytest.raises(OSError, match="send"):
        write(stuck, b"x")


def test_length_prefixed_helpers() -> None:
    f = BytesIO()
    write_int4(f, 7)
    write_int8(f, 9)
    write_int4_str(f, b"four")
    write_int8_str(f, b"eight")
    f.seek(0)
    assert (read_int4(f), read_int8(f)) == (7, 9)
    assert read_int4_str(f) == b"four"
    assert read_int8_str(f) == b"eight"


def test_python2_names() -> None:
    assert utils.xrange is range
    assert list(utils.iteritems({1: 2})) == [(1, 2)]
    assert utils.join_bytes([b"a", b"b"]) == b"ab"
    assert utils.empty_byte_string == b""


def test_trace_prints_the_bytes_moved(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(utils, "TRACE", True)
    f = BytesIO()
    write(f, b"ab")
    f.seek(0)
    assert read(f, 2) == b"ab"
    assert capsys.readouterr().out == "write b'ab'\nread b'ab'\n"
