"""durus.btree: check_btree names each kind of damage, and counts stay exact
when cached subtree counts went stale (a node was ghosted) before a split or
a borrowing delete.

check_btree is what an application runs on a tree it suspects; each broken
invariant must come out as an AssertionError (raised explicitly, so it also
works under ``python -O``) whose message says what is wrong.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from durus.btree import BNode, BNode4, BTree, _NullCount, check_btree
from durus.connection import Connection
from durus.persistent import GHOST, real_class, tracking_class
from durus.storage import MemoryStorage
from tests.support.fake_connection import FakeConnection, ghost_of
from tests.unit.test_btree import all_nodes, tree_of


def node(node_class: type[BNode], keys: list[int], children: list[BNode] | None = None) -> BNode:
    """A node holding ``(k, k)`` for each key, with ``children`` (None: a leaf)."""
    made = node_class()
    made.items = [(key, key) for key in keys]
    made.nodes = children
    return made


def tree_with_root(root: BNode) -> BTree:
    tree = BTree(type(root))
    tree.root = root
    return tree


def two_level(left: list[int], middle: int, right: list[int]) -> BTree:
    return tree_with_root(node(BNode, [middle], [node(BNode, left), node(BNode, right)]))


# -- check_btree: one test per broken invariant


def test_check_accepts_a_hand_built_valid_tree() -> None:
    assert check_btree(two_level([1, 2], 5, [7, 8, 9])) == 6


def test_check_reports_keys_out_of_order() -> None:
    with pytest.raises(AssertionError, match="keys out of order"):
        check_btree(tree_with_root(node(BNode, [2, 1, 3])))


def test_check_reports_a_key_not_above_its_separator() -> None:
    with pytest.raises(AssertionError, match="key 3 not above its separator 5"):
        check_btree(two_level([1], 5, [3]))


def test_check_reports_a_key_not_below_its_separator() -> None:
    with pytest.raises(AssertionError, match="key 7 not below its separator 5"):
        check_btree(two_level([7], 5, [9]))


def test_check_reports_an_overfull_root() -> None:
    with pytest.raises(AssertionError, match=r"holds 4 items \(t = 2\)"):
        check_btree(tree_with_root(node(BNode, [1, 2, 3, 4])))


def test_check_reports_an_underfull_child() -> None:
    children = [node(BNode4, [1]), node(BNode4, [6, 7, 8])]
    tree = tree_with_root(node(BNode4, [5], children))
    with pytest.raises(AssertionError, match=r"holds 1 items \(t = 4\)"):
        check_btree(tree)


def test_check_reports_a_wrong_cached_count() -> None:
    tree = tree_of(BNode, range(20))
    assert len(tree) == 20
    leaf = all_nodes(tree.root)[-1]
    leaf.items.pop()  # in place: the cached count of the leaf is not dropped
    with pytest.raises(AssertionError, match="caches count"):
        check_btree(tree)


def test_check_reports_a_child_count_that_does_not_match_the_items() -> None:
    tree = tree_with_root(node(BNode, [5], [node(BNode, [1])]))
    with pytest.raises(AssertionError, match="has 1 items, 1 children"):
        check_btree(tree)


def test_check_reports_a_child_of_another_node_class() -> None:
    tree = tree_with_root(node(BNode, [5], [node(BNode, [1]), node(BNode4, [7])]))
    with pytest.raises(AssertionError, match="is not of the class of its parent"):
        check_btree(tree)


def test_check_reports_leaves_at_different_depths() -> None:
    deep = node(BNode, [8], [node(BNode, [6]), node(BNode, [9])])
    tree = tree_with_root(node(BNode, [5], [node(BNode, [1]), deep]))
    with pytest.raises(AssertionError, match="different depths"):
        check_btree(tree)


def test_check_reports_an_internal_root_without_items() -> None:
    tree = tree_with_root(node(BNode, [], [node(BNode, [1])]))
    with pytest.raises(AssertionError, match="internal root holds no items"):
        check_btree(tree)


class MisreportingTree(BTree):
    """A subclass whose get_depth() disagrees with its nodes."""

    def get_depth(self) -> int:
        return BTree.get_depth(self) + 1


def test_check_reports_a_get_depth_that_disagrees_with_the_nodes() -> None:
    tree = MisreportingTree()
    tree[1] = "one"
    with pytest.raises(AssertionError, match="differs from get_depth"):
        check_btree(tree)


# -- node guards, ghosts and old pickles


def test_split_child_refuses_a_child_that_is_not_full() -> None:
    child = node(BNode, [1, 2])
    parent = node(BNode, [], [child])
    with pytest.raises(ValueError, match="needs the full child"):
        parent.split_child(0, child)
    assert child.items == [(1, 1), (2, 2)] and parent.nodes == [child]


def test_node_state_of_a_ghost_is_loaded_first() -> None:
    connection = FakeConnection()
    ghost = ghost_of(node(BNode, [1, 2]), connection)
    assert ghost._p_status == GHOST
    # through the class, as a serializer may: no read hook loads it beforehand
    assert BNode.__getstate__(ghost) == {"items": [(1, 1), (2, 2)], "nodes": None}
    assert not ghost._p_is_ghost()


def test_null_count_from_old_pickles_reads_back_inert() -> None:
    count = pickle.loads(pickle.dumps(_NullCount()))
    assert repr(count) == "<_NullCount>"
    assert count + 1 is count and 1 - count is count


def test_set_bnode_minimum_degree_never_picks_a_tracking_twin() -> None:
    twin = tracking_class(BNode)  # a direct BNode subclass of degree 2, made on first use
    assert twin.minimum_degree == 2
    tree = tree_of(BNode4, range(10))
    assert tree.set_bnode_minimum_degree(2) is False
    assert real_class(tree.root) is BNode4 and check_btree(tree) == 10


def test_descending_range_past_the_smallest_key_ends_at_the_first_item() -> None:
    tree = tree_of(BNode, range(5, 30))
    keys = [key for key, _value in tree.items_range(8, -100)]
    assert keys == [8, 7, 6, 5]
    assert [key for key, _value in tree.items_range(100, 27)] == [29, 28]


# -- counts after ghosting made the cached ones stale


def stored_tree(keys: Any) -> tuple[Connection, BTree, BNode]:
    """A committed BNode tree, loaded and counted, plus a node of another tree.

    Ghosting any node makes every cached count stale (see durus.btree).
    """
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    root["tree"] = tree_of(BNode, keys)
    root["other"] = tree_of(BNode, [1])
    connection.commit()
    tree: BTree = root["tree"]
    other: BNode = root["other"].root
    assert len(tree) == len(list(keys)) and not other._p_is_ghost()
    return connection, tree, other


def test_inserts_after_a_ghosting_keep_len_exact() -> None:
    connection, tree, other = stored_tree(range(0, 400, 2))
    model = set(range(0, 400, 2))
    for key in range(1, 400, 2):
        other._p_set_status_ghost()  # every cached count is stale from here
        tree[key] = key
        model.add(key)
        if key % 40 == 1:
            assert len(tree) == len(model)
    assert check_btree(tree) == len(model) == 400
    connection.commit()
    assert sorted(model) == list(tree.keys())


def test_deletes_after_a_ghosting_keep_len_exact() -> None:
    connection, tree, other = stored_tree(range(300))
    model = set(range(300))
    for key in [*range(0, 300, 3), *range(1, 300, 3)]:
        other._p_set_status_ghost()
        del tree[key]
        model.discard(key)
        if key % 30 == 0:
            assert len(tree) == len(model)
    assert check_btree(tree) == len(model) == 100
    connection.commit()
    reloaded = Connection(connection.storage).get_root()["tree"]
    assert list(reloaded.keys()) == sorted(model)


@pytest.mark.parametrize("size", [60, 200])
def test_inserts_in_a_lazily_loaded_tree_keep_len_exact(size: int) -> None:
    """Splits that move children still ghosts: their counts are unknown."""
    connection = Connection(MemoryStorage())
    connection.get_root()["tree"] = tree_of(BNode, range(0, 2 * size, 2))
    connection.commit()
    tree: BTree = Connection(connection.storage).get_root()["tree"]
    assert tree.root._p_is_ghost()
    for key in range(1, 2 * size, 2):
        tree[key] = key
    assert len(tree) == 2 * size and check_btree(tree) == 2 * size


def test_deletes_in_a_lazily_loaded_tree_keep_len_exact() -> None:
    """Deleting next to siblings that are still ghosts: their counts are unknown."""
    connection = Connection(MemoryStorage())
    connection.get_root()["tree"] = tree_of(BNode, range(60))
    connection.commit()
    tree: BTree = Connection(connection.storage).get_root()["tree"]
    assert tree.root._p_is_ghost()
    for count, key in enumerate(range(0, 60, 2), start=1):
        del tree[key]
        assert len(tree) == 60 - count
    assert check_btree(tree) == 30 and list(tree.keys()) == list(range(1, 60, 2))
