"""A tiny bank kept in a Durus database: accounts in a BTree, transfers as transactions.

    python3 examples/demo.py [DATABASE_FILE]

Without an argument the database lives in a temporary directory that is
removed at the end; with one, DATABASE_FILE must not exist yet (the demo
creates it and leaves it behind for you to open with ``durus -c --file``).

What it shows: a user class (``Account``), a ``BTree`` of accounts, commits,
an ``abort()`` that throws away a half-done transfer, deleting an object and
packing the file, and reopening the file to find everything still there.
The output is the same on every run and under any Durus 4.3 compatible
implementation.
"""

from __future__ import annotations

import os
import sys
import tempfile

from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent


class InsufficientFunds(Exception):
    pass


class Account(Persistent):
    """One customer's account; its state (owner, balance, history) is stored as its __dict__."""

    def __init__(self, owner: str, balance: int = 0) -> None:
        self.owner = owner
        self.balance = balance
        self.history: tuple = ()

    def record(self, entry: str) -> None:
        self.history = self.history + (entry,)  # a new tuple: the change is noticed


def transfer(accounts: BTree, source: str, target: str, amount: int) -> None:
    """Move money; raises InsufficientFunds half-way, leaving the caller to abort()."""
    accounts[target].balance += amount
    accounts[target].record(f"+{amount} from {source}")
    if accounts[source].balance < amount:
        raise InsufficientFunds(f"{source} has only {accounts[source].balance}")
    accounts[source].balance -= amount
    accounts[source].record(f"-{amount} to {target}")


def show(title: str, accounts: BTree) -> None:
    print(f"{title}:")
    for owner, account in accounts.items():
        print(f"  {owner:<6} {account.balance:>5}  {', '.join(account.history) or '-'}")
    print(f"  total  {sum(a.balance for a in accounts.values()):>5}")


def open_bank(path: str) -> tuple[FileStorage, Connection, BTree]:
    storage = FileStorage(path)
    connection = Connection(storage)
    root = connection.get_root()
    if "accounts" not in root:
        root["accounts"] = BTree()
        connection.commit()
    return storage, connection, root["accounts"]


def run(path: str) -> None:
    storage, connection, accounts = open_bank(path)
    for owner, balance in (("alice", 100), ("bob", 50), ("carol", 0), ("dave", 25)):
        accounts[owner] = Account(owner, balance)
    connection.commit()
    show("Opened four accounts", accounts)

    transfer(accounts, "alice", "bob", 30)
    transfer(accounts, "dave", "carol", 25)
    connection.commit()
    show("After two transfers (committed)", accounts)

    try:
        transfer(accounts, "carol", "alice", 500)
        connection.commit()
    except InsufficientFunds as error:
        print(f"Transfer refused ({error}): abort()")
        connection.abort()
    show("After the refused transfer", accounts)

    del accounts["dave"]
    connection.commit()
    size_before = os.path.getsize(path)
    connection.pack()
    print(f"Closed dave's account and packed: file shrank: {os.path.getsize(path) < size_before}")
    storage.close()

    storage, connection, accounts = open_bank(path)
    show("Reopened from the file", accounts)
    print(f"BTree holds {len(accounts)} accounts; 'dave' in it: {'dave' in accounts}")
    storage.close()


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print(__doc__)
        return 2
    if len(argv) == 2:
        if os.path.exists(argv[1]):
            print(f"{argv[1]} exists; give the name of a new file", file=sys.stderr)
            return 2
        run(argv[1])
        return 0
    with tempfile.TemporaryDirectory(prefix="durus-demo-") as directory:
        run(os.path.join(directory, "bank.durus"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
