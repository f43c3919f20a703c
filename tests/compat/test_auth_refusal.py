"""A real Durus 4.3 client against a server that requires authentication.

It must get a clear refusal ("Protocol version mismatch.") and still work
against a server without authentication. Lives with the compat tests so the
Durus 4.3 venv fixture creates the peer before it runs.
"""

from __future__ import annotations

import subprocess

from tests.compat.peer_venv import peer_command, peer_env
from tests.unit.test_server_security import SECRET, ThreadedServer

PEER_PROBE = """
import sys
from durus.client_storage import ClientStorage
try:
    ClientStorage(port=int(sys.argv[1]))
except Exception as error:
    print(type(error).__name__, error)
else:
    print("connected")
"""


def test_a_real_durus43_client_gets_a_clear_refusal_when_auth_is_on(peer_python) -> None:
    with ThreadedServer(auth_secret=SECRET) as protected, ThreadedServer() as open_server:
        outputs = []
        for port in (protected.port, open_server.port):
            result = subprocess.run(
                peer_command("-c", PEER_PROBE, str(port)),
                env=peer_env(),
                cwd="/",
                capture_output=True,
                text=True,
                timeout=60,
            )
            outputs.append(result.stdout.strip())
    assert outputs == ["ProtocolError Protocol version mismatch.", "connected"]
