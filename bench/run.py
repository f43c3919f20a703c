"""Side-by-side benchmarks: this package, Durus 4.3 and ZODB, in alternating runs.

Each workload runs in a fresh process of the implementation's own interpreter
(this package: the current interpreter; peers: venvs under bench/venvs made by
``nox -s bench``). Rounds rotate the order of the implementations so that
machine noise spreads evenly. Prints medians per implementation and the ratio of
this package to the best peer, written so that above 1.0 means this package is
better (faster, or smaller for time and memory figures). Not a test: nothing here
asserts a timing.

The server rows (``server_N``, ``server_nofsync_N``: N writer processes and one
reader against one server for ``--seconds``) come from server_bench.measure, the
same code that ``bench/server_bench.py`` runs on its own; there the ZODB column
is ZEO (runzeo on a FileStorage).

    python bench/run.py [--scale 1.0] [--rounds 3] [--only insert,open,server]
                        [--seconds 2] [--clients 1,4,8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import server_bench  # noqa: E402

VENVS = BENCH / "venvs"
RESULTS = BENCH / "results"
WORKER_TIMEOUT_S = 1800

IMPLEMENTATIONS = {
    "ours": ([sys.executable, "-P"], "worker_durus.py"),
    "durus43": ([str(VENVS / "peer-durus43" / "bin" / "python"), "-P"], "worker_durus.py"),
    "zodb": ([str(VENVS / "peer-zodb" / "bin" / "python"), "-P"], "worker_zodb.py"),
}
# workload -> implementations that run it (Durus 4.3 cannot fsync; ZODB always does).
WORKLOADS = {
    "insert": ("ours", "durus43", "zodb"),
    "open": ("ours", "durus43", "zodb"),
    "cold_read": ("ours", "durus43", "zodb"),
    "warm": ("ours", "durus43", "zodb"),
    "commits_fsync": ("ours", "zodb"),
    "commits_nofsync": ("ours", "durus43"),
    "pack": ("ours", "durus43", "zodb"),
}
NEEDS_FILE = {"open", "cold_read", "warm"}
# server workload -> {implementation column: server_bench configuration}
SERVER_WORKLOADS = {
    "server": {"ours": "ours-fsync", "durus43": "durus43", "zodb": "zeo"},
    "server_nofsync": {"ours": "ours-nofsync", "durus43": "durus43"},
}
SERVER_METRICS = ("commits_per_s", "read_p50_ms", "read_p99_ms")
# metric -> True when higher is better
METRICS = {
    "insert_objects_per_s": True,
    "open_s": False,
    "cold_read_objects_per_s": True,
    "warm_vs_plain": True,
    "touch_once_us": False,
    "small_commits_per_s": True,
    "pack_s": False,
    "commits_per_s": True,
    "read_p50_ms": False,
    "read_p99_ms": False,
    "peak_rss_kb": False,
}


def run_worker(implementation: str, workload: str, directory: str, objects: int) -> dict:
    command, script = IMPLEMENTATIONS[implementation]
    completed = subprocess.run(
        [*command, str(BENCH / script), workload, directory, str(objects)],
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
        cwd=directory,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{implementation} {workload} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def one_round(order: list[str], workloads: list[str], objects: int) -> dict:
    """{(workload, implementation): result} for one pass over every implementation.

    The insert run builds the file that open, cold_read and warm then read in fresh
    processes; the other workloads build their own files in their own directories.
    """
    results: dict = {}
    wanted_file = any(w in NEEDS_FILE or w == "insert" for w in workloads)
    for implementation in order:
        with tempfile.TemporaryDirectory(prefix=f"bench-{implementation}-") as shared:
            if wanted_file:
                inserted = run_worker(implementation, "insert", shared, objects)
                if "insert" in workloads:
                    results[("insert", implementation)] = inserted
            for workload in workloads:
                if workload == "insert" or implementation not in WORKLOADS[workload]:
                    continue
                if workload in NEEDS_FILE:
                    results[(workload, implementation)] = run_worker(
                        implementation, workload, shared, objects
                    )
                    continue
                with tempfile.TemporaryDirectory() as own:
                    results[(workload, implementation)] = run_worker(
                        implementation, workload, own, objects
                    )
        print(f"  {implementation}: done", file=sys.stderr)
    return results


def server_round(
    order: list[str], workloads: list[str], clients: list[int], seconds: float
) -> dict:
    """{("server_N", implementation): figures} for one pass over every server configuration.

    A configuration shared by two workloads (Durus 4.3's server) runs once per client count.
    """
    assert set(workloads) <= set(SERVER_WORKLOADS), workloads
    results: dict = {}
    for count in clients:
        places: dict[str, list[tuple[str, str]]] = {}  # configuration -> its table cells
        for implementation in order:
            for workload in workloads:
                config = SERVER_WORKLOADS[workload].get(implementation)
                if config is not None:
                    places.setdefault(config, []).append((f"{workload}_{count}", implementation))
        for config, cells in places.items():
            figures = server_bench.measure(config, count, seconds)
            kept = {
                metric: figures[metric] for metric in SERVER_METRICS if figures[metric] is not None
            }
            results.update(dict.fromkeys(cells, kept))
        print(f"  server, {count} clients: done", file=sys.stderr)
    assert all(workload.rsplit("_", 1)[0] in workloads for workload, _ in results)
    return results


def medians(rounds: list[dict]) -> dict:
    """{(workload, implementation, metric): median over rounds}."""
    samples: dict = {}
    for results in rounds:
        for (workload, implementation), figures in results.items():
            for metric, value in figures.items():
                samples.setdefault((workload, implementation, metric), []).append(value)
    return {key: statistics.median(values) for key, values in samples.items()}


def ratio(ours: float, peers: list[float], higher_is_better: bool) -> float | None:
    if not peers or not ours:
        return None
    best = max(peers) if higher_is_better else min(peers)
    return ours / best if higher_is_better else best / ours


def table(median: dict, workloads: list[str]) -> list[dict]:
    rows = []
    for workload in workloads:
        for metric, higher in METRICS.items():
            values = {impl: median.get((workload, impl, metric)) for impl in IMPLEMENTATIONS}
            if values["ours"] is None:
                continue
            if metric == "peak_rss_kb" and workload not in ("insert", "cold_read"):
                continue
            peers = [v for impl, v in values.items() if impl != "ours" and v is not None]
            rows.append(
                {
                    "workload": workload,
                    "metric": metric,
                    **values,
                    "ratio": ratio(values["ours"], peers, higher),
                }
            )
    return rows


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'workload':<16} {'metric':<24} {'ours':>12} {'durus43':>12} {'zodb':>12} {'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['workload']:<16} {row['metric']:<24} {fmt(row['ours']):>12} "
            f"{fmt(row['durus43']):>12} {fmt(row['zodb']):>12} {fmt(row['ratio']):>7}"
        )
    print(
        "ratio: ours against the best peer, above 1 = ours better "
        "(for s, ms, us and kB: best peer / ours)."
    )
    for line in footnotes({row["workload"] for row in rows}):
        print(line)


def footnotes(workloads: set[str]) -> list[str]:
    """What the table's rows mean and who fsyncs, for the workloads in the table."""
    lines = []
    if workloads & {"commits_fsync", "commits_nofsync"}:
        lines.append(
            "fsync: ours commits_fsync fsyncs every commit; Durus 4.3 never fsyncs commits; "
            "ZODB fsyncs every commit."
        )
    if any(workload.startswith("server") for workload in workloads):
        lines += [
            "server_N: N writer processes (each commits changes to its own object) and one",
            "  reader (sync, then load of a hot object, every 2 ms) against one server;",
            "  the zodb column is ZEO (runzeo, FileStorage).",
            "fsync: ours fsyncs every group commit in server_N and never in server_nofsync_N;",
            "  Durus 4.3's server never fsyncs; ZEO's FileStorage fsyncs every transaction.",
        ]
    return lines


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 100k objects")
    parser.add_argument("--rounds", type=int, default=3)
    known = [*WORKLOADS, *SERVER_WORKLOADS]
    parser.add_argument("--only", default="", help=f"comma-separated, of {', '.join(known)}")
    parser.add_argument("--seconds", type=float, default=2.0, help="per server run")
    parser.add_argument("--clients", default="1,4,8", help="writer processes per server run")
    parser.add_argument(
        "--results", type=Path, default=RESULTS / "latest.json", help="where the JSON goes"
    )
    args = parser.parse_args()
    args.only = [name for name in args.only.split(",") if name] or known
    unknown = sorted(set(args.only) - set(known))
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; known: {known}")
    try:
        args.clients = [int(count) for count in args.clients.split(",")]
    except ValueError:
        parser.error(f"--clients takes comma-separated integers, not {args.clients!r}")
    if not (args.rounds >= 1 and args.seconds > 0 and args.scale > 0):
        parser.error("--rounds, --seconds and --scale must be positive")
    if not all(0 < count <= server_bench.MAX_CLIENTS for count in args.clients):
        parser.error(f"--clients must be 1..{server_bench.MAX_CLIENTS}")
    return args


def main() -> None:
    args = parse_arguments()
    objects = max(1000, int(100_000 * args.scale))
    workloads = [w for w in WORKLOADS if w in args.only]
    servers = [w for w in SERVER_WORKLOADS if w in args.only]
    missing = server_bench.missing_peers([c for w in servers for c in SERVER_WORKLOADS[w].values()])
    if missing:
        raise SystemExit(f"missing peer interpreter(s) {missing} (nox -s bench makes them)")
    order = list(IMPLEMENTATIONS)
    rounds = []
    for number in range(args.rounds):
        print(f"round {number + 1}/{args.rounds}, order {order}", file=sys.stderr)
        results = one_round(order, workloads, objects) if workloads else {}
        results.update(server_round(order, servers, args.clients, args.seconds))
        rounds.append(results)
        order = order[1:] + order[:1]
    row_workloads = [*workloads, *(f"{w}_{n}" for w in servers for n in args.clients)]
    rows = table(medians(rounds), row_workloads)
    sizes = [f"{objects:,} objects"] if workloads else []
    sizes += [f"server runs of {args.seconds:g} s"] if servers else []
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {', '.join(sizes)}, {args.rounds} rounds"
    )
    print_table(rows)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "objects": objects,
                "rounds": args.rounds,
                "server_seconds": args.seconds if servers else None,
                "server_clients": args.clients if servers else [],
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
