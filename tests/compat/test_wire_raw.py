"""The same raw byte conversation with our server and with Durus 4.3's server.

A scripted session of raw sockets (no client library on either side) runs
against ``durus -s`` of each implementation on a new file; every byte each
server sends back is recorded, and the two transcripts must be equal (oid
lists whose order PROTOCOL.md leaves to Python's set order are sorted first).
It covers the handshake, load, bulk load, both oid commands, commits with
their invalidation lists, sync, read of an invalid oid, a commit using
another client's unused oid, an unknown command, a version mismatch and pack.
"""

from __future__ import annotations

import socket
import struct

from tests.compat import harness
from tests.support.records import oid, record

RECV_LIMIT_BYTES = 1 << 20


def int4(n: int) -> bytes:
    return struct.pack(">I", n)


def tdata(*records: bytes) -> bytes:
    items = b"".join(int4(8 + len(r)) + r[:8] + r for r in records)
    return int4(len(items)) + items


class RawClient:
    """A socket with exact-length reads; every wait is bounded by the socket timeout."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=harness.SOCKET_TIMEOUT_S)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, size: int) -> bytes:
        assert size <= RECV_LIMIT_BYTES
        chunks, remaining = [], size
        while remaining:
            chunk = self.sock.recv(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def read_oid_list(self) -> list[bytes]:
        count = struct.unpack(">I", self.read(4))[0]
        data = self.read(8 * count)
        return sorted(data[i : i + 8] for i in range(0, len(data), 8))

    def read_load_response(self) -> bytes:
        status = self.read(1)
        if status != b"O":
            return status
        size = self.read(4)
        return status + size + self.read(struct.unpack(">I", size)[0])

    def closed_by_server(self) -> bool:
        """True when the server has closed this connection (EOF within the timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def conversation(port: int) -> list[tuple[str, object]]:
    """Run the scripted session; return (step, what the server sent) pairs."""
    transcript: list[tuple[str, object]] = []
    x = RawClient(port)
    clients = [x]
    try:
        x.send(b"V" + int4(1))
        transcript.append(("x version", x.read(4)))
        x.send(b"L" + oid(0))
        transcript.append(("x load missing root", x.read_load_response()))
        x.send(b"M\x20")
        transcript.append(("x 32 new oids", x.read(256)))
        x.send(b"C")
        transcript.append(("x invalidations", x.read_oid_list()))
        x.send(tdata(record(0, data=b"root-v1")))
        transcript.append(("x commit status", x.read(1)))

        y = RawClient(port)
        clients.append(y)
        y.send(b"V" + int4(1) + b"L" + oid(0))
        transcript.append(("y version+load", y.read(4) + y.read_load_response()))
        x.send(b"C")
        transcript.append(("x invalidations 2", x.read_oid_list()))
        x.send(tdata(record(0, 1, data=b"root-v2"), record(1, data=b"child")))
        transcript.append(("x commit 2", x.read(1)))
        y.send(b"L" + oid(0))
        transcript.append(("y load invalid root", y.read_load_response()))
        y.send(b"S")
        transcript.append(("y sync", y.read_oid_list()))
        y.send(b"B" + int4(3) + oid(0) + oid(1) + oid(99))
        transcript.append(("y bulk", [y.read_load_response() for _ in range(3)]))
        y.send(b"N")
        transcript.append(("y new oid", y.read(8)))
        x.send(b"M\x03")
        transcript.append(("x 3 more oids", x.read(24)))

        z = RawClient(port)
        clients.append(z)
        z.send(b"V" + int4(1) + b"C")
        transcript.append(("z version+invalidations", (z.read(4), z.read_oid_list())))
        z.send(tdata(record(33, data=b"stolen")))
        transcript.append(("z commit of x's unused oid is dropped", z.closed_by_server()))

        x.send(b"Z")
        transcript.append(("x unknown command is dropped", x.closed_by_server()))
        w = RawClient(port)
        clients.append(w)
        w.send(b"V" + int4(2))
        transcript.append(("w version 2 answered", w.read(4)))
        transcript.append(("w version 2 then dropped", w.closed_by_server()))
        y.send(b"P")
        transcript.append(("y pack", y.read(1)))
        y.send(b"L" + oid(33) + b"L" + oid(1))
        transcript.append(("y loads", [y.read_load_response() for _ in range(2)]))
    finally:
        for client in clients:
            client.close()
    return transcript


def test_same_bytes_from_both_servers(sides, tmp_path):
    transcripts = {}
    for name, side in sides.items():
        workdir = tmp_path / name
        workdir.mkdir()
        with harness.ServerProcess(side, workdir / "new.durus", cwd=workdir) as server:
            transcripts[name] = conversation(server.port)
            assert server.alive(), f"{name} server died:\n{server.log()}"
    for (step, ours), (_, theirs) in zip(transcripts["ours"], transcripts["peer"], strict=True):
        assert ours == theirs, f"step {step!r}: ours sent {ours!r}, Durus 4.3 sent {theirs!r}"
