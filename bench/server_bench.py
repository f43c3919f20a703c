"""Server throughput: small commits per second from 1, 4 and 8 client processes.

Compares this package's StorageServer on a FileStorage with fsync on (durable,
group commit) and off, with Durus 4.3's server (``durus -s``, never fsyncs) and
with ZEO's server (``runzeo`` on ZODB's FileStorage, one fsync per transaction),
each with its own clients (peers' clients and servers run under their venvs'
interpreters, from a working directory outside the repository, with ``-P``, so
they never import this package). Every writer process changes its own
persistent mapping in a loop for a fixed time; one reader process meanwhile
syncs and loads one hot object (writer 0's) every 2 ms and reports the latency
of that round trip. Prints a table; not a test, nothing here asserts a timing.
bench/run.py calls ``measure`` to put the same figures in its table.

    python bench/server_bench.py [--seconds 3] [--clients 1,4,8] [--only ours-fsync,...]

The same file is the worker for Durus clients and our server:
``--role writer|reader|setup|server-ours``; worker_zeo.py holds the ZEO clients.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PEER_PYTHON = BENCH / "venvs" / "peer-durus43" / "bin" / "python"
ZODB_PYTHON = BENCH / "venvs" / "peer-zodb" / "bin" / "python"
PEER_PYTHONS = {"durus43": PEER_PYTHON, "zeo": ZODB_PYTHON}  # kind -> its venv's interpreter
START_DELAY_S = 1.5  # time for every worker to start and connect before the common start
READ_PAUSE_S = 0.002
WAIT_S = 30.0

CONFIGS = {
    # name: (server, client interpreter)
    "ours-fsync": ("ours-fsync", "ours"),
    "ours-nofsync": ("ours-nofsync", "ours"),
    "ours-fsync-inline": ("ours-fsync-inline", "ours"),  # group writes in the loop thread
    "durus43": ("durus43", "durus43"),
    "ours-fsync/43-clients": ("ours-fsync", "durus43"),
    "ours-nofsync/43-clients": ("ours-nofsync", "durus43"),
    "durus43/our-clients": ("durus43", "ours"),
    "zeo": ("zeo", "zeo"),  # ZEO's runzeo on a FileStorage, ZODB clients
}
# which servers fsync every commit (or every group of commits)
FSYNCS = {
    "ours-fsync": True,
    "ours-nofsync": False,
    "ours-fsync-inline": True,
    "durus43": False,
    "zeo": True,
}
MAX_CLIENTS = 64


# ---------------------------------------------------------------- worker roles


def connect(port: int) -> object:
    from durus.client_storage import ClientStorage

    return ClientStorage(port=port)


def role_setup(port: int, writers: int) -> None:
    from durus.connection import Connection
    from durus.persistent_dict import PersistentDict

    connection = Connection(connect(port))
    root = connection.get_root()
    for i in range(writers):
        root[f"w{i}"] = PersistentDict(n=0)
    connection.commit()


def wait_until(start_s: float) -> None:
    while time.time() < start_s:
        time.sleep(0.001)


def role_writer(port: int, index: int, start_s: float, end_s: float) -> None:
    from durus.connection import Connection
    from durus.error import ConflictError

    connection = Connection(connect(port))
    counter = connection.get_root()[f"w{index}"]
    counter["n"]
    commits = conflicts = 0
    wait_until(start_s)
    while time.time() < end_s:
        counter["n"] = counter["n"] + 1
        try:
            connection.commit()
            commits += 1
        except ConflictError:
            connection.abort()
            conflicts += 1
    print(json.dumps({"commits": commits, "conflicts": conflicts, "n": counter["n"]}))


def role_reader(port: int, start_s: float, end_s: float) -> None:
    from durus.connection import Connection
    from durus.error import ReadConflictError

    storage = connect(port)
    hot_oid = Connection(storage).get_root()["w0"]._p_oid
    latencies_s = []
    wait_until(start_s)
    while time.time() < end_s:
        began = time.perf_counter()
        while True:  # a commit may land between the sync and the load: sync again
            storage.sync()  # type: ignore[attr-defined]
            try:
                storage.load(hot_oid)  # type: ignore[attr-defined]
                break
            except ReadConflictError:
                pass
        latencies_s.append(time.perf_counter() - began)
        time.sleep(READ_PAUSE_S)
    print(json.dumps({"latencies_s": latencies_s}))


def role_server_ours(path: str, port: int, kind: str) -> None:
    from durus.file_storage import FileStorage
    from durus.storage_server import StorageServer

    server = StorageServer(FileStorage(path, fsync=kind != "ours-nofsync"), port=port)
    if kind == "ours-fsync-inline":
        server.core.write_groups_in_background = False
    profile_path = os.environ.get("SERVER_BENCH_PROFILE")
    if profile_path:  # e.g. SERVER_BENCH_PROFILE=/tmp/server.prof, then pstats
        import cProfile

        cProfile.runctx("server.serve_until_quit()", globals(), locals(), profile_path)
    else:
        server.serve_until_quit()
    core = server.core
    print(json.dumps({"ends": core.groups_flushed, "commits": core.group_commits_flushed}))


# ---------------------------------------------------------------- driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def interpreter(kind: str) -> list[str]:
    """The interpreter for clients or server of ``kind``: ours, or a peer's venv."""
    python = PEER_PYTHONS.get(kind, Path(sys.executable))
    return [str(python), "-P"]


def worker(kind: str, *args: object) -> list[str]:
    script = BENCH / "worker_zeo.py" if kind == "zeo" else Path(__file__).resolve()
    return [*interpreter(kind), str(script), *map(str, args)]


def missing_peers(configs: list[str]) -> list[str]:
    """Peer interpreters that ``configs`` need and that are missing (nox -s bench makes them)."""
    needed = {kind for config in configs for kind in CONFIGS[config]} & set(PEER_PYTHONS)
    return sorted(str(PEER_PYTHONS[kind]) for kind in needed if not PEER_PYTHONS[kind].exists())


def server_command(kind: str, path: str, port: int) -> list[str]:
    if kind == "durus43":
        return [*interpreter(kind), "-m", "durus", "-s", "--file", path, "--port", str(port)]
    if kind == "zeo":
        return [*interpreter(kind), "-m", "ZEO.runzeo", "-a", f"127.0.0.1:{port}", "-f", path]
    return worker("ours", "--role", "server-ours", path, port, kind)


def start_server(kind: str, path: str, port: int, cwd: str) -> subprocess.Popen[bytes]:
    command = server_command(kind, path, port)
    log = open(os.path.join(cwd, "server.log"), "wb")  # noqa: SIM115
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=log)
    log.close()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{kind} server did not start")


def stop_server(kind: str, process: subprocess.Popen[bytes], port: int) -> dict:
    """Stops the server (Durus: the quit command; ZEO: SIGTERM); its counters, if it has any."""
    if kind == "zeo":
        process.terminate()
        process.communicate(timeout=WAIT_S)
        return {}
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(b"Q")
    out, _ = process.communicate(timeout=WAIT_S)
    lines = out.decode().strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def run_json(commands: list[list[str]], cwd: str) -> list[dict]:
    processes = [subprocess.Popen(c, cwd=cwd, stdout=subprocess.PIPE) for c in commands]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=WAIT_S * 4)
        if process.returncode != 0:
            raise RuntimeError(f"worker failed ({process.returncode}): {process.args!r}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


def percentile(values: list[float], fraction: float) -> float | None:
    """The value below which ``fraction`` of ``values`` lie; None when there are none."""
    assert 0.0 <= fraction <= 1.0, fraction
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else None


def milliseconds(value_s: float | None) -> float | None:
    return None if value_s is None else value_s * 1e3


def measure(config: str, writers: int, seconds: float, with_reader: bool = True) -> dict:
    """One run: ``writers`` writer processes (and a reader) against a fresh server for ``seconds``.

    Read latencies are None when the reader got no read through (a starved reader).
    """
    if config not in CONFIGS:
        raise ValueError(f"unknown configuration {config!r}; known: {sorted(CONFIGS)}")
    if not (0 < writers <= MAX_CLIENTS and seconds > 0):
        raise ValueError(f"need 1..{MAX_CLIENTS} writers and seconds > 0: {writers}, {seconds}")
    server_kind, client_kind = CONFIGS[config]
    cwd = tempfile.mkdtemp(prefix="server_bench_")  # outside the repository
    port = free_port()
    try:
        server = start_server(server_kind, os.path.join(cwd, "bench.durus"), port, cwd)
        try:
            subprocess.run(
                worker(client_kind, "--role", "setup", port, writers), cwd=cwd, check=True
            )
            start_s = time.time() + START_DELAY_S
            end_s = start_s + seconds
            commands = [
                worker(client_kind, "--role", "writer", port, i, start_s, end_s)
                for i in range(writers)
            ]
            if with_reader:
                commands.append(worker(client_kind, "--role", "reader", port, start_s, end_s))
            results = run_json(commands, cwd)
            written = results[:writers]
            read = results[writers] if with_reader else {"latencies_s": []}
        finally:
            groups = stop_server(server_kind, server, port)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    commits = sum(w["commits"] for w in written)
    latencies_s = read["latencies_s"]
    ends = groups.get("ends")
    figures = {
        "config": config,
        "clients": writers,
        "fsync": FSYNCS.get(server_kind),
        "commits_per_s": commits / seconds,
        "conflicts": sum(w["conflicts"] for w in written),
        "commits_per_end": (groups["commits"] / ends) if ends else None,
        "read_p50_ms": milliseconds(percentile(latencies_s, 0.50)),
        "read_p99_ms": milliseconds(percentile(latencies_s, 0.99)),
        "reads": len(latencies_s),
        "reads_per_s": len(latencies_s) / seconds,
    }
    assert figures["commits_per_s"] >= 0 and figures["reads"] >= 0
    return figures


def text(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[dict]) -> None:
    header = f"{'server/clients':<24}{'fsync':>6}{'clients':>8}{'commits/s':>11}{'commits/end':>13}"
    print(header + f"{'read p50 ms':>13}{'read p99 ms':>13}{'reads':>7}{'conflicts':>11}")
    for row in rows:
        print(
            f"{row['config']:<24}{'yes' if row['fsync'] else 'no':>6}{row['clients']:>8}"
            f"{row['commits_per_s']:>11.0f}{text(row['commits_per_end'], 1):>13}"
            f"{text(row['read_p50_ms'], 2):>13}{text(row['read_p99_ms'], 2):>13}"
            f"{row['reads']:>7}{row['conflicts']:>11}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--only", default="ours-fsync,ours-nofsync,durus43,zeo")
    parser.add_argument("--rounds", type=int, default=1, help="median of this many runs")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--no-reader", action="store_true", help="writers only")
    options = parser.parse_args()
    configs = options.only.split(",")
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration(s) {sorted(unknown)}; known: {sorted(CONFIGS)}")
    missing = missing_peers(configs)
    if missing:
        parser.error(f"missing peer interpreter(s) {missing} (nox -s bench makes them)")
    rows = []
    for writers in (int(n) for n in options.clients.split(",")):
        for config in configs:
            runs = [
                measure(config, writers, options.seconds, not options.no_reader)
                for _ in range(options.rounds)
            ]
            best = statistics.median_low([r["commits_per_s"] for r in runs])
            rows.append(next(r for r in runs if r["commits_per_s"] == best))
    print_table(rows)
    if options.json:
        Path(options.json).write_text(json.dumps(rows, indent=1))


def worker_main(argv: list[str]) -> None:
    role, *args = argv
    if role == "setup":
        role_setup(int(args[0]), int(args[1]))
    elif role == "writer":
        role_writer(int(args[0]), int(args[1]), float(args[2]), float(args[3]))
    elif role == "reader":
        role_reader(int(args[0]), float(args[1]), float(args[2]))
    elif role == "server-ours":
        role_server_ours(args[0], int(args[1]), args[2])
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--role"]:
        worker_main(sys.argv[2:])
    else:
        main()
