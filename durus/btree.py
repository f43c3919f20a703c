"""Persistent B-tree mapping (``BTree``) and its node classes (``BNode`` ... ``BNode512``).

Owns the B-tree algorithms: insertion that splits full nodes on the way down,
single-pass deletion that merges or borrows before descending (Cormen et al.,
cases 1, 2a, 2b, 2c, 3a, 3b), ordered and ranged iteration, and the
in-memory per-node subtree counts that make ``len(tree)`` O(1).

Never stores a subtree count: a node's state is exactly ``{'items': ...,
'nodes': ...}`` (in that order), so the records stay readable by the released
Durus 4.3, whose slotted nodes reject any other key. Node records written by
later Durus versions carry a ``'_count'`` entry; it is ignored on load (those
versions could store a wrong count or a ``_NullCount`` sentinel), and the
count is recomputed from the items when it is needed. Never imports a
storage or the connection: nodes talk to their connection only through
``PersistentObject``. Bad arguments from the application get explicit
exceptions, never ``assert``.

Why a cached count can be trusted: counts live in memory only, stamped with
the module's *count generation*, and only a count of the current generation is
used. Ghosting any node (abort, an invalidation from another client, a cache
shrink) starts a new generation, because the node may come back with other
contents while its ancestors still hold counts that included the old ones. An
insert or delete adjusts the current counts along its path in memory without
noting a change in the nodes whose items did not change, so a transaction
writes exactly the nodes Durus 4.3 writes (two clients inserting into
different leaves do not conflict) and any writer, Durus 4.3 included, can
share the tree. A leaf's count is its number of items; an internal node's
stale count is recomputed from its children on demand. So ``len(tree)`` is
O(1) while nothing was ghosted, and after a ghosting it walks the tree once
(never more than Durus 4.3, which walks on every call).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, MutableMapping
from operator import itemgetter
from typing import Any, ClassVar

from durus.persistent import (
    PersistentObject,
    _delattribute,
    _getattribute,
    _setattribute,
    is_tracking_class,
    real_class,
)

__all__ = [
    "BNode",
    "BNode4",
    "BNode8",
    "BNode16",
    "BNode32",
    "BNode64",
    "BNode128",
    "BNode256",
    "BNode512",
    "BTree",
    "EmptyBTreeError",
    "NodeClassError",
]

Item = tuple[Any, Any]
_item_key = itemgetter(0)


class EmptyBTreeError(ValueError, AssertionError):
    """The tree has no items (``get_min_item``/``get_max_item`` on an empty tree).

    Also an AssertionError because Durus 4.3 reported this case with ``assert``.
    """


class NodeClassError(TypeError, AssertionError):
    """``BTree(node_constructor=...)`` was given something that is not a BNode class.

    Also an AssertionError because Durus 4.3 reported this case with ``assert``.
    """


class _NullCount:
    """Inert stand-in kept importable for old records.

    Some Durus versions after 4.3 pickled an instance of this class into node
    records. Loading such a record must not fail, so the class exists; its
    instances absorb arithmetic and ignore any pickled state. Node code here
    never uses it: a count read from a record is discarded.
    """

    def __add__(self, other: Any) -> _NullCount:
        return self

    __radd__ = __sub__ = __rsub__ = __add__

    def __setstate__(self, state: Any) -> None:
        """Ignore whatever state an old pickle carries."""

    def __repr__(self) -> str:
        return "<_NullCount>"


_count_generation = 0


def _start_count_generation() -> None:
    """Make every cached count stale: some node may come back with other contents."""
    global _count_generation
    _count_generation += 1


def _set_count(node: BNode, count: int | None) -> None:
    """Cache ``count`` as the subtree count of ``node`` (None: forget it). Never notes a change."""
    if count is not None:
        assert count >= 0
        _setattribute(node, "_count", count)
        _setattribute(node, "_count_generation", _count_generation)
    else:
        try:
            _delattribute(node, "_count")
        except AttributeError:
            pass


def _peek_count(node: BNode) -> int | None:
    """The subtree count of ``node`` if it is known without loading anything, else None."""
    if node._p_is_ghost():
        return None
    try:
        if _getattribute(node, "_count_generation") == _count_generation:
            count: int = _getattribute(node, "_count")
            return count
    except AttributeError:
        pass
    if _getattribute(node, "nodes") is None:
        count = len(_getattribute(node, "items"))
        _set_count(node, count)
        return count
    return None


def _cheap_count(node: BNode) -> int | None:
    """The subtree count of a loaded ``node`` from its children's known counts, else None."""
    count = _peek_count(node)
    if count is not None:
        return count
    total = len(node.items)
    for child in node.nodes or ():
        child_count = _peek_count(child)
        if child_count is None:
            return None
        total += child_count
    _set_count(node, total)
    return total


class BNode(PersistentObject):
    """A B-tree node of minimum degree ``minimum_degree`` (t).

    ``items`` is the ascending list of ``(key, value)`` tuples; ``nodes`` is
    None for a leaf, else the list of ``len(items) + 1`` children. A non-root
    node holds t-1 .. 2t-1 items. ``_count`` (in memory only, may be unset)
    is the number of items in the subtree, valid while ``_count_generation``
    equals the module's current count generation.
    """

    __slots__ = ["items", "nodes", "_count", "_count_generation"]

    minimum_degree: ClassVar[int] = 2
    items_is: ClassVar[list[type]] = [tuple]
    nodes_is: ClassVar[tuple[Any, ...]]

    items: list[Item]
    nodes: list[BNode] | None
    _count: int  # in memory only; may be unset (then recomputed on demand)

    def __init__(self) -> None:
        self.items = []
        self.nodes = None
        _set_count(self, 0)

    def __getstate__(self) -> dict[str, Any]:
        """``{'items': ..., 'nodes': ...}``: the Durus 4.3 state; the count is never stored."""
        if self._p_is_ghost():
            self._p_load_state()
        state = {"items": self.items, "nodes": self.nodes}
        assert list(state) == ["items", "nodes"]
        return state

    def __setattr__(self, name: str, value: Any) -> None:
        """Assigning ``items`` or ``nodes`` drops the cached count, which may no longer hold."""
        PersistentObject.__setattr__(self, name, value)
        if name == "items" or name == "nodes":
            _set_count(self, None)

    def __setstate__(self, state: Any) -> None:
        """Load ``items`` and ``nodes``; a stored ``'_count'`` (later Durus) is ignored."""
        if state and "_count" in state:
            state = {name: value for name, value in state.items() if name != "_count"}
        PersistentObject.__setstate__(self, state)

    # -- small queries ------------------------------------------------------------

    def is_leaf(self) -> bool:
        return self.nodes is None

    def is_full(self) -> bool:
        return len(self.items) >= 2 * self.minimum_degree - 1

    def get_position(self, key: Any) -> int:
        """Index of the first item whose key is >= ``key``."""
        return bisect_left(self.items, key, key=_item_key)

    def search(self, key: Any) -> Item | None:
        """The item with ``key`` in this subtree, or None."""
        node = self
        while True:
            items = node.items
            position = bisect_left(items, key, key=_item_key)
            if position < len(items) and items[position][0] == key:
                return items[position]
            if node.nodes is None:
                return None
            node = node.nodes[position]

    def get_min_item(self) -> Item:
        node = self
        while node.nodes is not None:
            node = node.nodes[0]
        return node.items[0]

    def get_max_item(self) -> Item:
        node = self
        while node.nodes is not None:
            node = node.nodes[-1]
        return node.items[-1]

    def get_count(self, recount: bool = False) -> int:
        """Number of items in this subtree (cached; ``recount`` walks every node)."""
        if not recount:
            count = _peek_count(self)
            if count is not None:
                return count
        total = len(self.items)
        for child in self.nodes or ():
            total += child.get_count(recount)
        _set_count(self, total)
        return total

    def __len__(self) -> int:
        return self.get_count()

    def get_node_count(self) -> int:
        """Number of nodes in this subtree, this one included."""
        return 1 + sum(child.get_node_count() for child in self.nodes or ())

    def get_level(self) -> int:
        """Height of this node above the leaves (0 for a leaf)."""
        level = 0
        node = self
        while node.nodes is not None:
            node = node.nodes[0]
            level += 1
        return level

    # -- iteration ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Item]:
        """Items of this subtree in ascending key order."""
        if self.nodes is None:
            yield from self.items
            return
        nodes = self.nodes
        for position, item in enumerate(self.items):
            yield from nodes[position]
            yield item
        yield from nodes[-1]

    def __reversed__(self) -> Iterator[Item]:
        """Items of this subtree in descending key order."""
        if self.nodes is None:
            yield from reversed(self.items)
            return
        items, nodes = self.items, self.nodes
        yield from reversed(nodes[-1])
        for position in range(len(items) - 1, -1, -1):
            yield items[position]
            yield from reversed(nodes[position])

    def iter_from(self, key: Any) -> Iterator[Item]:
        """Items with key >= ``key``, ascending."""
        position = self.get_position(key)
        if self.nodes is None:
            yield from self.items[position:]
            return
        items, nodes = self.items, self.nodes
        yield from nodes[position].iter_from(key)
        for index in range(position, len(items)):
            yield items[index]
            yield from nodes[index + 1]

    def iter_backward_from(self, key: Any) -> Iterator[Item]:
        """Items with key < ``key``, descending."""
        position = self.get_position(key)
        if self.nodes is None:
            yield from reversed(self.items[:position])
            return
        items, nodes = self.items, self.nodes
        yield from nodes[position].iter_backward_from(key)
        for index in range(position - 1, -1, -1):
            yield items[index]
            yield from reversed(nodes[index])

    # -- insertion ----------------------------------------------------------------

    def _add_to_count(self, delta: int) -> None:
        """Adjust the cached subtree count, if it is current (a stale one stays stale).

        Called after the items changed, so the count is never recomputed here:
        that would count the change twice.
        """
        try:
            if _getattribute(self, "_count_generation") != _count_generation:
                return
            count = _getattribute(self, "_count")
        except AttributeError:
            return
        _set_count(self, count + delta)

    def _p_set_status_ghost(self) -> None:
        """Ghost this node; every cached count may now be stale (see the module docstring)."""
        _start_count_generation()
        PersistentObject._p_set_status_ghost(self)

    def insert_item(self, item: Item) -> bool:
        """Insert ``item`` (or replace the item with its key) below this non-full node.

        Returns True when the key was new. Full children are split before
        they are entered, so every node reached has room.
        """
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError(f"a BTree item must be a (key, value) tuple, not {item!r}")
        if self.is_full():
            raise ValueError("insert_item() needs a node that is not full; split it first")
        key = item[0]
        position = self.get_position(key)
        items = self.items
        if position < len(items) and items[position][0] == key:
            self._p_note_change()
            items[position] = item
            return False
        if self.nodes is None:
            self._p_note_change()
            items.insert(position, item)
            self._add_to_count(1)
            return True
        child = self.nodes[position]
        if child.is_full():
            self.split_child(position, child)
            separator = items[position][0]
            if separator == key:
                items[position] = item
                return False
            if separator < key:
                child = self.nodes[position + 1]
        added = child.insert_item(item)
        if added:
            self._add_to_count(1)
        return added

    def split_child(self, position: int, child: BNode) -> None:
        """Split the full ``child`` (``self.nodes[position]``) around its middle item.

        The item at index t-1 moves up into this node at ``position``; the
        items after it (and the matching children) move to a new right sibling
        of the same class at ``position + 1``.
        """
        if self.nodes is None or not 0 <= position < len(self.nodes):
            raise ValueError(f"split_child(): no child at position {position}")
        if self.nodes[position] is not child or not child.is_full():
            raise ValueError("split_child() needs the full child found at that position")
        t = child.minimum_degree
        old_count = _peek_count(child)
        child._p_note_change()  # the order of notes is the order records are written
        self._p_note_change()
        sibling = real_class(child)()
        sibling.items = child.items[t:]
        middle = child.items[t - 1]
        del child.items[t - 1 :]
        if child.nodes is not None:
            sibling.nodes = child.nodes[t:]
            del child.nodes[t:]
        self.items.insert(position, middle)
        self.nodes.insert(position + 1, sibling)
        _recount_pair(child, sibling, None if old_count is None else old_count - 1)
        assert len(child.items) == len(sibling.items) == t - 1

    # -- deletion -----------------------------------------------------------------

    def delete(self, key: Any) -> None:
        """Remove the item with ``key`` from this subtree; ``KeyError(key)`` if absent.

        Precondition: this node is the root or holds at least t items. A
        missing key may still leave the subtree restructured (same contents).
        """
        position = self.get_position(key)
        items = self.items
        found = position < len(items) and items[position][0] == key
        if self.nodes is None:
            if not found:
                raise KeyError(key)
            self._p_note_change()
            del items[position]
            self._add_to_count(-1)
            return
        if found:
            below, key_below = self._prepare_delete_here(position, key)
        else:
            below, key_below = self._fill_child(position), key
        if below is self:  # the root merged its last two children and took their place
            self.delete(key_below)
            return
        below.delete(key_below)
        self._add_to_count(-1)

    def _prepare_delete_here(self, position: int, key: Any) -> tuple[BNode, Any]:
        """Cases 2a/2b/2c for ``key`` at ``items[position]`` of this internal node.

        Returns the node to continue in and the key to delete there.
        """
        assert self.nodes is not None and self.items[position][0] == key
        t = self.minimum_degree
        left, right = self.nodes[position], self.nodes[position + 1]
        if len(left.items) >= t:  # 2a: replace by the predecessor
            replacement = left.get_max_item()
            self._p_note_change()
            self.items[position] = replacement
            return left, replacement[0]
        if len(right.items) >= t:  # 2b: replace by the successor
            replacement = right.get_min_item()
            self._p_note_change()
            self.items[position] = replacement
            return right, replacement[0]
        return self._merge_children(position), key  # 2c: merge first, then delete

    def _fill_child(self, position: int) -> BNode:
        """Cases 3a/3b: make the child to descend into hold at least t items; return it."""
        assert self.nodes is not None
        nodes = self.nodes
        child = nodes[position]
        t = self.minimum_degree
        if len(child.items) >= t:
            return child
        has_left = position > 0
        has_right = position + 1 < len(nodes)
        if has_left and len(nodes[position - 1].items) >= t:
            self._borrow_from_left(position)
        elif has_right and len(nodes[position + 1].items) >= t:
            self._borrow_from_right(position)
        elif has_left:
            return self._merge_children(position - 1)
        else:
            assert has_right, "an internal node has at least two children"
            return self._merge_children(position)
        assert len(child.items) == t
        return child

    def _borrow_from_left(self, position: int) -> None:
        """Rotate one item from the left sibling through this node into child ``position``."""
        assert self.nodes is not None
        left, child = self.nodes[position - 1], self.nodes[position]
        counts = (_peek_count(left), _peek_count(child))
        self._p_note_change()
        left._p_note_change()
        child._p_note_change()
        child.items.insert(0, self.items[position - 1])
        self.items[position - 1] = left.items.pop()
        moved = None
        if child.nodes is not None:
            assert left.nodes is not None
            moved = left.nodes.pop()
            child.nodes.insert(0, moved)
        _recount_after_move(moved, donor=left, receiver=child, counts=counts)

    def _borrow_from_right(self, position: int) -> None:
        """Rotate one item from the right sibling through this node into child ``position``."""
        assert self.nodes is not None
        child, right = self.nodes[position], self.nodes[position + 1]
        counts = (_peek_count(right), _peek_count(child))
        self._p_note_change()
        right._p_note_change()
        child._p_note_change()
        child.items.append(self.items[position])
        self.items[position] = right.items.pop(0)
        moved = None
        if child.nodes is not None:
            assert right.nodes is not None
            moved = right.nodes.pop(0)
            child.nodes.append(moved)
        _recount_after_move(moved, donor=right, receiver=child, counts=counts)

    def _merge_children(self, position: int) -> BNode:
        """Merge child ``position``, ``items[position]`` and child ``position + 1``.

        Returns the node now holding the merged items: the left child, or this
        node itself when it was a root left with no items (the root takes the
        merged contents, keeping its identity).
        """
        assert self.nodes is not None
        left, right = self.nodes[position], self.nodes[position + 1]
        left_count, right_count = _peek_count(left), _peek_count(right)
        self._p_note_change()
        left._p_note_change()
        left.items.append(self.items.pop(position))
        left.items.extend(right.items)
        if left.nodes is not None:
            assert right.nodes is not None
            left.nodes.extend(right.nodes)
        del self.nodes[position + 1]
        merged_count = None
        if left_count is not None and right_count is not None:
            merged_count = left_count + right_count + 1
        _set_count(left, merged_count)
        assert len(left.items) <= 2 * self.minimum_degree - 1
        if self.items:
            return left
        assert len(self.nodes) == 1
        total = _peek_count(self)
        self.items = left.items
        self.nodes = left.nodes
        _set_count(self, total)
        return self


def _recount_pair(left: BNode, right: BNode, total: int | None) -> None:
    """Cache the counts of two nodes that together hold ``total`` items (None: unknown)."""
    _set_count(left, None)
    _set_count(right, None)
    right_count = _cheap_count(right)
    if total is not None and right_count is not None:
        _set_count(left, total - right_count)
    else:
        _cheap_count(left)


def _recount_after_move(
    moved: BNode | None, donor: BNode, receiver: BNode, counts: tuple[int | None, int | None]
) -> None:
    """Adjust the counts after one item (and the subtree ``moved``) went from donor to receiver."""
    donor_count, receiver_count = counts
    moved_count = 0 if moved is None else _peek_count(moved)
    if donor_count is None or receiver_count is None or moved_count is None:
        _set_count(donor, None)
        _set_count(receiver, None)
        return
    _set_count(donor, donor_count - 1 - moved_count)
    _set_count(receiver, receiver_count + 1 + moved_count)


BNode.nodes_is = (None, [BNode])


class BNode4(BNode):
    __slots__ = ()
    minimum_degree = 4


class BNode8(BNode):
    __slots__ = ()
    minimum_degree = 8


class BNode16(BNode):
    __slots__ = ()
    minimum_degree = 16


class BNode32(BNode):
    __slots__ = ()
    minimum_degree = 32


class BNode64(BNode):
    __slots__ = ()
    minimum_degree = 64


class BNode128(BNode):
    __slots__ = ()
    minimum_degree = 128


class BNode256(BNode):
    __slots__ = ()
    minimum_degree = 256


class BNode512(BNode):
    __slots__ = ()
    minimum_degree = 512


def _node_class_of_degree(degree: int) -> type[BNode] | None:
    """The direct BNode subclass with ``minimum_degree == degree`` (value comparison)."""
    for klass in BNode.__subclasses__():
        if is_tracking_class(klass):
            continue
        if klass.minimum_degree == degree:
            return klass
    return None


class BTree(PersistentObject, MutableMapping):  # type: ignore[type-arg]
    """A persistent mapping with ordered keys, stored as a B-tree of ``BNode`` objects.

    Keys must be mutually orderable (``<`` and ``==``). Each node is its own
    persistent object, so a large tree loads lazily, node by node.
    """

    __slots__ = ["root"]

    root_is: ClassVar[type] = BNode
    root: BNode

    def __init__(self, node_constructor: type[BNode] = BNode16) -> None:
        if not (isinstance(node_constructor, type) and issubclass(node_constructor, BNode)):
            raise NodeClassError(
                f"node_constructor must be BNode or a subclass of it, not {node_constructor!r}"
            )
        self.root = node_constructor()

    # -- reading ------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        item = self.root.search(key)
        if item is None:
            raise KeyError(key)
        return item[1]

    def get(self, key: Any, default: Any = None) -> Any:
        item = self.root.search(key)
        if item is None:
            return default
        return item[1]

    def __contains__(self, key: Any) -> bool:
        return self.root.search(key) is not None

    def has_key(self, key: Any) -> bool:
        return self.root.search(key) is not None

    def __len__(self) -> int:
        return self.root.get_count()

    def __bool__(self) -> bool:
        return len(self.root.items) > 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.root:
            yield item[0]

    def __reversed__(self) -> Iterator[Any]:
        for item in reversed(self.root):
            yield item[0]

    def iterkeys(self) -> Iterator[Any]:
        return iter(self)

    def itervalues(self) -> Iterator[Any]:
        for item in self.root:
            yield item[1]

    def iteritems(self) -> Iterator[Item]:
        return iter(self.root)

    def items_backward(self) -> Iterator[Item]:
        """All items in descending key order."""
        return reversed(self.root)

    def keys(self) -> list[Any]:  # type: ignore[override]
        return [item[0] for item in self.root]

    def values(self) -> list[Any]:  # type: ignore[override]
        return [item[1] for item in self.root]

    def items(self) -> list[Item]:  # type: ignore[override]
        return list(self.root)

    def get_min_item(self) -> Item:
        """The item with the smallest key; EmptyBTreeError on an empty tree."""
        if not self.root.items:
            raise EmptyBTreeError("empty BTree has no min item")
        return self.root.get_min_item()

    def get_max_item(self) -> Item:
        """The item with the largest key; EmptyBTreeError on an empty tree."""
        if not self.root.items:
            raise EmptyBTreeError("empty BTree has no max item")
        return self.root.get_max_item()

    def items_from(self, key: Any, closed: bool = True) -> Iterator[Item]:
        """Ascending items with key >= ``key`` (> ``key`` when not ``closed``)."""
        for item in self.root.iter_from(key):
            if closed or not item[0] == key:
                yield item

    def items_backward_from(self, key: Any, closed: bool = False) -> Iterator[Item]:
        """Descending items with key < ``key`` (<= ``key`` when ``closed``)."""
        if closed:
            item = self.root.search(key)
            if item is not None:
                yield item
        yield from self.root.iter_backward_from(key)

    def items_range(
        self, start: Any, end: Any, closed_start: bool = True, closed_end: bool = False
    ) -> Iterator[Item]:
        """Items from ``start`` towards ``end``: ascending if ``start <= end``, else descending.

        ``closed_start``/``closed_end`` say whether a key equal to that bound is included.
        """
        if start <= end:
            for item in self.items_from(start, closed_start):
                key = item[0]
                if end < key or (not closed_end and key == end):
                    return
                yield item
        else:
            for item in self.items_backward_from(start, closed_start):
                key = item[0]
                if key < end or (not closed_end and key == end):
                    return
                yield item

    def get_depth(self) -> int:
        """Number of node levels (1 for a single leaf)."""
        return self.root.get_level() + 1

    def get_node_count(self) -> int:
        return self.root.get_node_count()

    # -- writing ------------------------------------------------------------------

    def add(self, key: Any, value: Any = True) -> None:
        """Insert or replace the item for ``key``. A full root is split first."""
        root = self.root
        if root.is_full():
            count = _peek_count(root)
            new_root = real_class(root)()
            new_root.nodes = [root]
            _set_count(new_root, count)
            new_root.split_child(0, root)
            self.root = new_root
            root = new_root
        root.insert_item((key, value))

    def __setitem__(self, key: Any, value: Any) -> None:
        self.add(key, value)

    def __delitem__(self, key: Any) -> None:
        root = self.root
        if root.search(key) is None:
            raise KeyError(key)
        count_before = _peek_count(root)
        root.delete(key)
        assert count_before is None or _peek_count(root) == count_before - 1

    def setdefault(self, key: Any, value: Any) -> Any:  # type: ignore[override]
        """The value for ``key``, inserting ``value`` first if the key is missing."""
        item = self.root.search(key)
        if item is not None:
            return item[1]
        self.add(key, value)
        return value

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add the items of at most one mapping or iterable of pairs, then the keywords."""
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 argument, got {len(args)}")
        if args:
            other = args[0]
            pairs: Iterable[Any]
            if hasattr(other, "iteritems"):
                pairs = other.iteritems()
            elif hasattr(other, "items"):
                pairs = other.items()
            else:
                pairs = other
            for key, value in pairs:
                self.add(key, value)
        for key, value in kwargs.items():
            self.add(key, value)

    def clear(self) -> None:
        """Replace the root with a new empty node of the same class."""
        self.root = real_class(self.root)()

    def note_change_of_bnode_containing_key(self, key: Any) -> None:
        """Mark the node holding ``key`` changed (after mutating its value in place)."""
        self[key] = self[key]

    def set_bnode_minimum_degree(self, degree: int) -> bool:
        """Rebuild the tree with the direct BNode subclass of that degree.

        Returns False (and changes nothing) when no such class exists or the
        tree already uses that degree.
        """
        node_class = _node_class_of_degree(degree)
        if node_class is None or node_class.minimum_degree == self.root.minimum_degree:
            return False
        items = list(self.root)
        self.root = node_class()
        for key, value in items:
            self.add(key, value)
        assert len(self.root) == len(items)
        return True


def _check_node(node: BNode, is_root: bool, low: Any, high: Any, has_low: bool) -> tuple[int, int]:
    """Verify the subtree below ``node``; returns ``(depth, item_count)``."""
    t = node.minimum_degree
    keys = [item[0] for item in node.items]
    if any(not (a < b) for a, b in zip(keys, keys[1:], strict=False)):
        raise AssertionError(f"keys out of order in {node!r}: {keys!r}")
    if has_low and keys and not (low < keys[0]):
        raise AssertionError(f"key {keys[0]!r} not above its separator {low!r}")
    if high is not None and keys and not (keys[-1] < high[0]):
        raise AssertionError(f"key {keys[-1]!r} not below its separator {high[0]!r}")
    if len(keys) > 2 * t - 1 or (not is_root and len(keys) < t - 1):
        raise AssertionError(f"{node!r} holds {len(keys)} items (t = {t})")
    if node.nodes is None:
        depth, count = 1, len(keys)
    else:
        depth, count = _check_children(node, keys, low, high, has_low)
    cached = _peek_count(node)
    if cached is not None and cached != count:
        raise AssertionError(f"{node!r} caches count {cached}, holds {count}")
    return depth, count


def _check_children(
    node: BNode, keys: list[Any], low: Any, high: Any, has_low: bool
) -> tuple[int, int]:
    """Verify the children of an internal node; returns ``(depth, item_count)``."""
    assert node.nodes is not None
    if len(node.nodes) != len(keys) + 1:
        raise AssertionError(f"{node!r} has {len(keys)} items, {len(node.nodes)} children")
    depths = set()
    count = len(keys)
    for index, child in enumerate(node.nodes):
        if real_class(child) is not real_class(node):
            raise AssertionError(f"{child!r} is not of the class of its parent {node!r}")
        child_low = keys[index - 1] if index > 0 else low
        child_has_low = index > 0 or has_low
        child_high = (keys[index],) if index < len(keys) else high
        child_depth, child_count = _check_node(child, False, child_low, child_high, child_has_low)
        depths.add(child_depth)
        count += child_count
    if len(depths) != 1:
        raise AssertionError(f"leaves below {node!r} lie at different depths {depths}")
    return depths.pop() + 1, count


def check_btree(tree: BTree) -> int:
    """Verify every structural invariant of ``tree``; returns its item count.

    Sorted keys, separators bounding their subtrees, node fill t-1 .. 2t-1
    (the root may hold fewer), k+1 children for k items, one node class,
    leaves at equal depth, cached counts equal to real counts. Raises
    AssertionError (explicitly, so it also works under ``python -O``).
    """
    root = tree.root
    if root.nodes is not None and not root.items:
        raise AssertionError("an internal root holds no items")
    depth, count = _check_node(root, True, None, None, False)
    if depth != tree.get_depth():
        raise AssertionError(f"depth {depth} differs from get_depth() {tree.get_depth()}")
    return count
