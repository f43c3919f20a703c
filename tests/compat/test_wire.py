"""Client/server interop: our server with Durus 4.3 clients, and 4.3's server with ours.

Each test starts one ``python -m durus -s --file F --port P`` (of the side
named first in the configuration) on a free loopback port, and client agents
(``wire_agent.py``) of the implementations named next. The test drives the
agents step by step, so the interleavings are exact: commits, loads, bulk
loads (the crawler), sync and invalidations, write and read conflicts, packs,
and oid allocation by several clients at once. Servers and agents are killed
in ``finally`` blocks; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from tests.compat import harness
from tests.compat.dumps import assert_same_dump

# (server side, client a side, client b side)
CONFIGS = {
    "our-server/peer-clients": ("ours", "peer", "peer"),
    "peer-server/our-clients": ("peer", "ours", "ours"),
    "our-server/mixed-clients": ("ours", "peer", "ours"),
    "peer-server/mixed-clients": ("peer", "ours", "peer"),
}
CONFLICT_ERRORS = {"AssertionError", "StillConflictedError"}
PACK_WAIT_S = 20.0


class WireSetup:
    """A running server plus the agents a test opened; ``close()`` ends them all."""

    def __init__(
        self, sides, config, tmp_path, prebuilt_by: str | None = None, server_args=()
    ) -> None:
        self.sides = sides
        self.server_name, *self.client_names = config
        self.tmp_path = tmp_path
        self.path = tmp_path / "served.durus"
        self.agents: list[harness.AgentProcess] = []
        self.offline_dump = None
        if prebuilt_by is not None:
            _, self.offline_dump = sides[prebuilt_by].tool(
                "file", self.path, "build:standard", "dump"
            )
        self.server = harness.ServerProcess(
            sides[self.server_name], self.path, *server_args, cwd=tmp_path
        )
        self.server_quit = False

    def agent(self, side_name: str, label: str) -> harness.AgentProcess:
        agent = harness.AgentProcess(self.sides[side_name], self.server.port, self.tmp_path, label)
        self.agents.append(agent)
        return agent

    def clients(self) -> tuple[harness.AgentProcess, harness.AgentProcess]:
        a_side, b_side = self.client_names
        return self.agent(a_side, "a"), self.agent(b_side, "b")

    def quit_server(self) -> None:
        """Stop the server the normal way (the quit request); it must exit cleanly."""
        self.server_quit = True
        self.server.quit()

    def check_server_alive(self) -> None:
        if not self.server_quit:
            assert self.server.alive(), f"server died:\n{self.server.log()}"

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.server.stop()


@contextlib.contextmanager
def wire(sides, config_name, tmp_path, prebuilt_by=None, server_args=()):
    setup = WireSetup(sides, CONFIGS[config_name], tmp_path, prebuilt_by, server_args)
    try:
        yield setup
        setup.check_server_alive()
    finally:
        setup.close()


def other(side_name: str) -> str:
    return "peer" if side_name == "ours" else "ours"


@pytest.mark.parametrize("config", CONFIGS)
def test_commits_loads_and_crawl(config, sides, tmp_path):
    """A file built offline by the other side, served, changed through the wire, read by all."""
    server_name = CONFIGS[config][0]
    with wire(sides, config, tmp_path, prebuilt_by=other(server_name)) as setup:
        a, b = setup.clients()
        assert_same_dump(setup.offline_dump, a.call("dump"), f"{config}: served file read by a")
        a.call("build")  # every object again, 1 MB record included, committed over the wire
        a.call("mutate", round=1)
        dump = a.call("dump")
        assert_same_dump(dump, b.call("dump"), f"{config}: a's commit read by b")
        crawled = b.call("crawl")
        assert sorted(crawled) == sorted(int(oid) for oid in dump["objects"])
        assert b.call("bulk_load", oids=crawled[:50]) == crawled[:50]
        b.call("mutate", round=2)
        dump = b.call("dump")
        assert_same_dump(dump, a.call("dump"), f"{config}: b's commit read by a")
        setup.quit_server()
    for side in sides.values():
        (offline,) = side.tool("file", setup.path, "dump")
        assert_same_dump(
            dump, offline, f"{config}: file after the server quit, read by {side.name}"
        )


@pytest.mark.parametrize("config", CONFIGS)
def test_invalidation_reaches_other_client(config, sides, tmp_path):
    with wire(sides, config, tmp_path) as setup:
        a, b = setup.clients()
        a.call("put_dict", key="shared", items={"x": 0})
        a.call("commit")
        b.call("abort")
        assert b.call("get_in", holder="shared", key="x") == 0
        a.call("set_in", holder="shared", key="x", value=1)
        a.call("commit")
        assert b.call("get_in", holder="shared", key="x") == 0  # not synced yet
        b.call("abort")
        assert b.call("get_in", holder="shared", key="x") == 1


@pytest.mark.parametrize("config", CONFIGS)
def test_computed_attribute_invalidation(config, sides, tmp_path):
    """invalidate() in one client makes the other client recompute after its next sync."""
    with wire(sides, config, tmp_path) as setup:
        a, b = setup.clients()
        a.call("put_computed", key="total")
        a.call("commit")
        b.call("abort")
        assert b.call("computed_get", key="total", value=1) == 1
        assert b.call("computed_get", key="total", value=2) == 1  # cached
        a.call("computed_invalidate", key="total")
        a.call("commit")
        b.call("abort")
        assert b.call("computed_get", key="total", value=3) == 3


@pytest.mark.parametrize("config", CONFIGS)
def test_write_conflict_then_retry(config, sides, tmp_path):
    with wire(sides, config, tmp_path) as setup:
        a, b = setup.clients()
        a.call("put_dict", key="shared", items={"x": 0})
        a.call("commit")
        b.call("abort")
        assert b.call("get_in", holder="shared", key="x") == 0
        a.call("set_in", holder="shared", key="x", value=1)
        a.call("commit")
        b.call("set_in", holder="shared", key="x", value=2)
        assert b.request("commit").get("error") == "WriteConflictError"
        assert b.request("commit").get("error") in CONFLICT_ERRORS  # must abort() first
        b.call("abort")
        assert b.call("get_in", holder="shared", key="x") == 1
        b.call("set_in", holder="shared", key="x", value=2)
        b.call("commit")
        a.call("abort")
        assert a.call("get_in", holder="shared", key="x") == 2


@pytest.mark.parametrize("config", CONFIGS)
def test_read_conflict(config, sides, tmp_path):
    """b read p; a changes p and q; b's first load of q is a read conflict."""
    with wire(sides, config, tmp_path) as setup:
        a, b = setup.clients()
        a.call("put_dict", key="p", items={"k": 0})
        a.call("put_dict", key="q", items={"k": 0})
        a.call("commit")
        b.call("abort")
        assert b.call("get_in", holder="p", key="k") == 0
        a.call("set_in", holder="p", key="k", value=1)
        a.call("set_in", holder="q", key="k", value=1)
        a.call("commit")
        assert b.request("get_in", holder="q", key="k").get("error") == "ReadConflictError"
        b.call("abort")
        assert b.call("get_in", holder="q", key="k") == 1
        assert b.call("get_in", holder="p", key="k") == 1


@pytest.mark.parametrize("config", CONFIGS)
def test_pack_through_client(config, sides, tmp_path):
    with wire(sides, config, tmp_path) as setup:
        a, b = setup.clients()
        doomed = a.call("add_objects", key="doomed", count=5)
        kept = a.call("add_objects", key="kept", count=5)
        a.call("set", key="doomed", value=None)
        a.call("commit")
        b.call("pack")
        assert b.call("wait_gone", oid=doomed[-1], wait_s=PACK_WAIT_S), "pack did not finish"
        for oid in doomed:
            assert a.request("load", oid=oid).get("error") in ("DurusKeyError", "ReadConflictError")
        a.call("abort")
        for oid in kept:
            assert a.call("load", oid=oid) > 0
        assert_same_dump(a.call("dump"), b.call("dump"), f"{config}: after a pack")


@pytest.mark.parametrize("config", CONFIGS)
def test_new_oids_from_several_clients(config, sides, tmp_path):
    with wire(sides, config, tmp_path) as setup:
        a, b = setup.clients()
        c = setup.agent(setup.client_names[0], "c")
        existing = set(a.call("crawl"))
        handed_out = []
        for agent in (a, b, c, b, a, c):
            handed_out.extend(agent.call("new_oids", count=20))
        assert len(set(handed_out)) == len(handed_out), "an oid was handed out twice"
        assert not existing & set(handed_out), "an oid in use was handed out"
        stored = []
        for name, agent in (("a", a), ("b", b), ("c", c)):
            agent.call("abort")
            stored.extend(agent.call("add_objects", key=f"from_{name}", count=40))
        assert len(set(stored)) == len(stored)
        assert not existing & set(stored)
        dumps = [agent.call("dump") for agent in (a, b, c)]
        assert_same_dump(dumps[0], dumps[1], f"{config}: a and b")
        assert_same_dump(dumps[0], dumps[2], f"{config}: a and c")
        assert set(stored) <= {int(oid) for oid in dumps[0]["objects"]}


def test_btree_len_after_peer_client_insert(sides, tmp_path):
    """Minimal pin: our client counts a tree; a 4.3 client inserts one key; we count again."""
    with wire(sides, "our-server/mixed-clients", tmp_path) as setup:
        ours, peer = setup.agent("ours", "reader"), setup.agent("peer", "writer")
        ours.call("put_tree", key="t", count=40)
        ours.call("commit")
        assert ours.call("tree_len", holder="t") == {"len": 40, "keys": 40}
        peer.call("abort")
        peer.call("tree_set", holder="t", key=5, value=-1)
        peer.call("commit")
        ours.call("abort")
        assert ours.call("tree_len", holder="t") == {"len": 41, "keys": 41}


CHURN_ROUNDS = 15
CHURN_OBJECTS = 30


PACK_SETTLE_TIMEOUT_S = 30.0


def _wait_for_packs_to_settle(path) -> None:
    """Idle time for the server's incremental packs: half a second for the last one
    to start, then until none is running. Both servers write ``<file>.pack`` in steps
    between requests and rename it over the file (Durus 4.3 first renames the old
    file to ``<file>.prepack`` and leaves it there); a loaded machine needs seconds.
    """
    time.sleep(0.5)
    deadline = time.monotonic() + PACK_SETTLE_TIMEOUT_S
    while os.path.exists(f"{path}.pack") and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("config", CONFIGS)
def test_gcbytes_packs_between_commits(config, sides, tmp_path):
    """--gcbytes: packs start by themselves and run between the clients' commits."""
    with wire(sides, config, tmp_path, server_args=("--gcbytes", "8000")) as setup:
        a, b = setup.clients()
        created = []
        for round_number in range(CHURN_ROUNDS):
            agent = a if round_number % 2 else b
            agent.call("abort")
            created.extend(agent.call("add_objects", key="churn", count=CHURN_OBJECTS))
        _wait_for_packs_to_settle(setup.path)
        dump = a.call("dump")
        assert_same_dump(dump, b.call("dump"), f"{config}: after churn")
        setup.quit_server()
    for side in sides.values():
        (offline,) = side.tool("file", setup.path, "dump")
        assert_same_dump(dump, offline, f"{config}: churned file read by {side.name}")
    assert len(offline["loadable"]) < len(created) // 2, "no pack removed the churned garbage"


@pytest.mark.parametrize("server_side", ["ours", "peer"])
def test_unix_socket_server(server_side, sides, tmp_path):
    """--address PATH: the other side's clients connect by path; quitting removes the socket."""
    client_side = other(server_side)
    socket_path = tmp_path / "durus.sock"
    path = tmp_path / "db.durus"
    server = harness.ServerProcess(sides[server_side], path, cwd=tmp_path, socket_path=socket_path)
    agents = []
    try:
        for label in ("a", "b"):
            agents.append(
                harness.AgentProcess(sides[client_side], server.client_address, tmp_path, label)
            )
        a, b = agents
        a.call("put_dict", key="shared", items={"x": 1})
        a.call("commit")
        b.call("abort")
        assert b.call("get_in", holder="shared", key="x") == 1
        for agent in agents:
            agent.stop()
        assert server.quit() == 0
        assert not socket_path.exists(), "the socket file was left behind"
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


@pytest.mark.parametrize(
    "client_side",
    [
        "peer",
        "ours",
    ],
)
def test_inserts_into_different_leaves_do_not_conflict(client_side, sides, tmp_path):
    """Two clients insert into different leaves of one BTree: no write conflict (as in 4.3)."""
    config = "our-server/peer-clients" if client_side == "peer" else "peer-server/our-clients"
    with wire(sides, config, tmp_path) as setup:
        a, b = setup.clients()
        a.call("put_tree", key="t", count=40)
        a.call("commit")
        b.call("abort")
        a.call("tree_set", holder="t", key=1, value=-1)
        b.call("tree_set", holder="t", key=77, value=-1)
        a.call("commit")
        assert b.request("commit") == {"result": None}
