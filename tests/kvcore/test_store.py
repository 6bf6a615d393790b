"""The local store: bytes to bytes, a per-slot key index, and a byte count."""

from __future__ import annotations

import pytest

from kvcore.slots import key_slot
from kvcore.store import LocalStore


def test_new_store_is_empty() -> None:
    s = LocalStore()
    assert s.count() == len(s) == 0
    assert s.bytes_used == 0
    assert s.get(b"k") is None
    assert s.slots() == []


def test_set_then_get_returns_the_value() -> None:
    s = LocalStore()
    s.set(b"k", b"v")
    assert s.get(b"k") == b"v"
    assert b"k" in s
    assert s.count() == 1


def test_set_overwrites() -> None:
    s = LocalStore()
    s.set(b"k", b"v1")
    s.set(b"k", b"v2")
    assert s.get(b"k") == b"v2"
    assert s.count() == 1


def test_empty_value_is_a_value_not_an_absence() -> None:
    s = LocalStore()
    s.set(b"k", b"")
    assert s.get(b"k") == b""
    assert b"k" in s
    assert s.delete(b"k") is True
    assert s.get(b"k") is None


def test_delete_removes_and_reports_presence() -> None:
    s = LocalStore()
    s.set(b"k", b"v")
    assert s.delete(b"k") is True
    assert s.get(b"k") is None
    assert b"k" not in s
    assert s.count() == 0


def test_delete_of_an_absent_key_is_false_and_changes_nothing() -> None:
    s = LocalStore()
    s.set(b"other", b"v")
    used = s.bytes_used
    assert s.delete(b"absent") is False
    assert s.delete(b"absent") is False
    assert s.count() == 1
    assert s.bytes_used == used


def test_bytes_used_counts_keys_and_values_through_set_overwrite_and_delete() -> None:
    s = LocalStore()
    s.set(b"abc", b"12345")
    assert s.bytes_used == 8
    s.set(b"abc", b"1")  # shrink
    assert s.bytes_used == 4
    s.set(b"abc", b"1234567890")  # grow
    assert s.bytes_used == 13
    s.set(b"xy", b"")
    assert s.bytes_used == 15
    s.delete(b"abc")
    assert s.bytes_used == 2
    s.delete(b"xy")
    assert s.bytes_used == 0


def test_keys_in_slot_are_sorted_whatever_the_insertion_order() -> None:
    s = LocalStore()
    keys = [b"{t}z", b"{t}a", b"{t}m", b"{t}b"]
    for k in keys:
        s.set(k, b"v")
    slot = key_slot(b"t")
    assert s.keys_in_slot(slot) == sorted(keys)
    assert s.keys_in_slot(slot, limit=2) == [b"{t}a", b"{t}b"]
    assert s.count_in_slot(slot) == 4


def test_keys_in_slot_forgets_deleted_keys_and_empty_slots() -> None:
    s = LocalStore()
    s.set(b"{t}a", b"v")
    s.set(b"{t}b", b"v")
    slot = key_slot(b"t")
    s.delete(b"{t}a")
    assert s.keys_in_slot(slot) == [b"{t}b"]
    s.delete(b"{t}b")
    assert s.keys_in_slot(slot) == []
    assert s.count_in_slot(slot) == 0
    assert s.slots() == []


def test_overwrite_does_not_duplicate_the_key_in_its_slot() -> None:
    s = LocalStore()
    s.set(b"k", b"1")
    s.set(b"k", b"2")
    assert s.keys_in_slot(key_slot(b"k")) == [b"k"]


def test_keys_of_other_slots_are_not_listed() -> None:
    s = LocalStore()
    s.set(b"foo", b"v")  # slot 9505
    s.set(b"bar", b"v")  # slot 3242
    assert s.keys_in_slot(9505) == [b"foo"]
    assert s.keys_in_slot(3242) == [b"bar"]
    assert s.keys_in_slot(0) == []
    assert s.slots() == [3242, 9505]


@pytest.mark.parametrize("n", [1, 10, 200])
def test_count_tracks_distinct_keys(n: int) -> None:
    s = LocalStore()
    for i in range(n):
        s.set(f"k{i}".encode(), b"v")
        s.set(f"k{i}".encode(), b"w")
    assert s.count() == n
    assert sum(s.count_in_slot(slot) for slot in s.slots()) == n
