"""nox sessions: tests (the CI run), stateful and crash (thorough profiles), lint."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The default test run, as CI runs it (bounded Hypothesis profile)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def stateful(session: nox.Session) -> None:
    """The stateful machines with the thorough Hypothesis profile."""
    session.install("-e", ".[test]")
    session.run(
        "pytest", "-q", "tests/stateful", *session.posargs,
        env={"HYPOTHESIS_PROFILE": "thorough"},
    )


@nox.session
def crash(session: nox.Session) -> None:
    """The crash and fault models with the thorough Hypothesis profile."""
    session.install("-e", ".[test]")
    session.run(
        "pytest", "-q", "tests/crash", *session.posargs,
        env={"HYPOTHESIS_PROFILE": "thorough"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy on durus/."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", "durus", "spec", "tests")
    session.run("ruff", "format", "--check", "durus", "spec")
    session.run("mypy", "durus")
