"""Crash-test session hooks: print how many crash states each test checked.

The thorough profile (``nox -s crash``) must check at least
``THOROUGH_MINIMUM_CRASH_POINTS`` crash states per run; the summary says
whether it did. Owns nothing else.
"""

from __future__ import annotations

import os
from typing import Any

from tests.crash.crash_points import TALLY, total

THOROUGH_MINIMUM_CRASH_POINTS = 100_000


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not TALLY:
        return
    profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    terminalreporter.section("crash points checked")
    for label, crash_states in sorted(TALLY.items()):
        terminalreporter.write_line(f"{crash_states:>10}  {label}")
    terminalreporter.write_line(
        f"{total():>10}  TOTAL crash points of the storage (profile {profile}; "
        "[other] lines not included)"
    )
    if profile == "thorough" and total() < THOROUGH_MINIMUM_CRASH_POINTS:
        terminalreporter.write_line(
            f"WARNING: fewer than {THOROUGH_MINIMUM_CRASH_POINTS} crash points "
            "(was only part of tests/crash selected?)"
        )
