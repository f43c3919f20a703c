"""The Durus 4.3 peer: a private venv, created on demand, and how to run its interpreter.

Owns ``<repo>/.venv-compat/durus43``: creating it once per clone (under an
``fcntl`` lock so parallel test runs never race), installing ``Durus==4.3``
from the package registry into it, and building the command line and
environment that run the peer's interpreter so that ``import durus`` finds
the venv's Durus 4.3 and never this checkout.

Never installs anything into the interpreter running the tests, never touches
``bench/venvs`` (the benchmarks own those), and never lets the checkout leak
into the peer's ``sys.path``: the peer always runs with ``-P`` from a working
directory outside the repository, with a PYTHONPATH holding only the
directories a test names explicitly.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_ROOT = REPO_ROOT / ".venv-compat"
PEER_VENV = VENV_ROOT / "durus43"
PEER_PYTHON = PEER_VENV / "bin" / "python"
READY_MARKER = PEER_VENV / "durus43-ready"
LOCK_PATH = VENV_ROOT / "durus43.lock"
PEER_REQUIREMENT = "Durus==4.3"
INSTALL_TIMEOUT_S = 600.0
LOCK_WAIT_S = 900.0

# Output of pip that means "the package registry could not be reached".
NETWORK_FAILURE_MARKERS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ProxyError",
    "Could not fetch URL",
    "No matching distribution found for Durus==4.3",
    "Read timed out",
)


class RegistryUnreachable(RuntimeError):
    """pip could not reach the package registry, so the peer cannot be installed."""


class PeerSetupFailed(RuntimeError):
    """Installing the peer failed for a reason other than the network."""


def ensure_peer_venv() -> Path:
    """Return the peer's interpreter, creating the venv first if this clone has none."""
    if READY_MARKER.exists():
        return PEER_PYTHON
    VENV_ROOT.mkdir(parents=True, exist_ok=True)
    with open(LOCK_PATH, "a+") as lock_file:
        _lock_bounded(lock_file)
        try:
            if not READY_MARKER.exists():
                _build_venv()
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    assert READY_MARKER.exists() and PEER_PYTHON.exists()
    return PEER_PYTHON


def _lock_bounded(lock_file) -> None:
    """Take the exclusive build lock, waiting at most LOCK_WAIT_S for another builder."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise PeerSetupFailed(f"timed out waiting for {LOCK_PATH}") from None
            time.sleep(0.5)


def _build_venv() -> None:
    """Create the venv from scratch and install Durus 4.3 (called with the lock held)."""
    if PEER_VENV.exists():
        shutil.rmtree(PEER_VENV)  # a half-built venv from an interrupted run
    _run_checked([sys.executable, "-m", "venv", str(PEER_VENV)], "python -m venv")
    pip = [str(PEER_PYTHON), "-m", "pip"]
    install = [*pip, "install", "--disable-pip-version-check", "--retries", "2"]
    install += ["--timeout", "20", "--no-input", PEER_REQUIREMENT]
    result = subprocess.run(
        install, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, cwd=VENV_ROOT
    )
    if result.returncode != 0:
        shutil.rmtree(PEER_VENV, ignore_errors=True)
        raise classify_pip_failure(result.stdout + result.stderr)
    _check_peer_imports()
    READY_MARKER.write_text(f"{PEER_REQUIREMENT}\n")


def classify_pip_failure(output: str) -> RuntimeError:
    """RegistryUnreachable when pip's output says the network failed, else PeerSetupFailed."""
    if any(marker in output for marker in NETWORK_FAILURE_MARKERS):
        return RegistryUnreachable(output[-2000:])
    return PeerSetupFailed(f"pip install {PEER_REQUIREMENT} failed:\n{output[-4000:]}")


def _check_peer_imports() -> None:
    """The venv's durus must be 4.3 and must come from the venv, not this checkout."""
    probe = "import durus; print(durus.__version__); print(durus.__file__)"
    result = subprocess.run(
        peer_command("-c", probe),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=VENV_ROOT,
        env=peer_env(),
    )
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) < 2:
        raise PeerSetupFailed(f"peer durus does not import:\n{result.stderr[-2000:]}")
    version, location = lines[0], lines[1]
    if version != "4.3" or not location.startswith(str(PEER_VENV)):
        raise PeerSetupFailed(f"peer imports durus {version} from {location}")


def _run_checked(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if result.returncode != 0:
        raise PeerSetupFailed(f"{what} failed:\n{result.stdout}{result.stderr}")


def peer_command(*args: str) -> list[str]:
    """The command line running the peer interpreter (``-P``: no script dir or cwd on sys.path)."""
    return [str(PEER_PYTHON), "-P", *args]


def peer_env(*extra_paths: str | Path) -> dict[str, str]:
    """Environment for the peer: PYTHONPATH is exactly ``extra_paths`` (never the checkout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    for path in extra_paths:
        resolved = Path(path).resolve()
        if resolved == REPO_ROOT:
            raise ValueError("the checkout must never be on the peer's PYTHONPATH")
    if extra_paths:
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in extra_paths)
    env["PYTHONHASHSEED"] = "0"
    return env
