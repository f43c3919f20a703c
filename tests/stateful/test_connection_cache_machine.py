"""A Connection with a tiny cache against a plain-dict model.

Random sequences of create / modify / link / read / commit / abort / shrink /
resize keep the object graph intact: the connection's graph always equals the
working model, and a fresh Connection on the same MemoryStorage always sees
exactly the committed model. After every step the read-tracking invariants of
durus.persistent hold for every cached object (a ghost is an instance of its
tracking twin; an object of its real class was read in this transaction).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from durus.connection import Connection
from durus.persistent import GHOST, UNSAVED, Persistent, is_tracking_class
from durus.persistent_dict import PersistentDict
from durus.storage import MemoryStorage

KEYS = st.integers(min_value=0, max_value=4)
VALUES = st.integers(min_value=-5, max_value=5)

Model = dict[str, Any]  # {"root": {key: ident}, "nodes": {ident: {"value", "refs"}}}


class Node(Persistent):
    def __init__(self, ident: int, value: int, refs: list[Node]) -> None:
        self.ident = ident
        self.value = value
        self.refs = refs


def reachable(model: Model) -> list[int]:
    """Idents reachable from the model's root, in a deterministic order."""
    seen: list[int] = []
    todo = sorted(model["root"].values())
    while todo:
        ident = todo.pop(0)
        if ident not in seen:
            seen.append(ident)
            todo.extend(model["nodes"][ident]["refs"])
    return seen


def snapshot(root: Any) -> Model:
    """The model of the graph reachable from a connection's root."""
    nodes: dict[int, dict[str, Any]] = {}
    todo = list(root.values())
    while todo:
        node = todo.pop()
        if node.ident in nodes:
            continue
        nodes[node.ident] = {"value": node.value, "refs": [r.ident for r in node.refs]}
        todo.extend(node.refs)
    return {"root": {key: node.ident for key, node in root.items()}, "nodes": nodes}


def reachable_part(model: Model) -> Model:
    keep = set(reachable(model))
    nodes = {i: n for i, n in model["nodes"].items() if i in keep}
    return {"root": dict(model["root"]), "nodes": nodes}


class ConnectionCacheMachine(RuleBasedStateMachine):
    @initialize(cache_size=st.integers(min_value=1, max_value=3))
    def open(self, cache_size: int) -> None:
        self.storage = MemoryStorage()
        self.connection = Connection(self.storage, cache_size=cache_size)
        self.working: Model = {"root": {}, "nodes": {}}
        self.committed: Model = copy.deepcopy(self.working)
        self.oid_by_ident: dict[int, bytes] = {}
        self.new_nodes: dict[int, Node] = {}
        self.next_ident = 0

    def lookup(self, ident: int) -> Node:
        if ident in self.new_nodes:
            return self.new_nodes[ident]
        node: Node = self.connection.get(self.oid_by_ident[ident])
        return node

    def pick(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(reachable(self.working)))

    @rule(key=KEYS, value=VALUES, data=st.data())
    def create(self, key: int, value: int, data: st.DataObject) -> None:
        candidates = reachable(self.working)
        ref_idents = (
            data.draw(st.lists(st.sampled_from(candidates), max_size=2)) if candidates else []
        )
        ident = self.next_ident
        self.next_ident += 1
        node = Node(ident, value, [self.lookup(i) for i in ref_idents])
        self.connection.root[key] = node
        self.new_nodes[ident] = node
        self.working["nodes"][ident] = {"value": value, "refs": ref_idents}
        self.working["root"][key] = ident

    @precondition(lambda self: self.working["root"])
    @rule(value=VALUES, data=st.data())
    def modify(self, value: int, data: st.DataObject) -> None:
        ident = self.pick(data)
        self.lookup(ident).value = value
        self.working["nodes"][ident]["value"] = value

    @precondition(lambda self: self.working["root"])
    @rule(data=st.data())
    def link(self, data: st.DataObject) -> None:
        source, target = self.pick(data), self.pick(data)
        node = self.lookup(source)
        node.refs = node.refs + [self.lookup(target)]
        self.working["nodes"][source]["refs"].append(target)

    @precondition(lambda self: self.working["root"])
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        ident = self.pick(data)
        node = self.lookup(ident)
        assert node.value == self.working["nodes"][ident]["value"]
        assert [r.ident for r in node.refs] == self.working["nodes"][ident]["refs"]

    @precondition(lambda self: self.working["root"])
    @rule(key=KEYS)
    def remove(self, key: int) -> None:
        if key in self.working["root"]:
            del self.connection.root[key]
            del self.working["root"][key]

    @rule()
    def commit(self) -> None:
        self.connection.commit()
        for ident, node in self.new_nodes.items():
            if node._p_oid is not None:
                self.oid_by_ident[ident] = node._p_oid
        self.new_nodes.clear()
        self.working = reachable_part(self.working)
        self.committed = copy.deepcopy(self.working)

    @rule()
    def abort(self) -> None:
        self.connection.abort()
        self.new_nodes.clear()
        self.working = copy.deepcopy(self.committed)

    @rule()
    def shrink(self) -> None:
        self.connection.shrink_cache()

    @rule(size=st.integers(min_value=1, max_value=4))
    def resize(self, size: int) -> None:
        self.connection.set_cache_size(size)

    @rule()
    def check_working_graph(self) -> None:
        assert snapshot(self.connection.root) == reachable_part(self.working)

    @invariant()
    def tracking_invariants_hold(self) -> None:
        connection = self.connection
        for obj in list(connection.cache):
            if obj is None:
                continue
            if obj._p_status == GHOST:
                assert is_tracking_class(type(obj)), obj
            elif not is_tracking_class(type(obj)) and obj._p_connection is connection:
                assert obj._p_serial == connection.transaction_serial, obj
            if obj._p_status == UNSAVED and obj._p_oid is not None:
                assert connection.changed.get(obj._p_oid) is obj

    @invariant()
    def fresh_connection_sees_committed_model(self) -> None:
        fresh = Connection(self.storage, cache_size=1)
        assert isinstance(fresh.root.__class__(), PersistentDict)
        assert snapshot(fresh.root) == reachable_part(self.committed)


TestConnectionCache = ConnectionCacheMachine.TestCase
