"""BTree behaves like a sorted dict, for every node degree, stored or not.

The machine applies random inserts, deletes (single and in bulk), pops,
range queries and min/max to a BTree held in the root of a connection, and to
a plain dict, and after every step checks the answers and every structural
invariant (``durus.btree.check_btree``: sorted keys, separators, node fill
t-1 .. 2t-1, k+1 children, equal leaf depth, cached counts equal to real
counts). ``len()`` is compared before the check walks the tree, so the O(1)
cached count itself is what is tested.

Persistence rules: commit, abort (the model falls back to the last committed
copy, and nodes ghosted by abort must drop their counts), ghost every node,
forget cached counts, shrink a tiny cache, reopen the storage, and let a
second client change the tree so that invalidations ghost this client's
nodes. The two clients share one MemoryStorage through ``SharedView``, a test
double that delivers invalidations the way a storage server does.
"""

from __future__ import annotations

import copy
import os
from itertools import islice
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

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
    _set_count,
    check_btree,
)
from durus.connection import Connection
from durus.persistent import real_class
from durus.storage import MemoryStorage, Storage

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
QUERY_LIMIT = 50  # items compared per range query


class SharedView(Storage):
    """One client's view of a shared MemoryStorage, with invalidations like a server's."""

    def __init__(self, shared: MemoryStorage, views: list[SharedView]) -> None:
        self.shared = shared
        self.views = views
        self.pending: set[bytes] = set()
        views.append(self)

    def load(self, oid: bytes) -> bytes:
        return self.shared.load(oid)

    def begin(self) -> None:
        self.shared.begin()

    def store(self, oid: bytes, record: bytes) -> None:
        self.shared.store(oid, record)

    def end(self, handle_invalidations: Any = None) -> None:
        if self.pending and handle_invalidations is not None:
            handle_invalidations(sorted(self.pending))
        self.pending.clear()
        assert self.shared.transaction is not None
        written = set(self.shared.transaction)
        self.shared.end()
        for view in self.views:
            if view is not self:
                view.pending.update(written)

    def sync(self) -> list[bytes]:
        oids = sorted(self.pending)
        self.pending.clear()
        return oids

    def new_oid(self) -> bytes:
        return self.shared.new_oid()


def all_loaded_nodes(node: Any) -> list[Any]:
    """The non-ghost nodes at and below ``node``, found without loading any ghost."""
    if node._p_is_ghost():
        return []
    found = [node]
    for child in object.__getattribute__(node, "nodes") or ():
        found.extend(all_loaded_nodes(child))
    return found


class BTreeMachine(RuleBasedStateMachine):
    """A BTree of ``node_class`` nodes compared with a dict (sorted on demand)."""

    node_class: type[BNode] = BNode

    def __init__(self) -> None:
        super().__init__()
        t = self.node_class.minimum_degree
        # enough keys for depth 3 with small nodes, depth 2 with large ones
        self.bulk_max = min(5 * t * t, max(6 * t, 1500))
        self.key_space = 2 * self.bulk_max
        self.shared = MemoryStorage()
        self.views: list[SharedView] = []
        self.connection = Connection(SharedView(self.shared, self.views), cache_size=8)
        self.connection.get_root()["tree"] = BTree(self.node_class)
        self.connection.commit()
        self.other: Connection | None = None
        self.model: dict[int, Any] = {}
        self.committed: dict[int, Any] = {}
        self.skip_full_check = False

    @property
    def tree(self) -> BTree:
        tree: BTree = self.connection.get_root()["tree"]
        return tree

    def key(self, fraction: float) -> int:
        return int(fraction * self.key_space)

    @initialize(fill=st.sampled_from([0.0, 0.3, 1.0]), rnd=st.randoms())
    def prefill(self, fill: float, rnd: Any) -> None:
        """Start most runs from a tree that already has several levels."""
        keys = list(range(0, self.key_space, 2))[: int(fill * self.bulk_max)]
        rnd.shuffle(keys)
        for key in keys:
            self.tree[key] = key
            self.model[key] = key
        self.commit()

    # -- mapping operations -------------------------------------------------------

    @rule(fraction=st.floats(0, 1), value=st.integers(-9, 9))
    def insert(self, fraction: float, value: int) -> None:
        key = self.key(fraction)
        self.tree[key] = value
        self.model[key] = value

    @rule(fraction=st.floats(0, 1))
    def delete(self, fraction: float) -> None:
        key = self.key(fraction)
        try:
            del self.tree[key]
        except KeyError as error:
            assert key not in self.model and error.args == (key,)
        else:
            del self.model[key]

    @rule(start=st.floats(0, 1), count=st.floats(0, 1), stride=st.integers(1, 3), rnd=st.randoms())
    def bulk_insert(self, start: float, count: float, stride: int, rnd: Any) -> None:
        first = self.key(start)
        keys = list(range(first, first + stride * int(count * self.bulk_max), stride))
        rnd.shuffle(keys) if rnd.random() < 0.5 else None
        tree = self.tree
        for key in keys:
            tree[key] = key
            self.model[key] = key

    @rule(start=st.floats(0, 1), width=st.floats(0, 1), rnd=st.randoms())
    def bulk_delete(self, start: float, width: float, rnd: Any) -> None:
        low = self.key(start)
        high = low + int(width * self.key_space)
        doomed = [key for key in self.model if low <= key < high]
        rnd.shuffle(doomed)
        tree = self.tree
        for key in doomed:
            del tree[key]
            del self.model[key]

    @rule(fraction=st.floats(0, 1), value=st.integers(-9, 9))
    def setdefault_and_pop(self, fraction: float, value: int) -> None:
        key = self.key(fraction)
        tree = self.tree
        assert tree.setdefault(key, value) == self.model.setdefault(key, value)
        assert tree.pop(key + 1, "none") == self.model.pop(key + 1, "none")

    @rule()
    def popitem(self) -> None:
        if self.model:
            smallest = min(self.model)
            assert self.tree.popitem() == (smallest, self.model.pop(smallest))
        else:
            try:
                self.tree.popitem()
            except KeyError:
                pass
            else:
                raise AssertionError("popitem() on an empty tree did not raise KeyError")

    @precondition(lambda self: len(self.model) < self.bulk_max)
    @rule()
    def clear(self) -> None:
        self.tree.clear()
        self.model.clear()
        assert real_class(self.tree.root) is self.node_class

    # -- queries ------------------------------------------------------------------

    @rule(fraction=st.floats(0, 1), closed=st.booleans())
    def items_from_and_backward(self, fraction: float, closed: bool) -> None:
        key = self.key(fraction) + (0.5 if fraction > 0.5 else 0)
        ordered = sorted(self.model.items())
        forward = [item for item in ordered if item[0] > key or (closed and item[0] == key)]
        backward = [
            item for item in reversed(ordered) if item[0] < key or (closed and item[0] == key)
        ]
        tree = self.tree
        assert list(islice(tree.items_from(key, closed), QUERY_LIMIT)) == forward[:QUERY_LIMIT]
        found = list(islice(tree.items_backward_from(key, closed), QUERY_LIMIT))
        assert found == backward[:QUERY_LIMIT]
        assert tree.get(key) == self.model.get(key) and (key in tree) == (key in self.model)

    @rule(a=st.floats(0, 1), b=st.floats(0, 1), closed=st.tuples(st.booleans(), st.booleans()))
    def items_range(self, a: float, b: float, closed: tuple[bool, bool]) -> None:
        start, end = self.key(a), self.key(b)
        closed_start, closed_end = closed

        def inside(key: int) -> bool:
            low, high = (start, end) if start <= end else (end, start)
            if key == start:
                return closed_start and (key != end or closed_end)
            if key == end:
                return closed_end
            return low < key < high

        expected = sorted(item for item in self.model.items() if inside(item[0]))
        if start > end:
            expected.reverse()
        found = self.tree.items_range(start, end, closed_start, closed_end)
        assert list(islice(found, QUERY_LIMIT)) == expected[:QUERY_LIMIT]

    @rule()
    def min_and_max(self) -> None:
        tree = self.tree
        if self.model:
            assert tree.get_min_item() == min(self.model.items())
            assert tree.get_max_item() == max(self.model.items())
        else:
            for method in (tree.get_min_item, tree.get_max_item):
                try:
                    method()
                except EmptyBTreeError:
                    pass
                else:
                    raise AssertionError("min/max of an empty tree did not raise")

    # -- counts, ghosts and persistence -------------------------------------------

    @rule(rnd=st.randoms())
    def forget_some_counts(self, rnd: Any) -> None:
        for node in all_loaded_nodes(self.tree.root):
            if rnd.random() < 0.5:
                _set_count(node, None)

    @rule()
    def commit(self) -> None:
        self.connection.commit()
        self.committed = copy.copy(self.model)

    @rule()
    def abort(self) -> None:
        self.connection.abort()
        self.model = copy.copy(self.committed)

    @rule()
    def commit_and_ghost_every_node(self) -> None:
        self.commit()
        tree = self.tree
        nodes = all_loaded_nodes(tree.root)
        for node in nodes:
            node._p_set_status_ghost()
        tree._p_set_status_ghost()
        self.skip_full_check = True  # let the next rule meet the ghosts

    @rule()
    def commit_and_reopen(self) -> None:
        self.commit()
        self.views.clear()
        self.other = None
        self.connection = Connection(SharedView(self.shared, self.views), cache_size=8)
        self.skip_full_check = True

    @rule(keys=st.lists(st.floats(0, 1), min_size=1, max_size=6), rnd=st.randoms())
    def other_client_changes_the_tree(self, keys: list[float], rnd: Any) -> None:
        self.commit()
        if self.other is None:
            self.other = Connection(SharedView(self.shared, self.views), cache_size=8)
        other = self.other
        other.abort()  # take in this client's commits
        other_tree = other.get_root()["tree"]
        assert len(other_tree) == len(self.model)
        for fraction in keys:
            key = self.key(fraction)
            if key in self.model and rnd.random() < 0.6:
                del other_tree[key]
                del self.model[key]
            else:
                other_tree[key] = -key
                self.model[key] = -key
        other.commit()
        self.connection.abort()  # take in the other client's commit
        self.committed = copy.copy(self.model)

    # -- checks -------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        if self.skip_full_check:
            self.skip_full_check = False
            return
        tree = self.tree
        assert len(tree) == len(self.model)
        assert bool(tree) == bool(self.model)
        assert check_btree(tree) == len(self.model)
        assert tree.items() == sorted(self.model.items())
        assert real_class(tree.root) is self.node_class
        import hypothesis

        hypothesis.event(f"depth {tree.get_depth()}")


def machine_for(node_class: type[BNode], max_examples: int | None) -> Any:
    """A TestCase running BTreeMachine with ``node_class`` nodes."""
    machine = type(
        f"BTreeMachine_{node_class.__name__}", (BTreeMachine,), {"node_class": node_class}
    )
    test_case = machine.TestCase
    if max_examples is not None and not THOROUGH:
        test_case.settings = settings(test_case.settings, max_examples=max_examples)
    return test_case


TestBTreeMachineBNode = machine_for(BNode, None)
TestBTreeMachineBNode4 = machine_for(BNode4, None)
TestBTreeMachineBNode8 = machine_for(BNode8, 20)
TestBTreeMachineBNode16 = machine_for(BNode16, None)
TestBTreeMachineBNode32 = machine_for(BNode32, 10)
TestBTreeMachineBNode64 = machine_for(BNode64, 5)
TestBTreeMachineBNode128 = machine_for(BNode128, 3)
TestBTreeMachineBNode256 = machine_for(BNode256, 3)
TestBTreeMachineBNode512 = machine_for(BNode512, 3)
