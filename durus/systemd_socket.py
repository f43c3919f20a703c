"""systemd socket activation: find the listening socket systemd passed to this process.

Owns reading ``LISTEN_PID``/``LISTEN_FDS`` (sd_listen_fds(3)). It only looks
at the environment and wraps file descriptor 3; it never binds, accepts or
closes anything, and the server decides what to do with the socket.
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def sd_listen_fds(unset_environment: bool = False) -> int:
    """How many sockets systemd passed to this process (0 when none or not for us)."""
    try:
        listen_pid = int(os.environ.get("LISTEN_PID", ""))
        count = int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        count = 0
    else:
        if listen_pid != os.getpid() or count < 0:
            count = 0
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    assert count >= 0
    return count


def get_systemd_socket() -> socket.socket | None:
    """The socket systemd passed (fd 3), or None; OSError when it passed more than one."""
    count = sd_listen_fds()
    if count == 0:
        return None
    if count > 1:
        raise OSError(f"systemd passed {count} sockets; exactly one is supported")
    return socket.socket(fileno=SD_LISTEN_FDS_START)
