"""Run a StorageServer for tests: ``python run_server.py --port N [options]``.

A stand-in for ``durus -s`` that depends only on durus.storage_server, so
server tests do not need the command line. Logs at DEBUG to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--address", default=None)
    parser.add_argument("--file", default=None, help="FileStorage path (default MemoryStorage)")
    parser.add_argument("--readonly", action="store_true")
    parser.add_argument("--gcbytes", type=int, default=0)
    parser.add_argument("--systemd-fd", type=int, default=None)
    parser.add_argument("--client-timeout", type=float, default=None)
    parser.add_argument("--max-message-bytes", type=int, default=None)
    parser.add_argument("--max-commit-records", type=int, default=None)
    parser.add_argument("--log-level", type=int, default=logging.DEBUG)
    options = parser.parse_args()

    logging.basicConfig(stream=sys.stdout, level=options.log_level, format="%(message)s")
    from durus.storage_server import StorageServer

    if options.systemd_fd is not None:
        os.dup2(options.systemd_fd, 3)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = "1"
    if options.file:
        from durus.file_storage import FileStorage

        storage = FileStorage(options.file, readonly=options.readonly)
    else:
        from durus.storage import MemoryStorage

        storage = MemoryStorage()
    address = options.address if options.address else ("127.0.0.1", options.port)
    settings: dict = {}
    if options.client_timeout is not None:
        settings["client_timeout_s"] = options.client_timeout
    for name in ("max_message_bytes", "max_commit_records"):
        if getattr(options, name) is not None:
            settings[name] = getattr(options, name)
    server = StorageServer(storage, address=address, gcbytes=options.gcbytes, **settings)
    server.serve_until_quit()


if __name__ == "__main__":
    main()
