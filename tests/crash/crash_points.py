"""The crash-point tally: every crash test adds the crash states it checked.

Owns one process-wide counter per test (keyed by a label); tests/crash/conftest.py
prints the tallies and the total at the end of the run. Holds no test logic.
"""

from __future__ import annotations

from collections import Counter

TALLY: Counter[str] = Counter()


OTHER_PREFIX = "[other]"


def count(label: str, crash_states: int = 1) -> None:
    """Add ``crash_states`` checked crash states to ``label``'s tally.

    Labels starting with ``[other]`` count checks that are not crash states of
    the storage (damaged files, the fault model's own images): they are shown
    but left out of the total.
    """
    assert crash_states >= 0
    TALLY[label] += crash_states


def total() -> int:
    """Crash states of the storage checked so far (``[other]`` labels excluded)."""
    return sum(n for label, n in TALLY.items() if not label.startswith(OTHER_PREFIX))
