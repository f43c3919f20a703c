"""Files left behind by interrupted packs (ours, or Durus 4.3's ``.prepack`` scheme).

* Stale ``F.pack`` (garbage) and ``F.prepack`` beside a good ``F``: the open
  ignores them, a pack reuses ``F.pack``, and a crash at any event of that pack
  keeps every committed object.
* A Durus 4.3 pack interrupted between its two renames leaves no ``F`` but
  ``F.prepack`` and ``F.pack``: a writable open must refuse, not start a new,
  empty database under the name.
"""

from __future__ import annotations

import pytest

from durus.file_storage import FileStorage, InterruptedPackError
from tests.crash.harness import PATH, Session, judge_sampled_crashes
from tests.crash.history import Commit, History
from tests.support.faulty_disk import FaultyDisk

SAMPLES_PER_EVENT = 8


def _database_with_leftovers() -> Session:
    session = Session()
    session.commit(new_sizes=[10, 700, 20])
    session.commit(drop_indexes=[1], rewrite_indexes=[0])
    session.close()
    image = session.disk.image()
    image[PATH + ".pack"] = b"SHELF-1\n" + b"\xff" * 900  # a pack cut short long ago
    image[PATH + ".prepack"] = b"an old copy of the data"
    state = session.history.state_of(range(len(session.history.commits)))
    history = History([Commit(state, start_event=-1, ack_event=0)])
    return Session(FaultyDisk(image), history, session.workload)


def test_a_pack_over_stale_leftovers_keeps_every_object_at_every_event() -> None:
    session = _database_with_leftovers()
    start = len(session.disk.events)
    session.open()
    session.pack()
    session.commit(new_sizes=[30])
    names = session.disk.listdir()
    assert PATH + ".pack" not in names
    judge_sampled_crashes(
        session, start, SAMPLES_PER_EVENT, 7, "leftovers: crash states of a pack over stale files"
    )


def test_a_durus43_pack_interrupted_between_renames_is_refused() -> None:
    session = _database_with_leftovers()
    image = session.disk.image()
    old = image.pop(PATH)
    image[PATH + ".prepack"] = old
    image[PATH + ".pack"] = old
    disk = FaultyDisk(image)
    with pytest.raises(InterruptedPackError):
        FileStorage(PATH, file_system=disk)
    assert PATH not in disk.listdir(), "a new, empty database was created under the name"
