"""Shared helpers for server tests: free ports, a server subprocess, raw protocol clients.

``ServerProcess`` starts ``tests/support/run_server.py`` in a subprocess (it
never depends on the ``durus`` command line) and waits, bounded, until it
accepts connections. ``ThreadedServer`` runs a StorageServer in a thread of
the test process. ``RawClient`` speaks protocol messages to a ServerCore
in-process; ``committed`` is its commit that must succeed. ``LogCapture``
collects the ``durus`` logger's messages (it attaches its own handler, so it
works even after the command line turned propagation off). ``make_tls_files``
makes a throw-away self-signed certificate with the ``openssl`` command;
``write_secret`` a secret file. ``wait_until`` polls a condition (a server
thread's state, say) until a bounded wait runs out. Every wait here is bounded,
so a broken server fails a test and never hangs it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from durus.protocol import (
    STATUS_OKAY,
    ClientProtocol,
    Commit,
    CommitData,
    CommitStatus,
    NeedData,
    Reply,
    Request,
    Version,
)
from durus.server_core import ServerCore
from tests.support.records import oid

RUN_SERVER = Path(__file__).with_name("run_server.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout_s: float = WAIT_S) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout_s`` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


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


def committed(client: RawClient, items: dict[int, bytes]) -> None:
    """A whole commit through ``client`` that must succeed."""
    invalidations, status = client.commit(items)
    assert status == CommitStatus(STATUS_OKAY), (invalidations, status)


class ServerProcess:
    """A StorageServer in a subprocess; ``stop()`` always leaves no process behind."""

    def __init__(
        self, *args: str, address: str | None = None, env: dict | None = None,
        log_path: Path | None = None,
    ) -> None:  # fmt: skip
        """``log_path``: the server's log goes to this file, not a pipe (for chatty runs)."""
        self.port = free_port() if address is None else None
        self.address: Any = ("127.0.0.1", self.port) if address is None else address
        where = ["--port", str(self.port)] if address is None else ["--address", address]
        full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {}))
        self.log_path = log_path
        log_file = open(log_path, "wb") if log_path is not None else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, str(RUN_SERVER), *where, *args],
                stdout=subprocess.PIPE if log_file is None else log_file,
                stderr=subprocess.STDOUT,
                env=full_env,
            )
        finally:
            if log_file is not None:
                log_file.close()
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
        if self.log_path is not None:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
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


class ThreadedServer:
    """A StorageServer serving in a daemon thread; ``stop()`` is bounded."""

    def __init__(self, storage: Any = None, **kwargs: Any) -> None:
        from durus.storage import MemoryStorage
        from durus.storage_server import StorageServer, wait_for_server

        self.port = free_port()
        self.address = ("127.0.0.1", self.port)
        storage = MemoryStorage() if storage is None else storage
        self.server = StorageServer(storage, port=self.port, **kwargs)
        self.thread = threading.Thread(target=self.server.serve_until_quit, daemon=True)
        self.thread.start()
        wait_for_server(port=self.port, maxtries=250, sleeptime=0.02)

    def connect_raw(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=WAIT_S)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()

    def __enter__(self) -> ThreadedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LogCapture(logging.Handler):
    """Messages of the ``durus`` logger (all levels) while in a ``with`` block."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._lock_messages = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_messages:
            self.messages.append(record.getMessage())

    def text(self) -> str:
        with self._lock_messages:
            return "\n".join(self.messages)

    def __enter__(self) -> LogCapture:
        durus_logger = logging.getLogger("durus")
        self._previous_level = durus_logger.level
        durus_logger.addHandler(self)
        durus_logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc_info: object) -> None:
        durus_logger = logging.getLogger("durus")
        durus_logger.removeHandler(self)
        durus_logger.setLevel(self._previous_level)


def has_openssl() -> bool:
    return shutil.which("openssl") is not None


def make_tls_files(directory: Path, name: str = "server") -> tuple[str, str]:
    """(certificate, key) PEM paths: self-signed, for 127.0.0.1 and localhost, one day."""
    cert = directory / f"{name}-cert.pem"
    key = directory / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True, timeout=WAIT_S,
    )  # fmt: skip
    return str(cert), str(key)


def write_secret(path: Path, secret: bytes = b"0123456789abcdef0123456789abcdef") -> str:
    """A secret file readable by its owner only."""
    path.write_bytes(secret + b"\n")
    path.chmod(0o600)
    return str(path)
