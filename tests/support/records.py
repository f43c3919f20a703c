"""Record builders, a commit helper and oracles shared by the storage and server tests.

``oid``, ``record`` and ``commit`` are the one way tests spell "oid number n",
"a well-formed object record" and "store these records as one transaction", so
every storage is exercised with the same records; ``class_record`` is a record
whose state names a class, for the census tools. ``accept_invalidations`` is
the invalidation handler of a client that read nothing (for storages shared by
several clients). ``reachable`` is an oracle over plain ``{oid: record}`` dicts
(what a storage holds). Nothing here opens files or sockets or keeps state:
the storage under test is always passed in, so any test may use these helpers.
"""

from __future__ import annotations

from durus.record import pack_record, record_refs
from durus.storage import InvalidationHandler, Storage
from durus.utils import ROOT_OID, int8_to_str


def oid(n: int) -> bytes:
    """The 8-byte oid numbered ``n``."""
    return int8_to_str(n)


def record(n: int, *refs: int, data: bytes = b"data") -> bytes:
    """A well-formed object record for oid ``n`` referring to oids ``refs``, holding ``data``."""
    built = pack_record(oid(n), data, b"".join(oid(r) for r in refs))
    assert built.startswith(oid(n))
    return built


def class_record(n: int, class_name: bytes, *refs: int) -> bytes:
    """A record for oid ``n`` whose state names the class ``mod.<class_name>`` (what
    the census tools read), referring to ``refs`` in ascending order."""
    return record(n, *sorted(refs), data=b"\x80\x02cmod\n" + class_name + b"\nq\x00.state")


def commit(storage: Storage, *records: bytes, handler: InvalidationHandler | None = None) -> None:
    """Store each of ``records`` under the oid it begins with, as one transaction.

    ``handler`` goes to ``storage.end()``; None is the storage's own default.
    """
    storage.begin()
    for item in records:
        storage.store(item[:8], item)
    storage.end(handler)


def accept_invalidations(oids: list[bytes]) -> None:
    """An invalidation handler for a client that read nothing: no commit conflicts with it."""


def reachable(state: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The records reachable from the root in ``state`` (what a pack must keep)."""
    found: dict[bytes, bytes] = {}
    stack = [ROOT_OID] if ROOT_OID in state else []
    while stack:
        current = stack.pop()
        if current in found or current not in state:
            continue
        found[current] = state[current]
        stack.extend(record_refs(state[current]))
    assert set(found) <= set(state)
    return found
