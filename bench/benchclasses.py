"""The persistent class the benchmarks store, importable by every Durus implementation.

The same file runs under this package and under Durus 4.3 (installed in a separate venv):
both provide ``durus.persistent.Persistent`` with the same API.
"""

from durus.persistent import Persistent


class Item(Persistent):
    """A small object: two integers and a short string."""

    def __init__(self, number: int) -> None:
        self.a = number
        self.b = 1
        self.name = f"item-{number}"
