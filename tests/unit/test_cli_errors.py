"""The ``durus`` command in-process: option errors, storage errors, serve/stop, console, pack.

Each mistake an operator can make ends in one ``durus: error:`` line and a
non-zero status (or optparse's usage error), with the storage closed and
nothing stored changed. Servers run in a thread of the test process (or,
for the signal test, in the main thread with a helper thread stopping
them); every wait is bounded.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import runpy
import signal
import socket
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durus import cli
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.storage import MemoryStorage
from durus.storage_server import wait_for_server
from durus.utils import ROOT_OID
from tests.support.records import commit, record
from tests.support.server_fixtures import (
    WAIT_S,
    ThreadedServer,
    free_port,
    has_openssl,
    make_tls_files,
    wait_until,
    write_secret,
)

MAIN_PATH = Path(cli.__file__).with_name("__main__.py")


@pytest.fixture(autouse=True)
def _restore_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The command changes the durus logger, sys.path and sys.modules['__console__']."""
    durus_logger = logging.getLogger("durus")
    handlers, propagate, level = (
        list(durus_logger.handlers),
        durus_logger.propagate,
        durus_logger.level,
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("DURUSSTARTUP", raising=False)
    monkeypatch.setattr(cli, "STOP_POLL_INTERVAL_S", 0.02)
    yield
    for handler in list(durus_logger.handlers):
        durus_logger.removeHandler(handler)
    for handler in handlers:
        durus_logger.addHandler(handler)
    durus_logger.propagate, durus_logger.level = propagate, level
    sys.modules.pop("__console__", None)


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The ``durus: error:`` line on stderr, asserted to be its only error line and its last."""
    lines = error_lines(capsys)
    errors = [line for line in lines if line.startswith("durus: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in lines, lines
    return errors[0].removeprefix("durus: error: ")


def committed_file(path: Path, **items: Any) -> None:
    storage = FileStorage(str(path))
    connection = Connection(storage)
    connection.get_root().update(items)
    connection.commit()
    storage.close()


def plain(value: Any) -> Any:
    """``value`` with persistent dicts made plain dicts (loaded while the storage is open)."""
    if isinstance(value, PersistentDict):
        return {key: plain(item) for key, item in value.items()}
    return value


def root_items(path: Path) -> dict[str, Any]:
    storage = FileStorage(str(path), readonly=True)
    try:
        items: dict[str, Any] = plain(Connection(storage).get_root())
        return items
    finally:
        storage.close()


# ---------------------------------------------------------------- option parsing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-s", "--gcbytes=lots"], "option --gcbytes: invalid number: 'lots'"),
        (["-s", "extra"], "unexpected argument 'extra'"),
        (["-c", "--port=0"], "--port must be between 1 and 65535, not 0"),
        (["-p", "--port=65536"], "--port must be between 1 and 65535, not 65536"),
    ],
)
def test_option_errors_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Usage: durus ") and err.rstrip().endswith(message)


def test_integer_forms_and_bad_integers() -> None:
    assert [cli.parse_integer(t) for t in ("010", "-0x10", "+0b11", " 7 ", "0")] == [
        8,
        -16,
        3,
        7,
        0,
    ]
    for text in ("", "0x", "1.5", "-"):
        with pytest.raises(ValueError, match="invalid integer"):
            cli.parse_integer(text)


def test_server_option_values_reach_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: dict[str, Any] = {}

    def fake_start(logfile: Any, level: Any, address: Any, storage: Any, **settings: Any) -> None:
        captured.update(settings, address=address, storage=storage)

    monkeypatch.setattr(cli, "start_durus", fake_start)
    path = tmp_path / "u.sock"
    args = [f"--address={path}", "--umask=0o77", "--owner=0", "--gcbytes=010"]
    assert cli.main(["-s", *args, f"--file={tmp_path / 'a.durus'}"]) == 0
    assert captured["gcbytes"] == 8  # a leading 0 is octal, as optparse reads ints
    address = captured["address"]
    assert (address.filename, address.umask, address.owner) == (str(path), 0o77, "0")
    captured["storage"].close()


def test_abstract_socket_names_take_no_file_options(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict[str, Any] = {}
    monkeypatch.setattr(cli, "start_durus", lambda *a, **k: captured.update(address=a[2]))
    monkeypatch.setattr(cli, "open_storage_for_user", lambda *a, **k: MemoryStorage())
    assert cli.main(["-s", "--address=@durus-test-name"]) == 0
    assert str(captured["address"]) == "@durus-test-name"


# ---------------------------------------------------------------- opening the storage


class RefusingStorage(MemoryStorage):
    """A storage class (for --storage-class) whose constructor fails as its file name says."""

    def __init__(self, file: str | None = None, **options: Any) -> None:
        name = os.path.basename(str(file))
        if name == "denied":
            raise PermissionError(errno.EACCES, "Permission denied", file)
        if name == "unsupported":
            raise NotImplementedError("repair is not offered")
        super().__init__()


STORAGE_CLASS = f"--storage-class={__name__}.RefusingStorage"


def test_each_storage_open_failure_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "damaged.durus"
    damaged.write_bytes(b"SHELF-1\n" + b"\0garbage" * 10)
    unknown = tmp_path / "unknown.durus"
    unknown.write_bytes(b"NOT A STORAGE FILE")
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock_path))
        cases = [
            ([f"--file={tmp_path}"], f"{tmp_path} is a directory, not a storage file"),
            ([f"--file={sock_path}"], f"{sock_path}: cannot read: No such device or address"),
            ([f"--file={unknown}"], f"{unknown}: unknown storage type for file"),
            (["--storage-class=durus.storage.Nope"], "--storage-class: durus.storage has no class"),
            (["--storage-class=durus.no_such_module.X"], "cannot import the storage class: No mod"),
            ([STORAGE_CLASS, "--file=denied"], "denied: permission denied"),
            ([STORAGE_CLASS, "--file=unsupported"], "RefusingStorage cannot open unsupported this"),
            ([f"--file={damaged}"], f"cannot open {damaged} with FileStorage: NotAShelfError"),
        ]
        for args, start in cases:
            assert cli.main(["-s", *args]) == 1
            assert one_error(capsys).startswith(start), (args, start)
    assert damaged.read_bytes().startswith(b"SHELF-1\n\0garbage")  # never repaired unasked


def test_a_locked_file_names_the_likely_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.durus"
    committed_file(path, answer=42)
    holder = FileStorage(str(path))
    try:
        assert cli.main(["-p", f"--file={path}"]) == 1
        assert (
            one_error(capsys)
            == f"{path} is locked: another process (a server?) has it open for writing"
        )
    finally:
        holder.close()
    assert root_items(path) == {"answer": 42}


def test_get_storage_accepts_a_class(tmp_path: Path) -> None:
    storage = cli.get_storage(str(tmp_path / "a.durus"), FileStorage)
    try:
        assert isinstance(storage, FileStorage)
    finally:
        storage.close()


def test_dsn_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-s", "--dsn=dbname=x", f"--file={tmp_path / 'a.durus'}"]) == 1
    assert one_error(capsys) == "give --dsn or --file, not both"
    assert cli.main(["-p", "--dsn=   "]) == 1
    assert one_error(capsys).startswith("--dsn needs a PostgreSQL connection string")
    assert not (tmp_path / "a.durus").exists()


def test_dsn_modes_use_the_storage_it_opens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import durus.postgres_storage

    opened: list[MemoryStorage] = []

    def fake_storage_from_dsn(dsn: str) -> MemoryStorage:
        assert dsn == "dbname=durus"
        opened.append(MemoryStorage())
        return opened[-1]

    monkeypatch.setattr(durus.postgres_storage, "storage_from_dsn", fake_storage_from_dsn)
    monkeypatch.setattr(sys, "stdin", io.StringIO("root['n'] = 7\nconnection.commit()\n"))
    assert cli.main(["-c", "--dsn=dbname=durus"]) == 0
    assert Connection(opened[-1]).get_root()["n"] == 7
    capsys.readouterr()
    assert cli.main(["-p", "--dsn=dbname=durus"]) == 0
    assert capsys.readouterr().out == "packed MemoryStorage()\n"
    served: list[Any] = []
    monkeypatch.setattr(cli, "start_durus", lambda *a, **k: served.append(a[3]))
    assert cli.main(["-s", "--dsn=dbname=durus"]) == 0
    assert served == [opened[-1]]


# ---------------------------------------------------------------- serving and stopping


def serve_in_thread(args: list[str]) -> tuple[threading.Thread, dict[str, BaseException]]:
    """``durus -s ARGS`` in a thread; its ending exception lands in the returned dict."""
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            cli.main(["-s", *args])
        except BaseException as error:  # SystemExit after a stop request
            outcome["exit"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_serve_commit_and_stop_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    path, log_path = tmp_path / "a.durus", tmp_path / "server.log"
    thread, outcome = serve_in_thread(
        [f"--port={port}", f"--file={path}", f"--logfile={log_path}", "--logginglevel=10"]
    )
    wait_for_server(port=port, maxtries=250, sleeptime=0.02)
    storage = ClientStorage(port=port, timeout_s=WAIT_S)
    connection = Connection(storage)
    connection.get_root()["answer"] = PersistentDict(value=42)
    connection.commit()
    storage.close()
    assert cli.main(["-s", "--stop", f"--port={port}"]) == 0
    thread.join(WAIT_S)
    assert not thread.is_alive() and isinstance(outcome["exit"], SystemExit)
    assert f"Durus server 127.0.0.1:{port} stopped." in capsys.readouterr().err
    log_text = log_path.read_text()
    assert f"Storage file={path} address=127.0.0.1:{port}" in log_text
    assert root_items(path)["answer"]["value"] == 42
    assert cli.main(["-s", "--stop", f"--port={port}"]) == 0  # nothing there: said, not raised
    assert "doesn't seem to be running" in capsys.readouterr().err


def test_sigterm_stops_a_server_in_the_main_thread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    path = tmp_path / "a.durus"
    previous = signal.getsignal(signal.SIGTERM)

    def terminate_when_ready() -> None:
        wait_for_server(port=port, maxtries=250, sleeptime=0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=terminate_when_ready, daemon=True)
    helper.start()
    assert cli.main(["-s", f"--port={port}", f"--file={path}"]) == 0
    helper.join(WAIT_S)
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is put back
    assert "Terminated: the server stops." in capsys.readouterr().err
    FileStorage(str(path)).close()  # closed by the command: no lock is left behind


def test_serving_from_another_thread_leaves_signal_handling_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: list[str] = []
    monkeypatch.setattr(cli, "open_storage_for_user", lambda *a, **k: MemoryStorage())
    monkeypatch.setattr(
        cli, "start_durus", lambda *a, **k: served.append(threading.current_thread().name)
    )
    previous = signal.getsignal(signal.SIGTERM)
    statuses: list[int] = []
    thread = threading.Thread(target=lambda: statuses.append(cli.main(["-s"])), name="embedder")
    thread.start()
    thread.join(WAIT_S)
    assert statuses == [0] and served == ["embedder"]  # no "signal only works in main thread"
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_port_in_use_is_one_line_and_closes_the_storage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.durus"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert cli.main(["-s", f"--port={port}", f"--file={path}"]) == 1
    assert one_error(capsys).endswith(
        f"cannot listen on 127.0.0.1:{port}: address already in use (is a server running there?)"
    )
    FileStorage(str(path)).close()  # not left locked


class ClosingStorage(MemoryStorage):
    closed = False

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("raised", "status", "said"),
    [
        (OSError(errno.EACCES, "Permission denied"), 1, "cannot listen on /s: permission denied"),
        (OSError(errno.EADDRNOTAVAIL, "x"), 1, "cannot listen on /s: no such local address"),
        (OSError(errno.ENOSPC, "No space left"), 1, "cannot serve on /s: No space left"),
        (KeyboardInterrupt(), 130, "Interrupted: the server stops."),
    ],
)
def test_server_failures_close_the_storage(
    raised: BaseException, status: int, said: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    storage = ClosingStorage()
    monkeypatch.setattr(cli, "open_storage_for_user", lambda *a, **k: storage)

    def failing_start(*args: Any, **kwargs: Any) -> None:
        cli.direct_output(sys.stderr)
        raise raised

    monkeypatch.setattr(cli, "start_durus", failing_start)
    assert cli.main(["-s", "--address=/s"]) == status
    assert said in capsys.readouterr().err and storage.closed


def test_an_unopenable_log_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_path = tmp_path / "missing-dir" / "server.log"
    assert cli.main(["-s", f"--port={free_port()}", f"--logfile={log_path}"]) == 1
    assert one_error(capsys).startswith(f"cannot open the log file {log_path}: No such file")


def test_start_durus_logs_to_a_given_stream(tmp_path: Path) -> None:
    stream = io.StringIO()
    storage = MemoryStorage()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(OSError):
            cli.start_durus(stream, None, busy.getsockname(), storage)
    assert "Storage file=MemoryStorage() address=127.0.0.1:" in stream.getvalue()


def test_main_reports_an_interrupt_as_status_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: list[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.MODES, "-k", interrupted)
    assert cli.main(["-k", "x"]) == 130
    assert error_lines(capsys) == ["durus: interrupted"]


# ---------------------------------------------------------------- stopping protected or odd servers


class _FlakySocket:
    def sendall(self, data: bytes) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def close(self) -> None:
        pass


class _GoingAwayAddress:
    """A server that hangs up as the stop request is sent, then is gone."""

    def __init__(self) -> None:
        self.connects = 0

    def get_connected_socket(self, timeout_s: float | None = None) -> Any:
        self.connects += 1
        return _FlakySocket() if self.connects == 1 else None


def test_stop_tolerates_a_server_already_going_away(monkeypatch: pytest.MonkeyPatch) -> None:
    address = _GoingAwayAddress()
    monkeypatch.setattr(cli, "_socket_address", lambda a, **k: a)
    assert cli.stop_durus(address) is True
    assert address.connects == 2


def test_stop_gives_up_on_a_server_that_keeps_answering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "STOP_POLL_COUNT", 3)
    with socket.socket() as deaf:  # listens but never reads the stop request
        deaf.bind(("127.0.0.1", 0))
        deaf.listen(8)
        assert cli.stop_durus(deaf.getsockname()) is False


def test_stop_with_access_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = write_secret(tmp_path / "secret")
    with ThreadedServer() as server:  # no authentication: the secret handshake is refused
        args = ["-s", "--stop", f"--port={server.port}"]
        assert cli.main([*args, f"--stop-tls-ca={tmp_path / 'no-ca.pem'}"]) == 1
        assert one_error(capsys) == f"--tls-ca {tmp_path / 'no-ca.pem'}: no such file"
        assert cli.main([*args, f"--auth-file={secret}"]) == 1
        assert one_error(capsys).startswith(f"cannot talk to the server at 127.0.0.1:{server.port}")
        storage = ClientStorage(port=server.port, timeout_s=WAIT_S)  # still serving
        assert storage.sync() == []
        storage.close()


def test_stop_a_protected_server(tmp_path: Path) -> None:
    secret_path = write_secret(tmp_path / "secret")
    secret = Path(secret_path).read_bytes().strip()
    with ThreadedServer(auth_secret=secret) as server:
        assert (
            cli.main(["-s", "--stop", f"--port={server.port}", f"--auth-file={secret_path}"]) == 0
        )
        server.thread.join(WAIT_S)
        assert not server.thread.is_alive() and server.server.core.quit_requested


@pytest.mark.skipif(not has_openssl(), reason="the openssl command is missing")
def test_tls_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ssl

    cert, key = make_tls_files(tmp_path)
    captured: dict[str, Any] = {}
    monkeypatch.setattr(cli, "start_durus", lambda *a, **k: captured.update(k))
    monkeypatch.setattr(cli, "open_storage_for_user", lambda *a, **k: MemoryStorage())
    assert cli.main(["-s", f"--tls-cert={cert}", f"--tls-key={key}"]) == 0
    assert isinstance(captured["tls"], ssl.SSLContext)
    assert cli.main(["-s", f"--tls-cert={key}", f"--tls-key={cert}"]) == 1
    assert one_error(capsys).startswith("cannot load --tls-cert/--tls-key: ")


# ---------------------------------------------------------------- the console


def console(monkeypatch: pytest.MonkeyPatch, commands: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(commands))


def test_console_on_a_file_with_a_startup_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.durus"
    startup = tmp_path / "startup.py"
    startup.write_text("greeting = 'hello from startup'\n")
    console(monkeypatch, "print(greeting)\nroot['n'] = 1\nconnection.commit()\n")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    assert cli.main(["-c", f"--file={path}", f"--startup={startup}"]) == 0
    out = capsys.readouterr()
    assert "hello from startup" in out.out and f"Durus {path}" in out.err
    assert root_items(path) == {"n": 1}
    assert sys.path[0] == ""  # like python: classes in the current directory are found


class TerminalInput(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_on_a_terminal_sets_up_readline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured: list[tuple[Any, str]] = []
    monkeypatch.setattr(cli, "configure_readline", lambda ns, path: configured.append((ns, path)))
    monkeypatch.setattr(sys, "stdin", TerminalInput("print(root)\n"))
    assert cli.main(["-c", f"--file={tmp_path / 'a.durus'}"]) == 0
    [(namespace, history)] = configured
    assert history == cli.HISTORY_FILE and {"connection", "root", "pp"} <= set(namespace)


def test_console_survives_a_missing_or_failing_startup_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.durus"
    failing = tmp_path / "failing.py"
    failing.write_text("raise RuntimeError('startup went wrong')\n")
    console(monkeypatch, "print('still here', len(root))\n")
    assert cli.main(["-c", f"--file={path}", f"--startup={tmp_path / 'missing.py'}"]) == 0
    out = capsys.readouterr()
    assert f"durus: startup file {tmp_path / 'missing.py'}: No such file" in out.err
    assert "still here 0" in out.out
    monkeypatch.setenv("DURUSSTARTUP", str(failing))
    console(monkeypatch, "print('still here', len(root))\n")
    assert cli.main(["-c", f"--file={path}"]) == 0
    out = capsys.readouterr()
    assert "RuntimeError: startup went wrong" in out.err and "still here 0" in out.out


def test_console_option_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-c", "--wait=-1"]) == 1
    assert one_error(capsys) == "--wait must be >= 0, not -1"


def test_console_on_a_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = MemoryStorage()
    with ThreadedServer(storage) as server:
        console(monkeypatch, "root['n'] = 5\nconnection.commit()\n")
        assert cli.main(["-c", f"--port={server.port}"]) == 0
        assert f"Durus 127.0.0.1:{server.port}" in capsys.readouterr().err
    assert Connection(storage).get_root()["n"] == 5


def test_console_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert cli.main(["-c", f"--port={port}", "--wait=0"]) == 1
    assert one_error(capsys) == f"no Durus server is listening at 127.0.0.1:{port}"
    assert cli.main(["-c", f"--port={port}", "--wait=0.1"]) == 1
    lines = error_lines(capsys)
    assert lines == [
        f"durus: waiting up to 0.1 s for a server at 127.0.0.1:{port} ...",
        f"durus: error: no Durus server answered at 127.0.0.1:{port} within 0.1 s",
    ]


def test_console_waits_for_a_server_then_reports_it_if_it_is_gone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    waits: list[float] = []

    def server_answered_then_went_away(**kwargs: Any) -> None:
        waits.append(kwargs["sleeptime"])  # as if something answered the probe, then stopped

    monkeypatch.setattr("durus.storage_server.wait_for_server", server_answered_then_went_away)
    assert cli.main(["-c", f"--port={port}", "--wait=5"]) == 1
    assert waits == [cli.CLIENT_WAIT_POLL_S]
    lines = error_lines(capsys)
    assert lines[0] == f"durus: waiting up to 5 s for a server at 127.0.0.1:{port} ..."
    assert lines[1:] == [
        f"durus: error: cannot talk to the server at 127.0.0.1:{port}: "
        f"CouldNotConnectError: Could not connect to 127.0.0.1:{port}"
    ]


def test_console_needs_the_secret_of_a_protected_server(capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadedServer(auth_secret=b"0123456789abcdef0123") as server:
        assert cli.main(["-c", f"--port={server.port}"]) == 1
        message = one_error(capsys)
    assert message.startswith(f"cannot talk to the server at 127.0.0.1:{server.port}: ")
    assert "requires authentication" in message


def test_console_when_the_root_class_cannot_be_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module_dir = tmp_path / "classes"
    module_dir.mkdir()
    (module_dir / "vanishing_classes.py").write_text(
        "from durus.persistent import Persistent\n\nclass Thing(Persistent):\n    pass\n"
    )
    sys.path.insert(0, str(module_dir))
    try:
        import vanishing_classes  # type: ignore[import-not-found]

        path = tmp_path / "a.durus"
        storage = FileStorage(str(path))
        connection = Connection(storage, root_class=vanishing_classes.Thing)
        connection.commit()
        storage.close()
    finally:
        sys.path.remove(str(module_dir))
        sys.modules.pop("vanishing_classes", None)
    assert cli.main(["-c", f"--file={path}"]) == 1
    message = one_error(capsys)
    assert "No module named 'vanishing_classes'" in message and "PYTHONPATH" in message
    FileStorage(str(path)).close()  # the storage was closed


def damaged_root_storage() -> MemoryStorage:
    storage = MemoryStorage()
    commit(storage, record(0, data=b"not a pickle"))
    return storage


def test_console_on_a_damaged_root_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(pickle.UnpicklingError):
        Connection(damaged_root_storage())
    monkeypatch.setattr(cli, "ROOT_RACE_PAUSE_S", 0.0)
    storage = damaged_root_storage()
    with ThreadedServer(storage) as server:
        assert cli.main(["-c", f"--port={server.port}"]) == 1
        message = one_error(capsys)
        assert wait_until(lambda: not server.server.connections)  # each attempt's was closed
    assert message.startswith(f"cannot open a connection on ClientStorage(127.0.0.1:{server.port})")
    assert "UnpicklingError" in message
    assert storage.load(ROOT_OID) == record(0, data=b"not a pickle")


def test_configure_readline_without_readline_or_with_libedit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "readline", None)
    cli.configure_readline({}, str(tmp_path / "history"))  # no readline: nothing to do
    calls: list[tuple[str, Any]] = []
    fake = types.ModuleType("readline", "libedit-based readline")

    def recording(name: str, result: Any = None) -> Any:
        def call(*args: Any) -> Any:
            calls.append((name, args))
            if isinstance(result, BaseException):
                raise result
            return result

        return call

    fake.set_completer = recording("set_completer")  # type: ignore[attr-defined]
    fake.parse_and_bind = recording("parse_and_bind")  # type: ignore[attr-defined]
    fake.set_history_length = recording("set_history_length")  # type: ignore[attr-defined]
    fake.read_history_file = recording("read", PermissionError("unreadable"))  # type: ignore[attr-defined]
    fake.write_history_file = recording("write", PermissionError("unwritable"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "readline", fake)
    registered: list[tuple[Any, ...]] = []
    monkeypatch.setattr(cli.atexit, "register", lambda *args: registered.append(args))
    cli.configure_readline({"root": {}}, str(tmp_path / "history"))
    assert ("parse_and_bind", ("bind ^I rl_complete",)) in calls
    assert ("read", (str(tmp_path / "history"),)) in calls
    [(save, writer, path)] = [args for args in registered if args[0] is cli._save_history]
    save(writer, path)  # an unwritable history file must not spoil the exit
    assert calls[-1] == ("write", (str(tmp_path / "history"),))


# ---------------------------------------------------------------- packing


def test_pack_a_file_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.durus"
    committed_file(path, kept=PersistentDict(value=1), dropped=PersistentDict(value=2))
    storage = FileStorage(str(path))
    connection = Connection(storage)
    del connection.get_root()["dropped"]
    connection.commit()
    storage.close()
    assert cli.main(["-p", f"--file={path}"]) == 0
    line = capsys.readouterr().out.strip()
    before, after = (int(n) for n in line.removesuffix(" bytes").split(": ")[1].split(" -> "))
    assert line.startswith(f"packed {path}: ") and after < before
    assert root_items(path)["kept"]["value"] == 1


def test_pack_through_a_server_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    storage = MemoryStorage()  # empty: the pack request first creates the root
    with ThreadedServer(storage) as server:
        assert cli.main(["-p", f"--port={server.port}"]) == 0
        assert capsys.readouterr().out == f"the server at 127.0.0.1:{server.port} started a pack\n"
    assert isinstance(Connection(storage).get_root(), PersistentDict)


def test_describe_pack_step_names_each_phase() -> None:
    assert cli.describe_pack_step("started", 12, 3) == "packing: 12 live records copied"
    assert cli.describe_pack_step("base", "base done", 4) == (
        "packing: live records written; finding removed oids"
    )
    assert cli.describe_pack_step("invalidations", 2, 5) == (
        "packing: copying commits made during the pack"
    )
    assert cli.describe_pack_step("finishing", None, 6) == "packing: finishing, step 6"


# ---------------------------------------------------------------- durus/__main__.py run by path


def test_main_file_run_by_path_finds_the_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package_dir = str(MAIN_PATH.parent)
    monkeypatch.setattr(sys, "path", [package_dir, *sys.path])
    monkeypatch.setattr(sys, "argv", [str(MAIN_PATH)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(MAIN_PATH), run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == cli.USAGE
    assert package_dir not in sys.path  # its modules (e.g. logger.py) must not shadow others
    assert sys.path[0] == str(MAIN_PATH.parent.parent)
