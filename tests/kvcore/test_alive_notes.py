"""Known-alive notes (kvcore.membership.table): what a note says, and when it is cleared.

A table's note for a member says "held alive at incarnation note - 1 or more"; it is written by
the receiving path and must be cleared whenever the member's record may change (replaced,
removed, handed out by ``writable``), so that it never says more than the record. These tests
pin each of those rules, the byte limit, and the numbering shared by every table of a process
(one number per member id, never two ids on one number, also when threads race).
"""

from __future__ import annotations

import threading

from kvcore.membership.member import ALIVE, SUSPECT, Member
from kvcore.membership.table import MemberTable, member_number, numbers


def rec(node: str, inc: int = 0, state: str = ALIVE) -> Member:
    return Member(node, f"{node}:1", f"{node}:2", inc, state, 0.0, "", 0)  # type: ignore[arg-type]


def note(t: MemberTable, node: str) -> int:
    n = numbers.get(node)
    return 0 if n is None or n >= len(t.alive_known) else t.alive_known[n]


def test_a_note_holds_the_incarnation_plus_one() -> None:
    t = MemberTable()
    t["a"] = rec("a", 3)
    assert note(t, "a") == 0  # nothing is noted by adding
    t.note_alive("a", t["a"])
    assert note(t, "a") == 4


def test_writable_clears_the_note_before_the_record_can_change() -> None:
    t = MemberTable()
    t["a"] = rec("a", 3)
    t.note_alive("a", t["a"])
    m = t.writable("a")
    assert note(t, "a") == 0
    m.state = SUSPECT  # type: ignore[assignment]
    assert note(t, "a") == 0


def test_replacing_or_removing_a_record_clears_its_note() -> None:
    t = MemberTable()
    t["a"] = rec("a", 3)
    t.note_alive("a", t["a"])
    t["a"] = rec("a", 1)
    assert note(t, "a") == 0
    t.note_alive("a", t["a"])
    del t["a"]
    assert note(t, "a") == 0
    t["a"] = rec("a", 0)  # back again: nothing noted from its earlier life
    assert note(t, "a") == 0


def test_notes_are_per_table() -> None:
    t, u = MemberTable(), MemberTable()
    shared = rec("a", 2)
    t["a"] = shared
    u["a"] = shared
    t.note_alive("a", shared)
    assert (note(t, "a"), note(u, "a")) == (3, 0)
    t.writable("a")
    assert note(t, "a") == 0


def test_incarnations_past_a_byte_are_not_noted() -> None:
    t = MemberTable()
    t["a"] = rec("a", 253)
    t.note_alive("a", t["a"])
    assert note(t, "a") == 254
    t["a"] = rec("a", 254)
    t.note_alive("a", t["a"])
    assert note(t, "a") == 0


def test_a_table_grows_its_notes_past_every_member_numbered() -> None:
    t = MemberTable()
    for i in range(5):
        member_number(f"grow-{i}")
    t["grow-4"] = rec("grow-4")
    t.note_alive("grow-4", t["grow-4"])
    assert len(t.alive_known) > len(numbers) - 1
    assert note(t, "grow-4") == 1


def test_member_numbers_are_stable_and_distinct_even_when_threads_race() -> None:
    ids = [f"race-{i}" for i in range(2000)]
    got: list[dict[str, int]] = []
    barrier = threading.Barrier(4)

    def work(order: list[str]) -> None:
        barrier.wait()
        got.append({k: member_number(k) for k in order})

    threads = [threading.Thread(target=work, args=(ids[::step],)) for step in (1, -1, 1, -1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    final = {k: numbers[k] for k in ids}
    assert len(set(final.values())) == len(ids)  # never two ids on one number
    for seen in got:
        assert all(final[k] == v for k, v in seen.items())  # one number per id, whoever asked
