"""User classes stored by the compatibility tests, importable by both implementations.

Owns the application classes whose records the two implementations exchange:
their module and class names are written into every record as
``compatclasses <Name>``, so this file must be importable as the top-level
module ``compatclasses`` on both sides (the tests put ``tests/compat`` on the
path; the peer gets it through PYTHONPATH).

Must import nothing but ``durus.persistent`` (whichever Durus is on the path)
and the standard library: the peer interpreter has no access to this checkout.
"""

from durus.persistent import ComputedAttribute, Persistent, PersistentObject


class Account(Persistent):
    """A ``__dict__``-based persistent object (its state is the instance dict)."""

    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance
        self.history = []

    def deposit(self, amount):
        self.balance += amount
        self.history.append(("deposit", amount))


class Point(PersistentObject):
    """A ``__slots__`` object (its state is built from the slots that have values)."""

    __slots__ = ("x", "y", "label")

    def __init__(self, x, y, label=None):
        self.x = x
        self.y = y
        if label is not None:
            self.label = label


class Point3(Point):
    """A slotted subclass of a slotted class: slots from every class are stored."""

    __slots__ = ("z",)

    def __init__(self, x, y, z, label=None):
        Point.__init__(self, x, y, label)
        self.z = z


class Tagged(Point):
    """A slotted class whose subclass has a ``__dict__``: state holds both."""

    def __init__(self, x, y, **extra):
        Point.__init__(self, x, y)
        self.__dict__.update(extra)


class Ledger(Persistent):
    """Holds a ComputedAttribute (stored with state None) next to ordinary data."""

    def __init__(self, name):
        self.name = name
        self.entries = []
        self.total = ComputedAttribute()

    def add(self, amount):
        self.entries.append(amount)
        self._p_note_change()
        self.total.invalidate()

    def get_total(self):
        return self.total.get(lambda: sum(self.entries))


class Color:
    """A plain (non-persistent) class: pickled by value inside its holder's record."""

    def __init__(self, name, rgb):
        self.name = name
        self.rgb = rgb

    def __eq__(self, other):
        return isinstance(other, Color) and (self.name, self.rgb) == (other.name, other.rgb)

    def __hash__(self):
        return hash((self.name, self.rgb))


class Small(Persistent):
    """A tiny persistent object, used in bulk (the 100k-object database)."""

    def __init__(self, n):
        self.n = n
