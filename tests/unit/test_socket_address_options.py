"""SocketAddress edge cases: Unix socket owner/group/umask options, files in the way, cleanup.

A server must never delete or replace a file it did not create, must leave a
path alone when it is not a socket, and must report ownership it cannot name
by number. Everything runs in temporary directories.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

import pytest

from durus.socket_address import (
    TIMEOUT,
    HostPortAddress,
    SocketAddress,
    UnixAbstractAddress,
    UnixDomainSocketAddress,
)

is_root = os.geteuid() == 0
UNNAMED_ID = 54321  # no user or group has this id on a test machine


def test_address_reprs_and_bad_names() -> None:
    assert repr(HostPortAddress("::1", 9)) == "HostPortAddress('::1', 9)"
    assert str(HostPortAddress("::1", 9)) == "[::1]:9"
    assert repr(UnixAbstractAddress("@x")) == "UnixAbstractAddress('@x')"
    assert repr(UnixDomainSocketAddress("/tmp/s")) == "UnixDomainSocketAddress('/tmp/s')"
    with pytest.raises(ValueError, match="starts with '@'"):
        UnixAbstractAddress("name")
    with pytest.raises(NotImplementedError):
        SocketAddress().socket_address()


def test_connection_options_of_an_accepted_tcp_socket() -> None:
    address = HostPortAddress("127.0.0.1", 0)
    listener = address.get_listening_socket()
    try:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        accepted, _peer = listener.accept()
        address.set_connection_options(accepted)
        assert accepted.gettimeout() == TIMEOUT
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        accepted.close()
        client.close()
    finally:
        address.close(listener)


def test_a_connect_error_other_than_nobody_there_is_raised(tmp_path: Path) -> None:
    too_long = UnixDomainSocketAddress(str(tmp_path / ("x" * 200)))
    with pytest.raises(OSError, match="path too long"):
        too_long.get_connected_socket(timeout_s=1.0)


def test_a_regular_file_in_the_way_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    path.write_bytes(b"somebody's data")
    with pytest.raises(OSError) as raised:
        UnixDomainSocketAddress(str(path)).get_listening_socket()
    assert raised.value.errno == errno.EADDRINUSE
    assert path.read_bytes() == b"somebody's data"


def test_a_dangling_symlink_in_the_way_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    path.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OSError) as raised:
        UnixDomainSocketAddress(str(path)).get_listening_socket()
    assert raised.value.errno == errno.EADDRINUSE
    assert path.is_symlink() and not path.exists()
    assert str(UnixDomainSocketAddress(str(path))) == str(path)  # nothing to describe


def test_close_leaves_a_replaced_or_vanished_path_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    address = UnixDomainSocketAddress(str(path))
    listener = address.get_listening_socket()
    path.unlink()
    path.write_text("not a socket any more")
    address.close(listener)
    assert path.read_text() == "not a socket any more"
    path.unlink()
    again = address.get_listening_socket()
    path.unlink()
    address.close(again)  # already gone: no error
    assert not path.exists()


def test_owner_and_group_by_number_one_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    for options in (dict(owner=os.getuid()), dict(group=str(os.getgid()))):
        address = UnixDomainSocketAddress(str(path), **options)  # type: ignore[arg-type]
        listener = address.get_listening_socket()
        try:
            info = os.stat(path)
            assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
            assert stat.S_ISSOCK(info.st_mode)
        finally:
            address.close(listener)
        assert not path.exists()


@pytest.mark.skipif(not is_root, reason="only root may give a file to another owner")
def test_ownership_without_a_name_is_shown_by_number(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    address = UnixDomainSocketAddress(str(path), owner=str(UNNAMED_ID), group=UNNAMED_ID)
    listener = address.get_listening_socket()
    try:
        assert str(address).endswith(f" {UNNAMED_ID} {UNNAMED_ID})")
    finally:
        address.close(listener)


def test_umask_must_be_a_permission_mask(tmp_path: Path) -> None:
    for bad in (-1, 0o1000, "022"):
        with pytest.raises(ValueError, match="umask must be an int in 0..0o777"):
            UnixDomainSocketAddress(str(tmp_path / "s.sock"), umask=bad)  # type: ignore[arg-type]
