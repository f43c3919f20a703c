"""durus.connection.ObjectDictionary: a rebound key keeps its new object when the
old one dies, and a lookup made while the object is being collected answers the
default, never a dead reference.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

from durus.connection import ObjectDictionary
from durus.persistent import Persistent


class Item(Persistent):
    pass


def test_old_object_dying_after_its_key_was_rebound_leaves_the_new_one() -> None:
    objects = ObjectDictionary()
    old, new = Item(), Item()
    objects["k"] = old
    objects["k"] = new
    del old
    gc.collect()
    assert objects.get("k") is new and "k" in objects and len(objects) == 1
    assert "k" not in objects.dead and list(objects) == ["k"]


def test_a_late_callback_for_a_replaced_entry_spares_the_new_one() -> None:
    # CPython frees a replaced entry's reference at once, so its callback never
    # runs; elsewhere (PyPy, or a reference kept alive) it may run later.
    objects = ObjectDictionary()
    old, new = Item(), Item()
    objects["k"] = old
    old_ref = objects.mapping["k"]
    objects["k"] = new
    del old
    gc.collect()
    assert old_ref() is None
    assert objects.get("k") is new and "k" not in objects.dead and len(objects) == 1


def test_lookup_while_the_object_is_being_collected_answers_the_default() -> None:
    objects = ObjectDictionary()
    item = Item()
    objects["k"] = item
    seen: list[Any] = []
    # made after the dictionary's reference, so CPython runs this callback first,
    # when the object is already gone but the dictionary has not heard of it yet
    probe = weakref.ref(item, lambda _ref: seen.append(objects.get("k", "default")))
    del item
    gc.collect()
    assert seen == ["default"] and probe() is None
    assert objects.get("k") is None and "k" not in objects and len(objects) == 0
