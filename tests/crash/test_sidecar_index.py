"""Crashes around the ``.shelf-index`` sidecar (written at close for large indexes).

The sidecar lets an open skip scanning the transactions it covers, so a stale,
torn or half-renamed sidecar must never make the open see a wrong state. A
database with more entries than ``SIDECAR_MIN_ENTRIES`` is closed (writing
the sidecar), then reopened, committed to and closed again; crash states are
sampled at every event of those steps and judged as everywhere else.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from durus.shelf import SIDECAR_MIN_ENTRIES, SIDECAR_SUFFIX
from tests.crash.harness import PATH, Session, judge_sampled_crashes

THOROUGH = settings().max_examples > 100
SAMPLES_PER_EVENT = 6 if THOROUGH else 2


@pytest.mark.skipif(
    not THOROUGH, reason="20,000-object database: runs in the thorough profile (nox -s crash)"
)
def test_crashes_around_the_sidecar_index_keep_the_right_state() -> None:
    session = Session()
    session.commit(new_sizes=[1] * (SIDECAR_MIN_ENTRIES + 10))
    start = len(session.disk.events)
    session.close()  # writes the sidecar
    assert PATH + SIDECAR_SUFFIX in session.disk.listdir()
    session.commit(new_sizes=[5, 600], rewrite_indexes=[3])
    session.commit(drop_indexes=[0, 1])
    session.close()
    judge_sampled_crashes(session, start, SAMPLES_PER_EVENT, 11, "sidecar index: crash states")
