"""The ``durus`` command: ``-s`` (serve or stop), ``-c`` (console), ``-p`` (pack), ``-k`` (check).

Owns option parsing, storage selection by file sniffing (``get_storage``),
logging set-up for the server, the stop request, the interactive console and
the packing loop. Everything an operator can get wrong (a missing or locked
file, an unknown format, a port in use, no server listening) ends in one
line on stderr and a non-zero exit, never a traceback.

Never imports the server, client, connection or storage modules at import
time: each mode imports what it needs, so ``durus --help`` works even when
one of them is broken or missing. Never rebinds ``sys.stdout``/``sys.stderr``
(log output goes through a handler on the ``durus`` logger only).
"""

from __future__ import annotations

import atexit
import code
import contextlib
import errno
import importlib
import math
import optparse
import os
import pprint
import signal
import socket
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from durus.check import describe_exception
from durus.logger import direct_output, log, logger

DEFAULT_HOST = "127.0.0.1"  # the same values as durus.storage_server (checked by a test)
DEFAULT_PORT = 2972
DEFAULT_GCBYTES = 0
# Server limits: the same values as durus.storage_server (checked by a test).
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_COMMIT_RECORDS = 2_000_000
DEFAULT_MAX_CLIENTS = 1000
DEFAULT_IDLE_TIMEOUT_S = 0.0
DEFAULT_CACHE_SIZE = 10000
STOP_POLL_COUNT = 20
STOP_POLL_INTERVAL_S = 0.5
CLIENT_WAIT_S = 600.0  # how long ``durus -c`` waits for a server, as in Durus 4.3 (300 x 2 s)
CLIENT_WAIT_POLL_S = 0.25
HISTORY_FILE = os.path.join("~", ".durushistory")
HISTORY_LENGTH_LINES = 1000
SNIFF_BYTES = 16

USAGE = """\
durus [ -c | -s | -p | -k ] [ -h ] [<specific options>]
    -s   Start or stop a Durus storage server.
    -c   Start a low-level interactive client.
    -p   Pack a storage file.
    -k   Check a storage file offline (read-only).
    -h   Get help on specific options.
"""

# Leading bytes of each storage format and the class that opens it (FORMATS.md section 8).
STORAGE_CLASS_BY_PREFIX = (
    (b"DFS20", "durus.file_storage2.FileStorage2"),
    (b"SQLite format ", "durus.sqlite_storage.SqliteStorage"),
    (b"SHELF-1", "durus.file_storage.FileStorage"),
)
NEW_FILE_STORAGE_CLASS = "durus.file_storage.FileStorage"


class UserError(Exception):
    """Something the operator can fix; ``main`` prints the message as one line and exits 1."""


# ---------------------------------------------------------------- option parsing


def parse_integer(text: str) -> int:
    """An int written in decimal, ``0x`` hex, ``0b`` binary or leading-``0`` octal (as optparse)."""
    digits = text.strip().lower()
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    if digits.startswith(("0x", "0b")):
        base = 16 if digits[1] == "x" else 2
        digits = digits[2:]
    elif len(digits) > 1 and digits.startswith("0"):
        base = 8
    else:
        base = 10
    if not digits or not digits.isalnum():
        raise ValueError(f"invalid integer: {text!r}")
    return sign * int(digits, base)


def _check_number(option: optparse.Option, opt: str, value: str) -> int | float:
    """An int in any of parse_integer's forms, else a float."""
    try:
        return parse_integer(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise optparse.OptionValueError(f"option {opt}: invalid number: {value!r}") from None


class _Option(optparse.Option):
    """optparse options plus a ``number`` type (int forms or a float)."""

    TYPES = (*optparse.Option.TYPES, "number")
    TYPE_CHECKER = {**optparse.Option.TYPE_CHECKER, "number": _check_number}


def _parser(mode: str, description: str) -> optparse.OptionParser:
    return optparse.OptionParser(
        prog=f"durus {mode}",
        usage="%prog [options]",
        description=description,
        option_class=_Option,
    )


OptionSpec = tuple[str, dict[str, Any]]

HAS_UNIX_SOCKETS = hasattr(socket, "AF_UNIX")

TCP_OPTIONS: tuple[OptionSpec, ...] = (
    ("--port", dict(type="int", default=DEFAULT_PORT, help="TCP port (default %default)")),
    ("--host", dict(default=DEFAULT_HOST, help="host address (default %default)")),
)
UNIX_ADDRESS_OPTIONS: tuple[OptionSpec, ...] = (
    (
        "--address",
        dict(help="Unix socket path, or @name for a Linux abstract socket; overrides host/port"),
    ),
)
SOCKET_FILE_OPTIONS: tuple[OptionSpec, ...] = (
    ("--owner", dict(help="owner (name or id) of the Unix socket file")),
    ("--group", dict(help="group (name or id) of the Unix socket file")),
    ("--umask", dict(type="int", help="umask while creating the Unix socket file")),
)
SERVER_FILE_OPTION: OptionSpec = (
    "--file",
    dict(help="storage file (default: a new temporary file, deleted at exit)"),
)
CLIENT_FILE_OPTION: OptionSpec = (
    "--file",
    dict(help="open this storage file directly (default: connect to a server)"),
)
PACK_FILE_OPTION: OptionSpec = (
    "--file",
    dict(help="storage file to pack (default: ask the server to pack)"),
)
STORAGE_OPTIONS: tuple[OptionSpec, ...] = (
    (
        "--storage-class",
        dict(
            dest="storage_class",
            help="storage class by dotted path, e.g. durus.file_storage.FileStorage"
            " (default: chosen from the file's first bytes)",
        ),
    ),
    ("--repair", dict(action="store_true", help="truncate a torn tail of the file when opening")),
    ("--readonly", dict(action="store_true", help="open the storage file read-only")),
)
DSN_OPTION: OptionSpec = (
    "--dsn",
    dict(
        help="PostgreSQL connection string (e.g. 'host=db dbname=durus'): use a"
        " PostgresStorage instead of a file (needs psycopg 3; see docs/postgres.md)"
    ),
)


def open_dsn_for_user(dsn: str, file: str | None = None) -> Any:
    """A PostgresStorage for ``--dsn``; every foreseeable failure becomes a UserError."""
    if file:
        raise UserError("give --dsn or --file, not both")
    from durus.postgres_storage import PostgresOpenError, storage_from_dsn

    try:
        return storage_from_dsn(dsn)
    except PostgresOpenError as exc:
        raise UserError(str(exc)) from None


# Options handed to StorageServer(...) as keyword arguments named by their dest:
# a new server setting is one line here.
SERVER_SETTING_OPTIONS: tuple[OptionSpec, ...] = (
    (
        "--gcbytes",
        dict(
            type="number",
            default=DEFAULT_GCBYTES,
            help="start an incremental pack after this many bytes of commits (0: never)",
        ),
    ),
    (
        "--max-message-bytes",
        dict(
            type="int",
            default=DEFAULT_MAX_MESSAGE_BYTES,
            help="largest request a client may send (a commit's data, a bulk load);"
            " a client sending more is disconnected (default %default)",
        ),
    ),
    (
        "--max-commit-records",
        dict(
            type="int",
            default=DEFAULT_MAX_COMMIT_RECORDS,
            help="most object records in one commit; more disconnects the client"
            " (default %default)",
        ),
    ),
    (
        "--max-clients",
        dict(
            type="int",
            default=DEFAULT_MAX_CLIENTS,
            help="most connected clients; further connections are closed at once"
            " (default %default)",
        ),
    ),
    (
        "--idle-timeout",
        dict(
            type="number",
            dest="idle_timeout_s",
            default=DEFAULT_IDLE_TIMEOUT_S,
            help="disconnect a client silent for this many seconds between requests"
            " (default %default: never, since clients do not reconnect by themselves)",
        ),
    ),
)
# Access control of the server: turned into auth_secret= and tls= by run_durus_main.
SERVER_ACCESS_OPTIONS: tuple[OptionSpec, ...] = (
    (
        "--auth-file",
        dict(
            help="require clients to prove they know the secret in this file"
            " (readable by its owner only; e.g. openssl rand -hex 32 > FILE; chmod 600 FILE)",
        ),
    ),
    ("--tls-cert", dict(help="serve over TLS with this certificate (PEM; needs --tls-key)")),
    ("--tls-key", dict(help="private key (PEM) of --tls-cert")),
)
# How a client (-c, -p, and -s --stop) reaches a protected server.
CLIENT_ACCESS_OPTIONS: tuple[OptionSpec, ...] = (
    ("--auth-file", dict(help="shared secret file of a server started with --auth-file")),
    (
        "--tls-ca",
        dict(help="connect over TLS, verifying the server's certificate with this CA file (PEM)"),
    ),
)
SERVER_OPTIONS: tuple[OptionSpec, ...] = (
    ("--logginglevel", dict(type="int", help="logging level (default: 20, INFO)")),
    ("--logfile", dict(help="append the log to this file (default: stderr)")),
    ("--stop", dict(action="store_true", help="stop the server at the address instead")),
)
CLIENT_OPTIONS: tuple[OptionSpec, ...] = (
    (
        "--cache_size",
        dict(type="int", default=DEFAULT_CACHE_SIZE, help="object cache target size"),
    ),
    (
        "--wait",
        dict(
            type="number",
            default=CLIENT_WAIT_S,
            help="seconds to wait for the server to answer (default %default)",
        ),
    ),
    (
        "--startup",
        dict(
            help="Python file to run in the console's namespace at startup"
            " (default: $DURUSSTARTUP)",
        ),
    ),
)


def _add_options(parser: optparse.OptionParser, *groups: Iterable[OptionSpec]) -> None:
    for group in groups:
        for flag, settings in group:
            parser.add_option(flag, **settings)


def _dest(spec: OptionSpec) -> str:
    """The attribute optparse stores an option's value under."""
    flag, settings = spec
    dest = str(settings.get("dest") or flag.lstrip("-").replace("-", "_"))
    assert dest.isidentifier(), spec
    return dest


def _address_groups(with_socket_file: bool = False) -> list[Iterable[OptionSpec]]:
    groups: list[Iterable[OptionSpec]] = [TCP_OPTIONS]
    if HAS_UNIX_SOCKETS:
        groups.append(UNIX_ADDRESS_OPTIONS)
        if with_socket_file:
            groups.append(SOCKET_FILE_OPTIONS)
    return groups


def _parse(parser: optparse.OptionParser, args: list[str] | None) -> optparse.Values:
    options, positional = parser.parse_args(sys.argv[1:] if args is None else list(args))
    if positional:
        parser.error(f"unexpected argument {positional[0]!r}")
    port = getattr(options, "port", None)
    if port is not None and not 0 < port < 65536:
        parser.error(f"--port must be between 1 and 65535, not {port}")
    return options


# ---------------------------------------------------------------- storages


def storage_class_name_for_prefix(prefix: bytes | None) -> str:
    """Dotted storage class for a file starting with ``prefix`` (None: no file).

    A missing or empty file is a new FileStorage (Durus 4.3 refused an empty
    one although FileStorage accepts it).
    """
    if not prefix:
        return NEW_FILE_STORAGE_CLASS
    for magic, dotted in STORAGE_CLASS_BY_PREFIX:
        if prefix.startswith(magic):
            assert dotted.startswith("durus.")
            return dotted
    raise ValueError(f"unknown storage type for file (it starts with {prefix[:8]!r})")


def import_class(dotted: str) -> type:
    """The class named ``package.module.Class``."""
    module_name, _, class_name = dotted.rpartition(".")
    if not module_name or not class_name:
        raise ValueError(f"{dotted!r} is not a dotted path such as package.module.Class")
    klass = getattr(importlib.import_module(module_name), class_name, None)
    if not isinstance(klass, type):
        raise ValueError(f"{module_name} has no class {class_name!r}")
    return klass


def get_storage_class(file: str | None) -> type:
    """The storage class for ``file``, chosen from its first bytes."""
    prefix = None
    if file is not None and os.path.exists(file):
        with open(file, "rb") as stream:
            prefix = stream.read(SNIFF_BYTES)
    return import_class(storage_class_name_for_prefix(prefix))


def get_storage(file: str | None, storage_class: str | type | None = None, **kwargs: Any) -> Any:
    """Open ``file`` with ``storage_class`` (a class or dotted path; default: sniffed)."""
    if storage_class is None:
        klass = get_storage_class(file)
    elif isinstance(storage_class, str):
        klass = import_class(storage_class)
    else:
        klass = storage_class
    return klass(file, **kwargs)


def open_storage_for_user(
    file: str | None, storage_class: str | None, repair: bool = False, readonly: bool = False
) -> Any:
    """get_storage for the command line: every foreseeable failure becomes a UserError."""
    if file is not None:
        if readonly and not os.path.exists(file):
            raise UserError(f"{file}: no such file (--readonly needs an existing storage)")
        if os.path.isdir(file):
            raise UserError(f"{file} is a directory, not a storage file")
    try:
        klass = import_class(storage_class) if storage_class else get_storage_class(file)
    except ValueError as exc:
        raise UserError(f"{'--storage-class' if storage_class else file}: {exc}") from None
    except ImportError as exc:
        raise UserError(f"cannot import the storage class: {exc}") from None
    except OSError as exc:
        raise UserError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        return klass(file, repair=repair, readonly=readonly)
    except BlockingIOError:
        message = "is locked: another process (a server?) has it open for writing"
        raise UserError(f"{file} {message}") from None
    except PermissionError:
        raise UserError(f"{file}: permission denied") from None
    except NotImplementedError as exc:
        raise UserError(f"{klass.__name__} cannot open {file} this way: {exc}") from None
    except (OSError, ValueError, AssertionError) as exc:
        hint = f"`durus -k {file}` checks the file"
        message = f"cannot open {file} with {klass.__name__}: {describe_exception(exc)} ({hint})"
        raise UserError(message) from None


# ---------------------------------------------------------------- durus -s


def _socket_address(address: Any, **socket_file_options: Any) -> Any:
    """A SocketAddress for a (host, port) tuple, a Unix path or an @name."""
    from durus.storage_server import SocketAddress

    if isinstance(address, str) and address.startswith("@"):
        return SocketAddress.new(address)  # abstract sockets take no file options
    if isinstance(address, str):
        return SocketAddress.new(address, **socket_file_options)
    return SocketAddress.new(address)


def _address_from_options(options: optparse.Values) -> Any:
    """The address the options name: --address, else (--host, --port)."""
    address = getattr(options, "address", None)
    if not address:
        return (options.host, options.port)
    file_options = {
        name: getattr(options, name, None)
        for name in ("owner", "group", "umask")
        if getattr(options, name, None) is not None
    }
    if address.startswith("@") and file_options:
        raise UserError("--owner, --group and --umask do not apply to an abstract socket (@name)")
    return _socket_address(address, **file_options)


def _open_log(logfile: str | IO[str] | None) -> IO[str]:
    if logfile is None:
        return sys.stderr
    if not isinstance(logfile, str):
        return logfile
    try:
        return open(logfile, "a", buffering=1, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot open the log file {logfile}: {exc.strerror or exc}") from None


def start_durus(
    logfile: str | IO[str] | None,
    logginglevel: int | None,
    address: Any,
    storage: Any,
    gcbytes: int | float = DEFAULT_GCBYTES,
    **server_settings: Any,
) -> None:
    """Log to ``logfile`` (a path, a stream, or None for stderr) and serve ``storage``.

    Returns only by an exception: SystemExit after a stop request, OSError
    when the address cannot be bound.
    """
    from durus.storage_server import StorageServer

    direct_output(_open_log(logfile))
    if logginglevel is not None:
        logger.setLevel(logginglevel)
    socket_address = _socket_address(address)
    name = storage.get_filename() if hasattr(storage, "get_filename") else storage
    log(20, "Storage file=%s address=%s", name, socket_address)
    server = StorageServer(storage, address=socket_address, gcbytes=gcbytes, **server_settings)
    server.serve()


def stop_durus(address: Any, access: ClientAccess | None = None) -> bool:
    """Ask the server at ``address`` to quit; True once it no longer answers.

    ``access`` holds the secret and TLS settings of a protected server.
    """
    socket_address = _socket_address(address)
    sock = socket_address.get_connected_socket()
    if sock is None:
        log(20, "Durus server %s doesn't seem to be running.", socket_address)
        return False
    if access is not None and access.is_set():
        sock = _protected_socket(socket_address, sock, access)
    try:
        sock.sendall(b"Q")
    except OSError as exc:  # it may be going away already; the polls below tell
        log(10, "Sending the stop request to %s: %s", socket_address, exc)
    finally:
        sock.close()
    for _ in range(STOP_POLL_COUNT):
        time.sleep(STOP_POLL_INTERVAL_S)
        probe = socket_address.get_connected_socket()
        if probe is None:
            log(20, "Durus server %s stopped.", socket_address)
            return True
        probe.close()
    waited_s = STOP_POLL_COUNT * STOP_POLL_INTERVAL_S
    log(
        30, "Durus server %s still answers %.0f s after the stop request.", socket_address, waited_s
    )
    return False


class ClientAccess:
    """A client's way into a protected server: a secret file and/or a TLS CA file."""

    def __init__(self, auth_file: str | None = None, tls_ca: str | None = None) -> None:
        self.auth_secret = _read_secret(auth_file) if auth_file else None
        self.tls_ca = tls_ca or None
        if self.tls_ca is not None and not os.path.isfile(self.tls_ca):
            raise UserError(f"--tls-ca {self.tls_ca}: no such file")

    def is_set(self) -> bool:
        return self.auth_secret is not None or self.tls_ca is not None

    def client_storage_options(self) -> dict[str, Any]:
        return {"auth_secret": self.auth_secret, "tls": self.tls_ca}


def _read_secret(path: str) -> bytes:
    from durus.auth import read_secret_file

    try:
        return read_secret_file(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"--auth-file: {describe_exception(exc)}") from None


def _protected_socket(socket_address: Any, sock: Any, access: ClientAccess) -> Any:
    """``sock`` with TLS and authentication done; a UserError when that fails."""
    from durus.client_storage import open_client_socket

    try:
        return open_client_socket(socket_address, sock, None, **access.client_storage_options())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot talk to the server at {socket_address}: {exc}") from None


def _server_access_settings(options: optparse.Values) -> dict[str, Any]:
    """``auth_secret``/``tls`` keyword arguments of StorageServer from the options."""
    settings: dict[str, Any] = {}
    if options.auth_file:
        settings["auth_secret"] = _read_secret(options.auth_file)
    if bool(options.tls_cert) != bool(options.tls_key):
        raise UserError("--tls-cert and --tls-key go together")
    if options.tls_cert:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(options.tls_cert, options.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"cannot load --tls-cert/--tls-key: {exc}") from None
        settings["tls"] = context
    return settings


def _server_parser() -> optparse.OptionParser:
    parser = _parser("-s", "Start a Durus storage server, or stop one with --stop.")
    _add_options(parser, *_address_groups(with_socket_file=True))
    _add_options(parser, [SERVER_FILE_OPTION, DSN_OPTION], STORAGE_OPTIONS)
    _add_options(parser, SERVER_SETTING_OPTIONS, SERVER_ACCESS_OPTIONS, SERVER_OPTIONS)
    parser.add_option(
        "--stop-tls-ca",
        dest="tls_ca",
        help="with --stop: verify a TLS server's certificate with this CA file",
    )
    return parser


def run_durus_main(args: list[str] | None = None) -> int:
    """``durus -s``: serve a storage (until stopped), or ``--stop`` a running server."""
    options = _parse(_server_parser(), args)
    address = _address_from_options(options)
    if options.stop:
        direct_output(sys.stderr)
        stop_durus(address, ClientAccess(options.auth_file, options.tls_ca))
        return 0
    settings: dict[str, Any] = {
        _dest(spec): getattr(options, _dest(spec)) for spec in SERVER_SETTING_OPTIONS
    }
    _check_server_limits(settings)
    settings.update(_server_access_settings(options))
    if options.dsn:
        storage = open_dsn_for_user(options.dsn, options.file)
    else:
        storage = open_storage_for_user(
            options.file, options.storage_class, repair=options.repair, readonly=options.readonly
        )
    try:
        with _sigterm_stops_the_server():
            start_durus(options.logfile, options.logginglevel, address, storage, **settings)
    except OSError as exc:
        storage.close()
        raise UserError(_listen_error(address, exc)) from None
    except UserError:
        storage.close()
        raise
    except KeyboardInterrupt:
        storage.close()
        log(20, "Interrupted: the server stops.")
        return 130
    except Terminated:
        storage.close()
        log(20, "Terminated: the server stops.")
    return 0


def _check_server_limits(settings: dict[str, Any]) -> None:
    for name in ("max_message_bytes", "max_commit_records", "max_clients"):
        if settings[name] <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, not {settings[name]}")
    if settings["idle_timeout_s"] < 0:
        raise UserError(f"--idle-timeout must be >= 0 (0: off), not {settings['idle_timeout_s']}")


class Terminated(BaseException):
    """SIGTERM arrived while serving: stop like an interrupt, but as a normal exit."""


@contextlib.contextmanager
def _sigterm_stops_the_server() -> Iterator[None]:
    """While serving in the main thread, SIGTERM raises Terminated (the storage is closed)."""

    def terminate(signal_number: int, frame: Any) -> None:
        raise Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _listen_error(address: Any, exc: OSError) -> str:
    where = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: address already in use (is a server running there?)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot listen on {where}: permission denied"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no such local address"
    return f"cannot serve on {where}: {exc.strerror or exc}"


# ---------------------------------------------------------------- durus -c


def configure_readline(namespace: dict[str, Any], history_path: str) -> None:
    """Tab completion on ``namespace`` and a persistent history file, if readline exists."""
    try:
        import readline
        import rlcompleter
    except ImportError:
        return
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    history_path = os.path.expanduser(history_path)
    readline.set_history_length(HISTORY_LENGTH_LINES)
    try:
        readline.read_history_file(history_path)
    except OSError:
        pass  # no history yet, or unreadable: start without it
    atexit.register(_save_history, readline.write_history_file, history_path)


def _save_history(write_history_file: Callable[[str], None], history_path: str) -> None:
    try:
        write_history_file(history_path)
    except OSError:
        pass  # an unwritable home directory must not spoil the exit


def _console_namespace(connection: Any) -> dict[str, Any]:
    """The console's globals, also installed as module ``__console__``."""
    from durus.utils import int8_to_str, str_to_int8

    module = types.ModuleType("__console__")
    module.__dict__.update(
        connection=connection,
        root=connection.get_root(),
        get=connection.get,
        sys=sys,
        os=os,
        int8_to_str=int8_to_str,
        str_to_int8=str_to_int8,
        pp=pprint.pprint,
    )
    sys.modules["__console__"] = module
    return module.__dict__


def _run_startup(path: str, namespace: dict[str, Any]) -> None:
    """Run the startup file in the console namespace; report, but survive, its errors."""
    path = os.path.expanduser(path)
    try:
        with open(path, encoding="utf-8") as stream:
            source = stream.read()
    except OSError as exc:
        print(f"durus: startup file {path}: {exc.strerror or exc}", file=sys.stderr)
        return
    try:
        exec(compile(source, path, "exec"), namespace)
    except Exception:
        traceback.print_exc()


def interactive_client(
    file: str | None,
    address: Any,
    cache_size: int,
    readonly: bool,
    repair: bool,
    startup: str | None,
    storage_class: str | None = None,
    wait_s: float = CLIENT_WAIT_S,
    access: ClientAccess | None = None,
    dsn: str | None = None,
) -> None:
    """Open the storage (``file``, else a server at ``address``) and run a console on it.

    ``wait_s`` bounds the wait for a server that does not answer yet;
    ``access`` holds the secret and TLS settings of a protected server.
    """
    from durus.connection import Connection

    if dsn:
        storage = open_dsn_for_user(dsn, file)
        connection = _connection_for_user(Connection, storage, cache_size)
        description = str(storage)
    elif file:
        storage = open_storage_for_user(file, storage_class, repair=repair, readonly=readonly)
        connection = _connection_for_user(Connection, storage, cache_size)
        description = file
    else:
        storage, connection = _connect_with_root(Connection, address, cache_size, wait_s, access)
        description = str(_socket_address(address))
    try:
        namespace = _console_namespace(connection)
        if sys.stdin.isatty():
            configure_readline(namespace, HISTORY_FILE)
        if startup:
            _run_startup(startup, namespace)
        banner = (
            f"Durus {description}\n"
            "    connection -> the Connection (commit(), abort(), get(oid), pack())\n"
            "    root       -> the root object"
        )
        code.InteractiveConsole(namespace).interact(banner, exitmsg="")
    finally:
        storage.close()


ROOT_RACE_ATTEMPTS = 3
ROOT_RACE_PAUSE_S = 0.2


def _connection_for_user(connection_class: Any, storage: Any, cache_size: int) -> Any:
    """A Connection on ``storage``; failures close the storage and become a UserError."""
    from pickle import UnpicklingError

    from durus.error import DurusError

    try:
        return connection_class(storage, cache_size=cache_size)
    except (ImportError, AttributeError) as exc:
        storage.close()
        hint = "the application's classes must be importable: check the directory or PYTHONPATH"
        raise UserError(
            f"cannot load the root object: {describe_exception(exc)} ({hint})"
        ) from None
    except (DurusError, OSError, ValueError, AssertionError, UnpicklingError) as exc:
        storage.close()  # UnpicklingError: a damaged root record
        message = f"cannot open a connection on {storage}: {describe_exception(exc)}"
        raise ConnectionFailed(message) from None


class ConnectionFailed(UserError):
    """Connection() failed on an opened storage (not for want of application classes)."""


def _connect_with_root(
    connection_class: Any, address: Any, cache_size: int, wait_s: float,
    access: ClientAccess | None = None,
) -> tuple[Any, Any]:  # fmt: skip
    """ClientStorage and Connection on the server at ``address``.

    Two clients that meet a new, empty storage at the same moment both try to
    create the root and one of them fails; that one reconnects and finds the root.
    """
    for attempt in range(ROOT_RACE_ATTEMPTS):
        storage = _connect_to_server(address, wait_s if attempt == 0 else 0, access)
        try:
            return storage, _connection_for_user(connection_class, storage, cache_size)
        except ConnectionFailed:
            if attempt + 1 == ROOT_RACE_ATTEMPTS:
                raise
            time.sleep(ROOT_RACE_PAUSE_S)
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


def _client_parser() -> optparse.OptionParser:
    parser = _parser("-c", "Start a low-level interactive client on a server or a file.")
    _add_options(parser, *_address_groups(), [CLIENT_FILE_OPTION, DSN_OPTION], STORAGE_OPTIONS)
    _add_options(parser, CLIENT_OPTIONS, CLIENT_ACCESS_OPTIONS)
    parser.set_defaults(startup=os.environ.get("DURUSSTARTUP", ""))
    return parser


def client_main(args: list[str] | None = None) -> int:
    """``durus -c``: an interactive console on a server (default) or on ``--file``."""
    options = _parse(_client_parser(), args)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")  # like an interactive python: the current directory's classes
    if options.cache_size <= 0:
        raise UserError(f"--cache_size must be > 0, not {options.cache_size}")
    if options.wait < 0:
        raise UserError(f"--wait must be >= 0, not {options.wait}")
    address = None if options.file or options.dsn else _address_from_options(options)
    interactive_client(
        options.file,
        address,
        options.cache_size,
        options.readonly,
        options.repair,
        options.startup,
        options.storage_class,
        options.wait,
        None if options.file else ClientAccess(options.auth_file, options.tls_ca),
        dsn=options.dsn,
    )
    return 0


def _connect_to_server(address: Any, wait_s: float, access: ClientAccess | None = None) -> Any:
    """A ClientStorage on ``address``, waiting up to ``wait_s`` for the server to answer."""
    from durus.client_storage import ClientStorage

    socket_address = _socket_address(address)
    probe = socket_address.get_connected_socket()
    if probe is not None:
        probe.close()
    elif wait_s <= 0:
        raise UserError(f"no Durus server is listening at {socket_address}")
    else:
        _wait_for_server(socket_address, wait_s)
    settings = access.client_storage_options() if access is not None else {}
    try:
        return ClientStorage(address=socket_address, **settings)
    except (OSError, AssertionError) as exc:
        raise UserError(
            f"cannot talk to the server at {socket_address}: {describe_exception(exc)}"
        ) from None


def _wait_for_server(socket_address: Any, wait_s: float) -> None:
    """Poll ``socket_address`` until it answers; a UserError after ``wait_s``."""
    from durus.storage_server import wait_for_server

    print(
        f"durus: waiting up to {wait_s:g} s for a server at {socket_address} ...", file=sys.stderr
    )
    tries = max(1, math.ceil(wait_s / CLIENT_WAIT_POLL_S))
    try:
        wait_for_server(maxtries=tries, sleeptime=CLIENT_WAIT_POLL_S, address=socket_address)
    except (SystemExit, Exception):  # SystemExit: the Durus 4.3 way of saying "timeout"
        message = f"no Durus server answered at {socket_address} within {wait_s:g} s"
        raise UserError(message) from None


# ---------------------------------------------------------------- durus -p


def _pack_parser() -> optparse.OptionParser:
    parser = _parser("-p", "Pack a storage: a file given with --file, else through a server.")
    _add_options(parser, [PACK_FILE_OPTION, DSN_OPTION], STORAGE_OPTIONS[:1], *_address_groups())
    _add_options(parser, CLIENT_ACCESS_OPTIONS)
    return parser


def pack_storage_main(args: list[str] | None = None) -> int:
    """``durus -p``: pack ``--file`` offline, or ask the server to start a pack."""
    from durus.connection import Connection

    options = _parse(_pack_parser(), args)
    if options.dsn:
        storage = open_dsn_for_user(options.dsn, options.file)
        try:
            run_packer(storage, sys.stderr if sys.stderr.isatty() else None)
            print(f"packed {storage}")
        finally:
            storage.close()
        return 0
    if options.file:
        storage = open_storage_for_user(options.file, options.storage_class)
    else:
        access = ClientAccess(options.auth_file, options.tls_ca)
        storage = _connect_to_server(_address_from_options(options), wait_s=0, access=access)
    if not _has_root(storage):
        _connection_for_user(Connection, storage, DEFAULT_CACHE_SIZE)  # creates the root
    try:
        if options.file:
            size_before = os.path.getsize(options.file)
            run_packer(storage, sys.stderr if sys.stderr.isatty() else None)
            size_after = os.path.getsize(options.file)
            print(f"packed {options.file}: {size_before} -> {size_after} bytes")
        else:
            storage.pack()
            print(f"the server at {_socket_address(_address_from_options(options))} started a pack")
    finally:
        storage.close()
    return 0


def describe_pack_step(phase: str, step: Any, step_count: int) -> str:
    """A progress line for one packer step; ``phase`` is the first word of the last text step."""
    if phase == "started" and isinstance(step, int):
        return f"packing: {step} live records copied"
    if phase == "base":
        return "packing: live records written; finding removed oids"
    if phase == "invalidations":
        return "packing: copying commits made during the pack"
    return f"packing: {phase}, step {step_count}"


def _has_root(storage: Any) -> bool:
    """True when ``storage`` has a root record (checked without unpickling anything)."""
    from durus.utils import ROOT_OID

    try:
        storage.load(ROOT_OID)
    except KeyError:
        return False
    return True


def run_packer(storage: Any, progress_stream: IO[str] | None) -> None:
    """Pack ``storage`` step by step, drawing progress on ``progress_stream`` if given."""
    packer = storage.get_packer()
    if packer is None:
        storage.pack()
        return
    step_count = 0
    phase = "started"
    last_draw_s = 0.0
    for step in packer:
        step_count += 1
        if isinstance(step, str) and step:
            phase = step.split()[0]
        if progress_stream is not None and time.monotonic() - last_draw_s >= 0.1:
            last_draw_s = time.monotonic()
            progress_stream.write(f"\r{describe_pack_step(phase, step, step_count)}\x1b[K")
            progress_stream.flush()
    if progress_stream is not None and step_count:
        progress_stream.write("\r\x1b[K")
        progress_stream.flush()
    assert step_count >= 0


# ---------------------------------------------------------------- dispatch


def check_main(args: list[str] | None = None) -> int:
    """``durus -k FILE``: see durus.check."""
    from durus.check import check_main as run_check

    return run_check(args)


def usage() -> None:
    """Print the top-level usage to stdout."""
    sys.stdout.write(USAGE)


MODES: dict[str, Callable[[list[str]], int]] = {
    "-s": run_durus_main,
    "-c": client_main,
    "-p": pack_storage_main,
    "-k": check_main,
}


def main(args: list[str] | None = None) -> int:
    """The ``durus`` command; ``args`` defaults to ``sys.argv[1:]``. Returns the exit status."""
    args = sys.argv[1:] if args is None else list(args)
    if not args or args[0] not in MODES:
        usage()
        return 0
    try:
        status = MODES[args[0]](args[1:])
        assert isinstance(status, int), status
        return status
    except UserError as exc:
        print(f"durus: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("durus: interrupted", file=sys.stderr)
        return 130
