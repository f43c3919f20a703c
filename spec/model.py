"""The executable specification of Durus's transactional promises.

Owns the model: the committed database (oid -> value), the server's per-client
invalidation sets, and each client's view and current transaction, with one
method per operation that says which outcome the operation must have and how
the state moves on. spec/README.md explains the rules in prose; this module is
their definition.

Never imports durus (or anything outside the standard library): the point of
the model is to be an independent second opinion that the tests compare the
implementation against. It must stay small enough to be checked by reading.

Vocabulary (see README.md for the full rules):
- oids are ints here (the harness converts 8-byte oids); handles of objects
  created in the current transaction, not yet committed, are negative ints;
- a value is an ``Obj``: plain data plus the oids it refers to;
- ``latest`` is the newest committed state; ``history`` keeps every committed
  state, so properties such as "all reads come from one committed state" can be
  checked against it;
- a client's ``view`` is the committed state as of its last synchronisation
  (sync, abort, commit) with its own commits applied; the server's
  ``invalid[client]`` lists the oids committed by other clients (or removed by a
  pack) since then, which are exactly the oids where view and latest may differ.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

ROOT = 0

# What the implementation's cache held for an oid just before an operation.
LOADED = "loaded"  # an object with its state in memory
GHOST = "ghost"  # an object whose state must be loaded before use
UNCACHED = "uncached"  # no object for the oid in the cache
CACHE_STATES = (LOADED, GHOST, UNCACHED)

READ_CONFLICT = "ReadConflictError"
WRITE_CONFLICT = "WriteConflictError"
STILL_CONFLICTED = "StillConflictedError"


class SpecViolation(AssertionError):
    """The implementation did something the specification does not allow,
    or (when raised by a theorem check) the model broke one of its own promises."""


@dataclass(frozen=True)
class Obj:
    """A stored value: plain (hashable) data and the oids it refers to."""

    data: Hashable
    refs: tuple[int, ...] = ()


@dataclass(frozen=True)
class Returned:
    """The operation succeeded; for a read, ``value`` is what it returned."""

    value: Obj | None = None


@dataclass(frozen=True)
class NotFound:
    """``connection.get(oid)`` returned None: no record for the oid."""


@dataclass(frozen=True)
class Raised:
    """The operation raised ``error`` (a class name) carrying ``oids`` (None: no list)."""

    error: str
    oids: frozenset[int] | None = None


Outcome = Returned | NotFound | Raised
OK = Returned()


@dataclass
class Client:
    """One connection: its view of the database and its current transaction."""

    view: dict[int, Obj]
    accessed: set[int] = field(default_factory=set)  # read or written in this transaction
    written: dict[int, Obj] = field(default_factory=dict)  # pending changes to stored objects
    created: dict[int, Obj] = field(default_factory=dict)  # handle (< 0) -> value of new objects
    conflicted: set[int] = field(default_factory=set)  # accessed oids found stale; abort needed
    maybe_loaded: set[int] = field(default_factory=set)  # oids the cache may hold loaded
    reads: dict[int, Obj] = field(default_factory=dict)  # values read before any conflict
    doomed: bool = False  # a conflict was raised in this transaction

    def new_transaction(self) -> None:
        """Forget the transaction (after commit or abort)."""
        self.accessed.clear()
        self.written.clear()
        self.created.clear()
        self.conflicted.clear()
        self.reads.clear()
        self.doomed = False


class Model:
    """The database as seen by the server and by every connected client."""

    def __init__(self, root: Obj, *, packs: bool = True) -> None:
        self.latest: dict[int, Obj] = {ROOT: root}
        self.history: list[dict[int, Obj]] = [dict(self.latest)]
        self.clients: dict[str, Client] = {}
        self.invalid: dict[str, set[int]] = {}  # the server's per-client invalidation sets
        self.unreported_removals: set[int] = set()  # removed by a pack, not yet in `invalid`
        self.packs = packs  # False for storages whose pack() does nothing
        self.pack_unreachable: set[int] | None = None  # while a pack runs: unreachable at start
        self.pack_rewritten: set[int] = set()  # oids committed while the pack runs

    # -- connections -------------------------------------------------------

    def connect(self, name: str) -> None:
        """A new connection: sees the latest state, holds the root loaded, nothing pending."""
        if name in self.clients:
            raise SpecViolation(f"client {name!r} is already connected")
        self.clients[name] = Client(view=dict(self.latest), maybe_loaded={ROOT} & set(self.latest))
        self.invalid[name] = set()

    def disconnect(self, name: str) -> None:
        """The connection goes away; its uncommitted work is lost, nothing else changes."""
        del self.clients[name]
        del self.invalid[name]

    # -- the server side of synchronisation --------------------------------

    def _deliver(self, name: str) -> set[int]:
        """The server's answer to a sync (S) or a commit start (C): the client's set, cleared.

        First the storage's pack removals become invalidations for every client.
        """
        for others in self.invalid.values():
            others |= self.unreported_removals
        self.unreported_removals.clear()
        pending = self.invalid[name]
        self.invalid[name] = set()
        return pending

    def _absorb(self, name: str, pending: set[int]) -> set[int]:
        """The connection's invalidation handler: returns the conflicting oids.

        Oids accessed in this transaction conflict: they keep their stale value
        and become `conflicted`. Every other listed oid is refreshed (its cached
        object becomes a ghost, so the client sees the latest value next time).
        """
        client = self.clients[name]
        conflicts = pending & client.accessed
        for oid in pending - conflicts:
            client.maybe_loaded.discard(oid)
            if oid in self.latest:
                client.view[oid] = self.latest[oid]
            else:
                client.view.pop(oid, None)
        client.conflicted |= conflicts
        if conflicts:
            client.doomed = True
        return conflicts

    # -- reads and writes --------------------------------------------------

    def read(self, name: str, oid: int, cache_state: str) -> Outcome:
        """Read the object ``oid`` (``connection.get(oid)`` then an attribute read).

        ``cache_state`` is what the implementation's cache held before the read;
        the spec rejects cache states it cannot be in, then says the outcome.
        """
        client = self.clients[name]
        if oid < 0:
            return Returned(client.created[oid])
        outcome = self._touch(name, oid, cache_state)
        if isinstance(outcome, Returned):
            client.accessed.add(oid)
            client.maybe_loaded.add(oid)
            if not client.doomed and oid not in client.written:
                client.reads.setdefault(oid, outcome.value)  # type: ignore[arg-type]
                self._check_one_snapshot(name)
        return outcome

    def write(self, name: str, oid: int, value: Obj, cache_state: str) -> Outcome:
        """Set the state of ``oid`` (``connection.get(oid)`` then attribute writes).

        A ghost's state is loaded first, so a write can fail exactly as a read.
        """
        client = self.clients[name]
        if oid < 0:
            client.created[oid] = value
            return OK
        outcome = self._touch(name, oid, cache_state)
        if not isinstance(outcome, Returned):
            return outcome
        client.written[oid] = value
        client.accessed.add(oid)
        client.maybe_loaded.add(oid)
        return OK

    def create(self, name: str, handle: int, value: Obj) -> None:
        """A new object, known by ``handle`` (< 0) until a commit gives it an oid."""
        if handle >= 0 or handle in self.clients[name].created:
            raise SpecViolation(f"bad or reused handle {handle}")
        self.clients[name].created[handle] = value

    def _touch(self, name: str, oid: int, cache_state: str) -> Outcome:
        """The value a read of ``oid`` yields before any bookkeeping."""
        client = self.clients[name]
        if cache_state not in CACHE_STATES:
            raise ValueError(f"unknown cache state {cache_state!r}")
        if oid in client.written:
            self._expect_loaded(oid, cache_state, "changed in this transaction")
            return Returned(client.written[oid])
        if oid in client.accessed:
            self._expect_loaded(oid, cache_state, "accessed in this transaction")
            return Returned(client.view[oid])
        if cache_state == LOADED:
            if oid not in client.maybe_loaded:
                raise SpecViolation(
                    f"client {name!r} holds oid {oid} loaded, but it must be a ghost "
                    "(invalidated, aborted or never loaded)"
                )
            return Returned(client.view[oid])
        return self._load(name, oid, cache_state)

    @staticmethod
    def _expect_loaded(oid: int, cache_state: str, why: str) -> None:
        if cache_state != LOADED:
            raise SpecViolation(f"oid {oid} is {cache_state} but was {why}: it must stay loaded")

    def _load(self, name: str, oid: int, cache_state: str) -> Outcome:
        """A load from the server: conflict check on an invalid oid, else the latest record."""
        client = self.clients[name]
        if oid in self.invalid[name]:
            if self._absorb(name, self._deliver(name)):
                return Raised(READ_CONFLICT, frozenset([oid]))
        if oid not in self.latest:
            if cache_state == GHOST:
                client.doomed = True
                return Raised(READ_CONFLICT, frozenset([oid]))
            return NotFound()
        value = self.latest[oid]
        if client.view.get(oid) != value:
            raise SpecViolation(f"model: oid {oid} not invalid but view differs from latest")
        return Returned(value)

    # -- transaction boundaries --------------------------------------------

    def commit(self, name: str, new_oids: Mapping[int, int] | None = None) -> Outcome:
        """Commit the transaction; ``new_oids`` maps handles to the oids the commit gave.

        Pass ``new_oids`` as observed from the implementation; it is only checked
        when the commit must succeed.
        """
        started = self.commit_begin(name)
        if started is not None:
            return started
        return self.commit_finish(name, new_oids)

    def commit_begin(self, name: str) -> Outcome | None:
        """The first half of a commit: the client receives its invalidation list.

        Returns the commit's outcome when it ends here (nothing to write, still
        conflicted, or a conflict found in the list); None when the client goes
        on to send its transaction (``commit_finish``). Other clients may commit
        in between; the server then holds their oids in ``invalid[name]``.
        """
        client = self.clients[name]
        if not client.written:
            self._synchronise(name)
            return OK
        if client.conflicted:
            return Raised(STILL_CONFLICTED)
        conflicts = self._absorb(name, self._deliver(name))
        if conflicts:
            return Raised(WRITE_CONFLICT, frozenset(conflicts))
        return None

    def commit_finish(self, name: str, new_oids: Mapping[int, int] | None = None) -> Outcome:
        """The second half: the transaction is written, unless another client committed
        anything since ``commit_begin``. Then it MUST fail: the client was not shown those
        oids, so if it had accessed one the update would be lost, and otherwise it would
        go on holding their old values beside its own new ones, a mix that is no committed
        state. The error MAY carry no oid list (the server found it)."""
        client = self.clients[name]
        stale = set(self.invalid[name])
        if stale:
            client.doomed = True
            return Raised(WRITE_CONFLICT, frozenset(stale))
        self._check_no_lost_update(name)
        stored = self._resolve_new(name, dict(new_oids or {}))
        self.latest.update(stored)
        self.history.append(dict(self.latest))
        self.pack_rewritten |= set(stored)
        for other, oids in self.invalid.items():
            if other != name:
                oids |= set(stored)
        client.view.update(stored)
        client.maybe_loaded |= set(stored)
        client.new_transaction()
        return OK

    def abort(self, name: str) -> Outcome:
        """Drop the transaction and synchronise: never fails, sees the latest state."""
        self._synchronise(name)
        return OK

    def _synchronise(self, name: str) -> None:
        """Abort's (and an empty commit's) work: ghost what changed, see the latest state."""
        client = self.clients[name]
        pending = self._deliver(name)
        client.maybe_loaded -= pending | set(client.written) | client.conflicted
        client.view = dict(self.latest)
        client.new_transaction()

    def _resolve_new(self, name: str, new_oids: dict[int, int]) -> dict[int, Obj]:
        """The records a successful commit stores, with handles replaced by oids.

        New objects are stored when reachable from a changed object; each gets an
        oid that is not live (no collision) and differs from every other one.
        """
        client = self.clients[name]
        reached = self._new_reachable(client)
        if set(new_oids) != reached:
            raise SpecViolation(
                f"commit gave oids to handles {sorted(new_oids)}, expected {sorted(reached)}"
            )
        oids = list(new_oids.values())
        if len(set(oids)) != len(oids) or any(o < 0 or o in self.latest for o in oids):
            raise SpecViolation(f"new oids {oids} collide with each other or with live objects")

        def resolve(value: Obj) -> Obj:
            return Obj(value.data, tuple(new_oids.get(r, r) for r in value.refs))

        stored = {oid: resolve(value) for oid, value in client.written.items()}
        stored.update({new_oids[h]: resolve(client.created[h]) for h in reached})
        return stored

    @staticmethod
    def _new_reachable(client: Client) -> set[int]:
        """Handles of new objects reachable from the changed objects."""
        todo = [r for v in client.written.values() for r in v.refs if r < 0]
        reached: set[int] = set()
        while todo:
            handle = todo.pop()
            if handle not in reached:
                reached.add(handle)
                todo.extend(r for r in client.created[handle].refs if r < 0)
        return reached

    # -- cache, pack -------------------------------------------------------

    def shrink_cache(self, name: str) -> Outcome:
        """Ghosting objects not accessed in this transaction changes no value anyone sees."""
        del name
        return OK

    def pack(self, name: str | None = None) -> set[int]:
        """A pack that runs to completion at once (``name``: asked by that client, which
        aborts first): removes exactly the objects unreachable from the root."""
        if name is not None:
            self.abort(name)
        if not self.packs:
            return set()
        self.pack_begin()
        return self.pack_finish(self._pack_bounds()[0])

    def pack_begin(self) -> None:
        """A pack starts (no-op if one runs): it judges reachability in this state.

        Commits go on while it runs; ``pack_finish`` says what it may remove.
        """
        if self.packs and self.pack_unreachable is None:
            self.pack_unreachable = set(self.latest) - self.reachable(self.latest)
            self.pack_rewritten = set()

    def pack_finish(self, removed: set[int]) -> set[int]:
        """The running pack ends having removed ``removed`` (observed from the storage).

        It MUST NOT remove anything reachable now (a dangling reference). It MUST
        remove what was unreachable at its start, is unreachable now and was not
        committed again meanwhile; it MAY remove anything else unreachable now
        (commits during the pack may have cut it off before the pack looked).
        The removals reach clients as invalidations when the storage reports them.
        """
        must, may = self._pack_bounds()
        self.pack_unreachable = None
        if not must <= removed <= may:
            raise SpecViolation(
                f"pack removed {sorted(removed)}; it must remove {sorted(must)} and may "
                f"remove {sorted(may)} (reachable now: {sorted(removed - may)})"
            )
        for oid in removed:
            del self.latest[oid]
        self.unreported_removals |= removed
        self.history.append(dict(self.latest))
        return removed

    def _pack_bounds(self) -> tuple[set[int], set[int]]:
        """(must remove, may remove) for the running pack, judged now."""
        if self.pack_unreachable is None:
            raise SpecViolation("pack_finish without a running pack")
        may = set(self.latest) - self.reachable(self.latest)
        must = (self.pack_unreachable & may) - self.pack_rewritten
        return must, may

    @staticmethod
    def reachable(state: Mapping[int, Obj]) -> set[int]:
        """Oids reachable from the root through refs (dangling refs are skipped)."""
        seen: set[int] = set()
        todo = [ROOT]
        while todo:
            oid = todo.pop()
            if oid in seen or oid not in state:
                continue
            seen.add(oid)
            todo.extend(state[oid].refs)
        return seen

    # -- questions the tests ask -------------------------------------------

    def allowed_read_outcomes(self, name: str, oid: int) -> dict[str, Outcome]:
        """For each cache state the client may be in, the outcome a read must have.

        Cache states the client cannot be in are left out. More than one entry
        means the implementation MAY take either path (cache eviction is invisible
        to values); each entry is a MUST for that path.
        """
        allowed: dict[str, Outcome] = {}
        for cache_state in CACHE_STATES:
            trial = copy.deepcopy(self)
            try:
                allowed[cache_state] = trial.read(name, oid, cache_state)
            except SpecViolation:
                continue
        return allowed

    def committed_oids(self) -> set[int]:
        """Oids that have ever been committed (live or removed)."""
        return {oid for state in self.history for oid in state}

    # -- theorems: properties the rules imply, checked as the model runs ----

    def _check_one_snapshot(self, name: str) -> None:
        """No torn read: the values read so far come from one committed state."""
        reads = self.clients[name].reads
        if not any(all(state.get(o) == v for o, v in reads.items()) for state in self.history):
            raise SpecViolation(f"model: reads of {name!r} match no committed state: {reads}")

    def _check_no_lost_update(self, name: str) -> None:
        """No lost update: everything a committing transaction read is still current."""
        for oid, value in self.clients[name].reads.items():
            if self.latest.get(oid) != value:
                raise SpecViolation(f"model: commit of {name!r} read a stale oid {oid}")

    def check_invariants(self) -> None:
        """A client's view differs from the latest state only where the server has told,
        or will tell, it so (or where it holds a conflicted, stale object)."""
        for name, client in self.clients.items():
            excused = self.invalid[name] | client.conflicted | self.unreported_removals
            for oid in set(client.view) | set(self.latest):
                if oid not in excused and client.view.get(oid) != self.latest.get(oid):
                    raise SpecViolation(f"model: view of {name!r} stale at {oid} untold")
            if not client.conflicted <= client.accessed:
                raise SpecViolation(f"model: {name!r} has conflicted oids it never accessed")


def transfer_replay(
    initial: Mapping[int, int], transfers: Iterable[tuple[int, int, int]]
) -> dict[int, int]:
    """Balances after applying ``(source, target, amount)`` transfers in order."""
    balances = dict(initial)
    for source, target, amount in transfers:
        balances[source] -= amount
        balances[target] += amount
    return balances
