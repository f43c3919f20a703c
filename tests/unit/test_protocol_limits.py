"""durus.protocol's limits and refusals not covered elsewhere: oversized records, stray calls.

Each limit is checked from the declared size, before anything of that size
is buffered, and the machine that refused is closed afterwards.
"""

from __future__ import annotations

import pytest

from durus.error import ProtocolError
from durus.protocol import (
    STATUS_KEYERROR,
    STATUS_OKAY,
    ClientProtocol,
    Commit,
    Limits,
    Load,
    LoadReply,
    ServerProtocol,
    encode_load_reply,
    encode_reply,
    encode_request,
    encode_tdata,
    int4,
)
from tests.support.records import oid, record

SMALL = Limits(max_record_bytes=64, max_commit_bytes=1024)


def test_a_committed_record_over_the_record_limit_is_refused() -> None:
    server = ServerProtocol(SMALL)
    server.receive_data(b"C")
    assert server.next_event() == Commit()
    big = record(1, data=b"x" * 100)  # 112 bytes: under the commit limit, over the record limit
    server.receive_data(encode_tdata([(oid(1), big)]))
    with pytest.raises(ProtocolError, match=f"record of {len(big)} bytes exceeds 64"):
        server.next_event()
    with pytest.raises(ProtocolError, match="closed"):
        server.next_event()


def test_a_load_reply_over_the_record_limit_is_refused_from_its_header() -> None:
    client = ClientProtocol(SMALL)
    client.send(Load(oid(1)))
    client.receive_data(STATUS_OKAY + int4(1 << 30))  # 1 GiB announced, nothing more sent
    with pytest.raises(ProtocolError, match=f"record of {1 << 30} bytes exceeds 64"):
        client.next_event()
    assert client.closed and client.replies_pending == 0


def test_asking_for_a_reply_when_none_is_expected() -> None:
    client = ClientProtocol()
    with pytest.raises(ProtocolError, match="no reply is expected"):
        client.next_event()
    assert not client.closed  # a caller's mistake, not the server's: the stream is intact
    client.send(Commit())
    assert client.replies_pending == 1


def test_encoders_refuse_what_is_not_a_message() -> None:
    with pytest.raises(TypeError, match="not a request"):
        encode_request(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a reply"):
        encode_reply(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a load reply"):
        encode_load_reply(LoadReply(STATUS_KEYERROR, b"a record where none belongs"))
