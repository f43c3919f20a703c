"""Tests for durus.arrays (file-backed arrays, re-exported by durus.utils)."""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durus import utils
from durus.arrays import BitArray, Byte, ByteArray, IntArray, IntSet, WordArray
from durus.utils import ShortRead


def test_utils_reexports_the_arrays() -> None:
    for name in ("BitArray", "Byte", "ByteArray", "IntArray", "IntSet", "WordArray"):
        assert getattr(utils, name) is getattr(sys.modules["durus.arrays"], name)
        assert name in utils.__all__


@pytest.mark.parametrize("first", ["durus.arrays", "durus.utils"])
def test_either_module_imports_first_without_a_cycle(first: str) -> None:
    code = f"import {first}; from durus.utils import IntSet; IntSet(3).add(5)"
    subprocess.run([sys.executable, "-c", code], check=True)


class TestByteArray:
    def test_starts_at_the_file_position_and_fills(self) -> None:
        f = BytesIO(b"head")
        f.seek(4)
        b = ByteArray(3, f)
        assert f.getvalue() == b"head\x00\x00\x00"
        assert len(b) == b.get_size() == 3
        b[1] = b"x"
        assert f.getvalue() == b"head\x00x\x00"
        assert list(b) == [b"\x00", b"x", b"\x00"]

    def test_existing_bytes_are_kept(self) -> None:
        f = BytesIO(b"..abc")
        f.seek(2)
        b = ByteArray(5, f)
        assert b[0:5] == b"abc\x00\x00" and f.getvalue() == b"..abc\x00\x00"
        f.seek(0)
        bits = BitArray(16, f)
        assert str(bits) == format(ord("."), "08b") * 2

    def test_grow_only(self) -> None:
        b = ByteArray(2)
        b.set_size(5, b"\xab")
        assert b[2:5] == b"\xab" * 3
        with pytest.raises(AssertionError):
            b.set_size(1)
        with pytest.raises(ValueError):
            b.set_size(6, b"ab")

    def test_gen_set_size_yields_remaining(self) -> None:
        b = ByteArray()
        remaining = list(b.gen_set_size(200_000))
        assert remaining[-1] == 0 and remaining == sorted(remaining, reverse=True)
        assert len(b) == 200_000

    def test_index_errors(self) -> None:
        b = ByteArray(4)
        for j in (-1, 4):
            with pytest.raises(IndexError):
                b[j]
        with pytest.raises(ValueError):
            b[0] = b"ab"
        with pytest.raises(IndexError):
            b[2:2]
        with pytest.raises(IndexError):
            b[0:4:2]
        with pytest.raises(TypeError):
            b[:2]
        with pytest.raises(ValueError):
            b[0:2] = b"abc"
        b[1:3] = b"yz"
        assert b[0:4] == b"\x00yz\x00"


class TestByte:
    def test_bits_msb_first(self) -> None:
        b = Byte(0b1010_0001)
        assert [b[j] for j in range(8)] == [1, 0, 1, 0, 0, 0, 0, 1]
        assert b[-1] == 1 and b[-8] == 1
        b[0] = 0
        b[7] = False
        b[6] = "yes"
        assert int(b) == 0b0010_0010
        assert str(b) == chr(0b0010_0010)
        assert b.byte() == b"\x22"
        assert int(Byte(b"\xff")) == 255

    @pytest.mark.parametrize("bad", [256, -1, b"ab", "a", 1.5, None])
    def test_bad_values(self, bad: object) -> None:
        with pytest.raises(TypeError):
            Byte(bad)  # type: ignore[arg-type]

    def test_bad_index(self) -> None:
        for j in (8, -9):
            with pytest.raises(IndexError):
                Byte(0)[j]


class TestBitArray:
    def test_set_get_iter_str(self) -> None:
        a = BitArray(10)
        a[0] = 1
        a[-1] = 1
        assert str(a) == "1000000001"
        assert list(a) == [1] + [0] * 8 + [1]
        a.set_size(12)
        assert len(a) == a.get_size() == 12 and a[11] == 0
        for j in (12, -13):
            with pytest.raises(IndexError):
                a[j]


class TestWordArray:
    def test_new_then_reread(self) -> None:
        f = BytesIO(b"xx")
        f.seek(2)
        w = WordArray(f, 3, 4)
        assert f.getvalue()[2:26] == bytes.fromhex(
            "000000000000001c00000000000000030000000000000004"
        )
        assert len(w) == 4 and w.get_bytes_per_word() == 3
        w[1] = b"abc"
        w[-1] = b"xyz"
        f.seek(2)
        again = WordArray(f)
        assert list(again) == [b"\x00" * 3, b"abc", b"\x00" * 3, b"xyz"]

    def test_errors(self) -> None:
        w = WordArray(None, 2, 2)
        with pytest.raises(ValueError):
            w[0] = b"a"
        with pytest.raises(IndexError):
            w[2] = b"ab"
        with pytest.raises(ShortRead):
            WordArray(BytesIO(b"\x00" * 10))
        with pytest.raises(ValueError):
            WordArray(BytesIO(b"\x00" * 24))  # width 0
        with pytest.raises(ShortRead):
            WordArray(BytesIO(bytes.fromhex("000000000000001800000000000000010000000000000008")))
        with pytest.raises(ValueError):
            WordArray(BytesIO())

    def test_generate_yields_progress(self) -> None:
        f = BytesIO()
        steps = list(WordArray.generate(f, 1, 5, b"\x07"))
        assert steps[-1] == 0
        f.seek(0)
        assert list(WordArray(f)) == [b"\x07"] * 5


class TestIntArray:
    def test_width_from_maximum(self) -> None:
        assert IntArray(None, 3, 254).get_blank_value() == 255
        assert IntArray(None, 3, 255).get_blank_value() == 0xFFFF
        assert IntArray(None, 3).get_blank_value() == 2**64 - 1

    def test_blank_get_set_items(self) -> None:
        f = BytesIO()
        a = IntArray(f, 4, 1000)
        assert a[0] == a.get_blank_value() and a.get(0) is None and a.get(9, "d") == "d"
        a[2] = 7
        a[0] = 0
        assert list(a.items()) == [(0, 0), (2, 7)]
        assert list(a) == [0, 0xFFFF, 7, 0xFFFF]
        with pytest.raises(ValueError):
            a[1] = 0x10000
        with pytest.raises(ValueError):
            a[1] = -1
        f.seek(0)
        assert list(IntArray(f).iteritems()) == [(0, 0), (2, 7)]
        assert len(a) == 4


class TestIntSet:
    def test_wart_32_small_sets_grow_to_hold_n(self) -> None:
        s = IntSet(size=1)
        s.add(1)
        s.add(0)
        assert 1 in s and 0 in s and 2 not in s
        s = IntSet(size=0)
        s.add(0)
        assert 0 in s

    def test_wart_32_negatives_rejected(self) -> None:
        s = IntSet(size=16)
        with pytest.raises(ValueError):
            s.add(-1)
        assert -1 not in s and 15 not in s
        s.discard(-1)
        assert list(s.bit_array) == [0] * 16

    def test_discard(self) -> None:
        s = IntSet(8)
        s.add(3)
        s.discard(3)
        s.discard(100)
        assert 3 not in s and "x" not in s

    @given(st.sets(st.integers(0, 5000), max_size=40), st.integers(0, 50))
    def test_matches_builtin_set(self, values: set[int], size: int) -> None:
        s = IntSet(size)
        for v in values:
            s.add(v)
        assert all(v in s for v in values)
        assert all(v not in s for v in range(0, 5001, 97) if v not in values)


class TestRejectedArguments:
    """Each argument check answers with its own clear error."""

    def test_byte_array_read_past_a_shrunken_file(self) -> None:
        f = BytesIO()
        b = ByteArray(4, f)
        f.truncate(2)
        with pytest.raises(ShortRead, match="wanted 1 bytes"):
            b[3]
        with pytest.raises(ShortRead, match="wanted 3 bytes"):
            b[0:3]

    def test_byte_repr_and_negative_bit_array_size(self) -> None:
        assert repr(Byte(7)) == "Byte(7)"
        bits = BitArray(3)
        with pytest.raises(ValueError, match=">= 0"):
            bits.set_size(-1)

    def test_word_array_reopened_with_other_shape(self) -> None:
        f = BytesIO()
        WordArray(f, 2, 3)
        f.seek(0)
        with pytest.raises(ValueError, match="bytes per word"):
            WordArray(f, 4, 3)
        f.seek(0)
        with pytest.raises(ValueError, match="3 words"):
            WordArray(f, 2, 5)

    @pytest.mark.parametrize(("width", "count"), [(0, 1), (9, 1), (2, -1)])
    def test_word_array_generate_bad_shape(self, width: int, count: int) -> None:
        with pytest.raises(ValueError):
            list(WordArray.generate(BytesIO(), width, count))

    def test_int_array_reopened_with_another_count(self) -> None:
        f = BytesIO()
        IntArray(f, 4, 100)
        f.seek(0)
        with pytest.raises(ValueError, match="4 ints"):
            IntArray(f, 5)
