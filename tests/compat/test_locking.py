"""A FileStorage held by one implementation's server locks out the other's writers.

Both sides must take the same kind of lock (BSD ``flock``, FORMATS.md 5.8):
a second writer from the other implementation gets ``BlockingIOError``,
while a read-only open still works and sees what the server committed.
"""

from __future__ import annotations

import json

import pytest

from tests.compat import harness

OPEN_PROBE = """
import json, sys
from durus.file_storage import FileStorage
from durus.connection import Connection
path, readonly = sys.argv[1], sys.argv[2] == "readonly"
try:
    storage = FileStorage(path, readonly=readonly)
except Exception as error:
    blocking = isinstance(error, BlockingIOError)
    print(json.dumps({"error": type(error).__name__, "blocking": blocking}))
else:
    root = Connection(storage).get_root()
    print(json.dumps({"keys": sorted(root.keys())}))
    storage.close()
"""


def probe(side: harness.Side, path, mode: str, cwd) -> dict:
    return json.loads(side.check_script("-c", OPEN_PROBE, str(path), mode, cwd=cwd))


@pytest.mark.parametrize("server_side", ["ours", "peer"])
def test_other_side_cannot_write_a_served_file(server_side, sides, tmp_path):
    opener = sides["peer" if server_side == "ours" else "ours"]
    path = tmp_path / "db.durus"
    opener.tool("file", path, "build:standard")
    with harness.ServerProcess(sides[server_side], path, cwd=tmp_path) as server:
        refused = probe(opener, path, "write", tmp_path)
        assert refused.get("blocking") is True, refused
        seen = probe(opener, path, "readonly", tmp_path)
        assert "trees" in seen["keys"], seen
        assert server.alive(), server.log()
