"""A bank workload (Jepsen style): clients move money between accounts concurrently.

Owns the end-to-end check that committed transactions are serializable: K
real clients transfer money between accounts, each transfer in its own
transaction, retrying after a ConflictError. Every account holds
``(balance, version)``; a transfer reads both accounts, moves an amount that
depends on what it read, and bumps both versions. Every committed transfer is
recorded with what it read. Afterwards:

* the total is conserved;
* per account, the committed transfers read versions 0, 1, 2, ... exactly once
  each (two commits that read the same version would be a lost update);
* replaying the transfers in an order consistent with those version chains
  (a serial order; its existence is checked) reproduces every balance each
  transfer read, and the final balances.

Two drivers: over the in-process server core (Hypothesis chooses which client
takes its next step, so interleavings are explored deterministically), and
over a real ``durus -s`` server with one thread per client (real races).
Never looks inside the implementation: only what clients read and commit.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

for _path in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from spec_backends import Backend, Cell, loopback_file, loopback_memory, socket_server  # noqa: E402

from durus.connection import Connection  # noqa: E402
from durus.error import ConflictError  # noqa: E402
from spec.model import transfer_replay  # noqa: E402

INITIAL_BALANCE = 100
MAX_RETRIES = 200


@dataclass(frozen=True)
class Transfer:
    """A committed transfer and what it read."""

    source: int
    target: int
    amount: int
    source_read: tuple[int, int]  # (balance, version) read
    target_read: tuple[int, int]


def open_bank(backend: Backend, accounts: int, clients: int) -> list[Connection]:
    """``clients`` connections; the first creates ``accounts`` accounts under the root."""
    connections = [Connection(backend.open_storage(), root_class=Cell) for _ in range(clients)]
    root = connections[0].root
    root.refs = tuple(Cell((INITIAL_BALANCE, 0)) for _ in range(accounts))
    connections[0].commit()
    for connection in connections[1:]:
        connection.abort()
    return connections


def transfer_steps(
    connection: Connection, source: int, target: int, log: list[Transfer]
) -> Iterator[str]:
    """One transfer as a sequence of steps (yield = another client may act now).

    Retries after a conflict; appends the transfer to ``log`` when it commits.
    """
    for _attempt in range(MAX_RETRIES):
        try:
            accounts = connection.root.refs
            yield "read source"
            source_read = accounts[source].value
            yield "read target"
            target_read = accounts[target].value
            amount = source_read[0] // 3  # depends on what was read
            accounts[source].value = (source_read[0] - amount, source_read[1] + 1)
            accounts[target].value = (target_read[0] + amount, target_read[1] + 1)
            yield "commit"
            connection.commit()
        except ConflictError:
            connection.abort()
            yield "retry"
            continue
        log.append(Transfer(source, target, amount, source_read, target_read))
        return
    raise AssertionError(f"transfer {source}->{target} still conflicting after retries")


def check_bank(connection: Connection, accounts: int, log: list[Transfer]) -> None:
    """Total conserved; version chains exact; a serial replay reproduces every read."""
    connection.abort()
    final = [cell.value for cell in connection.root.refs]
    assert sum(balance for balance, _version in final) == accounts * INITIAL_BALANCE, final
    chains: dict[int, dict[int, Transfer]] = {account: {} for account in range(accounts)}
    for transfer in log:
        for account, (_balance, version) in (
            (transfer.source, transfer.source_read),
            (transfer.target, transfer.target_read),
        ):
            assert version not in chains[account], f"lost update: version {version} of {account}"
            chains[account][version] = transfer
    for account, chain in chains.items():
        assert sorted(chain) == list(range(len(chain))), f"gap in versions of {account}"
        assert final[account][1] == len(chain), f"account {account} version differs"
    order = serial_order(log, chains)
    balances = {account: INITIAL_BALANCE for account in range(accounts)}
    for transfer in order:
        assert balances[transfer.source] == transfer.source_read[0], transfer
        assert balances[transfer.target] == transfer.target_read[0], transfer
        balances = transfer_replay(balances, [(transfer.source, transfer.target, transfer.amount)])
    assert [balances[a] for a in range(accounts)] == [b for b, _v in final]


def serial_order(log: list[Transfer], chains: dict[int, dict[int, Transfer]]) -> list[Transfer]:
    """The transfers ordered so that each comes after the writers of the versions it read.

    Fails if no such order exists (a cycle: the history is not serializable).
    """
    position: dict[int, int] = {}
    order: list[Transfer] = []
    remaining = list(log)
    while remaining:
        ready = [t for t in remaining if all(dep in position for dep in _dependencies(t, chains))]
        assert ready, f"no serial order: cycle among {remaining}"
        for transfer in ready:
            position[id(transfer)] = len(order)
            order.append(transfer)
        remaining = [t for t in remaining if id(t) not in position]
    return order


def _dependencies(transfer: Transfer, chains: dict[int, dict[int, Transfer]]) -> list[int]:
    """ids of the transfers that wrote the versions ``transfer`` read."""
    deps = []
    for account, (_balance, version) in (
        (transfer.source, transfer.source_read),
        (transfer.target, transfer.target_read),
    ):
        if version > 0:
            deps.append(id(chains[account][version - 1]))
    return deps


# -- driver 1: in-process server core, Hypothesis picks the interleaving ----------------

ACCOUNTS = 4
PAIR = st.tuples(st.integers(0, ACCOUNTS - 1), st.integers(0, ACCOUNTS - 1)).filter(
    lambda pair: pair[0] != pair[1]
)


def client_program(
    connection: Connection, plan: list[tuple[int, int]], log: list[Transfer]
) -> Iterator[str]:
    """The steps of all the transfers one client makes, in order."""
    for source, target in plan:
        yield from transfer_steps(connection, source, target, log)


def run_interleaved(
    backend: Backend, plans: list[list[tuple[int, int]]], schedule: list[int]
) -> None:
    """Each client runs its planned transfers; ``schedule`` picks who steps next."""
    connections = open_bank(backend, ACCOUNTS, len(plans))
    log: list[Transfer] = []
    programs = [
        client_program(conn, plan, log) for conn, plan in zip(connections, plans, strict=True)
    ]
    live = list(range(len(programs)))
    picks = iter(schedule)
    while live:
        client = live[next(picks, 0) % len(live)]
        if next(programs[client], None) is None:
            live.remove(client)
    check_bank(connections[0], ACCOUNTS, log)
    assert len(log) == sum(len(plan) for plan in plans)
    for connection in connections:
        connection.storage.close()


# tools/mutants.py sets DURUS_SPEC_NO_SHRINK: a killed mutant needs one failing example.
PHASES = (
    [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("DURUS_SPEC_NO_SHRINK")
    else list(Phase)
)


@settings(max_examples=max(10, settings().max_examples * 3), phases=PHASES)
@given(
    plans=st.lists(st.lists(PAIR, min_size=1, max_size=4), min_size=2, max_size=4),
    schedule=st.lists(st.integers(0, 3), max_size=80),
    file_backed=st.booleans(),
)
def test_bank_interleaved_loopback(
    plans: list[list[tuple[int, int]]], schedule: list[int], file_backed: bool
) -> None:
    backend = loopback_file() if file_backed else loopback_memory()
    try:
        run_interleaved(backend, plans, schedule)
    finally:
        backend.close()


# -- driver 2: a real server process, one thread per client ----------------------------


BANK_JOIN_TIMEOUT_S = 120.0


def run_threaded_bank(backend: Backend, clients: int, transfers_each: int, accounts: int) -> None:
    """Each client a thread doing random transfers with retries; then check the bank.

    Closes the clients' storages and the backend, whatever happens.
    """
    connections: list[Connection] = []
    log: list[Transfer] = []
    errors: list[BaseException] = []

    def work(connection: Connection, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(transfers_each):
                source, target = rng.sample(range(accounts), 2)
                for _step in transfer_steps(connection, source, target, log):
                    pass
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    try:
        connections = open_bank(backend, accounts, clients)
        threads = [
            threading.Thread(target=work, args=(conn, seed))
            for seed, conn in enumerate(connections)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=BANK_JOIN_TIMEOUT_S)
        assert not any(thread.is_alive() for thread in threads), "a bank client hung"
        assert not errors, errors
        assert len(log) == clients * transfers_each
        check_bank(connections[0], accounts, log)
    finally:
        for connection in connections:
            connection.storage.close()
        backend.close()


def test_bank_threads_socket_server() -> None:
    run_threaded_bank(socket_server(), clients=4, transfers_each=25, accounts=5)
