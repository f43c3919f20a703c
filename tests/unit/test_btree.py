"""durus.btree: node algorithms, BTree mapping API, stored state and counts (API.md §6)."""

from __future__ import annotations

import copy
import pickle
import random
from collections.abc import Mapping, MutableMapping
from typing import Any

import pytest

import durus.btree as btree_module
from durus.btree import (
    BNode,
    BNode4,
    BNode8,
    BNode16,
    BNode32,
    BNode64,
    BNode128,
    BNode256,
    BNode512,
    BTree,
    EmptyBTreeError,
    NodeClassError,
    _NullCount,
    check_btree,
)
from durus.connection import Connection
from durus.persistent import SAVED, UNSAVED, new_ghost, real_class
from durus.persistent_dict import PersistentDict
from durus.storage import MemoryStorage
from durus.utils import int8_to_str
from tests.support.fake_connection import FakeConnection

NODE_CLASSES = [BNode, BNode4, BNode8, BNode16, BNode32, BNode64, BNode128, BNode256, BNode512]
SMALL_NODE_CLASSES = [BNode, BNode4, BNode8, BNode16]


def all_nodes(node: BNode) -> list[BNode]:
    found = [node]
    for child in node.nodes or ():
        found.extend(all_nodes(child))
    return found


def save_all(tree: BTree, connection: FakeConnection) -> None:
    """Make the tree and every node look stored and SAVED (distinct oids)."""
    for number, obj in enumerate([tree, *all_nodes(tree.root)], start=1):
        obj._p_oid = int8_to_str(number)
        obj._p_connection = connection
        obj._p_status = SAVED


def tree_of(node_class: type[BNode], keys: Any, value: Any = None) -> BTree:
    tree = BTree(node_class)
    for key in keys:
        tree[key] = key if value is None else value
    return tree


# -- node classes ------------------------------------------------------------------


def test_node_classes_and_degrees() -> None:
    degrees = [2, 4, 8, 16, 32, 64, 128, 256, 512]
    for node_class, degree in zip(NODE_CLASSES, degrees, strict=True):
        assert node_class.minimum_degree == degree
        assert node_class.__module__ == "durus.btree"
        assert node_class.__name__ == ("BNode" if degree == 2 else f"BNode{degree}")
        assert node_class is BNode or node_class.__bases__ == (BNode,)
        assert node_class.items_is == [tuple]
        assert node_class.nodes_is[0] is None and node_class.nodes_is[1] == [BNode]
    assert BNode.__slots__ == ["items", "nodes", "_count", "_count_generation"]
    assert BTree.__slots__ == ["root"] and BTree.root_is is BNode


def test_no_arbitrary_attributes() -> None:
    with pytest.raises(AttributeError):
        BTree().color = "red"  # type: ignore[attr-defined]
    for node_class in NODE_CLASSES:
        with pytest.raises(AttributeError):
            node_class().color = "red"  # type: ignore[attr-defined]


def test_null_count_is_importable_and_inert() -> None:
    null = btree_module._NullCount()
    assert null + 1 is null and 1 + null is null and null - 1 is null and 1 - null is null
    assert pickle.loads(pickle.dumps(null, 2)).__class__ is _NullCount
    null.__setstate__({"anything": 1})


def test_node_queries() -> None:
    node = BNode()
    assert node.is_leaf() and not node.is_full() and len(node) == 0 and not node
    node.items = [(1, "a"), (3, "b"), (5, "c")]
    assert node.is_full()
    assert [node.get_position(k) for k in (0, 1, 2, 3, 6)] == [0, 0, 1, 1, 3]
    assert node.search(3) == (3, "b") and node.search(4) is None
    assert node.get_min_item() == (1, "a") and node.get_max_item() == (5, "c")
    assert list(node) == node.items and list(reversed(node)) == node.items[::-1]
    assert node.get_count() == 3 and node.get_node_count() == 1 and node.get_level() == 0


def test_node_iteration_from_a_key() -> None:
    tree = tree_of(BNode, range(0, 40, 2))
    root = tree.root
    assert root.get_level() == tree.get_depth() - 1 >= 2
    assert [k for k, _ in root.iter_from(7)] == list(range(8, 40, 2))
    assert [k for k, _ in root.iter_from(8)] == list(range(8, 40, 2))
    assert [k for k, _ in root.iter_from(99)] == []
    assert [k for k, _ in root.iter_backward_from(8)] == list(range(6, -1, -2))
    assert [k for k, _ in root.iter_backward_from(9)] == list(range(8, -1, -2))
    assert [k for k, _ in root.iter_backward_from(-1)] == []
    assert [k for k, _ in root] == list(range(0, 40, 2))
    assert [k for k, _ in reversed(root)] == list(range(38, -1, -2))


def test_insert_item_and_split_child_guard_their_arguments() -> None:
    node = BNode()
    with pytest.raises(TypeError):
        node.insert_item([1, 2])  # type: ignore[arg-type]
    node.items = [(1, 1), (2, 2), (3, 3)]
    with pytest.raises(ValueError, match="not full"):
        node.insert_item((4, 4))
    with pytest.raises(ValueError):
        node.split_child(0, BNode())
    parent = BNode()
    parent.nodes = [node]
    with pytest.raises(ValueError):
        parent.split_child(1, node)
    parent.split_child(0, node)
    assert parent.items == [(2, 2)] and [n.items for n in parent.nodes] == [[(1, 1)], [(3, 3)]]
    assert real_class(parent.nodes[1]) is BNode


def test_node_delete_missing_key_raises_key_error() -> None:
    tree = tree_of(BNode4, range(30))
    with pytest.raises(KeyError) as caught:
        tree.root.delete(100)
    assert caught.value.args == (100,)
    assert check_btree(tree) == 30


# -- insertion shape ---------------------------------------------------------------


def test_insertion_shape_bnode() -> None:
    tree = tree_of(BNode, "abcdef", value=True)
    assert tree.root.items == [("b", True), ("d", True)]
    assert [node.items for node in tree.root.nodes or ()] == [
        [("a", True)],
        [("c", True)],
        [("e", True), ("f", True)],
    ]
    assert tree.get_depth() == 2 and tree.get_node_count() == 4


def test_full_root_split_makes_a_new_root_of_the_same_class() -> None:
    tree = tree_of(BNode4, range(7))
    old_root = tree.root
    assert old_root.is_full() and old_root.is_leaf()
    tree[7] = 7
    assert tree.root is not old_root and real_class(tree.root) is BNode4
    assert tree.root.items == [(3, 3)] and tree.root.nodes == [old_root, tree.root.nodes[1]]
    assert old_root.items == [(0, 0), (1, 1), (2, 2)]
    assert tree.root.nodes[1].items == [(4, 4), (5, 5), (6, 6), (7, 7)]


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_bnode16_with_109_keys_has_depth_2_and_7_nodes(order: str) -> None:
    keys = range(109) if order == "ascending" else reversed(range(109))
    tree = tree_of(BNode16, keys)
    assert tree.get_depth() == 2 and tree.get_node_count() == 7
    assert check_btree(tree) == 109


def test_inserting_an_existing_key_replaces_in_place() -> None:
    tree = tree_of(BNode, range(20))
    shape = [list(node.items) for node in all_nodes(tree.root)]
    tree[5] = "five"
    tree[tree.root.items[0][0]] = "root item"
    assert len(tree) == 20 and tree[5] == "five"
    assert [[k for k, _ in items] for items in shape] == [
        [k for k, _ in node.items] for node in all_nodes(tree.root)
    ]


# -- mapping API -------------------------------------------------------------------


def test_constructor_checks_the_node_class() -> None:
    assert real_class(BTree().root) is BNode16
    for bad in (int, BTree, "BNode", None, BNode()):
        with pytest.raises(NodeClassError) as caught:
            BTree(bad)  # type: ignore[arg-type]
        assert isinstance(caught.value, AssertionError) and isinstance(caught.value, TypeError)
    assert isinstance(BTree(), MutableMapping) and isinstance(BTree(), Mapping)


def test_lookups() -> None:
    tree = tree_of(BNode, range(10))
    tree.add("x") if False else None
    assert tree[3] == 3 and tree.get(3) == 3 and tree.get(99) is None and tree.get(99, 7) == 7
    assert 3 in tree and 99 not in tree and tree.has_key(4) and not tree.has_key(99)
    with pytest.raises(KeyError) as caught:
        tree[99]
    assert caught.value.args == (99,)


def test_add_and_setitem() -> None:
    tree = BTree(BNode)
    tree.add("a")
    tree.add("b", 2)
    tree["c"] = 3
    assert tree.items() == [("a", True), ("b", 2), ("c", 3)]


def test_delitem() -> None:
    tree = tree_of(BNode, range(10))
    del tree[4]
    assert 4 not in tree and len(tree) == 9
    with pytest.raises(KeyError) as caught:
        del tree[1000]
    assert str(caught.value) == "1000"
    with pytest.raises(KeyError) as caught:
        del BTree()[1]
    assert str(caught.value) == "1"


def test_setdefault_requires_a_value() -> None:
    tree = BTree()
    assert tree.setdefault("a", 1) == 1 and tree.setdefault("a", 2) == 1
    assert tree["a"] == 1
    with pytest.raises(TypeError):
        tree.setdefault("b")  # type: ignore[call-arg]


def test_update_forms() -> None:
    tree = BTree()

    class OldStyle:
        def iteritems(self) -> Any:
            return iter([("i", 1)])

    tree.update(OldStyle())
    tree.update({"m": 2})
    tree.update(PersistentDict(p=3))
    tree.update([("q", 4)])
    tree.update(k=5)
    tree.update()
    assert tree.items() == [("i", 1), ("k", 5), ("m", 2), ("p", 3), ("q", 4)]
    with pytest.raises(TypeError, match=r"^update expected at most 1 argument, got 2$"):
        tree.update({}, {})


def test_clear_keeps_the_node_class() -> None:
    tree = tree_of(BNode4, range(50))
    tree.clear()
    assert len(tree) == 0 and not tree and real_class(tree.root) is BNode4
    assert tree.root.is_leaf()


def test_iteration_both_ways_and_lists() -> None:
    keys = random.Random(5).sample(range(1000), 200)
    tree = BTree(BNode4)
    for key in keys:
        tree[key] = -key
    ordered = sorted(keys)
    assert list(tree) == ordered and list(tree.iterkeys()) == ordered
    assert tree.keys() == ordered and isinstance(tree.keys(), list)
    assert tree.values() == [-k for k in ordered] and list(tree.itervalues()) == tree.values()
    assert tree.items() == [(k, -k) for k in ordered] and list(tree.iteritems()) == tree.items()
    assert list(reversed(tree)) == ordered[::-1]
    assert list(tree.items_backward()) == tree.items()[::-1]
    assert len(tree) == 200 and bool(tree) and not BTree()


def test_min_and_max() -> None:
    tree = tree_of(BNode, [5, 3, 9, 1])
    assert tree.get_min_item() == (1, 1) and tree.get_max_item() == (9, 9)
    for method, word in ((BTree().get_min_item, "min"), (BTree().get_max_item, "max")):
        with pytest.raises(AssertionError, match=f"^empty BTree has no {word} item$"):
            method()
        with pytest.raises(EmptyBTreeError):
            method()


def keys_of(items: Any) -> list[Any]:
    return [key for key, _ in items]


def test_items_from_and_backward_from() -> None:
    tree = tree_of(BNode, range(0, 20, 2))
    assert keys_of(tree.items_from(4)) == list(range(4, 20, 2))
    assert keys_of(tree.items_from(4, closed=False)) == list(range(6, 20, 2))
    assert keys_of(tree.items_from(5, closed=False)) == list(range(6, 20, 2))
    assert keys_of(tree.items_backward_from(4)) == [2, 0]
    assert keys_of(tree.items_backward_from(4, closed=True)) == [4, 2, 0]
    assert keys_of(tree.items_backward_from(5, closed=True)) == [4, 2, 0]
    assert keys_of(tree.items_from(100)) == [] and keys_of(tree.items_backward_from(-1)) == []


def test_items_range() -> None:
    tree = tree_of(BNode, range(10))
    assert keys_of(tree.items_range(2, 5)) == [2, 3, 4]
    assert keys_of(tree.items_range(2, 5, closed_end=True)) == [2, 3, 4, 5]
    assert keys_of(tree.items_range(2, 5, closed_start=False)) == [3, 4]
    assert keys_of(tree.items_range(5, 2)) == [5, 4, 3]
    assert keys_of(tree.items_range(5, 2, closed_start=False)) == [4, 3]
    assert keys_of(tree.items_range(5, 2, closed_end=True)) == [5, 4, 3, 2]
    assert keys_of(tree.items_range(3, 3)) == []
    assert keys_of(tree.items_range(3, 3, closed_end=True)) == [3]
    assert keys_of(tree.items_range(-5, 100)) == list(range(10))
    assert keys_of(tree.items_range(2.5, 4.5)) == [3, 4]


def test_depth_and_node_count() -> None:
    tree = BTree(BNode)
    assert tree.get_depth() == 1 and tree.get_node_count() == 1
    for key in range(100):
        tree[key] = key
    assert tree.get_depth() == check_btree_depth(tree)
    assert tree.get_node_count() == len(all_nodes(tree.root))


def check_btree_depth(tree: BTree) -> int:
    depth, node = 1, tree.root
    while node.nodes is not None:
        node, depth = node.nodes[0], depth + 1
    return depth


def test_set_bnode_minimum_degree_compares_by_value() -> None:
    tree = tree_of(BNode16, range(100))
    assert tree.set_bnode_minimum_degree(16) is False
    assert tree.set_bnode_minimum_degree(2) is False and tree.set_bnode_minimum_degree(3) is False
    assert tree.set_bnode_minimum_degree(4) is True
    assert real_class(tree.root) is BNode4 and check_btree(tree) == 100
    assert tree.items() == [(k, k) for k in range(100)]
    big = tree_of(BNode512, range(10))
    root = big.root
    assert big.set_bnode_minimum_degree(512) is False and big.root is root
    assert big.set_bnode_minimum_degree(int("512")) is False


def test_abc_mixins_pop_popitem_and_equality() -> None:
    tree = tree_of(BNode, [3, 1, 2])
    assert tree.pop(2) == 2 and tree.pop(99, "d") == "d"
    with pytest.raises(KeyError):
        tree.pop(99)
    assert tree.popitem() == (1, 1) and tree.items() == [(3, 3)]
    assert tree == {3: 3} and {3: 3} == tree and BTree() == {}
    pd = PersistentDict({3: 3})
    assert tree == pd and not pd == tree
    with pytest.raises(TypeError):
        hash(tree)


def test_note_change_of_bnode_containing_key() -> None:
    tree = tree_of(BNode, range(30))
    connection = FakeConnection()
    save_all(tree, connection)
    leaf_key = tree.root.get_min_item()[0]
    tree.note_change_of_bnode_containing_key(leaf_key)
    holder = tree.root
    while holder.nodes is not None:
        holder = holder.nodes[0]
    assert holder in connection.changed and holder._p_status == UNSAVED
    assert tree.root not in connection.changed and len(tree) == 30
    with pytest.raises(KeyError):
        tree.note_change_of_bnode_containing_key(1000)


# -- change notes ------------------------------------------------------------------


def path_to(tree: BTree, key: Any) -> list[BNode]:
    path, node = [], tree.root
    while True:
        path.append(node)
        position = node.get_position(key)
        if position < len(node.items) and node.items[position][0] == key:
            return path
        if node.nodes is None:
            return path
        node = node.nodes[position]


@pytest.mark.parametrize("node_class", SMALL_NODE_CLASSES)
def test_an_insert_or_delete_notes_only_the_nodes_it_changes(node_class: type[BNode]) -> None:
    """As in Durus 4.3: ancestors whose items are unchanged are not rewritten."""
    tree = tree_of(node_class, range(0, 400, 2))
    connection = FakeConnection()
    for key in (201, 150, 0, 399, 2, 4, 6, 8, 10):
        save_all(tree, connection)
        connection.changed.clear()
        states = {
            id(node): (list(node.items), node.nodes and list(node.nodes))
            for node in all_nodes(tree.root)
        }
        if key % 2:
            tree[key] = key
        else:
            del tree[key]
        for node in all_nodes(tree.root):
            if node._p_oid is None:
                continue  # a new node from a split: stored through its parent's reference
            unchanged = states.get(id(node)) == (list(node.items), node.nodes and list(node.nodes))
            assert unchanged or node in connection.changed
            assert not unchanged or node not in connection.changed
        check_btree(tree)


def test_len_stays_exact_when_a_leaf_changes_behind_its_ancestors() -> None:
    """Another client's insert rewrites only a leaf; ghosting it must refresh len()."""
    tree = tree_of(BNode, range(0, 40, 2))
    connection = FakeConnection()
    save_all(tree, connection)
    assert len(tree) == 20
    leaf = path_to(tree, 5)[-1]
    assert leaf.nodes is None
    changed_items = sorted([*leaf.items, (5, 5)])
    connection.stored[leaf._p_oid] = pickle.dumps({"items": changed_items, "nodes": None}, 2)
    leaf._p_set_status_ghost()  # what an invalidation does
    assert len(tree) == 21
    assert tree[5] == 5 and len(list(tree)) == 21
    check_btree(tree)


def test_replacing_a_value_notes_only_the_holding_node() -> None:
    tree = tree_of(BNode4, range(200))
    connection = FakeConnection()
    save_all(tree, connection)
    key = next(k for k in range(200) if len(path_to(tree, k)) == tree.get_depth())
    tree[key] = "new"
    assert connection.changed == [path_to(tree, key)[-1]]


def test_deleting_a_missing_key_changes_nothing() -> None:
    tree = tree_of(BNode, range(50))
    connection = FakeConnection()
    save_all(tree, connection)
    with pytest.raises(KeyError):
        del tree[1000]
    assert connection.changed == []


# -- deletion correctness (warts 24-27) --------------------------------------------


@pytest.mark.parametrize("node_class", NODE_CLASSES[:5])
def test_random_workloads_match_a_dict(node_class: type[BNode]) -> None:
    for seed in range(12):
        rnd = random.Random(seed)
        tree, model = BTree(node_class), {}
        key_range = rnd.choice([20, 200, 2000])
        for step in range(600):
            key = rnd.randrange(key_range)
            if rnd.random() < 0.55:
                tree[key] = model[key] = step
            elif key in model:
                del tree[key], model[key]
            if step % 50 == 0:
                assert check_btree(tree) == len(model)
        assert check_btree(tree) == len(model) == len(tree)
        assert tree.items() == sorted(model.items())
        for key in list(model):
            del tree[key]
        assert len(tree) == 0 and tree.root.is_leaf() and check_btree(tree) == 0


def minimal_bnode_tree() -> BTree:
    """root [4]; children [2] [6]; leaves [1] [3] [5] [7]: every node minimal."""
    leaves = []
    for key in (1, 3, 5, 7):
        leaf = BNode()
        leaf.items = [(key, key)]
        leaves.append(leaf)
    children = []
    for key, pair in ((2, leaves[:2]), (6, leaves[2:])):
        child = BNode()
        child.items, child.nodes = [(key, key)], pair
        children.append(child)
    tree = BTree(BNode)
    tree.root.items, tree.root.nodes = [(4, 4)], children
    assert check_btree(tree) == 7
    return tree


@pytest.mark.parametrize("first", [4, 2, 6, 1, 7])
def test_case_2c_merges_before_deleting(first: int) -> None:
    tree = minimal_bnode_tree()
    del tree[first]
    remaining = [k for k in range(1, 8) if k != first]
    assert check_btree(tree) == 6 and tree.keys() == remaining
    random.Random(first).shuffle(remaining)
    for key in remaining:
        del tree[key]
        check_btree(tree)
    assert len(tree) == 0


def test_root_collapse_keeps_the_root_object() -> None:
    tree = minimal_bnode_tree()
    root = tree.root
    del tree[4]
    assert tree.root is root and root.items == [(2, 2), (6, 6)]
    assert tree.get_depth() == 2 and check_btree(tree) == 6


# -- counts and stored state -------------------------------------------------------


def test_len_is_cached_and_exact() -> None:
    tree = tree_of(BNode4, range(300))
    assert tree.root._count == 300 and len(tree) == 300
    for node in all_nodes(tree.root):
        try:
            del node._count
        except AttributeError:
            pass
    assert len(tree) == 300 and tree.root._count == 300
    for key in range(0, 300, 3):
        del tree[key]
    assert len(tree) == 200 == check_btree(tree)
    assert tree.root.get_count(recount=True) == 200


def test_node_state_never_holds_the_count() -> None:
    tree = tree_of(BNode, range(10))
    root_state = tree.root.__getstate__()
    assert list(root_state) == ["items", "nodes"]
    assert root_state["items"] is tree.root.items and root_state["nodes"] is tree.root.nodes
    leaf = tree.root
    while leaf.nodes is not None:
        leaf = leaf.nodes[0]
    assert leaf.__getstate__() == {"items": leaf.items, "nodes": None}
    assert tree.__getstate__() == {"root": tree.root}
    assert b"_count" not in pickle.dumps(tree, 2)


@pytest.mark.parametrize("stored_count", [3, 999, _NullCount()])
def test_node_state_with_a_count_loads_and_the_count_is_ignored(stored_count: Any) -> None:
    connection = FakeConnection()
    state = {"items": [(1, 1), (2, 2), (3, 3)], "nodes": None, "_count": stored_count}
    connection.stored[int8_to_str(9)] = pickle.dumps(state, 2)
    ghost = new_ghost(BNode4, int8_to_str(9), connection)
    assert len(ghost) == 3 and ghost.items == state["items"]
    assert ghost._count == 3
    assert list(ghost.__getstate__()) == ["items", "nodes"]
    ghost._p_set_status_ghost()
    with pytest.raises(AttributeError):
        object.__getattribute__(ghost, "_count")


def test_stored_tree_loads_lazily_and_counts() -> None:
    storage = MemoryStorage()
    connection = Connection(storage)
    connection.get_root()["tree"] = tree_of(BNode4, range(100))
    connection.commit()
    loaded = Connection(storage).get_root()["tree"]
    assert loaded.root._p_is_ghost()
    assert loaded[57] == 57
    assert len(loaded_bnodes(loaded.root)) == 3 == loaded.get_depth()
    assert len(loaded) == 100 and check_btree(loaded) == 100
    assert loaded.items() == [(k, k) for k in range(100)]


def loaded_bnodes(node: BNode) -> list[BNode]:
    """The nodes below ``node`` that are not ghosts, found without loading any."""
    if node._p_is_ghost():
        return []
    found = [node]
    for child in object.__getattribute__(node, "nodes") or ():
        found.extend(loaded_bnodes(child))
    return found


def test_pickle_and_deepcopy_outside_a_connection() -> None:
    tree = tree_of(BNode4, range(80))
    for clone in (pickle.loads(pickle.dumps(tree, 2)), copy.deepcopy(tree)):
        assert real_class(clone) is BTree and real_class(clone.root) is BNode4
        assert clone.items() == tree.items() and check_btree(clone) == 80 == len(clone)
        assert clone.root is not tree.root and clone._p_status == UNSAVED
