"""Several real clients on one storage, compared with the spec after every step.

Owns the Hypothesis machines that drive 2-4 real ``Connection`` clients of the
``durus`` implementation on one database (through the in-process server core,
FileStorage behind it, FileStorage used directly, or a real server process)
with random reads, writes, new objects, commits, aborts, cache shrinks with
tiny caches, packs and reconnects, and check every observable outcome against
``spec.model`` (the rules are in spec/README.md). With the loopback backends
the machine also runs one client's whole commit inside another client's
commit exchange, so the race between a commit's invalidation list and its
transaction data is explored deterministically, not left to luck.

Never decides an outcome itself (the spec does) and never reaches into the
server: the harness reads only what a client sees, plus the client's cache
(which objects are loaded, read without noting an access) to tell the spec
which path a read takes.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

for _path in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from spec_backends import (  # noqa: E402
    Backend,
    Cell,
    direct_file,
    loopback_file,
    loopback_file2,
    loopback_memory,
    loopback_sqlite,
    oid_bytes,
    oid_int,
    socket_server,
)

from durus.connection import Connection  # noqa: E402
from durus.error import (  # noqa: E402
    ConflictError,
    ReadConflictError,
    StillConflictedError,  # noqa: E402
    WriteConflictError,
)
from durus.persistent import GHOST  # noqa: E402
from spec.model import (  # noqa: E402
    GHOST as SPEC_GHOST,
)
from spec.model import (  # noqa: E402
    LOADED,
    OK,
    READ_CONFLICT,
    ROOT,
    STILL_CONFLICTED,
    UNCACHED,
    WRITE_CONFLICT,
    Model,
    NotFound,
    Obj,
    Outcome,
    Raised,
    Returned,
)

CLIENT = st.integers(0, 3)
PICK = st.integers(0, 2**16)


class Mismatch(AssertionError):
    """The implementation's outcome is not the one the spec requires."""


def raised(error: BaseException) -> Raised:
    """The spec's description of an exception from the implementation."""
    oids = None if getattr(error, "oids", None) is None else frozenset(map(oid_int, error.oids))
    if isinstance(error, StillConflictedError):
        return Raised(STILL_CONFLICTED)
    if isinstance(error, ReadConflictError):
        return Raised(READ_CONFLICT, oids)
    if isinstance(error, WriteConflictError):
        return Raised(WRITE_CONFLICT, oids)
    raise error


def cache_state(obj: Any) -> str:
    """What the cache holds for an oid, read without touching the object's state."""
    if obj is None:
        return UNCACHED
    return SPEC_GHOST if obj._p_status == GHOST else LOADED


class ClientsVsSpec(RuleBasedStateMachine):
    """N real clients and the spec, step by step. ``make_backend`` picks the database."""

    make_backend: Callable[[], Backend] = staticmethod(loopback_memory)
    blind_writes = False  # write without reading first (see test_blind_write_*)
    interleave_commits = False  # run commits inside commits (loopback backends only)

    def __init__(self) -> None:
        super().__init__()
        self.backend: Backend | None = None
        self.conns: dict[str, Connection] = {}
        self.created: dict[str, dict[int, Cell]] = {}
        self.values = 0
        self.log: list[str] = []

    # -- setup and teardown ----------------------------------------------

    @initialize(
        clients=st.integers(2, 4),
        cache_size=st.sampled_from([1, 2, 5, 1000]),
        objects=st.integers(0, 4),
    )
    def setup(self, clients: int, cache_size: int, objects: int) -> None:
        self.backend = self.make_backend()
        self.cache_size = cache_size
        self.names = [f"c{i}" for i in range(min(clients, self.backend.max_clients))]
        self.model = Model(Obj(0, ()), packs=self.backend.packs)
        for name in self.names:
            self._connect(name)
        if objects:
            self.populate(self.names[0], objects)

    def populate(self, name: str, count: int) -> None:
        """``count`` new objects under the root, committed through checked steps."""
        self.read_step(name, ROOT)
        for index in range(count):
            handle = -1 - index
            self.created[name][handle] = Cell(self.next_value())
            self.model.create(name, handle, Obj(self.created[name][handle].value, ()))
        handles = sorted(self.created[name], reverse=True)
        root = self.conns[name].root
        root.value = self.next_value()
        root.refs = tuple(self.created[name][h] for h in handles)
        self.expect(
            f"{name} populates",
            self.model.write(name, ROOT, Obj(root.value, tuple(handles)), LOADED),
            OK,
        )
        self.commit(0)

    def _connect(self, name: str) -> None:
        assert self.backend is not None
        storage = self.backend.open_storage()
        self.conns[name] = Connection(storage, cache_size=self.cache_size, root_class=Cell)
        self.created[name] = {}
        self.model.connect(name)

    def teardown(self) -> None:
        for conn in self.conns.values():
            if self.backend is not None:
                self.backend.close_storage(conn.storage)
        self.conns.clear()
        if self.backend is not None:
            self.backend.close()

    # -- helpers -----------------------------------------------------------

    def name(self, index: int) -> str:
        return self.names[index % len(self.names)]

    def pick_oid(self, pick: int) -> int:
        candidates = sorted(self.model.committed_oids())
        return candidates[pick % len(candidates)]

    def next_value(self) -> int:
        self.values += 1
        return self.values

    def expect(self, step: str, expected: Outcome, observed: Outcome) -> None:
        self.log.append(f"{step}: {observed}")
        if expected != observed:
            raise Mismatch(
                f"{step}: the spec requires {expected}, the implementation gave {observed}"
            )

    def handle_of(self, name: str, cell: Any) -> int:
        if cell._p_oid is not None:
            return oid_int(cell._p_oid)
        for handle, new in self.created[name].items():
            if new is cell:
                return handle
        raise Mismatch(f"{name} read a reference to an object it does not know: {cell!r}")

    def observe(self, name: str, obj: Any) -> Obj:
        """Read an object as an application does (this notes an access)."""
        value = obj.value
        refs = tuple(self.handle_of(name, ref) for ref in obj.refs)
        return Obj(value, refs)

    def impl_read(self, name: str, oid: int) -> tuple[Outcome, str]:
        conn = self.conns[name]
        held = conn.cache.get(oid_bytes(oid))
        state = cache_state(held)
        try:
            obj = conn.get(oid_bytes(oid))
            if obj is None:
                return NotFound(), state
            return Returned(self.observe(name, obj)), state
        except (ConflictError, StillConflictedError) as error:
            return raised(error), state
        finally:
            del held

    def read_step(self, name: str, oid: int) -> Outcome:
        observed, state = self.impl_read(name, oid)
        self.expect(f"{name} reads {oid} ({state})", self.model.read(name, oid, state), observed)
        return observed

    def impl_commit(self, name: str) -> tuple[Outcome, dict[int, int]]:
        try:
            self.conns[name].commit()
        except (ConflictError, StillConflictedError) as error:
            for cell in self.created[name].values():
                if cell._p_oid is not None:
                    raise Mismatch(f"{name}: a failed commit left an oid on {cell!r}") from None
            return raised(error), {}
        new_oids = {
            handle: oid_int(cell._p_oid)
            for handle, cell in self.created[name].items()
            if cell._p_oid is not None
        }
        return OK, new_oids

    def finish_commit(
        self, name: str, observed: Outcome, new_oids: dict[int, int], expected: Outcome | None
    ) -> None:
        """Compare a commit's outcome with the spec's (``expected``: None means ask the
        spec for a whole commit). A server-detected conflict (WriteConflictError without
        oids) stands for the spec's list; the client is then aborted."""
        if expected is None:
            expected = self.model.commit(name, new_oids)
        server_detected = (
            observed == Raised(WRITE_CONFLICT, None)
            and isinstance(expected, Raised)
            and expected.error == WRITE_CONFLICT
        )
        if not server_detected:
            self.expect(f"{name} commits", expected, observed)
        if observed == OK:
            self.created[name].clear()
        if server_detected:
            self.abort(self.names.index(name))

    # -- rules -------------------------------------------------------------

    @rule(c=CLIENT, pick=PICK)
    def read(self, c: int, pick: int) -> None:
        name = self.name(c)
        self.read_step(name, self.pick_oid(pick))

    @rule(c=CLIENT, pick=PICK, links=st.lists(PICK, max_size=2), link_new=st.booleans())
    def write(self, c: int, pick: int, links: list[int], link_new: bool) -> None:
        self.write_step(self.name(c), self.pick_oid(pick), links, link_new)

    def write_step(self, name: str, oid: int, links: list[int], link_new: bool) -> None:
        if not self.blind_writes and not isinstance(self.read_step(name, oid), Returned):
            return
        refs, ref_cells = self.choose_refs(name, links, link_new)
        value = Obj(self.next_value(), refs)
        conn = self.conns[name]
        held = conn.cache.get(oid_bytes(oid))
        state = cache_state(held)
        try:
            obj = conn.get(oid_bytes(oid))
            if obj is None:
                observed: Outcome = NotFound()
            else:
                obj.value = value.data
                obj.refs = ref_cells
                observed = OK
        except (ConflictError, StillConflictedError) as error:
            observed = raised(error)
        del held
        expected = self.model.write(name, oid, value, state)
        self.expect(f"{name} writes {oid}={value} ({state})", expected, observed)

    def choose_refs(
        self, name: str, links: list[int], link_new: bool
    ) -> tuple[tuple[int, ...], tuple[Any, ...]]:
        """Refs to objects this transaction accessed (and maybe a new object)."""
        client = self.model.clients[name]
        accessed = sorted(client.accessed)
        refs: list[int] = []
        cells: list[Any] = []
        for link in links:
            if accessed:
                oid = accessed[link % len(accessed)]
                refs.append(oid)
                cells.append(self.conns[name].cache.get(oid_bytes(oid)))
        if link_new:
            handle = -1 - len(self.created[name])
            cell = Cell(self.next_value())
            self.created[name][handle] = cell
            self.model.create(name, handle, Obj(cell.value, ()))
            refs.append(handle)
            cells.append(cell)
        assert all(cell is not None for cell in cells)
        return tuple(refs), tuple(cells)

    @rule(c=CLIENT)
    def commit(self, c: int) -> None:
        name = self.name(c)
        observed, new_oids = self.impl_commit(name)
        self.finish_commit(name, observed, new_oids, None)

    @rule(c=CLIENT)
    def abort(self, c: int) -> None:
        name = self.name(c)
        self.conns[name].abort()
        self.expect(f"{name} aborts", self.model.abort(name), OK)
        self.created[name].clear()

    @rule(c=CLIENT, size=st.sampled_from([1, 2, 5]))
    def shrink_cache(self, c: int, size: int) -> None:
        name = self.name(c)
        self.conns[name].set_cache_size(size)
        self.conns[name].shrink_cache()
        gc.collect(1)  # young generations only: a full collection costs ~0.1 s
        self.expect(f"{name} shrinks its cache", self.model.shrink_cache(name), OK)

    @precondition(lambda self: self.backend is not None and self.backend.pack_timing_known)
    @rule(c=CLIENT)
    def pack(self, c: int) -> None:
        """A client asks for a pack, which then runs to completion."""
        self.start_pack(self.name(c))
        assert self.backend is not None
        self.backend.after_pack()
        self.finish_pack_if_done()

    @precondition(lambda self: self.backend is not None and self.backend.steps_packs)
    @rule(c=CLIENT)
    def pack_in_background(self, c: int) -> None:
        """A client asks for a pack; it runs only in pack_steps, between other steps."""
        self.start_pack(self.name(c))

    @precondition(lambda self: self.backend is not None and self.backend.steps_packs)
    @rule(steps=st.integers(1, 8))
    def pack_steps(self, steps: int) -> None:
        assert self.backend is not None
        self.backend.run_pack_steps(steps)
        self.finish_pack_if_done()

    def start_pack(self, name: str) -> None:
        """A client's pack request; one made while a pack runs is ignored (the server's
        packer may still be finishing after the spec saw its result)."""
        assert self.backend is not None
        already_running = self.backend.pack_running()
        self.conns[name].pack()
        self.expect(f"{name} packs (aborting first)", self.model.abort(name), OK)
        if not already_running:
            self.model.pack_begin()
        self.created[name].clear()

    def finish_pack_if_done(self) -> None:
        """Tell the spec a running pack ended, as soon as its result is visible: the
        packed file replaces the old one (records vanish) one step before the packer
        itself reports that it is done."""
        assert self.backend is not None
        if self.model.pack_unreachable is None:
            return
        removed = set(self.model.latest) - self.backend.stored_oids()
        if removed or not self.backend.pack_running():
            self.log.append(f"pack finished, removed {sorted(removed)}")
            self.model.pack_finish(removed)

    @precondition(lambda self: self.backend is not None and self.backend.pack_timing_known)
    @rule(c=CLIENT, pick=PICK, drop=st.booleans())
    def use_object_across_pack(self, c: int, pick: int, drop: bool) -> None:
        """c reads x (maybe cutting it off the root first), a pack runs, then c reads x
        again and links it from the root: a removed x must give a conflict, never a
        dangling reference."""
        name = self.name(c)
        oid = self.pick_oid(pick)
        if drop and oid != ROOT:
            self.write_step(name, ROOT, [], False)
        self.read_step(name, oid)
        self.commit(c)
        self.pack(c)
        if isinstance(self.read_step(name, oid), Returned) and isinstance(
            self.read_step(name, ROOT), Returned
        ):
            accessed = sorted(self.model.clients[name].accessed)
            self.write_step(name, ROOT, [accessed.index(oid)], False)
            self.commit(c)

    @rule(c=CLIENT)
    def reconnect(self, c: int) -> None:
        name = self.name(c)
        assert self.backend is not None
        self.backend.close_storage(self.conns.pop(name).storage)
        self.model.disconnect(name)
        self._connect(name)

    @precondition(lambda self: self.interleave_commits and self.backend is not None)
    @rule(c=CLIENT, d=CLIENT)
    def commit_inside_commit(self, c: int, d: int) -> None:
        """d commits completely between c's invalidation list and c's transaction data."""
        first, second = self.name(c), self.name(d)
        if first == second:
            return
        assert self.backend is not None
        inner: list[tuple[Outcome, dict[int, int]]] = []
        begun: list[Outcome | None] = []

        def commit_second() -> None:
            begun.append(self.model.commit_begin(first))
            inner.append(self.impl_commit(second))

        fired = self.backend.run_inside_commit(self.conns[first].storage, commit_second)
        observed, new_oids = self.impl_commit(first)
        self.backend.disarm(self.conns[first].storage)  # type: ignore[attr-defined]
        if fired:
            self.log.append(f"{second} commits inside the commit of {first}")
            if begun[0] is not None:
                raise Mismatch(f"{first} sent its transaction; the spec says {begun[0]}")
            self.finish_commit(second, *inner[0], None)
            expected = self.model.commit_finish(first, new_oids)
            self.finish_commit(first, observed, new_oids, expected)
        else:
            self.finish_commit(first, observed, new_oids, None)
            self.finish_commit(second, *self.impl_commit(second), None)

    @rule(c=CLIENT, d=CLIENT, picks=st.tuples(PICK, PICK, PICK))
    def overlapping_transactions(self, c: int, d: int, picks: tuple[int, int, int]) -> None:
        """c reads x and writes z, while d writes y and commits first (write skew, lost
        update and stale-read shapes, more often than independent random steps give)."""
        first, second = self.name(c), self.name(d)
        read_oid, their_oid, my_oid = (self.pick_oid(pick) for pick in picks)
        self.read_step(first, read_oid)
        self.write_step(second, their_oid, [], False)
        self.write_step(first, my_oid, [], False)
        self.commit(d)
        self.commit(c)

    @precondition(lambda self: self.interleave_commits and self.backend is not None)
    @rule(c=CLIENT, d=CLIENT, picks=st.tuples(PICK, PICK, PICK))
    def racing_transactions(self, c: int, d: int, picks: tuple[int, int, int]) -> None:
        """c reads x and writes z, d writes y, and d's commit lands inside c's commit."""
        first, second = self.name(c), self.name(d)
        read_oid, their_oid, my_oid = (self.pick_oid(pick) for pick in picks)
        self.read_step(first, read_oid)
        self.write_step(second, their_oid, [], False)
        self.write_step(first, my_oid, [], False)
        self.commit_inside_commit(c, d)

    # -- invariants ----------------------------------------------------------

    @invariant()
    def caches_hold_only_what_the_spec_allows(self) -> None:
        """Every loaded object holds the value the spec says its client sees."""
        if self.backend is None:
            return
        self.model.check_invariants()
        for name, conn in self.conns.items():
            client = self.model.clients[name]
            conflicted = {oid_int(oid) for oid in conn.invalid_oids}
            if conflicted != client.conflicted:
                raise Mismatch(f"{name}: invalid_oids {conflicted} != spec {client.conflicted}")
            for obj in list(conn.cache):
                if obj is None or obj._p_status == GHOST:
                    continue
                oid = oid_int(obj._p_oid)
                state = object.__getattribute__(obj, "__dict__")
                refs = tuple(self.handle_of(name, ref) for ref in state["refs"])
                held = Obj(state["value"], refs)
                wanted = client.written.get(oid, client.view.get(oid))
                if oid not in client.maybe_loaded or held != wanted:
                    raise Mismatch(f"{name} holds oid {oid} loaded as {held}; spec view {wanted}")


# tools/mutants.py sets this: a killed mutant needs one failing example, not a minimal one.
SHRINK = not os.environ.get("DURUS_SPEC_NO_SHRINK")
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]


def run_machine(machine: type[RuleBasedStateMachine], **overrides: Any) -> None:
    if not SHRINK:
        overrides.setdefault("phases", NO_SHRINK)
    run_state_machine_as_test(machine, settings=settings(settings(), **overrides))


def machine_for(
    backend: Callable[[], Backend], blind: bool = False, interleave: bool = False
) -> type[ClientsVsSpec]:
    return type(
        f"ClientsVsSpec_{backend.__name__}",
        (ClientsVsSpec,),
        {
            "make_backend": staticmethod(backend),
            "blind_writes": blind,
            "interleave_commits": interleave,
        },
    )


CI_SIZED_BUDGET = 200  # profiles up to this many examples are "ci sized"


def scaled(fraction: float) -> int:
    """A share of the profile's example budget (backends differ in cost per example).

    Shares above one spend spare ci time on the cheap machines; a large (thorough)
    budget is never multiplied, only shared, so that profile stays bounded.
    """
    base = settings().max_examples
    if base > CI_SIZED_BUDGET:
        fraction = min(fraction, 1.0) / 2
    return max(5, int(base * fraction))


def test_clients_vs_spec_loopback_memory() -> None:
    run_machine(machine_for(loopback_memory), max_examples=scaled(4))


def test_clients_vs_spec_loopback_file() -> None:
    run_machine(machine_for(loopback_file), max_examples=scaled(2))


def test_clients_vs_spec_loopback_file2() -> None:
    run_machine(machine_for(loopback_file2), max_examples=scaled(1))


def test_clients_vs_spec_loopback_sqlite() -> None:
    run_machine(machine_for(loopback_sqlite), max_examples=scaled(1))


def test_clients_vs_spec_direct_file() -> None:
    run_machine(machine_for(direct_file), max_examples=scaled(1))


def test_clients_vs_spec_socket_server() -> None:
    run_machine(machine_for(socket_server), max_examples=scaled(0.25))


# -- implementation bugs found: the machines that find them, and their minimal examples --
#
# An open bug's tests are xfail(strict=True) until its owner fixes it; then the XPASS
# fails the suite and the marker must go. Fixed bugs keep their minimal examples as
# regression tests. A machine that is xfail runs without shrinking (its minimal
# examples are pinned below), so a known failure costs seconds, not minutes.


def test_commit_inside_commit_loopback_memory() -> None:
    run_machine(machine_for(loopback_memory, interleave=True), max_examples=scaled(2))


def test_blind_writes_loopback_memory() -> None:
    run_machine(machine_for(loopback_memory, blind=True), max_examples=scaled(1))


def replay(machine: type[ClientsVsSpec], steps: Callable[[ClientsVsSpec], None]) -> None:
    """Run a pinned example step by step, checking the invariant after each step."""
    state = machine()
    try:
        steps(state)
        state.caches_hold_only_what_the_spec_allows()
    finally:
        state.teardown()


def test_regression_commit_lands_inside_commit_disjoint_oids() -> None:
    """c0 reads the root, c1 rewrites oid 1, c0 rewrites the root; c1's commit lands
    between c0's invalidation list and c0's data. c0's commit must fail.
    Found by test_commit_inside_commit_loopback_memory; fixed since in durus/server_core.py."""

    def steps(state: ClientsVsSpec) -> None:
        state.setup(clients=2, cache_size=1, objects=1)
        state.racing_transactions(c=0, d=1, picks=(0, 1, 0))

    replay(machine_for(loopback_memory, interleave=True), steps)


def test_regression_commit_lands_inside_commit_lost_update() -> None:
    """c0 reads oid 2 and rewrites oid 1; c1 rewrites oid 2 inside c0's commit: write skew.
    Found by test_commit_inside_commit_loopback_memory; fixed since in durus/server_core.py."""

    def steps(state: ClientsVsSpec) -> None:
        state.setup(clients=2, cache_size=1000, objects=2)
        state.racing_transactions(c=0, d=1, picks=(2, 2, 1))

    replay(machine_for(loopback_memory, interleave=True), steps)


def test_regression_blind_write_lost_on_read_conflict_sync() -> None:
    """c1 commits a new root; c0 blindly writes its (stale) root, then loads the new
    object: the load must raise ReadConflictError, not ghost c0's written root.
    Found by test_blind_writes_loopback_memory; fixed since in durus/connection.py."""

    def steps(state: ClientsVsSpec) -> None:
        state.setup(clients=2, cache_size=1, objects=0)
        state.write(c=1, link_new=True, links=[], pick=0)
        state.commit(c=1)
        state.write(c=0, link_new=False, links=[], pick=0)
        state.read(c=0, pick=1)

    replay(machine_for(loopback_memory, blind=True), steps)


def pack_then_use_removed_object(state: ClientsVsSpec) -> None:
    """One client on a FileStorage: the root drops oid 1, a pack removes it, the client
    still holds 1 loaded (allowed: its view is stale until it syncs) and reads it."""
    state.setup(clients=1, cache_size=1000, objects=1)
    state.write(c=0, pick=0, links=[], link_new=False)  # the root no longer refers to 1
    state.read(c=0, pick=1)  # 1 stays in the cache
    state.commit(c=0)
    state.pack(c=0)  # removes 1
    state.read(c=0, pick=1)  # still loaded: the stale value, as the spec allows


def test_regression_commit_after_pack_relinks_removed_object() -> None:
    """Linking the removed object from the root and committing must raise
    WriteConflictError([1]); the implementation commits a dangling reference."""

    def steps(state: ClientsVsSpec) -> None:
        pack_then_use_removed_object(state)
        state.write(c=0, pick=0, links=[1], link_new=False)  # root -> 1 again
        state.commit(c=0)

    replay(machine_for(direct_file), steps)


def test_regression_commit_after_pack_writes_removed_object() -> None:
    """Writing the removed object and committing must raise WriteConflictError([1]);
    the implementation raises ValueError ('oid ... is a surprise') from FileStorage."""

    def steps(state: ClientsVsSpec) -> None:
        pack_then_use_removed_object(state)
        state.write(c=0, pick=1, links=[], link_new=False)
        state.commit(c=0)

    replay(machine_for(direct_file), steps)


def test_regression_load_retry_meets_second_invalidation() -> None:
    """c1 loads x, which c2 changed: L gets 'I', c1 syncs (S) and retries (L). c2 commits
    x again just before the retry. Nothing c1 accessed is stale, so the spec requires
    the latest value (as if c2's second commit came first), not ReadConflictError.
    Found with a directed interleaving; fixed since in durus/connection.py."""
    backend = loopback_memory()
    try:
        c1 = Connection(backend.open_storage(), root_class=Cell)
        c1.root.refs = (Cell(1),)
        c1.commit()
        c2 = Connection(backend.open_storage(), root_class=Cell)
        x_in_c2 = c2.root.refs[0]
        x_in_c2.value = 2
        c2.commit()
        oid = x_in_c2._p_oid
        assert c1.cache.get(oid) is not None
        c1.cache.get(oid)._p_set_status_ghost()  # as cache eviction would
        sent: list[bytes] = []

        def before_send(sock: Any, data: bytes) -> None:
            sent.append(data[:1])
            if sent[-2:] == [b"S", b"L"]:
                sock.before_send = None
                x_in_c2.value = 3
                c2.commit()

        c1.storage.s.before_send = before_send  # type: ignore[attr-defined]
        assert c1.get(oid).value == 3
        assert sent[:3] == [b"L", b"S", b"L"]
    finally:
        backend.close()


def test_regression_background_pack_visible_before_packer_stops() -> None:
    """A background pack swaps files (oid 1 vanishes) one step before its packer stops;
    the harness must tell the spec at the swap (found by the thorough profile)."""

    def steps(state: ClientsVsSpec) -> None:
        state.setup(clients=2, cache_size=1, objects=1)
        state.pack_in_background(c=0)
        state.pack_in_background(c=0)
        state.overlapping_transactions(c=0, d=0, picks=(0, 0, 0))  # root drops oid 1
        state.pack_steps(steps=6)
        state.overlapping_transactions(c=0, d=0, picks=(0, 0, 1))  # oid 1 is gone

    replay(machine_for(loopback_file), steps)


def test_regression_pack_request_while_packer_finishes() -> None:
    """A pack request that arrives after the swap but before the packer stopped is
    ignored by the server; the harness must not start a pack in the spec (found by the
    thorough profile)."""

    def steps(state: ClientsVsSpec) -> None:
        state.setup(clients=2, cache_size=1, objects=2)
        state.pack_in_background(c=0)
        state.pack_in_background(c=0)
        state.overlapping_transactions(c=0, d=0, picks=(0, 0, 1))
        state.pack_steps(steps=6)
        state.pack_in_background(c=0)
        state.pack_steps(steps=1)

    replay(machine_for(loopback_file), steps)
