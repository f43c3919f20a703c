"""Shared pytest configuration: Hypothesis profiles and the vector data path.

Profiles (select with the HYPOTHESIS_PROFILE environment variable):
- ``ci`` (default): bounded and derandomized, so every CI run explores the
  same examples and a failure reproduces exactly;
- ``thorough``: many more examples per test, random seeds; used by ``nox -s crash``;
- ``stateful``: 1,000 examples of up to 50 steps per machine, random seeds; used by
  ``nox -s stateful`` (on two workers), sized to finish in tens of minutes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

DATA_DIR = Path(__file__).parent / "data"

# The vector files name the user classes ``vectorclasses.Note``/``Pair``.
if str(DATA_DIR) not in sys.path:
    sys.path.insert(0, str(DATA_DIR))

settings.register_profile(
    "ci",
    max_examples=60,
    stateful_step_count=30,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    stateful_step_count=80,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "stateful",
    max_examples=1000,
    stateful_step_count=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
