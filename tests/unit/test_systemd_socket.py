"""durus.systemd_socket: LISTEN_PID/LISTEN_FDS handling (fd 3 itself is tested end to end
in test_storage_server.py, in a subprocess)."""

from __future__ import annotations

import os

import pytest

from durus.systemd_socket import get_systemd_socket, sd_listen_fds


@pytest.mark.parametrize(
    "pid_offset, fds, expected",
    [(0, "1", 1), (0, "2", 2), (1, "1", 0), (0, "x", 0), (0, "-1", 0), (None, "1", 0)],
)
def test_sd_listen_fds(
    monkeypatch: pytest.MonkeyPatch, pid_offset: int | None, fds: str, expected: int
) -> None:
    if pid_offset is None:
        monkeypatch.delenv("LISTEN_PID", raising=False)
    else:
        monkeypatch.setenv("LISTEN_PID", str(os.getpid() + pid_offset))
    monkeypatch.setenv("LISTEN_FDS", fds)
    assert sd_listen_fds() == expected


def test_unset_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert sd_listen_fds(unset_environment=True) == 1
    assert "LISTEN_FDS" not in os.environ and sd_listen_fds() == 0


def test_get_systemd_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LISTEN_PID", raising=False)
    assert get_systemd_socket() is None
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "2")
    with pytest.raises(OSError, match="exactly one"):
        get_systemd_socket()
