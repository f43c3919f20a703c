"""The same program run under both implementations must write the same bytes.

Each side runs an identical ``graph_tool`` program on its own new file; the
files must be byte-identical (SHELF-1, DFS20) or hold identical rows (SQLite,
whose page bytes carry SQLite's own counters). This is stricter than the
logical round trips in test_files.py: it also pins pickles, record order
within a transaction, and which objects a change rewrites.
"""

from __future__ import annotations

import pytest

from tests.compat import file_layout


def run_on_both(sides, kind: str, tmp_path, *commands: str):
    paths = {}
    for name in ("ours", "peer"):
        paths[name] = tmp_path / f"{name}.{kind}"
        sides[name].tool(kind, paths[name], *commands)
    return paths["ours"], paths["peer"]


def assert_same_storage_content(kind: str, ours, peer) -> None:
    if kind == "sqlite":
        ours_rows, peer_rows = file_layout.sqlite_rows(ours), file_layout.sqlite_rows(peer)
        differing = [a[0] for a, b in zip(ours_rows, peer_rows, strict=False) if a != b]
        assert len(ours_rows) == len(peer_rows), (len(ours_rows), len(peer_rows))
        assert not differing, f"rows of oids {differing[:20]} differ"
        return
    offset = file_layout.first_byte_difference(ours, peer)
    if offset is None:
        return
    detail = file_layout.explain_shelf_difference(ours, peer) if kind == "file" else ""
    pytest.fail(f"{kind}: files differ from byte {offset}. {detail}", pytrace=False)


@pytest.mark.parametrize("kind", ["file", "file2", "sqlite"])
def test_new_database_same_bytes(kind, sides, tmp_path):
    ours, peer = run_on_both(sides, kind, tmp_path, "build:standard")
    assert_same_storage_content(kind, ours, peer)


def test_uncompressed_states_same_bytes(sides, tmp_path):
    ours, peer = run_on_both(sides, "file", tmp_path, "nocompress", "build:standard")
    assert_same_storage_content("file", ours, peer)


@pytest.mark.parametrize("kind", ["file", "file2"])
def test_pack_same_bytes(kind, sides, tmp_path):
    ours, peer = run_on_both(sides, kind, tmp_path, "build:standard", "pack")
    assert_same_storage_content(kind, ours, peer)


@pytest.mark.parametrize("kind", ["file", "file2", "sqlite"])
def test_changes_without_btrees_same_bytes(kind, sides, tmp_path):
    """Commits, an abort, new objects, garbage, a pack, then oids reused after the pack."""
    commands = ["build:standard", "mutate:1:notrees", "pack", "mutate:2:notrees"]
    ours, peer = run_on_both(sides, kind, tmp_path, *commands)
    assert_same_storage_content(kind, ours, peer)


@pytest.mark.parametrize("kind", ["file"])
def test_changes_same_bytes(kind, sides, tmp_path):
    commands = ["build:standard", "mutate:1:inserts", "pack", "mutate:2:inserts"]
    ours, peer = run_on_both(sides, kind, tmp_path, *commands)
    assert_same_storage_content(kind, ours, peer)


def test_btree_insert_rewrites_only_changed_nodes(sides, tmp_path):
    """Minimal pin: 10 even keys in a BNode tree, then insert 5; only the leaf changes."""
    ours, peer = run_on_both(sides, "file", tmp_path, "treeinsert")
    ours_last = [oid for oid, _ in file_layout.shelf_transactions(ours)[-1]]
    peer_last = [oid for oid, _ in file_layout.shelf_transactions(peer)[-1]]
    assert ours_last == peer_last
