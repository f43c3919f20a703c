"""durus.socket_address: parsing addresses, binding, stale sockets, umask/owner/group."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import tempfile
from collections.abc import Iterator

import pytest

from durus.socket_address import (
    LISTEN_BACKLOG,
    AddressTypeError,
    HostPortAddress,
    SocketAddress,
    UnixAbstractAddress,
    UnixDomainSocketAddress,
)


@pytest.fixture
def directory() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as name:
        yield name


def test_new_builds_the_right_class() -> None:
    tcp = SocketAddress.new(("127.0.0.1", 2972))
    assert isinstance(tcp, HostPortAddress) and str(tcp) == "127.0.0.1:2972"
    assert tcp.get_address_family() == socket.AF_INET
    v6 = SocketAddress.new(("::1", 80))
    assert str(v6) == "[::1]:80" and v6.get_address_family() == socket.AF_INET6
    assert SocketAddress.new(tcp) is tcp
    unix = SocketAddress.new("/tmp/no-such-durus.sock", umask=0o077)
    assert isinstance(unix, UnixDomainSocketAddress) and unix.umask == 0o077
    abstract = SocketAddress.new("@durus@test")
    assert isinstance(abstract, UnixAbstractAddress) and str(abstract) == "@durus@test"
    assert abstract.socket_address() == "\0durus\0test"  # every '@' becomes NUL


def test_bad_addresses() -> None:
    with pytest.raises(AttributeError):
        SocketAddress.new(2972)
    with pytest.raises(AddressTypeError):
        SocketAddress.new(b"/path")
    with pytest.raises(TypeError):
        UnixAbstractAddress("@x", owner="root")
    assert str(UnixAbstractAddress("@x", owner=None, group=None, umask=None)) == "@x"
    with pytest.raises(ValueError):
        HostPortAddress("127.0.0.1", 70000)
    with pytest.raises(ValueError):
        UnixDomainSocketAddress("/x", umask=0o1000)


def test_tcp_listen_and_connect() -> None:
    address = HostPortAddress("127.0.0.1", 0)
    listener = address.get_listening_socket()
    try:
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        port = listener.getsockname()[1]
        client = HostPortAddress("127.0.0.1", port).get_connected_socket(timeout_s=5)
        assert client is not None
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert client.gettimeout() is None
        client.close()
    finally:
        listener.close()
    assert LISTEN_BACKLOG == 40


def test_connected_socket_is_none_when_nobody_listens(directory: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert HostPortAddress("127.0.0.1", port).get_connected_socket() is None
    assert UnixDomainSocketAddress(os.path.join(directory, "none")).get_connected_socket() is None
    assert UnixAbstractAddress(f"@durus-none-{os.getpid()}").get_connected_socket() is None


def test_unix_socket_umask_is_applied_and_restored(directory: str) -> None:
    path = os.path.join(directory, "s.sock")
    before = os.umask(0o022)
    try:
        address = UnixDomainSocketAddress(path, umask=0o077)
        listener = address.get_listening_socket()
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
        assert os.umask(0o022) == 0o022
        assert "rwx------" in str(address)
        address.close(listener)
        assert not os.path.exists(path)
        failing = UnixDomainSocketAddress(os.path.join(directory, "no", "dir.sock"), umask=0o077)
        with pytest.raises(OSError):
            failing.get_listening_socket()
        assert os.umask(0o022) == 0o022  # wart 11: restored after a failed bind too
    finally:
        os.umask(before)


def test_unix_socket_owner_and_group_by_name(directory: str) -> None:
    path = os.path.join(directory, "s.sock")
    owner = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    address = UnixDomainSocketAddress(path, owner=owner, group=group)
    listener = address.get_listening_socket()
    try:
        info = os.stat(path)
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
        assert str(address).endswith(f" {owner} {group})")
    finally:
        address.close(listener)


def test_stale_socket_file_is_replaced_but_a_live_one_is_not(directory: str) -> None:
    path = os.path.join(directory, "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: as after kill -9
    address = UnixDomainSocketAddress(path)
    listener = address.get_listening_socket()
    try:
        with pytest.raises(OSError) as in_use:
            UnixDomainSocketAddress(path).get_listening_socket()
        assert in_use.value.errno == errno.EADDRINUSE
    finally:
        address.close(listener)


def test_abstract_listen_and_connect() -> None:
    address = UnixAbstractAddress(f"@durus-test-{os.getpid()}")
    listener = address.get_listening_socket()
    try:
        client = address.get_connected_socket(timeout_s=5)
        assert client is not None
        client.close()
    finally:
        address.close(listener)


def test_ipv6_loopback_when_available() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        listener = HostPortAddress("::1", 0).get_listening_socket()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        port = listener.getsockname()[1]
        client = HostPortAddress("::1", port).get_connected_socket(timeout_s=5)
        assert client is not None and client.family == socket.AF_INET6
        client.close()
    finally:
        listener.close()
