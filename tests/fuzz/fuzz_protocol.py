"""atheris target: the protocol decoders of both ends, on arbitrary bytes.

Only ProtocolError may escape a decoder, and every request the server-side
decoder produces must encode back to exactly the bytes it was decoded from.
See tests/fuzz/README.md for how to run it.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from durus.error import ProtocolError
    from durus.protocol import (
        Authenticate,
        AuthProof,
        BulkLoad,
        ClientProtocol,
        Commit,
        CommitData,
        Limits,
        Load,
        NeedData,
        NewOid,
        NewOids,
        Pack,
        ServerProtocol,
        Sync,
        Version,
        encode_request,
    )

LIMITS = Limits(max_record_bytes=1 << 16, max_commit_bytes=1 << 16, max_bulk_load_oids=64)
MAX_EVENTS = 1000


def server_side(data: bytes, authentication: bool, split: int) -> None:
    protocol = ServerProtocol(LIMITS, authentication)
    consumed = bytearray()
    for chunk in (data[:split], data[split:]):
        protocol.receive_data(chunk)
        for _ in range(MAX_EVENTS):
            try:
                event = protocol.next_event()
            except ProtocolError:
                return
            if isinstance(event, NeedData):
                assert event.min_bytes > 0
                break
            consumed += encode_request(event)
            if protocol.state == "closed":
                return
    assert data.startswith(bytes(consumed)), "a decoded request re-encodes differently"


REQUESTS = (
    Version(),
    Load(bytes(8)),
    BulkLoad((bytes(8), bytes(7) + b"\x01")),
    Sync(),
    NewOid(),
    NewOids(3),
    Pack(),
    Authenticate(bytes(32)),
)


def client_side(data: bytes, which: int) -> None:
    protocol = ClientProtocol(LIMITS)
    request = REQUESTS[which % len(REQUESTS)]
    protocol.send(request)
    if which % 3 == 0:
        protocol = ClientProtocol(LIMITS)
        protocol.send(Commit())
        protocol.send(CommitData(((bytes(8), bytes(8) + bytes(4)),)))
    elif isinstance(request, Authenticate) and which % 2:
        protocol.send(AuthProof(bytes(32)))
    protocol.receive_data(data)
    for _ in range(MAX_EVENTS):
        try:
            event = protocol.next_event()
        except ProtocolError:
            return
        if isinstance(event, NeedData):
            assert event.min_bytes > 0
            return


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, split = data[0], data[1]
    body = data[2:]
    if mode % 2:
        client_side(body, mode // 2)
    else:
        server_side(body, bool(mode & 2), split % (len(body) + 1))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
