"""File-backed arrays: bytes, bits, fixed-width words and small integers.

Owns ByteArray, Byte, BitArray, WordArray, IntArray and IntSet (API.md section
15; durus.utils re-exports them). Each array lives in a seekable binary
file-like object, starting at the position the file had when the array was
made, so that it can sit inside a larger file (a BytesIO by default).

It must never import durus.utils at module import time: durus.utils imports
this module at its end to re-export these names, so importing durus.utils
here would make a cycle when this module is imported first. The int8 codec is
therefore done with struct directly, and ShortRead is fetched lazily.

Header bytes read from a file are outside input: they are checked with
explicit exceptions, never with assertions.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterator
from io import BytesIO
from typing import Any

__all__ = ["ByteArray", "Byte", "BitArray", "WordArray", "IntArray", "IntSet"]

_int8 = struct.Struct(">Q")
WORD_HEADER_BYTES = 24  # three int8s: bytes after the first, word width, word count
GROWTH_CHUNK_BYTES = 1 << 16
MAX_BYTES_PER_WORD = 8
INT_SET_GROWTH_FACTOR = 1.2


def _short_read(message: str) -> Exception:
    """A durus.utils.ShortRead, imported lazily to keep the import graph acyclic."""
    from durus.utils import ShortRead

    return ShortRead(message)


def _index(j: Any) -> int:
    """``j`` as an int (TypeError for non-integers, as sequences do)."""
    return operator.index(j)


class ByteArray:
    """An array of single bytes stored in ``file`` from its current position.

    Bytes the file already holds there are kept (a file-backed array can be
    reopened); only the part beyond the end of the file is filled.
    """

    def __init__(self, size: int = 0, file: Any = None) -> None:
        self.file = BytesIO() if file is None else file
        self.start = self.file.tell()
        existing_bytes = max(0, self.file.seek(0, 2) - self.start)
        self.size = min(existing_bytes, max(0, _index(size)))
        self.set_size(size)
        assert self.size == size

    def get_size(self) -> int:
        return self.size

    def __len__(self) -> int:
        return self.size

    def gen_set_size(self, size: int, init_byte: bytes = b"\x00") -> Iterator[int]:
        """Grow to ``size`` bytes filled with ``init_byte``, yielding bytes still to write."""
        size = _index(size)
        if size < self.size:
            raise AssertionError(f"a ByteArray cannot shrink ({self.size} -> {size})")
        if len(init_byte) != 1:
            raise ValueError(f"init_byte must be one byte, got {init_byte!r}")
        self.file.seek(self.start + self.size)
        while self.size < size:
            chunk_bytes = min(GROWTH_CHUNK_BYTES, size - self.size)
            self.file.write(init_byte * chunk_bytes)
            self.size += chunk_bytes
            yield size - self.size
        assert self.size == size

    def set_size(self, size: int, init_byte: bytes = b"\x00") -> None:
        for _remaining in self.gen_set_size(size, init_byte):
            pass

    def _span(self, key: slice) -> tuple[int, int]:
        """``(j, k)`` of an explicit slice 0 <= j < k <= size with step 1."""
        if key.step not in (None, 1):
            raise IndexError(f"ByteArray slices take step 1, not {key.step!r}")
        if key.start is None or key.stop is None:
            raise TypeError("ByteArray slices need an explicit start and stop")
        j, k = _index(key.start), _index(key.stop)
        if not 0 <= j < k <= self.size:
            raise IndexError(f"slice [{j}:{k}] is not within 0 <= j < k <= {self.size}")
        return j, k

    def _position(self, j: Any) -> int:
        index = _index(j)
        if not 0 <= index < self.size:
            raise IndexError(f"byte index {index} is not in range(0, {self.size})")
        return self.start + index

    def __getitem__(self, key: int | slice) -> bytes:
        if isinstance(key, slice):
            j, k = self._span(key)
            self.file.seek(self.start + j)
            value = self.file.read(k - j)
            wanted = k - j
        else:
            self.file.seek(self._position(key))
            value = self.file.read(1)
            wanted = 1
        if len(value) != wanted:
            raise _short_read(f"ByteArray: wanted {wanted} bytes, file gave {len(value)}")
        return bytes(value)

    def __setitem__(self, key: int | slice, value: bytes) -> None:
        if isinstance(key, slice):
            j, k = self._span(key)
            if len(value) != k - j:
                raise ValueError(f"slice [{j}:{k}] takes {k - j} bytes, got {len(value)}")
            position = self.start + j
        else:
            position = self._position(key)
            if len(value) != 1:
                raise ValueError(f"a ByteArray item is one byte, got {value!r}")
        self.file.seek(position)
        self.file.write(value)

    def __iter__(self) -> Iterator[bytes]:
        for j in range(self.size):
            yield self[j]


class Byte:
    """The eight bits of one byte value; bit 0 is the most significant.

    inv: 0 <= self.value <= 255
    """

    def __init__(self, v: int | bytes = 0) -> None:
        if isinstance(v, (bytes, bytearray)) and len(v) == 1:
            self.value = v[0]
        elif isinstance(v, int) and 0 <= v <= 255:
            self.value = int(v)
        else:
            raise TypeError(f"Byte() takes an int 0..255 or one byte, not {v!r}")
        assert 0 <= self.value <= 255

    @staticmethod
    def _mask(j: Any) -> int:
        index = _index(j)
        if not -8 <= index <= 7:
            raise IndexError(f"bit index {index} is not in -8..7")
        return 0x80 >> (index % 8)

    def __getitem__(self, j: int) -> int:
        """Bit ``j``: 0..7 from the most significant, -8..-1 from the least.

        raises: IndexError
        post: __return__ in (0, 1)
        """
        return 1 if self.value & self._mask(j) else 0

    def __setitem__(self, j: int, bit: object) -> None:
        """Bit ``j`` becomes 1 when ``bit`` is true, else 0.

        raises: IndexError
        post: self[j] == (1 if bit else 0)
        """
        mask = self._mask(j)
        self.value = (self.value | mask) if bit else (self.value & ~mask)
        assert 0 <= self.value <= 255

    def __int__(self) -> int:
        return self.value

    def __str__(self) -> str:
        return chr(self.value)

    def __repr__(self) -> str:
        return f"Byte({self.value})"

    def byte(self) -> bytes:
        return bytes((self.value,))


class BitArray:
    """An array of bits (0 or 1) packed eight to a byte in a ByteArray."""

    def __init__(self, size: int, file: Any = None) -> None:
        self.byte_array = ByteArray((max(0, _index(size)) + 7) // 8, file)
        self.size = 0
        self.set_size(size)

    def get_size(self) -> int:
        return self.size

    def __len__(self) -> int:
        return self.size

    def set_size(self, size: int) -> None:
        """Grow (or keep) the array to ``size`` bits; new bits are 0."""
        size = _index(size)
        if size < 0:
            raise ValueError(f"a BitArray size must be >= 0, got {size}")
        needed_bytes = (size + 7) // 8
        if needed_bytes > self.byte_array.get_size():
            self.byte_array.set_size(needed_bytes)
        self.size = size
        assert self.byte_array.get_size() * 8 >= self.size

    def _locate(self, j: Any) -> tuple[int, int]:
        """``(byte index, bit index)`` of bit ``j`` (negative counts from the end)."""
        index = _index(j)
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"bit index out of range for a BitArray of {self.size}")
        return divmod(index, 8)

    def __getitem__(self, j: int) -> int:
        byte_index, bit_index = self._locate(j)
        return Byte(self.byte_array[byte_index])[bit_index]

    def __setitem__(self, j: int, bit: object) -> None:
        byte_index, bit_index = self._locate(j)
        byte = Byte(self.byte_array[byte_index])
        byte[bit_index] = bit
        self.byte_array[byte_index] = byte.byte()

    def __iter__(self) -> Iterator[int]:
        for j in range(self.size):
            yield self[j]

    def __str__(self) -> str:
        return "".join(str(bit) for bit in self)


class WordArray:
    """A fixed number of fixed-width words after a three-int8 header.

    Header: int8 (16 + width * count) = bytes following this first int8,
    int8 width, int8 count. A new array (empty file from its current
    position) is written with zero-filled words; otherwise the header is read.
    """

    def __init__(
        self,
        file: Any = None,
        bytes_per_word: int | None = None,
        number_of_words: int | None = None,
    ) -> None:
        self.file = BytesIO() if file is None else file
        self.start = self.file.tell()
        if self.file.seek(0, 2) == self.start:
            if bytes_per_word is None or number_of_words is None:
                raise ValueError("a new WordArray needs bytes_per_word and number_of_words")
            self.file.seek(self.start)
            for _progress in self.generate(self.file, bytes_per_word, number_of_words):
                pass
        self.file.seek(self.start)
        self.bytes_per_word, self.number_of_words = self._read_header()
        self._check_arguments(bytes_per_word, number_of_words)
        self.data = ByteArray.__new__(ByteArray)
        self.data.file = self.file
        self.data.start = self.start + WORD_HEADER_BYTES
        self.data.size = self.bytes_per_word * self.number_of_words

    def _read_header(self) -> tuple[int, int]:
        """``(width, count)`` from the header at the current position, validated."""
        header = self.file.read(WORD_HEADER_BYTES)
        if len(header) != WORD_HEADER_BYTES:
            raise _short_read(f"WordArray header: {len(header)} of {WORD_HEADER_BYTES} bytes")
        following, width, count = struct.unpack(">QQQ", header)
        if not 1 <= width <= MAX_BYTES_PER_WORD or following != 16 + width * count:
            raise ValueError(f"not a WordArray header at {self.start}: {header.hex()}")
        end = self.file.seek(0, 2)
        if end < self.start + WORD_HEADER_BYTES + width * count:
            raise _short_read(f"WordArray at {self.start} needs {width * count} word bytes")
        return width, count

    def _check_arguments(self, bytes_per_word: int | None, number_of_words: int | None) -> None:
        if bytes_per_word not in (None, self.bytes_per_word):
            raise ValueError(f"file has {self.bytes_per_word} bytes per word, not {bytes_per_word}")
        if number_of_words not in (None, self.number_of_words):
            raise ValueError(f"file has {self.number_of_words} words, not {number_of_words}")

    @staticmethod
    def generate(
        file: Any, bytes_per_word: int, number_of_words: int, init_byte: bytes = b"\x00"
    ) -> Iterator[int]:
        """Write a header and ``number_of_words`` words of ``init_byte``; yield bytes left."""
        if not 1 <= bytes_per_word <= MAX_BYTES_PER_WORD:
            raise ValueError(f"bytes_per_word must be 1..8, got {bytes_per_word}")
        if number_of_words < 0:
            raise ValueError(f"number_of_words must be >= 0, got {number_of_words}")
        total = bytes_per_word * number_of_words
        file.write(struct.pack(">QQQ", 16 + total, bytes_per_word, number_of_words))
        words = ByteArray(0, file)
        yield from words.gen_set_size(total, init_byte)
        assert words.get_size() == total

    def get_bytes_per_word(self) -> int:
        return self.bytes_per_word

    def __len__(self) -> int:
        return self.number_of_words

    def _span(self, j: Any) -> slice:
        j = _index(j)
        if j < 0:
            j += self.number_of_words
        if not 0 <= j < self.number_of_words:
            raise IndexError(f"word index out of range for {self.number_of_words} words")
        return slice(j * self.bytes_per_word, (j + 1) * self.bytes_per_word)

    def __getitem__(self, j: int) -> bytes:
        word = self.data[self._span(j)]
        assert len(word) == self.bytes_per_word
        return word

    def __setitem__(self, j: int, word: bytes) -> None:
        span = self._span(j)
        if len(word) != self.bytes_per_word:
            raise ValueError(f"a word is {self.bytes_per_word} bytes, got {len(word)}")
        self.data[span] = word

    def __iter__(self) -> Iterator[bytes]:
        for j in range(self.number_of_words):
            yield self[j]


def _bytes_for_maximum(maximum_int: int | None) -> int:
    """Fewest bytes whose all-ones value exceeds ``maximum_int`` (8 when None).

    raises: ValueError
    post: 1 <= __return__ <= MAX_BYTES_PER_WORD
    post: maximum_int is None or maximum_int < (1 << (8 * __return__)) - 1
    post: maximum_int is None or __return__ == 1 or maximum_int >= (1 << (8 * __return__ - 8)) - 1
    """
    if maximum_int is None:
        return MAX_BYTES_PER_WORD
    if maximum_int < 0:
        raise ValueError(f"maximum_int must be >= 0, got {maximum_int}")
    width = max(1, ((maximum_int + 1).bit_length() + 7) // 8)
    if width > MAX_BYTES_PER_WORD:
        raise ValueError(f"maximum_int {maximum_int} does not fit in 8 bytes")
    return width


class IntArray:
    """Non-negative ints in big-endian words; an all-0xff word is blank."""

    def __init__(
        self, file: Any = None, number_of_ints: int | None = None, maximum_int: int | None = None
    ) -> None:
        file = BytesIO() if file is None else file
        start = file.tell()
        if file.seek(0, 2) == start:
            file.seek(start)
            count = 0 if number_of_ints is None else number_of_ints
            for _progress in self.generate(file, count, maximum_int):
                pass
        file.seek(start)
        self.word_array = WordArray(file)
        self.blank_value = (1 << (8 * self.word_array.get_bytes_per_word())) - 1
        if number_of_ints is not None and number_of_ints != len(self.word_array):
            raise ValueError(f"file has {len(self.word_array)} ints, not {number_of_ints}")
        assert self.blank_value >= 0xFF

    @staticmethod
    def generate(file: Any, number_of_ints: int, maximum_int: int | None = None) -> Iterator[int]:
        """Write a new all-blank IntArray into ``file``; yield bytes left to write."""
        width = _bytes_for_maximum(maximum_int)
        yield from WordArray.generate(file, width, number_of_ints, b"\xff")

    def get_blank_value(self) -> int:
        return self.blank_value

    def __len__(self) -> int:
        return len(self.word_array)

    def __getitem__(self, j: int) -> int:
        return int.from_bytes(self.word_array[j], "big")

    def get(self, j: int, default: Any = None) -> Any:
        """The int at ``j``, or ``default`` when blank or out of range."""
        try:
            value = self[j]
        except IndexError:
            return default
        return default if value == self.blank_value else value

    def __setitem__(self, j: int, value: int) -> None:
        value = _index(value)
        width = self.word_array.get_bytes_per_word()
        if not 0 <= value <= self.blank_value:
            raise ValueError(f"{value} does not fit in {width} bytes")
        self.word_array[j] = value.to_bytes(width, "big")
        assert self[j] == value

    def __iter__(self) -> Iterator[int]:
        for word in self.word_array:
            yield int.from_bytes(word, "big")

    def iteritems(self) -> Iterator[tuple[int, int]]:
        """``(j, value)`` for every non-blank entry."""
        for j, value in enumerate(self):
            if value != self.blank_value:
                yield j, value

    def items(self) -> Iterator[tuple[int, int]]:
        return self.iteritems()


class IntSet:
    """A set of non-negative ints held as a BitArray that grows on demand."""

    def __init__(self, size: int = 1023, file: Any = None) -> None:
        self.bit_array = BitArray(size, file)

    def add(self, n: int) -> None:
        n = _index(n)
        if n < 0:
            raise ValueError(f"an IntSet holds non-negative ints, not {n}")
        if n >= len(self.bit_array):
            self.bit_array.set_size(max(n + 1, int(n * INT_SET_GROWTH_FACTOR)))
        self.bit_array[n] = 1
        assert n in self

    def discard(self, n: int) -> None:
        n = _index(n)
        if 0 <= n < len(self.bit_array):
            self.bit_array[n] = 0
        assert n not in self

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int) or n < 0 or n >= len(self.bit_array):
            return False
        return self.bit_array[n] == 1
