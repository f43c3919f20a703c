"""Side-by-side benchmarks: this package, Durus 4.3 and ZODB, in alternating runs.

Each workload runs in a fresh process of the implementation's own interpreter
(this package: the current interpreter; peers: venvs under bench/venvs made by
``nox -s bench``). Rounds rotate the order of the implementations so that
machine noise spreads evenly. Prints medians per implementation and the ratio of
this package to the best peer, written so that above 1.0 means this package is
better (faster, or smaller for time and memory figures). Not a test: nothing here
asserts a timing.

    python bench/run.py [--scale 1.0] [--rounds 3] [--only insert,open]
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
# metric -> True when higher is better
METRICS = {
    "insert_objects_per_s": True,
    "open_s": False,
    "cold_read_objects_per_s": True,
    "warm_vs_plain": True,
    "touch_once_us": False,
    "small_commits_per_s": True,
    "pack_s": False,
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
        "(for s, us and kB: best peer / ours)."
    )
    print(
        "fsync: ours commits_fsync fsyncs every commit; Durus 4.3 never fsyncs commits; "
        "ZODB fsyncs every commit."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 100k objects")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated workloads")
    args = parser.parse_args()
    objects = max(1000, int(100_000 * args.scale))
    workloads = [w for w in WORKLOADS if not args.only or w in args.only.split(",")]
    order = list(IMPLEMENTATIONS)
    rounds = []
    for number in range(args.rounds):
        print(f"round {number + 1}/{args.rounds}, order {order}", file=sys.stderr)
        rounds.append(one_round(order, workloads, objects))
        order = order[1:] + order[:1]
    rows = table(medians(rounds), workloads)
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {objects:,} objects, {args.rounds} rounds"
    )
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "objects": objects,
                "rounds": args.rounds,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
