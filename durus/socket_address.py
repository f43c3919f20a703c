"""Where a storage server listens: TCP host/port, Unix path, or Linux abstract name.

Owns the ``SocketAddress`` family (API.md section 18.1): parsing an address
given by the application, binding a listening socket (address reuse, backlog
40, a Unix socket's umask/owner/group, stale socket files), connecting a
client socket, and cleaning up after the server. It is the socket edge only:
it knows nothing of the protocol or of storages. The process umask is
restored on every path out of a bind, including failures (Durus 4.3 left it
changed when a bind failed).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Any

TIMEOUT = 10  # seconds per socket operation on a client connection (Durus 4.3)
LISTEN_BACKLOG = 40


class AddressTypeError(TypeError, AttributeError):
    """An address is neither a SocketAddress, a (host, port) tuple nor a str.

    Also an AttributeError, which is what Durus 4.3 raised here.
    """


class SocketAddress:
    """Base of the address classes; ``SocketAddress.new`` builds the right one."""

    family: int = socket.AF_INET

    @staticmethod
    def new(address: Any, **kwargs: Any) -> SocketAddress:
        """An address object for ``address``: a SocketAddress, (host, port), '@name' or a path."""
        if isinstance(address, SocketAddress):
            return address
        if isinstance(address, tuple):
            host, port = address
            options = {key: value for key, value in kwargs.items() if value is not None}
            return HostPortAddress(host, port, **options)
        if isinstance(address, str):
            if address.startswith("@"):
                return UnixAbstractAddress(address, **kwargs)
            return UnixDomainSocketAddress(address, **kwargs)
        raise AddressTypeError(f"not a socket address: {address!r}")

    def get_address_family(self) -> int:
        return self.family

    def socket_address(self) -> Any:
        """What ``socket.bind``/``connect`` take for this address."""
        raise NotImplementedError

    def get_listening_socket(self) -> socket.socket:
        """A bound, listening socket (address reuse on, backlog 40)."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.bind_socket(sock)
            sock.listen(LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        return sock

    def bind_socket(self, sock: socket.socket) -> None:
        sock.bind(self.socket_address())

    def get_connected_socket(self, timeout_s: float | None = None) -> socket.socket | None:
        """A socket connected to this address, or None when no server is there.

        ``timeout_s`` bounds the connect only; the socket returned is blocking.
        """
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout_s)
            sock.connect(self.socket_address())
            sock.settimeout(None)
        except OSError as error:
            sock.close()
            if self._means_nobody_there(error):
                return None
            raise
        self.set_client_options(sock)
        return sock

    def _means_nobody_there(self, error: OSError) -> bool:
        return isinstance(error, ConnectionRefusedError)

    def set_client_options(self, sock: socket.socket) -> None:
        """Options of a client's socket: TCP_NODELAY where it applies."""

    def set_connection_options(self, sock: socket.socket) -> None:
        """Options of an accepted connection (Durus 4.3: TCP_NODELAY and TIMEOUT)."""
        self.set_client_options(sock)
        sock.settimeout(TIMEOUT)

    def close(self, sock: socket.socket) -> None:
        """Close a listening socket made from this address."""
        sock.close()


class HostPortAddress(SocketAddress):
    """TCP: IPv6 when the host contains ':', else IPv4."""

    def __init__(self, host: str = "127.0.0.1", port: int = 2972) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, got {port!r}")
        self.host = host
        self.port = port
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def __str__(self) -> str:
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"HostPortAddress({self.host!r}, {self.port!r})"

    def socket_address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def set_client_options(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _UnixAddress(SocketAddress):
    family = getattr(socket, "AF_UNIX", -1)

    def _means_nobody_there(self, error: OSError) -> bool:
        return isinstance(error, (ConnectionRefusedError, FileNotFoundError)) or (
            error.errno in (errno.ENOTSOCK, errno.ENOENT, errno.ECONNREFUSED)
        )


class UnixAbstractAddress(_UnixAddress):
    """Linux abstract namespace: '@name', where every '@' becomes a NUL byte."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        given = {key: value for key, value in kwargs.items() if value is not None}
        if given or set(kwargs) - {"owner", "group", "umask"}:
            raise TypeError(f"an abstract socket address takes no options, got {sorted(kwargs)}")
        if not name.startswith("@"):
            raise ValueError(f"an abstract socket name starts with '@', got {name!r}")
        self.name = name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"UnixAbstractAddress({self.name!r})"

    def socket_address(self) -> str:
        return self.name.replace("@", "\0")


class UnixDomainSocketAddress(_UnixAddress):
    """A Unix socket file; optional owner/group (names or ids) and umask for the bind."""

    def __init__(
        self, filename: str, owner: str | int | None = None, group: str | int | None = None,
        umask: int | None = None,
    ) -> None:  # fmt: skip
        if umask is not None and (not isinstance(umask, int) or not 0 <= umask <= 0o777):
            raise ValueError(f"umask must be an int in 0..0o777, got {umask!r}")
        self.filename = filename
        self.owner = owner
        self.group = group
        self.umask = umask

    def __repr__(self) -> str:
        return f"UnixDomainSocketAddress({self.filename!r})"

    def __str__(self) -> str:
        try:
            info = os.stat(self.filename)
        except OSError:
            return self.filename
        mode = stat.filemode(info.st_mode)[1:]
        return f"{self.filename} ({mode} {_user_name(info.st_uid)} {_group_name(info.st_gid)})"

    def socket_address(self) -> str:
        return self.filename

    def bind_socket(self, sock: socket.socket) -> None:
        """Bind under ``umask`` (always restored), replacing a stale socket file; then chown."""
        try:
            self._bind_with_umask(sock)
        except OSError as error:
            if error.errno != errno.EADDRINUSE or not self._is_stale():
                raise
            os.unlink(self.filename)
            self._bind_with_umask(sock)
        if self.owner is not None or self.group is not None:
            os.chown(self.filename, _user_id(self.owner), _group_id(self.group))

    def _bind_with_umask(self, sock: socket.socket) -> None:
        if self.umask is None:
            sock.bind(self.filename)
            return
        previous = os.umask(self.umask)
        try:
            sock.bind(self.filename)
        finally:
            os.umask(previous)

    def _is_stale(self) -> bool:
        """True when the path is an empty file that no server answers on."""
        try:
            if os.stat(self.filename).st_size != 0:
                return False
        except OSError:
            return False
        probe = self.get_connected_socket(timeout_s=TIMEOUT)
        if probe is None:
            return True
        probe.close()
        return False

    def close(self, sock: socket.socket) -> None:
        sock.close()
        try:
            if stat.S_ISSOCK(os.stat(self.filename).st_mode):
                os.unlink(self.filename)
        except FileNotFoundError:
            pass


def _user_id(owner: str | int | None) -> int:
    if owner is None:
        return -1
    if isinstance(owner, int) or owner.isdigit():
        return int(owner)
    import pwd

    return pwd.getpwnam(owner).pw_uid


def _group_id(group: str | int | None) -> int:
    if group is None:
        return -1
    if isinstance(group, int) or group.isdigit():
        return int(group)
    import grp

    return grp.getgrnam(group).gr_gid


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return str(gid)
