"""Shared helpers for server tests: free ports, a server subprocess, raw protocol clients.

``ServerProcess`` starts ``tests/support/run_server.py`` in a subprocess (it
never depends on the ``durus`` command line) and waits, bounded, until it
accepts connections. ``RawClient`` speaks protocol messages to a ServerCore
in-process; ``RawSocketClient`` does the same over a real socket with a
timeout on every wait.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from durus.protocol import (
    ClientProtocol,
    Commit,
    CommitData,
    NeedData,
    Reply,
    Request,
    Version,
)
from durus.record import pack_record
from durus.server_core import ServerCore
from durus.utils import int8_to_str

RUN_SERVER = Path(__file__).with_name("run_server.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 10.0


def oid(n: int) -> bytes:
    return int8_to_str(n)


def record(n: int, data: bytes = b"data", refs: tuple[int, ...] = ()) -> bytes:
    """A well-formed object record for oid ``n``."""
    return pack_record(oid(n), data, b"".join(oid(r) for r in refs))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RawClient:
    """Protocol messages to and from a ServerCore, with no socket."""

    def __init__(self, core: ServerCore, handshake: bool = True) -> None:
        self.core = core
        self.client_id = core.connect()
        self.protocol = ClientProtocol()
        self.closed_reason: str | None = None
        if handshake:
            self.request(Version())

    def send(self, request: Request) -> bytes:
        """Send one request; return the raw bytes the core answered."""
        output = self.core.receive(self.client_id, self.protocol.send(request))
        if output.close_reason is not None:
            self.closed_reason = output.close_reason
        return output.data

    def send_bytes(self, data: bytes) -> bytes:
        output = self.core.receive(self.client_id, data)
        if output.close_reason is not None:
            self.closed_reason = output.close_reason
        return output.data

    def request(self, request: Request) -> Reply | None:
        """Send one request and decode its reply (None when none is expected)."""
        pending_before = self.protocol.replies_pending
        data = self.send(request)
        self.protocol.receive_data(data)
        if self.protocol.replies_pending == pending_before:
            assert data == b""
            return None
        event = self.protocol.next_event()
        return None if isinstance(event, NeedData) else event

    def commit(self, items: dict[int, bytes] | list[tuple[bytes, bytes]]) -> tuple[Any, Any]:
        """A whole commit: (invalidations reply, status reply or None)."""
        if isinstance(items, dict):
            items = [(oid(n), rec) for n, rec in items.items()]
        invalidations = self.request(Commit())
        status = self.request(CommitData(tuple(items)))
        return invalidations, status

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None


class ServerProcess:
    """A StorageServer in a subprocess; ``stop()`` always leaves no process behind."""

    def __init__(self, *args: str, address: str | None = None, env: dict | None = None) -> None:
        self.port = free_port() if address is None else None
        self.address: Any = ("127.0.0.1", self.port) if address is None else address
        where = ["--port", str(self.port)] if address is None else ["--address", address]
        full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {}))
        self.process = subprocess.Popen(
            [sys.executable, str(RUN_SERVER), *where, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        from durus.socket_address import SocketAddress

        deadline = time.monotonic() + WAIT_S
        target = SocketAddress.new(self.address)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early: {self.output()}")
            sock = target.get_connected_socket(timeout_s=1.0)
            if sock is not None:
                sock.sendall(b".")
                sock.close()
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("server did not start in time")

    def connect_raw(self) -> socket.socket:
        from durus.socket_address import SocketAddress

        sock = SocketAddress.new(self.address).get_connected_socket(timeout_s=WAIT_S)
        assert sock is not None
        sock.settimeout(WAIT_S)
        return sock

    def quit(self) -> None:
        """Send 'Q' and wait (bounded) for the process to exit."""
        sock = self.connect_raw()
        sock.sendall(b"Q")
        sock.close()
        self.process.wait(timeout=WAIT_S)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_S)

    def output(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stdout is not None
        return self.process.stdout.read().decode("utf-8", "replace")

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock`` (whose timeout bounds each wait); b'' part on EOF."""
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
