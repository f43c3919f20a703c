"""durus.protocol: framing, round trips, hostile bytes, and the captured 4.3 streams."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durus.error import ProtocolError
from durus.protocol import (
    AWAITING_TDATA,
    CLOSED,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    BulkLoad,
    BulkLoadReply,
    ClientProtocol,
    Commit,
    CommitData,
    CommitStatus,
    Goodbye,
    InvalidationsReply,
    Limits,
    Load,
    LoadReply,
    NeedData,
    NewOid,
    NewOids,
    NewOidsReply,
    Pack,
    PackReply,
    Quit,
    ServerProtocol,
    Sync,
    UnknownCommand,
    Version,
    VersionReply,
    encode_reply,
    encode_request,
    int4,
)

CAPTURE = Path(__file__).parents[1] / "data" / "protocol_capture.json"
COMMAND_BYTES = set(b"VLBCSNMPQ.")

# ---------------------------------------------------------------- strategies

oids = st.binary(min_size=8, max_size=8)


@st.composite
def records_for(draw: st.DrawFn, oid: bytes) -> bytes:
    data = draw(st.binary(max_size=40))
    refs = draw(st.lists(oids, max_size=3))
    return oid + int4(len(data)) + data + b"".join(refs)


@st.composite
def commit_items(draw: st.DrawFn) -> tuple[tuple[bytes, bytes], ...]:
    item_oids = draw(st.lists(oids, min_size=1, max_size=4, unique=True))
    return tuple((oid, draw(records_for(oid))) for oid in item_oids)


simple_requests = st.one_of(
    st.builds(Version, st.integers(0, 2**32 - 1)),
    st.builds(Load, oids),
    st.builds(BulkLoad, st.lists(oids, max_size=5).map(tuple)),
    st.builds(Sync),
    st.builds(NewOid),
    st.builds(NewOids, st.integers(0, 255)),
    st.builds(Pack),
)
terminal_requests = st.one_of(
    st.builds(Quit),
    st.builds(Goodbye),
    st.sampled_from([bytes([b]) for b in range(256) if b not in COMMAND_BYTES]).map(UnknownCommand),
)


@st.composite
def request_sequences(draw: st.DrawFn) -> list:
    """Requests as a client may send them: a Commit is always followed by its data."""
    sequence: list = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            sequence.append(draw(simple_requests))
        else:
            sequence.append(Commit())
            abandon = draw(st.booleans())
            sequence.append(CommitData(() if abandon else draw(commit_items())))
    if draw(st.booleans()):
        sequence.append(draw(terminal_requests))
    return sequence


@st.composite
def load_replies(draw: st.DrawFn, oid: bytes) -> LoadReply:
    status = draw(st.sampled_from([STATUS_OKAY, STATUS_KEYERROR, STATUS_INVALID]))
    return LoadReply(status, draw(records_for(oid)) if status == STATUS_OKAY else b"")


@st.composite
def reply_for(draw: st.DrawFn, request: object) -> object:
    """A reply a server may send to ``request`` (None when it sends none)."""
    if isinstance(request, Version):
        return VersionReply(draw(st.integers(0, 2**32 - 1)))
    if isinstance(request, Load):
        return draw(load_replies(request.oid))
    if isinstance(request, BulkLoad):
        replies = tuple(draw(load_replies(oid)) for oid in request.oids)
        return BulkLoadReply(replies) if replies else None
    if isinstance(request, (Sync, Commit)):
        return InvalidationsReply(tuple(draw(st.lists(oids, max_size=4))))
    if isinstance(request, CommitData):
        if request.abandoned:
            return None
        return CommitStatus(draw(st.sampled_from([STATUS_OKAY, STATUS_INVALID])))
    if isinstance(request, NewOid):
        return NewOidsReply((draw(oids),))
    if isinstance(request, NewOids):
        if request.count == 0:
            return None
        return NewOidsReply(tuple(draw(oids) for _ in range(request.count)))
    if isinstance(request, Pack):
        return PackReply()
    return None


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def drain(proto: ServerProtocol | ClientProtocol) -> list:
    events = []
    while True:
        if isinstance(proto, ServerProtocol) and proto.state == CLOSED:
            return events
        if isinstance(proto, ClientProtocol) and not proto.replies_pending:
            return events
        event = proto.next_event()
        if isinstance(event, NeedData):
            return events
        events.append(event)


# ---------------------------------------------------------------- round trips


@given(request_sequences(), st.lists(st.integers(0, 10_000), max_size=6))
def test_server_decodes_any_split_of_encoded_requests(sequence: list, cuts: list[int]) -> None:
    stream = b"".join(encode_request(r) for r in sequence)
    proto = ServerProtocol()
    events: list = []
    for chunk in chunked(stream, cuts):
        proto.receive_data(chunk)
        events.extend(drain(proto))
    assert events == sequence
    assert b"".join(encode_request(e) for e in events) == stream


@given(st.data())
def test_client_decodes_any_split_of_encoded_replies(data: st.DataObject) -> None:
    sequence = [r for r in data.draw(request_sequences()) if not isinstance(r, Goodbye)]
    sequence = [r for r in sequence if not isinstance(r, (Quit, UnknownCommand))]
    proto = ClientProtocol()
    replies = []
    for request in sequence:
        proto.send(request)
        reply = data.draw(reply_for(request))
        if reply is not None:
            replies.append(reply)
    assert proto.replies_pending == len(replies)
    stream = b"".join(encode_reply(r) for r in replies)
    events: list = []
    for chunk in chunked(stream, data.draw(st.lists(st.integers(0, 10_000), max_size=6))):
        proto.receive_data(chunk)
        events.extend(drain(proto))
    assert events == replies


@given(request_sequences())
def test_need_data_hint_is_exact_for_requests(sequence: list) -> None:
    """Feeding exactly min_bytes at a time never asks for a byte beyond the message."""
    stream = b"".join(encode_request(r) for r in sequence)
    proto = ServerProtocol()
    pos = 0
    events = []
    while proto.state != CLOSED and (pos < len(stream) or len(events) < len(sequence)):
        event = proto.next_event()
        if isinstance(event, NeedData):
            assert event.min_bytes >= 1
            assert pos + event.min_bytes <= len(stream)
            proto.receive_data(stream[pos : pos + event.min_bytes])
            pos += event.min_bytes
        else:
            events.append(event)
    assert events == sequence and pos == len(stream)


# ---------------------------------------------------------------- hostile bytes


@given(st.binary(max_size=300), st.booleans())
def test_server_decoder_raises_only_protocol_error(data: bytes, in_commit: bool) -> None:
    proto = ServerProtocol(Limits(max_commit_bytes=200, max_bulk_load_oids=10))
    if in_commit:
        proto.receive_data(b"C")
        assert isinstance(proto.next_event(), Commit) and proto.state == AWAITING_TDATA
    proto.receive_data(data)
    try:
        for _ in range(len(data) + 2):
            if proto.state == CLOSED or isinstance(proto.next_event(), NeedData):
                break
    except ProtocolError:
        assert proto.state == CLOSED


@given(request_sequences(), st.data())
def test_mutated_request_streams_raise_only_protocol_error(
    sequence: list, data: st.DataObject
) -> None:
    stream = bytearray(b"".join(encode_request(r) for r in sequence) or b"L")
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(stream) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            stream[pos] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del stream[pos:]
            stream = stream or bytearray(b"B")
        else:
            stream[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    proto = ServerProtocol()
    proto.receive_data(bytes(stream))
    try:
        drain(proto)
    except ProtocolError:
        pass


@given(request_sequences(), st.binary(max_size=300))
def test_client_decoder_raises_only_protocol_error(sequence: list, data: bytes) -> None:
    proto = ClientProtocol(Limits(max_record_bytes=100, max_invalidation_oids=10))
    for request in sequence:
        if not isinstance(request, (Quit, Goodbye, UnknownCommand)):
            proto.send(request)
    proto.receive_data(data)
    try:
        for _ in range(len(data) + 2):
            if not proto.replies_pending or isinstance(proto.next_event(), NeedData):
                break
    except ProtocolError:
        assert proto.closed


# ---------------------------------------------------------------- limits and framing rules


def test_oversized_commit_is_refused_from_its_header() -> None:
    proto = ServerProtocol(Limits(max_commit_bytes=1000))
    proto.receive_data(b"C" + int4(1001))
    assert isinstance(proto.next_event(), Commit)
    with pytest.raises(ProtocolError, match="exceeds 1000"):
        proto.next_event()
    assert proto.state == CLOSED


def test_oversized_bulk_load_is_refused_from_its_header() -> None:
    proto = ServerProtocol(Limits(max_bulk_load_oids=3))
    proto.receive_data(b"B" + int4(4))
    with pytest.raises(ProtocolError, match="bulk load of 4"):
        proto.next_event()


def test_too_many_records_in_a_commit() -> None:
    items = tuple((bytes([0] * 7 + [n]), bytes([0] * 7 + [n]) + int4(0)) for n in range(3))
    proto = ServerProtocol(Limits(max_commit_records=2))
    proto.receive_data(b"C" + encode_request(CommitData(items)))
    proto.next_event()
    with pytest.raises(ProtocolError, match="more than 2 records"):
        proto.next_event()


@pytest.mark.parametrize(
    "tdata, message",
    [
        (int4(200) + bytes(8) + bytes(8) + int4(0), "overruns"),  # the 4.3 server-killer
        (int4(20) + bytes(7) + b"\x01" + bytes(8) + int4(0), "begins with oid"),
        (int4(20) + bytes(8) + bytes(8) + int4(9), "malformed"),
        (int4(21) + bytes(8) + bytes(8) + int4(0) + b"x", "malformed"),
        (int4(10) + bytes(10), "overruns"),
        ((int4(20) + bytes(8) + bytes(8) + int4(0)) * 2, "twice"),
        (int4(20) + bytes(8) + bytes(8) + int4(0) + b"\x00\x00", "inside an item length"),
    ],
)
def test_malformed_transaction_data(tdata: bytes, message: str) -> None:
    proto = ServerProtocol()
    proto.receive_data(b"C" + int4(len(tdata)) + tdata)
    proto.next_event()
    with pytest.raises(ProtocolError, match=message):
        proto.next_event()


def test_bytes_after_close_are_ignored_and_next_event_refuses() -> None:
    proto = ServerProtocol()
    proto.receive_data(b".L")
    assert isinstance(proto.next_event(), Goodbye)
    proto.receive_data(b"more")
    assert proto.buffered_bytes == 1
    with pytest.raises(ProtocolError):
        proto.next_event()


def test_client_refuses_unexpected_status_bytes() -> None:
    proto = ClientProtocol()
    proto.send(Load(bytes(8)))
    proto.receive_data(b"X")
    with pytest.raises(ProtocolError, match="status=b'X'"):
        proto.next_event()
    with pytest.raises(ProtocolError):
        proto.send(Sync())


def test_client_refuses_bytes_nobody_asked_for() -> None:
    proto = ClientProtocol()
    proto.receive_data(b"O")
    with pytest.raises(ProtocolError, match="nobody asked"):
        proto.next_event()


def test_client_enforces_commit_sequencing() -> None:
    proto = ClientProtocol()
    with pytest.raises(ProtocolError):
        proto.send(CommitData(()))
    proto.send(Commit())
    with pytest.raises(ProtocolError):
        proto.send(Sync())
    assert proto.send(CommitData(())) == bytes(4)


def test_encoders_refuse_bad_values() -> None:
    with pytest.raises(ValueError):
        encode_request(NewOids(256))
    with pytest.raises(ValueError):
        encode_request(Load(b"short"))
    with pytest.raises(ValueError):
        encode_request(UnknownCommand(b"L"))
    with pytest.raises(ValueError):
        encode_reply(CommitStatus(b"K"))
    with pytest.raises(ValueError):
        int4(-1)
    with pytest.raises(ValueError):
        Limits(max_record_bytes=0)


def test_module_imports_no_io_or_object_layer() -> None:
    """The wall of DESIGN.md: the codec never imports sockets, clocks, pickle or objects."""
    source = Path(__file__).parents[2] / "durus" / "protocol.py"
    tree = ast.parse(source.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    forbidden = {"socket", "time", "pickle", "selectors", "durus.persistent", "durus.connection"}
    assert not imported & forbidden
    allowed = {"__future__", "struct", "collections", "dataclasses", "durus.error"}
    assert imported <= allowed | {"hashlib", "hmac"}  # hmac: the authentication extension


# ---------------------------------------------------------------- the captured 4.3 streams


def capture_streams() -> dict[int, dict[str, bytes]]:
    steps = json.loads(CAPTURE.read_text())["steps"]
    streams: dict[int, dict[str, bytes]] = {}
    for step in steps:
        for chunk in step["chunks"]:
            by_dir = streams.setdefault(chunk["conn"], {"C>S": b"", "S>C": b""})
            by_dir[chunk["dir"]] += bytes.fromhex(chunk["hex"])
    return streams


def test_capture_requests_reencode_byte_for_byte() -> None:
    for conn, stream in capture_streams().items():
        proto = ServerProtocol()
        proto.receive_data(stream["C>S"])
        requests = drain(proto)
        assert b"".join(encode_request(r) for r in requests) == stream["C>S"], conn
        assert proto.buffered_bytes == 0


def test_capture_replies_reencode_byte_for_byte() -> None:
    for conn, stream in capture_streams().items():
        server = ServerProtocol()
        server.receive_data(stream["C>S"])
        client = ClientProtocol()
        for request in drain(server):
            client.send(request)
        client.receive_data(stream["S>C"])
        replies = drain(client)
        assert b"".join(encode_reply(r) for r in replies) == stream["S>C"], conn


def test_capture_content_matches_the_transcript() -> None:
    streams = capture_streams()
    server = ServerProtocol()
    server.receive_data(streams[1]["C>S"])
    requests = drain(server)
    assert requests[:3] == [Version(1), Load(bytes(8)), NewOids(32)]
    client = ClientProtocol()
    for request in requests:
        client.send(request)
    client.receive_data(streams[1]["S>C"])
    replies = drain(client)
    assert replies[1] == LoadReply(STATUS_KEYERROR)
    assert replies[2] == NewOidsReply(tuple(n.to_bytes(8, "big") for n in range(32)))
    assert replies[3] == InvalidationsReply(()) and replies[4] == CommitStatus(STATUS_OKAY)
    first_commit = requests[4]
    assert isinstance(first_commit, CommitData) and first_commit.tdata_bytes == 94
    final = [drain_one(streams[c]["C>S"]) for c in (3, 4, 6)]
    assert final == [Version(2), Version(1), Quit()]


def drain_one(stream: bytes) -> object:
    proto = ServerProtocol()
    proto.receive_data(stream)
    return proto.next_event()


# ---------------------------------------------------------------- the authentication extension


def test_the_auth_byte_is_an_unknown_command_when_authentication_is_off() -> None:
    from durus.protocol import CMD_AUTHENTICATE

    server = ServerProtocol()
    server.receive_data(CMD_AUTHENTICATE + bytes(32))
    assert server.next_event() == UnknownCommand(CMD_AUTHENTICATE)
    assert server.state == CLOSED


def test_auth_messages_round_trip_on_both_ends() -> None:
    from durus.protocol import (
        AUTH_CLIENT_LABEL,
        AUTH_SERVER_LABEL,
        AuthAccepted,
        AuthChallenge,
        Authenticate,
        AuthProof,
        auth_mac,
        macs_match,
    )

    client_nonce, server_nonce = bytes(range(32)), bytes(range(32, 64))
    server_mac = auth_mac(b"secret", AUTH_SERVER_LABEL, client_nonce, server_nonce)
    client_mac = auth_mac(b"secret", AUTH_CLIENT_LABEL, client_nonce, server_nonce)
    assert server_mac != client_mac and macs_match(server_mac, server_mac)
    assert not macs_match(server_mac, client_mac)
    client = ClientProtocol()
    server = ServerProtocol(authentication=True)
    for request in (Authenticate(client_nonce), AuthProof(client_mac)):
        data = client.send(request)
        server.receive_data(data[:5])
        assert isinstance(server.next_event(), NeedData)
        server.receive_data(data[5:])
        assert server.next_event() == request
    challenge = AuthChallenge(server_nonce, server_mac)
    client.receive_data(encode_reply(challenge) + encode_reply(AuthAccepted()))
    assert client.next_event() == challenge
    assert client.next_event() == AuthAccepted()
    with pytest.raises(ValueError):
        encode_request(Authenticate(b"short"))
    with pytest.raises(ValueError):
        auth_mac(b"secret", AUTH_CLIENT_LABEL, b"short", server_nonce)


def test_a_wrong_auth_status_is_a_protocol_error() -> None:
    from durus.protocol import Authenticate, AuthProof

    client = ClientProtocol()
    client.send(Authenticate(bytes(32)))
    client.receive_data(bytes(64))
    client.next_event()
    client.send(AuthProof(bytes(32)))
    client.receive_data(b"I")
    with pytest.raises(ProtocolError, match="auth_status"):
        client.next_event()
