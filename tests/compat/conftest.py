"""Fixtures of the compatibility tests: the Durus 4.3 peer and our side.

The peer's venv (``<repo>/.venv-compat/durus43``) is created on first use by
the default test run. The tests skip only when pip cannot reach the package
registry, and the skip reason says so loudly; any other setup failure fails
the run, because compatibility is part of CI.
"""

from __future__ import annotations

import sys

import pytest

from tests.compat import harness, peer_venv

if str(harness.COMPAT_DIR) not in sys.path:
    sys.path.insert(0, str(harness.COMPAT_DIR))  # ``compatclasses`` as a top-level module


@pytest.fixture(scope="session")
def peer_python():
    try:
        return peer_venv.ensure_peer_venv()
    except peer_venv.RegistryUnreachable as error:
        pytest.skip(
            "!!! COMPAT TESTS NOT RUN: pip could not reach the package registry to install "
            f"{peer_venv.PEER_REQUIREMENT} into {peer_venv.PEER_VENV}. Interop with Durus 4.3 "
            f"is UNTESTED in this run. pip said: {str(error)[-400:]}"
        )
    except peer_venv.PeerSetupFailed as error:
        pytest.fail(f"could not set up the Durus 4.3 peer: {error}")


@pytest.fixture(scope="session")
def peer(peer_python) -> harness.Side:
    return harness.peer_side(peer_python)


@pytest.fixture(scope="session")
def ours() -> harness.Side:
    return harness.ours_side()


@pytest.fixture(scope="session")
def sides(ours, peer) -> dict[str, harness.Side]:
    return {"ours": ours, "peer": peer}
