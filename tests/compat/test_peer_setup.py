"""The peer venv itself: the right Durus, isolated from this checkout, and honest skips."""

from __future__ import annotations

from tests.compat import harness, peer_venv

PROBE = "import durus, sys; print(durus.__version__); print(durus.__file__)"


def test_peer_runs_durus_43_from_its_venv(peer, tmp_path):
    stdout = peer.check_script("-c", PROBE, cwd=tmp_path)
    version, location = stdout.split()
    assert version == "4.3"
    assert location.startswith(str(peer_venv.PEER_VENV)), location


def test_peer_does_not_see_checkout_even_from_repo_root(peer):
    """-P keeps the repository (cwd) off sys.path, so the checkout's durus never leaks in."""
    stdout = peer.check_script("-c", PROBE, cwd=harness.REPO_ROOT)
    assert stdout.split()[1].startswith(str(peer_venv.PEER_VENV))


def test_ours_runs_this_checkout(ours, tmp_path):
    stdout = ours.check_script("-c", PROBE, cwd=tmp_path)
    assert stdout.split()[1].startswith(str(harness.REPO_ROOT / "durus"))


def test_only_network_failures_become_skips():
    offline = (
        "ERROR: Could not find ... (NewConnectionError('Failed to establish a new connection'))"
    )
    assert isinstance(peer_venv.classify_pip_failure(offline), peer_venv.RegistryUnreachable)
    compiler = "error: command 'gcc' failed: No such file or directory"
    assert isinstance(peer_venv.classify_pip_failure(compiler), peer_venv.PeerSetupFailed)
