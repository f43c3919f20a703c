"""A stand-in connection for testing persistent classes without a storage.

It records change notes and loads ghosts from states pickled by oid, which is
all a persistent object asks of its connection.
"""

from __future__ import annotations

import pickle
from typing import Any

from durus.persistent import SAVED, ConnectionBase, new_ghost, real_class
from durus.utils import int8_to_str


class FakeConnection(ConnectionBase):
    """Records change notes; loads ghosts from pickled states kept by oid."""

    def __init__(self) -> None:
        self.changed: list[Any] = []
        self.stored: dict[bytes, bytes] = {}

    def note_access(self, obj: Any) -> None:
        pass

    def note_change(self, obj: Any) -> None:
        self.changed.append(obj)

    def load_state(self, obj: Any) -> None:
        obj.__setstate__(pickle.loads(self.stored[obj._p_oid]))


def saved(obj: Any, connection: FakeConnection, oid: int = 1) -> Any:
    """Make ``obj`` look stored and SAVED in ``connection``."""
    obj._p_oid = int8_to_str(oid)
    obj._p_connection = connection
    obj._p_status = SAVED
    return obj


def ghost_of(obj: Any, connection: FakeConnection, oid: int = 7) -> Any:
    """A ghost whose stored state is the current state of ``obj``."""
    connection.stored[int8_to_str(oid)] = pickle.dumps(obj.__getstate__())
    return new_ghost(real_class(obj), int8_to_str(oid), connection)
