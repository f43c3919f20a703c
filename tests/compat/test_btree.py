"""BTree delete workloads: same keys on both sides, and trees each side can read.

Durus 4.3 cannot be the reference for BNode (t = 2) deletes (API.md section
23 item 24: its case 2c corrupts the tree, and the workload below makes it
raise TypeError), so for t = 2 only our side deletes and the peer must read
the result. For larger degrees both sides run the same workload and must end
with the same keys and a valid tree; node shapes may differ, because 4.3's
case 2c borrows before merging.
"""

from __future__ import annotations

import pytest

from tests.compat.dumps import assert_same_dump

SEEDS = [1, 2]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("node_class", ["BNode4", "BNode16"])
def test_same_keys_after_deletes(node_class, seed, sides, tmp_path):
    results, dumps = {}, {}
    for name, side in sides.items():
        path = tmp_path / f"{name}.durus"
        results[name], dumps[name] = side.tool("file", path, f"treeops:{node_class}:{seed}", "dump")
        assert results[name]["problems"] == [], f"{name} left a broken tree"
    assert results["ours"]["keys"] == results["peer"]["keys"]
    for reader, writer in (("ours", "peer"), ("peer", "ours")):
        (read,) = sides[reader].tool("file", tmp_path / f"{writer}.durus", "dump")
        assert_same_dump(dumps[writer], read, f"{writer}'s tree read by {reader}")


@pytest.mark.parametrize("seed", SEEDS + [3, 4])
def test_peer_reads_our_bnode_deletes(seed, sides, tmp_path):
    path = tmp_path / "ours.durus"
    result, dump = sides["ours"].tool("file", path, f"treeops:BNode:{seed}", "dump")
    assert result["problems"] == []
    (read,) = sides["peer"].tool("file", path, "dump")
    assert_same_dump(dump, read, "our BNode tree read by Durus 4.3")
