"""The PEP 316 docstring contracts, run as Hypothesis properties.

``nox -s crosshair`` searches for counterexamples to the ``pre:``/``post:``
conditions symbolically; this file evaluates the very same conditions (read
from the docstrings, so there is one statement of each) on generated inputs,
so the default test run exercises every contract without CrossHair. Inputs
CrossHair once found to break a contract are pinned here as plain examples.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from durus import arrays, record, utils
from durus.error import RecordFormatError
from tools import contracts

PREFIXES = ("pre:", "post:", "raises:", "inv:")


def parse_contract(function: Callable[..., Any]) -> dict[str, list[str]]:
    """The condition lines of ``function``'s docstring, by kind."""
    found: dict[str, list[str]] = {prefix: [] for prefix in PREFIXES}
    for line in (inspect.getdoc(function) or "").splitlines():
        stripped = line.strip()
        for prefix in PREFIXES:
            if stripped.startswith(prefix):
                found[prefix].append(stripped[len(prefix) :].strip())
    return found


def check_contract(function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function`` where its preconditions hold and assert its postconditions."""
    contract = parse_contract(function)
    assert contract["post:"], f"{function.__qualname__} states no postcondition"
    namespace = dict(function.__globals__)
    namespace.update(inspect.signature(function).bind(*args).arguments)
    assume(all(eval(condition, namespace) for condition in contract["pre:"]))
    allowed = tuple(
        eval(name.strip(), namespace) for line in contract["raises:"] for name in line.split(",")
    )
    try:
        result = function(*args)
    except allowed:
        return None
    namespace["__return__"] = result
    for condition in contract["post:"]:
        assert eval(condition, namespace), f"{function.__qualname__}: post: {condition}"
    return result


oid_bytes = st.binary(min_size=8, max_size=8)
small_bytes = st.binary(max_size=40)
records = st.builds(
    record.pack_record, oid_bytes, small_bytes, st.lists(oid_bytes, max_size=3).map(b"".join)
)
record_like = st.one_of(records, small_bytes, records.map(lambda r: r[:-1]))


# ---------------------------------------------------------------- durus.utils


@given(st.integers(-(2**33), 2**33))
def test_int4_contracts(n: int) -> None:
    check_contract(utils.int4_to_str, n)
    check_contract(utils.str_to_int4, n.to_bytes(8, "big", signed=True)[-4:])


@given(st.integers(-(2**65), 2**65))
def test_int8_contracts(n: int) -> None:
    check_contract(utils.int8_to_str, n)
    check_contract(utils.str_to_int8, n.to_bytes(9, "big", signed=True)[-8:])


@given(st.one_of(st.binary(max_size=10), st.integers(), st.text(max_size=8)))
def test_check_oid_contract(oid: object) -> None:
    check_contract(utils.check_oid, oid)


# ---------------------------------------------------------------- durus.record


@given(st.binary(max_size=10), small_bytes, st.binary(max_size=24))
def test_pack_record_contract(oid: bytes, data: bytes, refs: bytes) -> None:
    check_contract(record.pack_record, oid, data, refs)


@given(record_like)
def test_record_decoder_contracts(raw: bytes) -> None:
    for decoder in (record.unpack_record, record.record_oid, record.record_refs):
        check_contract(decoder, raw)
    check_contract(record.extract_class_name, raw)


@given(st.one_of(st.binary(max_size=33), st.text(max_size=17)))
@example("\u0101")  # found by CrossHair: a non-latin-1 str raised UnicodeEncodeError
def test_split_oids_contract(s: bytes | str) -> None:
    check_contract(record.split_oids, s)


def test_split_oids_non_latin1_str_is_a_format_error() -> None:
    with pytest.raises(RecordFormatError, match="latin-1"):
        record.split_oids("\u0101" * 8)


# ---------------------------------------------------------------- durus.arrays


@given(st.one_of(st.none(), st.integers(-3, 2**66)))
@example(0xFF)
@example(0xFE)
@example(2**64 - 2)
@example(2**64 - 1)
def test_bytes_for_maximum_contract(maximum_int: int | None) -> None:
    check_contract(arrays._bytes_for_maximum, maximum_int)


def check_invariant(instance: object) -> None:
    for condition in parse_contract(type(instance))["inv:"]:
        assert eval(condition, {"self": instance}), f"inv: {condition}"


@given(
    st.one_of(st.integers(0, 255), st.binary(min_size=1, max_size=1)),
    st.lists(st.tuples(st.integers(-9, 8), st.booleans()), max_size=10),
)
def test_byte_invariant(initial: int | bytes, writes: list[tuple[int, bool]]) -> None:
    byte = arrays.Byte(initial)
    check_invariant(byte)
    for index, bit in writes:
        check_contract(arrays.Byte.__setitem__, byte, index, bit)
        check_contract(arrays.Byte.__getitem__, byte, index)
        check_invariant(byte)


# ---------------------------------------------------------------- durus.protocol


@given(st.integers(-5, 2**32 + 5))
def test_protocol_int4_contract(n: int) -> None:
    check_contract(contracts.protocol_int4, n)


@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), small_bytes), max_size=6))
def test_tdata_round_trip_contract(entries: list[tuple[int, bytes]]) -> None:
    check_contract(contracts.tdata_round_trip, entries)


tdata_items = st.lists(st.tuples(oid_bytes, records), max_size=3).map(
    lambda items: tuple((oid, oid + r[8:]) for oid, r in items)
)
tdata_bodies = st.one_of(
    st.binary(max_size=60),
    tdata_items.map(lambda items: contracts.encode_tdata(items)[4:]),
    tdata_items.map(lambda items: contracts.encode_tdata(items)[4:-1]),
)


@given(tdata_bodies)
def test_tdata_reencodes_contract(body: bytes) -> None:
    check_contract(contracts.tdata_reencodes, body)


@given(oid_bytes, record_like)
def test_check_record_agrees_contract(oid: bytes, raw: bytes) -> None:
    check_contract(contracts.check_record_agrees, oid, raw)
    check_contract(contracts.check_record_agrees, raw[:8].ljust(8, b"\x00"), raw)


def request_streams() -> st.SearchStrategy[bytes]:
    requests = st.sampled_from(
        [request for menu in contracts.REQUEST_MENU for request in menu]
        + [contracts.CommitData(()), contracts.BulkLoad(())]
    )
    return st.lists(requests, max_size=5).map(
        lambda rs: b"".join(contracts.encode_request(r) for r in rs)
    )


@given(st.one_of(request_streams(), st.binary(max_size=40)), st.integers(-1, 60))
def test_decode_requests_contract(stream: bytes, cut: int) -> None:
    check_contract(contracts.decode_requests, stream, cut)


@given(
    st.lists(st.integers(0, len(contracts.REQUEST_MENU) - 1), max_size=4),
    st.one_of(
        st.binary(max_size=40),
        st.lists(st.sampled_from([b"O", b"K", b"I", b"\x00" * 4, b"\x00" * 8]), max_size=8).map(
            b"".join
        ),
    ),
)
def test_decode_replies_contract(choices: list[int], stream: bytes) -> None:
    check_contract(contracts.decode_replies, choices, stream)


# ---------------------------------------------------------------- durus.shelf


@given(st.integers(0, 2**64 - 2))
@example(0xFF)
@example(0xFE)
@example(0xFFFF)
def test_shelf_bytes_per_word_contract(maximum_int: int) -> None:
    check_contract(contracts.shelf_bytes_per_word, maximum_int)


@given(st.integers(1, 2**20), st.dictionaries(st.integers(0, 40), st.integers(0), max_size=6))
@example(1, {})
@example(1, {0: 0})
@example(300, {40: 299})
def test_offset_map_walk_contract(start: int, raw_positions: dict[int, int]) -> None:
    positions = {oid: position % start for oid, position in raw_positions.items()}
    check_contract(contracts.offset_map_walk, start, positions)


# ---------------------------------------------------------------- spec/


@given(st.dictionaries(st.integers(0, 8), st.lists(st.integers(0, 9), max_size=3), max_size=6))
def test_spec_reachable_contract(refs_by_oid: dict[int, list[int]]) -> None:
    check_contract(contracts.spec_reachable, refs_by_oid)


@given(
    st.dictionaries(st.integers(0, 4), st.integers(-100, 100), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(-50, 50)), max_size=5),
)
def test_spec_transfers_contract(
    initial: dict[int, int], transfers: list[tuple[int, int, int]]
) -> None:
    check_contract(contracts.spec_transfers, initial, transfers)


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(0, 3)),
        max_size=8,
    )
)
def test_spec_two_clients_contract(ops: list[tuple[int, int, int]]) -> None:
    check_contract(contracts.spec_two_clients, ops)


# ---------------------------------------------------------------- the runner itself


def test_every_contracted_function_has_a_property_test() -> None:
    """A new contract must come with a property here (the crosshair session lists targets)."""
    tested = {
        name.removeprefix("test_").removesuffix("_contract")
        for name in globals()
        if name.startswith("test_") and name.endswith("_contract")
    }
    for module in (contracts,):
        for name, function in vars(module).items():
            if inspect.isfunction(function) and function.__module__ == module.__name__:
                if parse_contract(function)["post:"]:
                    assert name in tested, f"{name} has a contract but no property test"


def test_runner_rejects_a_broken_postcondition() -> None:
    def broken(n: int) -> int:
        """post: __return__ == n"""
        return n + 1

    @given(st.just(1))
    def run(n: int) -> None:
        check_contract(broken, n)

    with pytest.raises(AssertionError, match="post"):
        run()
