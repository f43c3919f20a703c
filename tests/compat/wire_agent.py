"""A Durus client driven line by line: one JSON request on stdin, one JSON reply on stdout.

Run by the wire compatibility tests under either implementation:

    python wire_agent.py PORT_OR_SOCKET_PATH

It opens ``Connection(ClientStorage(...))`` on that TCP port of 127.0.0.1 (or
that Unix-domain socket) and then serves requests
such as ``{"op": "set", "key": "x", "value": 1}`` until stdin closes. Several
agents (ours and Durus 4.3's) talk to one server at the same time, so a test
can interleave their steps exactly: conflicts, invalidations, packs and oid
allocation across implementations. Every exception raised by an operation is
returned as ``{"error": <class name>, "message": ...}``, never swallowed.

Must stay runnable by Durus 4.3 (public API and standard library only) and
print nothing but replies on stdout.
"""

from __future__ import annotations

import json
import sys
import time

import graph_tool
from compatclasses import Account, Small

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.persistent_list import PersistentList
from durus.utils import int8_to_str, str_to_int8

PACK_POLL_S = 0.05


class Agent:
    def __init__(self, where: str) -> None:
        if where.isdigit():
            self.storage = ClientStorage(port=int(where))
        else:
            self.storage = ClientStorage(address=where)
        self.connection = Connection(self.storage)

    @property
    def root(self):
        return self.connection.get_root()

    def op_build(self, request):
        return graph_tool.build_standard(self.connection)

    def op_mutate(self, request):
        return graph_tool.mutate(self.connection, str(request["round"]))

    def op_dump(self, request):
        self.connection.abort()
        return graph_tool.dump(self.connection)

    def op_set(self, request):
        self.root[request["key"]] = request["value"]

    def op_get(self, request):
        return self.root.get(request["key"])

    def op_set_in(self, request):
        """Change an entry of a PersistentDict held by the root under ``holder``."""
        self.root[request["holder"]][request["key"]] = request["value"]

    def op_get_in(self, request):
        return self.root[request["holder"]].get(request["key"])

    def op_put_dict(self, request):
        from durus.persistent_dict import PersistentDict

        self.root[request["key"]] = PersistentDict(request.get("items", {}))

    def op_put_tree(self, request):
        """A BNode (t = 2) BTree under ``key`` holding keys 0, 2, 4, ... (``count`` keys)."""
        from durus.btree import BNode, BTree

        tree = BTree(BNode)
        for index in range(request["count"]):
            tree[2 * index] = index
        self.root[request["key"]] = tree

    def op_tree_set(self, request):
        self.root[request["holder"]][request["key"]] = request["value"]

    def op_tree_len(self, request):
        """``len(tree)`` next to the number of keys iteration finds."""
        tree = self.root[request["holder"]]
        return {"len": len(tree), "keys": len(list(tree.keys()))}

    def op_put_computed(self, request):
        from durus.persistent import ComputedAttribute

        self.root[request["key"]] = ComputedAttribute()

    def op_computed_get(self, request):
        """``ComputedAttribute.get``: the cached value, or ``value`` when it must recompute."""
        return self.root[request["key"]].get(lambda: request["value"])

    def op_computed_invalidate(self, request):
        self.root[request["key"]].invalidate()

    def op_commit(self, request):
        self.connection.commit()

    def op_abort(self, request):
        self.connection.abort()

    def op_new_oids(self, request):
        return [str_to_int8(self.storage.new_oid()) for _ in range(request["count"])]

    def op_add_objects(self, request):
        """A PersistentList of ``count`` new objects under ``key``; returns their oids."""
        items = PersistentList(Small(i) for i in range(request["count"]))
        items.append(Account(request["key"]))
        self.root[request["key"]] = items
        self.connection.commit()
        return [str_to_int8(item._p_oid) for item in items]

    def op_oid_of(self, request):
        return str_to_int8(self.root[request["key"]]._p_oid)

    def op_load(self, request):
        """Raw ``storage.load``: the record's length (errors come back as errors)."""
        return len(self.storage.load(int8_to_str(request["oid"])))

    def op_bulk_load(self, request):
        oids = [int8_to_str(oid) for oid in request["oids"]]
        return [str_to_int8(record[:8]) for record in self.storage.bulk_load(oids)]

    def op_crawl(self, request):
        """Walk with the crawler (bulk loads): the oids it yields, in order."""
        return [str_to_int8(obj._p_oid) for obj in self.connection.get_crawler()]

    def op_pack(self, request):
        self.connection.pack()

    def op_wait_gone(self, request):
        """Sync until ``oid`` is no longer loadable (a pack removed it), within ``wait_s``."""
        deadline = time.monotonic() + request["wait_s"]
        oid = int8_to_str(request["oid"])
        while time.monotonic() < deadline:
            self.connection.abort()
            try:
                self.storage.load(oid)
            except KeyError:
                return True
            time.sleep(PACK_POLL_S)
        return False

    def op_close(self, request):
        self.storage.close()


def describe(error: BaseException) -> dict:
    try:
        message = str(error)
    except Exception:  # Durus 4.3's str(DurusKeyError) raises AttributeError
        message = repr(error.args)
    return {"error": type(error).__name__, "message": message[:500]}


def serve(agent: Agent) -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"result": getattr(agent, "op_" + request["op"])(request)}
        except Exception as error:  # every failure goes back to the test
            reply = describe(error)
        sys.stdout.write(json.dumps(reply, sort_keys=True) + "\n")
        sys.stdout.flush()


def main() -> None:
    try:
        agent = Agent(sys.argv[1])
        reply = {"result": "ready"}
    except Exception as error:
        agent, reply = None, describe(error)
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    if agent is not None:
        serve(agent)


if __name__ == "__main__":
    main()
