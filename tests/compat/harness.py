"""Running the two implementations side by side: tool scripts and servers in subprocesses.

Owns the cross-process plumbing of the compatibility tests: a ``Side`` (ours
or the Durus 4.3 peer) runs ``graph_tool.py`` and small scripts under its own
interpreter with its own ``durus``; ``ServerProcess`` starts either
implementation's ``durus -s`` on a free loopback port and always kills it.

Never imports the peer's code into this process and never lets a wait go
unbounded: every subprocess has a timeout, every socket wait a deadline.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.compat import peer_venv

COMPAT_DIR = Path(__file__).resolve().parent
REPO_ROOT = peer_venv.REPO_ROOT
GRAPH_TOOL = COMPAT_DIR / "graph_tool.py"
WIRE_AGENT = COMPAT_DIR / "wire_agent.py"
AGENT_REPLY_TIMEOUT_S = 60.0
MAX_REPLY_BYTES = 64 * 1024 * 1024
TOOL_TIMEOUT_S = 120.0
SERVER_START_TIMEOUT_S = 15.0
SOCKET_TIMEOUT_S = 10.0


class SideFailed(AssertionError):
    """A subprocess of one side exited with an error (its stderr is in the message)."""


@dataclass(frozen=True)
class Side:
    """One implementation: how to start its interpreter so ``import durus`` finds it."""

    name: str
    python: tuple[str, ...]
    env: dict[str, str]

    def run_script(
        self, script: str | Path, *args: str, cwd: Path, timeout_s: float = TOOL_TIMEOUT_S
    ) -> subprocess.CompletedProcess:
        """Run a script file under this side; return the finished process (never raises)."""
        command = [*self.python, str(script), *args]
        return subprocess.run(
            command, capture_output=True, text=True, cwd=cwd, env=self.env, timeout=timeout_s
        )

    def check_script(self, script: str | Path, *args: str, cwd: Path, **kwargs: Any) -> str:
        """Run a script and return its stdout; a failure raises SideFailed with stderr."""
        result = self.run_script(script, *args, cwd=cwd, **kwargs)
        if result.returncode != 0:
            raise SideFailed(
                f"{self.name}: {Path(script).name} {' '.join(args)} exited "
                f"{result.returncode}\n--- stderr ---\n{result.stderr[-6000:]}"
            )
        return result.stdout

    def tool(self, kind: str, path: Path, *commands: str, timeout_s: float = TOOL_TIMEOUT_S):
        """Run graph_tool commands on one database; return their results in order."""
        stdout = self.check_script(
            GRAPH_TOOL, kind, str(path), *commands, cwd=path.parent, timeout_s=timeout_s
        )
        lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        assert [line["command"] for line in lines] == list(commands), stdout[-2000:]
        return [line["result"] for line in lines]

    def durus_command(self, *args: str) -> list[str]:
        """``python -m durus ARGS`` under this side."""
        return [*self.python, "-m", "durus", *args]


def ours_side() -> Side:
    """Our implementation: this interpreter, the checkout and tests/compat on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(COMPAT_DIR), str(REPO_ROOT)])
    env["PYTHONHASHSEED"] = "0"
    env["COMPAT_SIDE"] = "ours"
    return Side("ours", (sys.executable, "-P"), env)


def peer_side(python: Path) -> Side:
    """Durus 4.3: the venv's interpreter, with only tests/compat on the path."""
    env = peer_venv.peer_env(COMPAT_DIR)
    env["COMPAT_SIDE"] = "peer"
    return Side("durus43", (str(python), "-P"), env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m durus -s`` of one side on a free loopback port (or a Unix socket).

    ``stop()`` always kills it.
    """

    def __init__(
        self, side: Side, file_path: Path, *extra: str, cwd: Path, socket_path: Path | None = None
    ) -> None:
        self.side = side
        self.socket_path = socket_path
        self.port = free_port() if socket_path is None else None
        where = (
            ["--port", str(self.port)] if socket_path is None else ["--address", str(socket_path)]
        )
        self.log_path = cwd / f"server-{side.name}-{self.port or 'unix'}.log"
        args = ["-s", "--file", str(file_path), *where, *extra]
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            side.durus_command(*args),
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=side.env,
        )
        try:
            self._wait_until_accepting()
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> tuple[str, int]:
        assert self.port is not None, "a Unix-socket server has no TCP address"
        return ("127.0.0.1", self.port)

    @property
    def client_address(self) -> str:
        """What a wire agent is given: the port number, or the socket path."""
        return str(self.port) if self.socket_path is None else str(self.socket_path)

    def _connect(self, timeout_s: float) -> socket.socket:
        if self.socket_path is None:
            return socket.create_connection(self.address, timeout=timeout_s)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        return sock

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SideFailed(f"{self.side.name} server exited early:\n{self.log()}")
            try:
                with self._connect(timeout_s=1.0) as sock:
                    sock.sendall(b".")  # the normal goodbye: the server drops us
                return
            except OSError:
                time.sleep(0.05)
        raise SideFailed(f"{self.side.name} server did not accept in time:\n{self.log()}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def quit(self) -> int:
        """Send the quit request and wait (bounded) for the process to exit."""
        with self._connect(timeout_s=SOCKET_TIMEOUT_S) as sock:
            sock.sendall(b"Q")
        return self.process.wait(timeout=SOCKET_TIMEOUT_S)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=SOCKET_TIMEOUT_S)
        if not self.log_file.closed:
            self.log_file.close()

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class AgentError(AssertionError):
    """An agent did not answer in time, died, or answered with an unexpected error."""


class AgentProcess:
    """A ``wire_agent.py`` client of one side, driven one JSON line at a time."""

    def __init__(self, side: Side, where: int | str, cwd: Path, label: str) -> None:
        self.side = side
        self.label = f"{label}({side.name})"
        self.stderr_path = cwd / f"agent-{label}-{side.name}.err"
        self.stderr_file = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*side.python, str(WIRE_AGENT), str(where)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            cwd=cwd,
            env=side.env,
        )
        self.buffer = b""
        try:
            self.expect_ok(self._read_reply(AGENT_REPLY_TIMEOUT_S))
        except BaseException:
            self.stop()
            raise

    def request(self, op: str, timeout_s: float = AGENT_REPLY_TIMEOUT_S, **fields: Any) -> dict:
        """Send one request; return the raw reply ({"result": ...} or {"error": ...})."""
        assert self.process.stdin is not None
        line = json.dumps({"op": op, **fields}) + "\n"
        try:
            self.process.stdin.write(line.encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            raise AgentError(f"{self.label} is gone: {self.stderr()}") from None
        return self._read_reply(timeout_s)

    def call(self, op: str, timeout_s: float = AGENT_REPLY_TIMEOUT_S, **fields: Any) -> Any:
        """Send one request that must succeed; return its result."""
        return self.expect_ok(self.request(op, timeout_s, **fields), op)

    def expect_ok(self, reply: dict, op: str = "start") -> Any:
        if "error" in reply:
            raise AgentError(f"{self.label} {op}: {reply['error']}: {reply['message']}")
        return reply["result"]

    def _read_reply(self, timeout_s: float) -> dict:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentError(f"{self.label} did not answer in {timeout_s}s: {self.stderr()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise AgentError(f"{self.label} exited: {self.stderr()}")
            self.buffer += chunk
            if len(self.buffer) > MAX_REPLY_BYTES:
                raise AgentError(f"{self.label} reply exceeds {MAX_REPLY_BYTES} bytes")
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def stderr(self) -> str:
        self.stderr_file.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Close stdin (the agent exits) and make sure the process is gone."""
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=SOCKET_TIMEOUT_S)
        if self.process.stdout is not None and not self.process.stdout.closed:
            self.process.stdout.close()
        if not self.stderr_file.closed:
            self.stderr_file.close()
