"""Test oracles over plain ``{oid: record}`` dicts (what a storage holds)."""

from __future__ import annotations

from durus.record import record_refs
from durus.utils import ROOT_OID


def reachable(state: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The records reachable from the root in ``state`` (what a pack must keep)."""
    found: dict[bytes, bytes] = {}
    stack = [ROOT_OID] if ROOT_OID in state else []
    while stack:
        oid = stack.pop()
        if oid in found or oid not in state:
            continue
        found[oid] = state[oid]
        stack.extend(record_refs(state[oid]))
    assert set(found) <= set(state)
    return found
