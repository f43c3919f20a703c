"""The persistent class the benchmarks store, importable by every Durus implementation.

The same file runs under this package and under Durus 4.3 (installed in a separate venv):
both provide ``durus.persistent.Persistent`` with the same API.
"""

from durus.persistent import Persistent


class Item(Persistent):
    """A small object: an integer, a short string and a float."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.name = f"item-{number}"
        self.score = number * 0.5
