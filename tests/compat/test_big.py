"""A database of 100,000 small objects crosses between the implementations once.

Durus 4.3 writes the file (one commit: a PersistentList of 100,000
persistent objects plus a BNode64 index); our side reads all of it and packs
it; Durus 4.3 reads the packed file. Our digest of the original (canonical
dump, hashed) and 4.3's digest of our packed copy must agree. Kept to one
pass because it is the slowest compat test.
"""

from __future__ import annotations

import pytest

BIG_TIMEOUT_S = 300.0


EXPECTED_CLASSES = {
    "compatclasses.Small": 100_000,
    "durus.btree.BNode64": 16,
    "durus.btree.BTree": 1,
    "durus.persistent_dict.PersistentDict": 1,
    "durus.persistent_list.PersistentList": 1,
}


@pytest.mark.slow
def test_hundred_thousand_objects(sides, tmp_path):
    path = tmp_path / "big.durus"
    peer, ours = sides["peer"], sides["ours"]
    peer.tool("file", path, "build:big", timeout_s=BIG_TIMEOUT_S)
    read, _ = ours.tool("file", path, "digest", "pack", timeout_s=BIG_TIMEOUT_S)
    assert read["classes"] == EXPECTED_CLASSES
    (read_back,) = peer.tool("file", path, "digest", timeout_s=BIG_TIMEOUT_S)
    assert read_back == read, "Durus 4.3 reads our pack of its file differently from how we read it"
