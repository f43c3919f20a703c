"""atheris target: the server core (commit handling included) fed by three clients.

Input layout: a sequence of chunks ``client (1 byte) | length (1 byte) | bytes``.
The core must never raise; whatever it stores must be well-formed records
under their own oids, and a refused or failed commit leaves no records
pending in the storage (they would reach it with the next commit). See
tests/fuzz/README.md for how to run it.
"""

from __future__ import annotations

import logging
import sys

import atheris

with atheris.instrument_imports():
    from durus.protocol import Limits
    from durus.record import unpack_record
    from durus.server_core import ServerCore
    from durus.storage import MemoryStorage

LIMITS = Limits(max_record_bytes=1 << 14, max_commit_bytes=1 << 14, max_bulk_load_oids=64)
CLIENTS = 3
SECRET = b"fuzzing secret 0123456789"


class CountingStorage(MemoryStorage):
    """A MemoryStorage that counts its completed transactions."""

    def __init__(self) -> None:
        super().__init__()
        self.ends = 0

    def end(self, handle_invalidations: object = None) -> None:
        super().end()
        self.ends += 1


def test_one_input(data: bytes) -> None:
    if not data:
        return
    storage = CountingStorage()
    core = ServerCore(
        storage, limits=LIMITS, serialize_commits=bool(data[0] & 1),
        auth_secret=SECRET if data[0] & 2 else None, nonce_source=lambda n: bytes(n),
    )  # fmt: skip
    clients = [core.connect() for _ in range(CLIENTS)]
    position = 1
    while position + 2 <= len(data):
        client = clients[data[position] % CLIENTS]
        size = data[position + 1]
        chunk = data[position + 2 : position + 2 + size]
        position += 2 + size
        if client not in core.clients:
            continue
        output = core.receive(client, chunk)
        if output.close_reason is not None:
            core.disconnect(client)
        if core.quit_requested:
            break
        core.run_idle_step()
    for oid, record in storage.records.items():
        stored_oid, _data, _refs = unpack_record(record)
        assert stored_oid == oid
    assert not storage.transaction, "a refused commit left records pending"
    assert storage.ends == 0 or storage.records


def main() -> None:
    logging.getLogger("durus").setLevel(logging.CRITICAL + 1)  # drops are expected: stay quiet
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
