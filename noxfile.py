"""nox sessions: tests (the CI run), stateful and crash (thorough profiles), and the gates:
lint, crosshair and coverage."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The default test run, as CI runs it (bounded Hypothesis profile, both cores)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-n", "2", *session.posargs)


@nox.session
def stateful(session: nox.Session) -> None:
    """The stateful machines with the stateful profile (1,000 examples each), two workers."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-q",
        "-n",
        "2",
        "tests/stateful",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "stateful"},
    )


@nox.session
def crash(session: nox.Session) -> None:
    """The crash and fault models with the thorough Hypothesis profile."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-q",
        "tests/crash",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "thorough"},
    )


LINT_PATHS = ("durus", "spec", "tests", "tools/contracts.py")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) on durus/, spec/, tests/; mypy on durus/ (pyproject.toml)."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)
    session.run("mypy", "durus")


# The peers' versions are pinned so that runs on different days compare the same code;
# ZEO 6.2 is the server release that goes with ZODB 6.4 (both tested together here).
PEER_VENVS = {
    "peer-durus43": ["Durus==4.3"],
    "peer-zodb": ["ZODB==6.4", "ZEO==6.2"],
}


def ensure_peer_venvs(session: nox.Session) -> None:
    """Make bench/venvs/<peer> with the pinned peer packages; never in our own venv.

    A venv is (re)filled when its record of installed pins (bench-pins.txt in the venv)
    differs from PEER_VENVS, so a pin added later reaches venvs made before it.
    """
    from pathlib import Path

    for name, packages in PEER_VENVS.items():
        venv = Path("bench", "venvs", name)
        python = venv / "bin" / "python"
        record = venv / "bench-pins.txt"
        wanted = "\n".join(packages) + "\n"
        if not python.exists():
            session.run("python", "-m", "venv", str(venv))
        if not record.exists() or record.read_text() != wanted:
            session.run(str(python), "-m", "pip", "install", "-q", *packages, external=True)
            record.write_text(wanted)


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks against Durus 4.3 and ZODB (figures, no asserts)."""
    session.install("-e", ".")
    ensure_peer_venvs(session)
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def compat(session: nox.Session) -> None:
    """Interop with Durus 4.3 (files, wire, demo); the peer lives in .venv-compat/durus43."""
    session.install("-e", ".[test]")
    session.run(
        "python",
        "-c",
        "from tests.compat.peer_venv import ensure_peer_venv; print(ensure_peer_venv())",
    )
    session.run("pytest", "-q", "-rxXs", "tests/compat", *session.posargs)


FUZZ_TARGETS = ("tests/fuzz/fuzz_protocol.py", "tests/fuzz/fuzz_server_core.py")


@nox.session
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing (atheris) of the protocol decoders and the server core.

    Not in the default run. Each target runs FUZZ_SECONDS (default 60) seconds;
    arguments after ``--`` go to libFuzzer. The socket-level fuzz test runs too.
    """
    import os

    session.install("-e", ".[test]", "atheris")
    seconds = os.environ.get("FUZZ_SECONDS", "60")
    for target in FUZZ_TARGETS:
        session.run(
            "python", target, f"-max_total_time={seconds}", "-rss_limit_mb=2048", *session.posargs
        )
    session.run(
        "pytest", "-q", "tests/unit/test_server_fuzz.py", env={"DURUS_FUZZ_MESSAGES": "100000"}
    )


# What states PEP 316 contracts: three modules' own docstrings, and the wrappers in
# tools/contracts.py around the pure parts of durus.protocol, durus.shelf and spec/.
# Left out: tools.contracts.decode_requests/decode_replies (CrossHair's stand-in for
# bytearray is refused by struct.unpack_from, a false alarm); Hypothesis runs them.
CROSSHAIR_TARGETS = (
    "durus.record",
    "durus.utils",
    "durus.arrays",
    *(
        f"tools.contracts.{name}"
        for name in (
            "protocol_int4",
            "tdata_round_trip",
            "tdata_reencodes",
            "check_record_agrees",
            "shelf_bytes_per_word",
            "offset_map_walk",
            "spec_reachable",
            "spec_transfers",
            "spec_two_clients",
        )
    ),
)


@nox.session
def crosshair(session: nox.Session) -> None:
    """CrossHair searches for counterexamples to the docstring contracts.

    Not in the default run. CROSSHAIR_CONDITION_S (default 3) is the CPU time
    per condition, which keeps the whole session under 10 minutes; each
    counterexample is pinned as a test in tests/unit/test_contracts.py.
    """
    import os

    session.install("-e", ".[test]", "crosshair-tool")
    seconds = os.environ.get("CROSSHAIR_CONDITION_S", "3")
    session.run(
        "crosshair",
        "check",
        f"--per_condition_timeout={seconds}",
        *CROSSHAIR_TARGETS,
        *session.posargs,
    )


@nox.session
def coverage(session: nox.Session) -> None:
    """The default test run with branch coverage of durus/; fails below 95%."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        "2",
        "--cov",  # branch coverage of durus/, gate and report: pyproject.toml
        *session.posargs,
    )


@nox.session
def report(session: nox.Session) -> None:
    """Runs the checks and writes docs/verification.md and docs/bench-ratios.png.

    Not in the default run. The full run (the stateful and crash sessions'
    profiles, coverage, mutants, CrossHair) takes up to about 40 minutes; ``-- --quick``
    uses the ci profiles and a smaller scope. Benchmarks are read from
    bench/results/latest.json (``nox -s bench``), never run here.
    """
    session.install("-e", ".[test]", "crosshair-tool", "matplotlib")
    session.run("python", "tools/report.py", *session.posargs)


@nox.session
def mutants(session: nox.Session) -> None:
    """Apply each deliberate bug of tools/mutants.py to a copy; the stateful suite must fail."""
    session.install("-e", ".[test]")
    session.run("python", "tools/mutants.py", *session.posargs)
