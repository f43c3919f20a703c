"""Contracts on the pure parts of modules whose code this file must not change.

Owns thin wrapper functions whose docstrings state PEP 316 conditions
(``pre:``, ``post:``, ``raises:``) about durus.protocol, durus.shelf and the
executable spec (spec/). Each wrapper only calls the real functions and
returns what the conditions need, so ``crosshair check tools/contracts.py``
searches for inputs that break them, and tests/unit/test_contracts.py runs
the same conditions as Hypothesis properties in the default test run.

It must never change the behaviour of what it wraps, never do I/O beyond an
in-memory BytesIO, and never be imported by durus/ (it is a verification
tool, not part of the package). The contracts for durus.record and
durus.utils live in those modules' own docstrings.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from durus import protocol
from durus.error import ProtocolError, RecordFormatError
from durus.protocol import (
    BulkLoad,
    Commit,
    CommitData,
    Load,
    NeedData,
    NewOid,
    NewOids,
    Pack,
    Sync,
    Version,
    check_record,
    encode_reply,  # noqa: F401 - named by the postconditions
    encode_request,
    encode_tdata,
    parse_tdata,
)
from durus.record import pack_record, unpack_record
from durus.shelf import OffsetMap, build_offset_map, bytes_per_word
from durus.utils import int8_to_str
from spec.model import GHOST, LOADED, ROOT, Model, Obj, Returned, transfer_replay

try:  # CrossHair's symbolic bytes cannot enter struct (C code): make them concrete first
    from crosshair import deep_realize as _concrete
except ImportError:  # the default test run: values are concrete already

    def _concrete(value: Any) -> Any:  # type: ignore[misc]
        return value


MAX_EVENTS = 64  # a decoding loop over a finite stream ends well before this


# ---------------------------------------------------------------- protocol


def protocol_int4(n: int) -> bytes:
    """The protocol's int4 encoder.

    raises: ValueError
    post: 0 <= n <= 0xFFFFFFFF
    post: len(__return__) == 4 and int.from_bytes(__return__, "big") == n
    """
    return protocol.int4(n)


def tdata_round_trip(entries: list[tuple[int, bytes]]) -> tuple[object, object, bytes]:
    """Encode well-formed transaction data, parse it back: ``(parsed, items, encoded)``.

    pre: len(entries) <= 3
    pre: all(0 <= oid < 2**16 for oid, _data in entries)
    pre: len({oid for oid, _data in entries}) == len(entries)
    post: __return__[0] == __return__[1]
    post: int.from_bytes(__return__[2][:4], "big") == len(__return__[2]) - 4
    """
    items = tuple(
        (int8_to_str(oid), pack_record(int8_to_str(oid), data, b""))
        for oid, data in _concrete(entries)
    )
    encoded = encode_tdata(items)
    return parse_tdata(encoded[4:]), items, encoded


def tdata_reencodes(body: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """Parse arbitrary transaction data: accepted bodies re-encode to themselves.

    raises: ProtocolError
    post: encode_tdata(__return__)[4:] == body
    post: len({oid for oid, _record in __return__}) == len(__return__)
    """
    return parse_tdata(_concrete(body))


def check_record_agrees(oid: bytes, record: bytes) -> bool:
    """The protocol's record check accepts exactly what the record codec unpacks for ``oid``.

    pre: len(oid) == 8
    post: __return__ == _record_codec_accepts(oid, record)
    """
    oid, record = _concrete(oid), _concrete(record)
    try:
        check_record(oid, record)
    except ProtocolError:
        return False
    return True


def _record_codec_accepts(oid: bytes, record: bytes) -> bool:
    try:
        return unpack_record(record)[0] == oid
    except RecordFormatError:
        return False


def decode_requests(stream: bytes, cut: int) -> tuple[list[Any], int]:
    """Feed ``stream`` to a server in two pieces split at ``cut``: ``(requests, consumed)``.

    Decoding then re-encoding gives back exactly the bytes consumed, and the
    machine never consumes bytes it has not been given.

    raises: ProtocolError
    post: b"".join(encode_request(r) for r in __return__[0]) == stream[: __return__[1]]
    post: 0 <= __return__[1] <= len(stream)
    """
    stream = _concrete(stream)
    server = protocol.ServerProtocol()
    events: list[Any] = []
    for piece in (stream[: max(cut, 0)], stream[max(cut, 0) :]):
        server.receive_data(piece)
        events.extend(_drain(server))
    consumed = len(stream) - server.buffered_bytes
    if server.state == protocol.CLOSED:
        consumed = len(b"".join(encode_request(r) for r in events))  # the rest is ignored
    return events, consumed


def _drain(proto: protocol.ServerProtocol | protocol.ClientProtocol) -> list[Any]:
    events: list[Any] = []
    for _step in range(MAX_EVENTS):
        if isinstance(proto, protocol.ServerProtocol) and proto.state == protocol.CLOSED:
            break
        if isinstance(proto, protocol.ClientProtocol) and not proto.replies_pending:
            break
        event = proto.next_event()
        if isinstance(event, NeedData):
            assert event.min_bytes >= 1
            break
        events.append(event)
    return events


REQUEST_MENU = (
    (Version(1),),
    (Load(b"\x00" * 8),),
    (BulkLoad((b"\x00" * 8, b"\x00" * 7 + b"\x01")),),
    (Sync(),),
    (NewOid(),),
    (NewOids(2),),
    (Pack(),),
    (Commit(), CommitData(((b"\x00" * 8, pack_record(b"\x00" * 8, b"x", b"")),))),
)


def decode_replies(choices: list[int], stream: bytes) -> list[object]:
    """A client sends the chosen requests, then decodes ``stream`` as the replies.

    Every decoded reply re-encodes to the bytes it came from, in order.

    pre: len(choices) <= 4
    pre: all(0 <= c < len(REQUEST_MENU) for c in choices)
    raises: ProtocolError
    post: stream.startswith(b"".join(encode_reply(r) for r in __return__))
    """
    client = protocol.ClientProtocol()
    for choice in choices:
        for request in REQUEST_MENU[choice]:
            client.send(request)
    client.receive_data(_concrete(stream))
    return _drain(client)


# ---------------------------------------------------------------- shelf offset map


def shelf_bytes_per_word(maximum_int: int) -> int:
    """The word width of an offset map whose largest value is ``maximum_int``.

    pre: 0 <= maximum_int < 2**64 - 1
    post: 1 <= __return__ <= 8
    post: maximum_int < (1 << (8 * __return__)) - 1
    post: __return__ == 1 or maximum_int >= (1 << (8 * (__return__ - 1))) - 1
    """
    return bytes_per_word(maximum_int)


def offset_map_walk(
    start: int, positions: dict[int, int]
) -> tuple[list[int], list[int | None], int]:
    """Build the offset map, read it back: ``(holes walked, get(oid) per oid, word count)``.

    The hole chain visits every oid without a record exactly once: the others in
    descending order, then the spare slot n - 1; every oid with a record reads
    back its position; every other oid reads as absent.

    pre: 1 <= start <= 2**20
    pre: len(positions) <= 6
    pre: all(0 <= oid <= 40 and 0 <= position < start for oid, position in positions.items())
    post: __return__[2] == (max(positions) + 2 if positions else 0)
    post: __return__[0] == _expected_holes(positions, __return__[2])
    post: __return__[1] == [positions.get(oid) for oid in range(__return__[2])]
    """
    encoded = build_offset_map(start, positions)
    width = int.from_bytes(encoded[8:16], "big")
    word_count = int.from_bytes(encoded[16:24], "big")
    if word_count:
        assert width == bytes_per_word(start + word_count)
    offset_map = OffsetMap(BytesIO(b"\x00" * start + encoded), start, width, word_count)
    holes = list(offset_map.gen_holes())
    found = [offset_map.get(oid) for oid in range(word_count)]
    return holes, found, word_count


def _expected_holes(positions: dict[int, int], word_count: int) -> list[int]:
    if not word_count:
        return []
    spare = word_count - 1
    others = [oid for oid in range(spare) if oid not in positions]
    return sorted(others, reverse=True) + [spare]


# ---------------------------------------------------------------- spec model


def spec_reachable(refs_by_oid: dict[int, list[int]]) -> set[int]:
    """The model's reachability: a subset of the state, closed under refs, rooted.

    pre: len(refs_by_oid) <= 6
    post: __return__ <= set(refs_by_oid)
    post: (ROOT in __return__) == (ROOT in refs_by_oid)
    post: all(r in __return__ for o in __return__ for r in refs_by_oid[o] if r in refs_by_oid)
    post: all(o == ROOT or any(o in refs_by_oid[p] for p in __return__) for o in __return__)
    """
    state = {oid: Obj(None, tuple(refs)) for oid, refs in refs_by_oid.items()}
    return Model.reachable(state)


def spec_transfers(
    initial: dict[int, int], transfers: list[tuple[int, int, int]]
) -> dict[int, int]:
    """Replaying transfers between known accounts keeps the total and the accounts.

    pre: all(s in initial and t in initial for s, t, _amount in transfers)
    post: sum(__return__.values()) == sum(initial.values())
    post: set(__return__) == set(initial)
    """
    return transfer_replay(initial, transfers)


def spec_two_clients(ops: list[tuple[int, int, int]]) -> list[object]:
    """Two clients read, write, commit and abort the root; the model keeps its promises.

    Each op is ``(kind, client, value)``: kind 0 read, 1 write, 2 commit, 3 abort.
    The model raises SpecViolation (an AssertionError) when one of its own
    theorems breaks; a read after a successful commit by the same client
    returns what it wrote.

    pre: len(ops) <= 8
    post: len(__return__) == len(ops)
    """
    model = Model(Obj(0))
    names = ("a", "b")
    for name in names:
        model.connect(name)
    outcomes: list[object] = []
    for kind, who, value in ops:
        name = names[who % 2]
        client = model.clients[name]
        cache_state = LOADED if ROOT in client.accessed else GHOST
        if kind % 4 == 0:
            outcome = model.read(name, ROOT, cache_state)
        elif kind % 4 == 1:
            outcome = model.write(name, ROOT, Obj(value), cache_state)
        elif kind % 4 == 2:
            written = client.written.get(ROOT)
            outcome = model.commit(name)
            if outcome == Returned() and written is not None:
                assert model.latest[ROOT] == written
        else:
            outcome = model.abort(name)
        model.check_invariants()
        outcomes.append(outcome)
    return outcomes
