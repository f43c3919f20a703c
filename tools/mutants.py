"""Deliberate bugs the stateful suite must catch, and a runner that shows it does.

Owns the mutant list and the loop that, for each mutant, copies the project
(durus/, spec/, tests/) into a temporary directory, applies the mutant's
textual patch to the copy of durus, runs the stateful suite there (the copy
comes first on the path, also for the server subprocess) and records whether
the suite failed ("killed") or passed ("SURVIVED"). Prints a table; exits 1 if
any mutant survived or a patch no longer applies.

Never touches the working tree: every edit happens in the temporary copy. A
patch is a list of (old, new) snippets, each of which must occur exactly once
in its file; when the code under it changes, the tool says so instead of
silently testing nothing.

Usage: python3 tools/mutants.py [--only NAME ...] [--timeout-s N] [--list]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = [
    "tests/stateful/test_clients_vs_spec.py",
    "tests/stateful/test_bank.py",
]
# The xfail tests (known bugs) stay out: a mutant must be caught by passing tests.
SELECT = "not after_pack and not direct_file"
DEFAULT_TIMEOUT_S = 900


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    path: str  # relative to the project root
    edits: tuple[tuple[str, str], ...]
    every: bool = False  # the snippet stands in several code paths: patch each one


MUTANTS = [
    Mutant(
        "no-conflict-check",
        "the connection never finds an accessed object stale (no read-set check)",
        "durus/connection.py",
        (("                conflicts.append(oid)\n", "                pass\n"),),
    ),
    Mutant(
        "changed-not-accessed",
        "an object changed but not read is ghosted by the invalidation handler (lost write)",
        "durus/connection.py",
        ((" or oid in self.changed:", ":"),),
    ),
    Mutant(
        "no-write-conflict",
        "commit ignores conflicts found in its invalidation list (reads still checked)",
        "durus/connection.py",
        (("raise WriteConflictError(conflicts)", "return"),),
    ),
    Mutant(
        "sync-keeps-invalidated",
        "abort/sync forgets to ghost the invalidated objects",
        "durus/connection.py",
        (
            (
                "        for oid in oids:\n            obj = self.cache.get(oid)\n"
                "            if obj is not None:\n                obj._p_set_status_ghost()",
                "        for oid in oids:\n            obj = self.cache.get(oid)\n"
                "            if obj is not None:\n                pass",
            ),
        ),
    ),
    Mutant(
        "handler-keeps-invalidated",
        "the invalidation handler does not ghost objects not accessed",
        "durus/connection.py",
        (
            (
                "                conflicts.append(oid)\n            else:\n"
                "                obj._p_set_status_ghost()",
                "                conflicts.append(oid)\n            else:\n                pass",
            ),
        ),
    ),
    Mutant(
        "no-still-conflicted-guard",
        "commit() with changes goes ahead although a conflict was not aborted",
        "durus/connection.py",
        (
            (
                "            if self.invalid_oids:\n                raise StillConflictedError()",
                "            pass",
            ),
        ),
    ),
    Mutant(
        "abort-keeps-changes",
        "abort() does not ghost the changed objects (uncommitted state survives)",
        "durus/connection.py",
        (
            (
                "        for obj in self.changed.values():\n            obj._p_set_status_ghost()",
                "        for obj in self.changed.values():\n            pass",
            ),
        ),
    ),
    Mutant(
        "ghost-keeps-stale-state",
        "ghosting keeps the state, and a ghost that still has state is used without a load",
        "durus/persistent.py",
        (
            (
                "    def _p_set_status_ghost(self) -> None:\n        self.__setstate__({})",
                "    def _p_set_status_ghost(self) -> None:\n        pass",
            ),
            (
                "            if self._p_status == GHOST:\n                self._p_load_state()\n",
                "            if self._p_status == GHOST and _getattribute(self, '__dict__'):\n"
                "                _status_set(self, SAVED)  # stale state used without a load\n"
                "            elif self._p_status == GHOST:\n"
                "                self._p_load_state()\n",
            ),
        ),
    ),
    Mutant(
        "server-forgets-invalidations",
        "the server does not add committed oids to the other clients' invalid sets",
        "durus/server_core.py",
        (("other.invalid.update(oids)", "pass"),),
        every=True,  # immediate commits and group commits
    ),
    Mutant(
        "server-load-ignores-invalid",
        "the server serves a load of an oid that is invalid for the client",
        "durus/server_core.py",
        (("        if oid in client.invalid:\n            return STATUS_INVALID", ""),),
    ),
    Mutant(
        "server-sends-no-list",
        "the server clears a client's invalid set without sending it",
        "durus/server_core.py",
        (("oids = sorted(client.invalid)", "oids: list[bytes] = []"),),
    ),
    Mutant(
        "server-write-set-only",
        "the server checks a commit only against its write set (a commit landing inside "
        "another's exchange is not noticed)",
        "durus/server_core.py",
        (
            (
                "return bool(client.invalid) or others_landed or",
                "return not client.invalid.isdisjoint(oids) or",
            ),
        ),
    ),
    Mutant(
        "partial-transaction",
        "the server writes only the first record of each transaction",
        "durus/server_core.py",
        (("for oid, record in data.items:", "for oid, record in data.items[:1]:"),),
        every=True,  # immediate commits and group commits
    ),
    Mutant(
        "oid-reuse",
        "the client puts a committed transaction's new oids back in its pool (collisions)",
        "durus/client_storage.py",
        (
            (
                "        assert status.status == STATUS_OKAY\n        self.records = {}\n"
                "        self.transaction_new_oids = []",
                "        assert status.status == STATUS_OKAY\n        self.records = {}\n"
                "        self._return_new_oids()",
            ),
        ),
    ),
    Mutant(
        "pack-drops-reachable",
        "the pack does not follow the first reference of each record",
        "durus/file_storage.py",
        (
            (
                "for ref in split_oids(unpack_record(record)[2]):",
                "for ref in split_oids(unpack_record(record)[2])[1:]:",
            ),
        ),
    ),
    Mutant(
        "pack-loses-concurrent-commits",
        "records committed while a pack runs are not carried into the packed file",
        "durus/file_storage.py",
        (("extra = self.pack_extra or set()", "extra: set[bytes] = set()"),),
    ),
    Mutant(
        "pack-unreported",
        "a pack does not report the oids it removed",
        "durus/file_storage.py",
        (
            (
                "self.invalid.update(oid for oid in removed if oid not in new_shelf)",
                "pass",
            ),
        ),
    ),
]


def make_copy(destination: Path) -> None:
    """The parts of the project the suite needs, under ``destination``."""
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", "*.pyc")
    for name in ("durus", "spec", "tests"):
        shutil.copytree(ROOT / name, destination / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", destination / "pyproject.toml")


def apply(mutant: Mutant, root: Path) -> str | None:
    """Patch the copy; the reason it cannot be applied, or None."""
    target = root / mutant.path
    text = target.read_text()
    for old, new in mutant.edits:
        count = text.count(old)
        if count == 0 or (count > 1 and not mutant.every):
            return f"snippet found {count} times in {mutant.path}: {old.splitlines()[0]!r}"
        text = text.replace(old, new)
    target.write_text(text)
    return None


def run_suite(root: Path, timeout_s: float) -> tuple[str, str]:
    """(verdict, detail) of the stateful suite run in ``root``."""
    env = dict(os.environ, PYTHONPATH=str(root), DURUS_SPEC_NO_SHRINK="1")
    env.pop("HYPOTHESIS_PROFILE", None)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    command += ["-k", SELECT, *SUITE]
    try:
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return "timeout", f"no verdict in {timeout_s:.0f} s"
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    if done.returncode == 1:
        return "killed", failed[0][len("FAILED ") :][:90] if failed else "tests failed"
    if done.returncode == 0:
        return "SURVIVED", "the suite passed"
    return "error", f"pytest exit status {done.returncode}: {done.stdout[-200:]!r}"


def run_one(mutant: Mutant | None, timeout_s: float) -> tuple[str, str, float]:
    """Copy, patch (unless ``mutant`` is None: the baseline), run; (verdict, detail, seconds)."""
    start_s = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="durus-mutant-") as directory:
        root = Path(directory)
        make_copy(root)
        problem = apply(mutant, root) if mutant is not None else None
        if problem is not None:
            return "stale-patch", problem, time.monotonic() - start_s
        verdict, detail = run_suite(root, timeout_s)
    return verdict, detail, time.monotonic() - start_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="mutant names to run")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    options = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if options.only is None or m.name in options.only]
    if options.list:
        for mutant in MUTANTS:
            print(f"{mutant.name:30} {mutant.path:26} {mutant.what}")
        return 0
    if not options.no_baseline:
        verdict, detail, seconds = run_one(None, options.timeout_s)
        print(f"baseline (no mutant): {verdict} in {seconds:.0f} s ({detail})", flush=True)
        if verdict != "SURVIVED":
            print("the unmutated suite must pass before mutants mean anything")
            return 1
    rows = []
    for mutant in chosen:
        verdict, detail, seconds = run_one(mutant, options.timeout_s)
        rows.append((mutant, verdict, detail, seconds))
        print(f"  {mutant.name}: {verdict} ({seconds:.0f} s)", flush=True)
    print()
    print(f"| {'mutant':30} | {'file':24} | {'verdict':11} | {'s':>4} | caught by |")
    print(f"|{'-' * 32}|{'-' * 26}|{'-' * 13}|{'-' * 6}|-----------|")
    for mutant, verdict, detail, seconds in rows:
        print(f"| {mutant.name:30} | {mutant.path:24} | {verdict:11} | {seconds:4.0f} | {detail} |")
    bad = [row for row in rows if row[1] != "killed"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} mutants killed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
