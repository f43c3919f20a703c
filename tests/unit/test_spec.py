"""Unit tests of the executable specification (spec.model) on its own.

Hand-worked scenarios pin the rules of spec/README.md (the API 7.2 example
first); a Hypothesis test runs random operation sequences on the model alone
and checks that its rules imply its guarantees (one snapshot per transaction,
no lost update, views only stale where the server will tell). Never imports
durus: the spec must stand on its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from spec.model import (  # noqa: E402
    GHOST,
    LOADED,
    OK,
    READ_CONFLICT,
    STILL_CONFLICTED,
    UNCACHED,
    WRITE_CONFLICT,
    Model,
    NotFound,
    Obj,
    Raised,
    Returned,
    SpecViolation,
    transfer_replay,
)

A, B, C = 1, 2, 3


def two_clients() -> Model:
    """Root refers to A, B, C (values a0, b0, c0); clients 1 and 2 connected after that."""
    model = Model(Obj("root"))
    model.connect("setup")
    model.read("setup", 0, UNCACHED)
    for handle, name in ((-1, "a0"), (-2, "b0"), (-3, "c0")):
        model.create("setup", handle, Obj(name))
    model.write("setup", 0, Obj("root", (-1, -2, -3)), LOADED)
    assert model.commit("setup", {-1: A, -2: B, -3: C}) == OK
    model.disconnect("setup")
    model.connect("c1")
    model.connect("c2")
    return model


def test_api_7_2_example_read_conflict() -> None:
    """Client 1 reads A; client 2 commits A and B; client 1 loads B -> ReadConflictError."""
    model = two_clients()
    assert model.read("c1", A, UNCACHED) == Returned(Obj("a0"))
    model.write("c2", A, Obj("a1"), UNCACHED)
    model.write("c2", B, Obj("b1"), UNCACHED)
    assert model.commit("c2") == OK
    assert model.read("c1", B, UNCACHED) == Raised(READ_CONFLICT, frozenset([B]))
    assert model.clients["c1"].conflicted == {A}
    # Reading the stale, accessed A still returns the old value (no storage access).
    assert model.read("c1", A, LOADED) == Returned(Obj("a0"))
    # A commit with changes is refused until abort().
    model.write("c1", C, Obj("c1"), UNCACHED)
    assert model.commit("c1") == Raised(STILL_CONFLICTED)
    assert model.abort("c1") == OK
    assert model.read("c1", A, GHOST) == Returned(Obj("a1"))
    assert model.read("c1", B, UNCACHED) == Returned(Obj("b1"))
    model.check_invariants()


def test_api_7_2_example_without_access_succeeds() -> None:
    """Had client 1 not read A, loading B simply returns the latest value."""
    model = two_clients()
    assert model.read("c1", C, UNCACHED) == Returned(Obj("c0"))
    model.write("c2", A, Obj("a1"), UNCACHED)
    model.write("c2", B, Obj("b1"), UNCACHED)
    assert model.commit("c2") == OK
    assert model.read("c1", B, UNCACHED) == Returned(Obj("b1"))
    # The sync refreshed A too: a cached A may no longer be loaded.
    with pytest.raises(SpecViolation, match="must be a ghost"):
        model.read("c1", A, LOADED)
    assert model.read("c1", A, GHOST) == Returned(Obj("a1"))


def test_unchanged_oid_never_conflicts_even_when_client_is_stale() -> None:
    model = two_clients()
    assert model.read("c1", A, UNCACHED) == Returned(Obj("a0"))
    model.write("c2", A, Obj("a1"), UNCACHED)
    assert model.commit("c2") == OK
    assert model.read("c1", B, UNCACHED) == Returned(Obj("b0"))  # B unchanged: no conflict
    assert model.read("c1", A, LOADED) == Returned(Obj("a0"))  # stale but consistent
    assert model.commit("c1") == OK  # read-only: never conflicts


def test_cached_stale_object_may_be_returned_or_reloaded() -> None:
    """A loaded object from an earlier transaction MAY be served stale; a reload is also fine."""
    model = two_clients()
    assert model.read("c1", A, UNCACHED) == Returned(Obj("a0"))
    assert model.commit("c1") == OK
    model.write("c2", A, Obj("a1"), UNCACHED)
    assert model.commit("c2") == OK
    allowed = model.allowed_read_outcomes("c1", A)
    assert allowed[LOADED] == Returned(Obj("a0"))
    assert allowed[GHOST] == Returned(Obj("a1"))  # the load synchronises first
    assert allowed[UNCACHED] == Returned(Obj("a1"))


def test_accessed_object_must_stay_loaded() -> None:
    model = two_clients()
    model.read("c1", A, UNCACHED)
    assert set(model.allowed_read_outcomes("c1", A)) == {LOADED}
    with pytest.raises(SpecViolation, match="must stay loaded"):
        model.read("c1", A, GHOST)


def test_write_conflict_lists_exactly_the_stale_accessed_oids() -> None:
    model = two_clients()
    model.read("c1", A, UNCACHED)
    model.read("c1", B, UNCACHED)
    model.write("c1", C, Obj("c1"), UNCACHED)
    model.write("c2", A, Obj("a2"), UNCACHED)
    model.write("c2", C, Obj("c2"), UNCACHED)
    assert model.commit("c2") == OK
    assert model.commit("c1") == Raised(WRITE_CONFLICT, frozenset([A, C]))
    assert model.latest[C] == Obj("c2")  # nothing of c1's was written
    assert model.commit("c1") == Raised(STILL_CONFLICTED)
    assert model.abort("c1") == OK
    assert model.read("c1", C, UNCACHED) == Returned(Obj("c2"))


def test_write_skew_is_a_conflict() -> None:
    """c1 reads A writes B; c2 reads B writes A: the second committer must fail."""
    model = two_clients()
    model.read("c1", A, UNCACHED)
    model.write("c1", B, Obj("b1"), UNCACHED)
    model.read("c2", B, UNCACHED)
    model.write("c2", A, Obj("a2"), UNCACHED)
    assert model.commit("c1") == OK
    assert model.commit("c2") == Raised(WRITE_CONFLICT, frozenset([B]))


def test_blind_write_counts_as_access() -> None:
    """A written object that another client changes is a conflict, also before commit."""
    model = two_clients()
    model.write("c1", A, Obj("mine"), UNCACHED)
    model.write("c2", A, Obj("theirs"), UNCACHED)
    model.write("c2", B, Obj("b2"), UNCACHED)
    assert model.commit("c2") == OK
    assert model.read("c1", B, UNCACHED) == Raised(READ_CONFLICT, frozenset([B]))
    assert model.commit("c1") == Raised(STILL_CONFLICTED)


def test_commit_interleaved_with_another_commit_must_fail() -> None:
    """c2 commits between c1's invalidation list and c1's data: c1 must not succeed,
    even with disjoint oids (c1 would keep B's old value beside its new A)."""
    model = two_clients()
    model.read("c1", B, UNCACHED)
    model.write("c1", A, Obj("a1"), UNCACHED)
    model.write("c2", C, Obj("c2"), UNCACHED)
    assert model.commit_begin("c1") is None
    assert model.commit("c2") == OK
    assert model.commit_finish("c1") == Raised(WRITE_CONFLICT, frozenset([C]))
    assert model.latest[A] == Obj("a0")
    assert model.abort("c1") == OK
    model.check_invariants()


def test_commit_in_two_halves_without_interleaving_is_a_commit() -> None:
    model = two_clients()
    model.write("c1", A, Obj("a1"), UNCACHED)
    assert model.commit_begin("c1") is None
    assert model.commit_finish("c1") == OK
    assert model.read("c2", A, UNCACHED) == Returned(Obj("a1"))


def test_commit_without_changes_is_a_sync_and_clears_conflicts() -> None:
    model = two_clients()
    model.read("c1", A, UNCACHED)
    model.write("c2", A, Obj("a1"), UNCACHED)
    model.write("c2", B, Obj("b1"), UNCACHED)
    model.commit("c2")
    assert model.read("c1", B, UNCACHED) == Raised(READ_CONFLICT, frozenset([B]))
    assert model.commit("c1") == OK
    assert model.clients["c1"].conflicted == set()
    assert model.read("c1", A, GHOST) == Returned(Obj("a1"))


def test_new_objects_get_fresh_oids_and_reach_other_clients() -> None:
    model = two_clients()
    model.create("c1", -1, Obj("new"))
    model.create("c1", -2, Obj("unreferenced"))
    model.write("c1", A, Obj("a1", (-1,)), UNCACHED)
    with pytest.raises(SpecViolation, match="collide"):
        model.commit("c1", {-1: B})
    model = two_clients()
    model.create("c1", -1, Obj("new"))
    model.create("c1", -2, Obj("unreferenced"))
    model.write("c1", A, Obj("a1", (-1,)), UNCACHED)
    with pytest.raises(SpecViolation, match="handles"):
        model.commit("c1", {-1: 9, -2: 10})
    model = two_clients()
    model.create("c1", -1, Obj("new"))
    model.write("c1", A, Obj("a1", (-1,)), UNCACHED)
    assert model.commit("c1", {-1: 9}) == OK
    assert model.latest[A] == Obj("a1", (9,))
    assert model.read("c2", 9, UNCACHED) == Returned(Obj("new"))


def test_pack_removes_only_unreachable_and_reports_removals() -> None:
    model = two_clients()
    model.read("c1", B, UNCACHED)
    model.write("c1", 0, Obj("root", (A, C)), UNCACHED)  # B becomes unreachable
    assert model.commit("c1") == OK
    assert model.pack("c2") == {B}
    assert set(model.latest) == {0, A, C}
    # c1 still holds B loaded: it may read its stale value...
    assert model.read("c1", B, LOADED) == Returned(Obj("b0"))
    model.abort("c1")
    # ...and after the sync B is gone: a ghost load conflicts, get() returns None.
    assert model.read("c1", B, GHOST) == Raised(READ_CONFLICT, frozenset([B]))
    assert model.read("c1", B, UNCACHED) == NotFound()


def test_pack_then_commit_linking_a_removed_object_conflicts() -> None:
    model = two_clients()
    model.read("c1", B, UNCACHED)
    model.write("c2", 0, Obj("root", (A, C)), UNCACHED)
    assert model.commit("c2") == OK
    model.pack()
    model.write("c1", A, Obj("a1", (B,)), UNCACHED)
    assert model.commit("c1") == Raised(WRITE_CONFLICT, frozenset([B]))


def test_background_pack_bounds() -> None:
    """A pack running while clients commit: judged at its end, never removes reachable."""
    model = two_clients()
    model.read("c1", 0, UNCACHED)
    model.write("c1", 0, Obj("root", (A, B)), LOADED)  # C unreachable
    assert model.commit("c1") == OK
    model.pack_begin()
    model.read("c2", 0, UNCACHED)
    model.write("c2", 0, Obj("root", (A,)), LOADED)  # B cut off during the pack
    assert model.commit("c2") == OK
    with pytest.raises(SpecViolation, match="must remove"):
        model.pack_finish(set())  # C must go
    model.pack_begin()
    model.pack_unreachable = {C}
    with pytest.raises(SpecViolation, match="reachable now"):
        model.pack_finish({A, C})  # A is reachable
    model.pack_begin()
    model.pack_unreachable = {C}
    assert model.pack_finish({B, C}) == {B, C}  # B may go too
    assert set(model.latest) == {0, A}


def test_memory_storage_model_does_not_pack() -> None:
    model = Model(Obj("root"), packs=False)
    model.connect("c1")
    assert model.pack("c1") == set()


def test_transfer_replay() -> None:
    assert transfer_replay({1: 10, 2: 0}, [(1, 2, 3), (2, 1, 1)]) == {1: 8, 2: 2}


# -- the rules imply the guarantees: random runs of the model alone ------------

CLIENTS = ("c1", "c2", "c3")
OIDS = st.lists(st.integers(0, 4), min_size=1, max_size=3)
step = st.tuples(
    st.sampled_from(["read", "write", "read", "write", "commit", "abort", "pack"]),
    st.sampled_from(CLIENTS),
    OIDS,
    st.integers(0, 2),
)


@settings(max_examples=500)
@given(st.lists(step, max_size=50))
def test_random_runs_keep_the_guarantees(steps: list[tuple[str, str, list[int], int]]) -> None:
    model = Model(Obj(0, (1, 2, 3, 4)))
    model.latest.update({oid: Obj(0) for oid in range(1, 5)})
    model.history = [dict(model.latest)]
    for name in CLIENTS:
        model.connect(name)
    for counter, (action, name, oids, choice) in enumerate(steps):
        if action in ("read", "write"):
            for oid in oids:
                allowed = model.allowed_read_outcomes(name, oid)
                cache_state = sorted(allowed)[choice % len(allowed)]
                if action == "read":
                    model.read(name, oid, cache_state)
                else:
                    refs = (1, 2, 3, 4) if oid == 0 and choice else ()
                    model.write(name, oid, Obj(counter, refs), cache_state)
        elif action == "commit":
            outcome = model.commit(name, {})
            assert outcome == OK or isinstance(outcome, Raised)
        elif action == "abort":
            model.abort(name)
        else:
            removed = model.pack()
            assert removed.isdisjoint(Model.reachable(model.latest))
        model.check_invariants()
