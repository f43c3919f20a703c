"""Tests of the ``durus`` command (durus.cli, durus.__main__), mostly through subprocesses.

Every subprocess has a timeout and is killed in a ``finally``; servers listen
on free ports (found by binding port 0) and use files in temporary
directories.
"""

from __future__ import annotations

import importlib
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from durus import cli

DATA_DIR = Path(__file__).parent.parent / "data"
MAIN_PATH = Path(cli.__file__).with_name("__main__.py")
TIMEOUT_S = 30
SERVER_START_TIMEOUT_S = 15


def _importable(*names: str) -> bool:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            return False
    return True


needs_server = pytest.mark.skipif(
    not _importable(
        "durus.storage_server", "durus.client_storage", "durus.connection", "durus.file_storage"
    ),
    reason="the server, client, connection or file storage module is not importable yet",
)
needs_file_storage = pytest.mark.skipif(
    not _importable("durus.connection", "durus.file_storage"),
    reason="durus.connection or durus.file_storage is not importable yet",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("DURUSSTARTUP", None)
    return env


def durus(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m durus ARGS`` to completion (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "durus", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=_env(),
        cwd=cwd,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("durus: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr
    for word in words:
        assert word in errors[0]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def running_server(path: Path, *extra: str, port: int | None = None) -> Iterator[int]:
    """A ``durus -s`` subprocess on ``path``; yields its port and stops it afterwards."""
    port = free_port() if port is None else port
    log_path = path.with_name(path.name + ".log")
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "durus", "-s", f"--file={path}", f"--port={port}", *extra],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start: {log_path.read_text()}")
            time.sleep(0.05)
        yield port
        stop = durus("-s", "--stop", f"--port={port}")
        assert stop.returncode == 0, stop.stderr
        process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT_S)


class Console:
    """A ``durus -c`` subprocess driven line by line through its stdin."""

    def __init__(self, *args: str) -> None:
        self.errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durus", "-c", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            env=_env(),
        )
        self.output = b""

    def send(self, line: str, expect: str) -> str:
        """Send one line; wait until ``expect`` shows up in the output; return the output."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()
        return self.read_until(expect)

    def read_until(self, expect: str) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + TIMEOUT_S
        while expect.encode() not in self.output:
            remaining_s = deadline - time.monotonic()
            assert remaining_s > 0, f"no {expect!r} in {self.output!r}"
            if select.select([fd], [], [], remaining_s)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"console exited: {self.output!r} {self.error_text()!r}"
                self.output += chunk
        return self.output.decode()

    def error_text(self) -> str:
        self.errors.seek(0)
        return self.errors.read().decode(errors="replace")

    def close(self) -> int:
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
            return self.process.wait(timeout=TIMEOUT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=TIMEOUT_S)
            self.errors.close()


# ---------------------------------------------------------------- usage and options


def test_usage_without_arguments_or_with_an_unknown_mode() -> None:
    for args in ((), ("-x",), ("--help",), ("-h",)):
        result = durus(*args)
        assert result.returncode == 0
        assert result.stdout == cli.USAGE
    assert cli.USAGE.startswith("durus [ -c | -s | -p | -k ] [ -h ] [<specific options>]\n")


def test_main_file_runs_by_path(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(MAIN_PATH), "-k", str(DATA_DIR / "shelf_root_only.durus")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=tmp_path,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "1  durus.persistent_dict.PersistentDict" in result.stdout


SERVER_FLAGS = (
    "--port", "--host", "--address", "--owner", "--group", "--umask", "--file",
    "--storage-class", "--gcbytes", "--logginglevel", "--logfile", "--repair",
    "--readonly", "--stop",
)  # fmt: skip
CLIENT_FLAGS = (
    "--file", "--port", "--host", "--address", "--storage-class", "--cache_size",
    "--repair", "--readonly", "--startup",
)  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "flags"),
    [
        ("-s", SERVER_FLAGS),
        ("-c", CLIENT_FLAGS),
        ("-p", ("--file", "--port", "--host")),
        ("-k", ()),
    ],
)
def test_mode_help(mode: str, flags: tuple[str, ...]) -> None:
    result = durus(mode, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: durus {mode} ")
    for flag in (*flags, "--help"):
        assert flag in result.stdout


def test_option_values_accept_every_integer_form() -> None:
    parser = cli._server_parser()
    options, _ = parser.parse_args(
        ["--port=0x10", "--umask", "022", "--gcbytes", "0b101", "--logginglevel=010"]
    )
    assert (options.port, options.umask, options.gcbytes, options.logginglevel) == (16, 18, 5, 8)
    options, _ = parser.parse_args(["--gcbytes=1e6", "--address", "@name", "--stop"])
    assert (options.gcbytes, options.address, options.stop) == (1e6, "@name", True)
    client, _ = cli._client_parser().parse_args(["--cache_size", "0x100", "--file=x"])
    assert (client.cache_size, client.file) == (256, "x")


def test_bad_option_value_is_a_usage_error() -> None:
    result = durus("-s", "--port=eighty")
    assert result.returncode == 2
    assert "invalid integer value" in result.stderr and "Traceback" not in result.stderr
    result = durus("-s", "--port=70000")
    assert result.returncode == 2 and "between 1 and 65535" in result.stderr


def test_main_module_exports_the_durus_functions() -> None:
    module = importlib.import_module("durus.__main__")
    for name in (
        "main", "usage", "client_main", "run_durus_main", "pack_storage_main",
        "interactive_client", "configure_readline", "get_storage_class", "import_class",
        "get_storage", "start_durus", "stop_durus",
    ):  # fmt: skip
        assert callable(getattr(module, name)), name


@needs_server
def test_defaults_match_the_server_module() -> None:
    storage_server = importlib.import_module("durus.storage_server")
    assert cli.DEFAULT_HOST == storage_server.DEFAULT_HOST
    assert cli.DEFAULT_PORT == storage_server.DEFAULT_PORT
    assert cli.DEFAULT_GCBYTES == storage_server.DEFAULT_GCBYTES


# ---------------------------------------------------------------- storage selection


def test_storage_class_name_for_prefix() -> None:
    name_for = cli.storage_class_name_for_prefix
    assert name_for(None) == name_for(b"") == "durus.file_storage.FileStorage"
    assert name_for(b"SHELF-1\n\x00") == "durus.file_storage.FileStorage"
    assert name_for(b"DFS20\x00\x00") == "durus.file_storage2.FileStorage2"
    assert name_for(b"SQLite format 3\x00") == "durus.sqlite_storage.SqliteStorage"
    with pytest.raises(ValueError, match="unknown storage type for file"):
        name_for(b"PK\x03\x04")


def test_import_class() -> None:
    from durus.storage import MemoryStorage

    assert cli.import_class("durus.storage.MemoryStorage") is MemoryStorage
    for bad in ("MemoryStorage", "durus.storage.nothing", "durus.storage.log"):
        with pytest.raises((ValueError, ImportError)):
            cli.import_class(bad)


@needs_file_storage
def test_get_storage_class_sniffs_files(tmp_path: Path) -> None:
    from durus.file_storage import FileStorage

    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "junk").write_bytes(b"junk junk junk")
    assert cli.get_storage_class(str(tmp_path / "missing")) is FileStorage
    assert cli.get_storage_class(str(tmp_path / "empty")) is FileStorage  # wart 36 fixed
    assert cli.get_storage_class(str(DATA_DIR / "shelf_a.durus")) is FileStorage
    with pytest.raises(ValueError, match="unknown storage type"):
        cli.get_storage_class(str(tmp_path / "junk"))
    storage = cli.get_storage(str(tmp_path / "empty"))
    try:
        assert isinstance(storage, FileStorage)
    finally:
        storage.close()
    storage = cli.get_storage(
        str(DATA_DIR / "shelf_a.durus"), "durus.file_storage.FileStorage", readonly=True
    )
    storage.close()


# ---------------------------------------------------------------- errors for users


def test_readonly_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(
        durus("-s", f"--file={tmp_path / 'nope.durus'}", "--readonly"), "no such file"
    )
    assert not (tmp_path / "nope.durus").exists()


def test_unknown_storage_type(tmp_path: Path) -> None:
    junk = tmp_path / "junk.durus"
    junk.write_bytes(b"this is not a storage file")
    assert_one_line_error(durus("-c", f"--file={junk}"), "unknown storage type")
    assert_one_line_error(durus("-p", f"--file={junk}"), "unknown storage type")
    assert junk.read_bytes() == b"this is not a storage file"


@needs_file_storage
def test_locked_file(tmp_path: Path) -> None:
    from durus.file_storage import FileStorage

    path = tmp_path / "locked.durus"
    holder = FileStorage(str(path))
    try:
        assert_one_line_error(durus("-c", f"--file={path}"), "is locked")
        assert_one_line_error(durus("-p", f"--file={path}"), "is locked")
    finally:
        holder.close()


@needs_server
def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = durus("-s", f"--file={tmp_path / 'f.durus'}", f"--port={port}")
    assert_one_line_error(result, "already in use", str(port))


@needs_server
def test_nothing_listening() -> None:
    port = free_port()
    assert_one_line_error(durus("-p", f"--port={port}"), "no Durus server is listening")
    stop = durus("-s", "--stop", f"--port={port}")
    assert stop.returncode == 0
    assert f"Durus server 127.0.0.1:{port} doesn't seem to be running." in stop.stderr
    assert cli.stop_durus(("127.0.0.1", port)) is False


# ---------------------------------------------------------------- serving and consoles


@needs_server
def test_server_and_piped_console(tmp_path: Path) -> None:
    path = tmp_path / "served.durus"
    startup = tmp_path / "startup.py"
    startup.write_text("greeting = 'hello from startup'\n")
    with running_server(path) as port:
        session = durus(
            "-c",
            f"--port={port}",
            f"--startup={startup}",
            stdin="root['x'] = 1\nconnection.commit()\nprint('X =', root['x'])\n"
            "print(greeting, sorted(k for k in ('connection', 'get', 'pp', 'int8_to_str',"
            " 'str_to_int8', 'sys', 'os') if k in globals()))\n"
            "import __console__; print(__console__.root is root)\n",
        )
        assert session.returncode == 0, session.stderr
        assert "X = 1" in session.stdout
        assert (
            "hello from startup ['connection', 'get', 'int8_to_str', 'os', 'pp'," in session.stdout
        )
        assert "True" in session.stdout
        assert session.stderr.startswith(f"Durus 127.0.0.1:{port}\n")
        again = durus("-c", f"--port={port}", stdin="print('again', root['x'])\n")
        assert "again 1" in again.stdout
    log = path.with_name(path.name + ".log").read_text()
    assert f"Storage file={path} address=127.0.0.1:{port}" in log
    offline = durus("-c", f"--file={path}", "--readonly", stdin="print('x is', root['x'])\n")
    assert "x is 1" in offline.stdout, offline.stderr


@needs_server
def test_readme_quick_demo(tmp_path: Path) -> None:
    """Two consoles on one server: a commit in one is seen by the other after abort()."""
    with running_server(tmp_path / "demo.durus") as port:
        first = Console(f"--port={port}")
        second = Console(f"--port={port}")  # started at once: the root-creation race is handled
        try:
            second.send("print('before:', sorted(root.keys()))", "before: []")
            first.send("root['answer'] = 42", ">>> ")
            first.send("connection.commit(); print('committed')", "committed")
            output = second.send(
                "connection.abort(); print('after:', root.get('answer'))", "after: 42"
            )
            assert "after: 42" in output
        finally:
            assert first.close() == 0
            assert second.close() == 0


@needs_server
def test_pack_through_a_server(tmp_path: Path) -> None:
    with running_server(tmp_path / "p.durus") as port:
        result = durus("-p", f"--port={port}")
        assert result.returncode == 0, result.stderr
        assert "started a pack" in result.stdout


@needs_server
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_abstract_and_path_addresses(tmp_path: Path) -> None:
    name = f"@durus-test-{os.getpid()}"
    socket_path = tmp_path / "test.durus_server"
    for address in (name, str(socket_path)):
        process = subprocess.Popen(
            [sys.executable, "-m", "durus", "-s", f"--file={tmp_path / 'a.durus'}",
             f"--address={address}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=_env(),
        )  # fmt: skip
        try:
            session = durus("-c", f"--address={address}", stdin="print('on', 40 + 2)\n")
            assert "on 42" in session.stdout, session.stderr
            assert durus("-s", "--stop", f"--address={address}").returncode == 0
            assert process.wait(timeout=TIMEOUT_S) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=TIMEOUT_S)
    assert not socket_path.exists()


@needs_server
def test_logfile_level_and_gcbytes(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    extra = (f"--logfile={log_path}", "--logginglevel=0x0a", "--gcbytes=0x400")
    with running_server(tmp_path / "l.durus", *extra) as port:
        session = durus("-c", f"--port={port}", stdin="root['n'] = 1\nconnection.commit()\n")
        assert session.returncode == 0, session.stderr
    log = log_path.read_text()
    assert f"Ready on 127.0.0.1:{port}" in log
    assert "Transaction at" in log


@needs_server
def test_server_on_a_temporary_file() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "durus", "-s", f"--port={port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        line = "print('temp', type(root).__name__, len(root))\n"
        session = durus("-c", f"--port={port}", stdin=line)
        assert "temp PersistentDict 0" in session.stdout, session.stderr
        assert durus("-s", "--stop", f"--port={port}").returncode == 0
        _, errors = process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT_S)
    temp_name = errors.split("Storage file=", 1)[1].split(" address=")[0]
    assert not os.path.exists(temp_name)  # the temporary file is deleted at exit


# ---------------------------------------------------------------- packing and checking files


@needs_file_storage
def test_pack_a_file_then_check_it(tmp_path: Path) -> None:
    path = tmp_path / "multi.durus"
    shutil.copyfile(DATA_DIR / "shelf_c_multi.durus", path)
    before = durus("-k", str(path))
    assert before.returncode == 0 and "unreachable: 1" in before.stdout
    result = durus("-p", f"--file={path}")
    assert result.returncode == 0, result.stderr
    assert f"packed {path}: 1308 -> " in result.stdout
    assert result.stderr == ""  # no progress drawn when stderr is not a terminal
    after = durus("-k", str(path))
    assert after.returncode == 0, after.stdout
    assert "unreachable: 0" in after.stdout and "2 live objects" in after.stdout


@needs_file_storage
def test_pack_a_new_file_creates_a_root(tmp_path: Path) -> None:
    path = tmp_path / "new.durus"
    assert durus("-p", f"--file={path}").returncode == 0
    checked = durus("-k", str(path))
    assert "1  durus.persistent_dict.PersistentDict" in checked.stdout


@pytest.mark.parametrize(
    ("name", "census_line"),
    [
        ("shelf_a.durus", "13  durus.btree.BNode16"),
        ("dfs20_d.durus", "13  durus.btree.BNode16"),
        ("sqlite_e.durus", "1  vectorclasses.Pair"),
    ],
)
def test_check_each_format(name: str, census_line: str) -> None:
    result = durus("-k", str(DATA_DIR / name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert census_line in result.stdout and "damage: none" in result.stdout


def test_check_a_corrupted_copy(tmp_path: Path) -> None:
    copy = tmp_path / "bad.durus"
    content = bytearray((DATA_DIR / "dfs20_d.durus").read_bytes())
    content[957 + 4 + 8 + 4 + 25 + 10] ^= 0x55  # inside the Note's compressed state
    copy.write_bytes(bytes(content))
    result = durus("-k", str(copy))
    assert result.returncode == 1
    assert "offset 957, oid 4: record data does not decode" in result.stdout


# ---------------------------------------------------------------- in-process helpers


class _SteppingStorage:
    """A storage whose packer yields what FileStorage's does."""

    def get_packer(self):
        yield "started now"
        yield from range(1, 4)
        yield "base written now"
        yield 7
        yield "invalidations identified now"
        yield "finished now"


def test_run_packer_draws_progress_on_a_stream() -> None:
    import io

    stream = io.StringIO()
    cli.run_packer(_SteppingStorage(), stream)
    assert stream.getvalue().startswith("\rpacking: started, step 1\x1b[K")
    assert stream.getvalue().endswith("\r\x1b[K")
    assert cli.describe_pack_step("started", 3, 4) == "packing: 3 live records copied"
    assert "removed oids" in cli.describe_pack_step("base", 7, 6)
    cli.run_packer(_SteppingStorage(), None)  # no stream: silent


def test_run_packer_without_an_incremental_packer() -> None:
    from durus.storage import MemoryStorage

    storage = MemoryStorage()
    cli.run_packer(storage, None)  # get_packer() is None: pack() runs


def test_main_turns_user_errors_into_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.durus")
    assert cli.main(["-s", f"--file={missing}", "--readonly"]) == 1
    assert cli.main(["-c", f"--file={missing}", "--readonly", "--cache_size=0"]) == 1
    assert cli.main(["-s", "--address=@x", "--owner=root"]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        f"durus: error: {missing}: no such file (--readonly needs an existing storage)",
        "durus: error: --cache_size must be > 0, not 0",
        "durus: error: --owner, --group and --umask do not apply to an abstract socket (@name)",
    ]
    assert cli.main([]) == 0 and capsys.readouterr().out == cli.USAGE


@needs_server
def test_stop_durus_on_a_missing_unix_socket(tmp_path: Path) -> None:
    assert cli.stop_durus(str(tmp_path / "no.sock")) is False


@needs_file_storage
def test_console_on_a_file_with_classes_missing(tmp_path: Path) -> None:
    path = tmp_path / "a.durus"
    shutil.copyfile(DATA_DIR / "shelf_a.durus", path)
    result = durus("-c", f"--file={path}", cwd=tmp_path)
    assert_one_line_error(result, "No module named 'vectorclasses'", "PYTHONPATH")
    shutil.copyfile(DATA_DIR / "vectorclasses.py", tmp_path / "vectorclasses.py")
    result = durus("-c", f"--file={path}", cwd=tmp_path, stdin="print(root['note'].title)\n")
    assert "first" in result.stdout, result.stderr
    packed = durus("-p", f"--file={path}", cwd=tmp_path / "..")  # packing needs no classes
    assert packed.returncode == 0 and path.stat().st_size == 4378


@needs_server
def test_console_gives_up_when_nothing_listens() -> None:
    port = free_port()
    result = durus("-c", f"--port={port}", "--wait=0.5")
    assert_one_line_error(result, f"no Durus server answered at 127.0.0.1:{port} within 0.5 s")
    assert result.stderr.startswith("durus: waiting up to 0.5 s")
    assert_one_line_error(durus("-c", f"--port={port}", "--wait=0"), "no Durus server is listening")


@needs_server
@pytest.mark.parametrize(("signal_name", "status"), [("SIGTERM", 0), ("SIGINT", 130)])
def test_server_stops_cleanly_on_a_signal(tmp_path: Path, signal_name: str, status: int) -> None:
    import signal

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "durus", "-s", f"--file={tmp_path / 'g.durus'}", f"--port={port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _accepts(port):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(getattr(signal, signal_name))
        _, errors = process.communicate(timeout=TIMEOUT_S)
        assert process.returncode == status, errors
        assert "Traceback" not in errors and "the server stops." in errors
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT_S)
    check = durus("-k", str(tmp_path / "g.durus"))
    assert check.returncode == 0, check.stdout


def test_configure_readline_completes_the_namespace(tmp_path: Path) -> None:
    readline = pytest.importorskip("readline")
    history = tmp_path / "history"
    history.write_text("root.keys()\n")
    cli.configure_readline({"connection": object(), "root": {}}, str(history))
    completer = readline.get_completer()
    assert completer is not None and completer("conn", 0) == "connection"
    assert readline.get_history_item(readline.get_current_history_length()) == "root.keys()"


# ---------------------------------------------------------------- server limits and access control

LIMIT_FLAGS = ("--max-message-bytes", "--max-commit-records", "--max-clients", "--idle-timeout")
SERVER_ACCESS_FLAGS = ("--auth-file", "--tls-cert", "--tls-key")
CLIENT_ACCESS_FLAGS = ("--auth-file", "--tls-ca")


def test_limit_and_access_options_are_in_the_help() -> None:
    server_help = cli._server_parser().format_help()
    for flag in (*LIMIT_FLAGS, *SERVER_ACCESS_FLAGS, "--stop-tls-ca"):
        assert flag in server_help
    assert "never" in server_help  # --idle-timeout says what 0 means
    for parser in (cli._client_parser(), cli._pack_parser()):
        for flag in CLIENT_ACCESS_FLAGS:
            assert flag in parser.format_help()


@needs_server
def test_limit_defaults_match_the_server_module() -> None:
    storage_server = importlib.import_module("durus.storage_server")
    assert cli.DEFAULT_MAX_MESSAGE_BYTES == storage_server.DEFAULT_MAX_MESSAGE_BYTES
    assert cli.DEFAULT_MAX_COMMIT_RECORDS == storage_server.DEFAULT_MAX_COMMIT_RECORDS
    assert cli.DEFAULT_MAX_CLIENTS == storage_server.DEFAULT_MAX_CLIENTS
    assert cli.DEFAULT_IDLE_TIMEOUT_S == storage_server.DEFAULT_IDLE_TIMEOUT_S


def _secret_file(tmp_path: Path, mode: int = 0o600) -> str:
    path = tmp_path / "secret"
    path.write_bytes(b"an example secret of 32 bytes..!\n")
    path.chmod(mode)
    return str(path)


@needs_server
def test_server_settings_reach_the_storage_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from durus.storage import MemoryStorage

    captured: dict[str, object] = {}

    def fake_start(logfile: object, level: object, address: object, storage: object, **kw: object):
        captured.update(kw)

    monkeypatch.setattr(cli, "start_durus", fake_start)
    monkeypatch.setattr(cli, "open_storage_for_user", lambda *a, **k: MemoryStorage())
    secret = _secret_file(tmp_path)
    args = ["--max-message-bytes=0x10000", "--max-commit-records=10", "--max-clients", "5"]
    assert cli.run_durus_main([*args, "--idle-timeout=2.5", f"--auth-file={secret}"]) == 0
    assert captured == {
        "gcbytes": 0, "max_message_bytes": 65536, "max_commit_records": 10, "max_clients": 5,
        "idle_timeout_s": 2.5, "auth_secret": b"an example secret of 32 bytes..!",
    }  # fmt: skip
    captured.clear()
    assert cli.run_durus_main([]) == 0
    assert captured["idle_timeout_s"] == 0 and "auth_secret" not in captured


def test_bad_limits_and_secret_files_are_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readable = _secret_file(tmp_path, 0o644)
    assert cli.main(["-s", "--max-clients=0"]) == 1
    assert cli.main(["-s", "--idle-timeout=-1"]) == 1
    assert cli.main(["-s", f"--auth-file={readable}"]) == 1
    assert cli.main(["-s", "--tls-cert=cert.pem"]) == 1
    assert cli.main(["-p", "--port=1", f"--auth-file={readable}"]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert errors[0] == "durus: error: --max-clients must be > 0, not 0"
    assert errors[1].startswith("durus: error: --idle-timeout must be >= 0")
    assert "readable by its owner only" in errors[2] and "chmod 600" in errors[2]
    assert errors[3] == "durus: error: --tls-cert and --tls-key go together"
    assert "readable by its owner only" in errors[4]


@needs_server
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is missing")
def test_server_with_auth_and_tls_end_to_end(tmp_path: Path) -> None:
    from tests.support.server_fixtures import make_tls_files

    cert, key = make_tls_files(tmp_path)
    secret = _secret_file(tmp_path)
    port = free_port()
    access = [f"--auth-file={secret}"]
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "durus", "-s", f"--file={tmp_path / 'a.durus'}",
             f"--port={port}", *access, f"--tls-cert={cert}", f"--tls-key={key}"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=_env(),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _accepts(port):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        plain = durus("-p", f"--port={port}")
        assert plain.returncode == 1 and "Traceback" not in plain.stderr
        packed = durus("-p", f"--port={port}", *access, f"--tls-ca={cert}")
        assert packed.returncode == 0, packed.stderr
        assert "started a pack" in packed.stdout
        stop = durus("-s", "--stop", f"--port={port}", *access, f"--stop-tls-ca={cert}")
        assert stop.returncode == 0, stop.stderr
        process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT_S)
    log_text = log_path.read_text()
    assert "(TLS, authentication required)" in log_text and "TLS handshake failed" in log_text
