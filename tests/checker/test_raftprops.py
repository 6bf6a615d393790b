"""Figure 3 of the Raft paper checked from a stream of events (checker.raftprops).

Hand-built event sequences, one that must pass and one that must violate for each of the five
properties (Figure 8 of the paper as events among them); then pruning, and odd input, which is
noted and never raises. Real :class:`kvcore.raft.Raft` cores fed through
:func:`sim.raftcheck.feed_from_ready` (no violation across many seeds; broken cores caught) are
in tests/sim/test_raftcheck.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from checker import RaftProperties
from checker.raftprops import (
    ELECTION_SAFETY,
    LEADER_APPEND_ONLY,
    LEADER_COMPLETENESS,
    LOG_MATCHING,
    PROPERTIES,
    STATE_MACHINE_SAFETY,
)


def E(index: int, term: int, cmd: str = "") -> tuple[int, int, bytes]:  # an entry
    return (index, term, (cmd or f"{term}/{index}").encode())


def props_of(chk: RaftProperties) -> list[str]:
    return [v.prop for v in chk.records()]


def replicate(chk: RaftProperties, nodes: str, entries: list[tuple[int, int, bytes]], at: float,
              commit: int = 0) -> None:
    for n in nodes:
        chk.appended(n, entries, at)
        if commit:
            chk.committed(n, commit, at)


# --- 1. Election Safety ----------------------------------------------------------------------


def test_election_safety_one_leader_per_term_passes() -> None:
    chk = RaftProperties()
    chk.leader("a", 1, 0.5)
    chk.leader("a", 1, 0.6)  # reported twice: the same leadership
    chk.stepped_down("a", 1.0)
    chk.leader("b", 2, 1.5)
    chk.crashed("b", 2.0)
    chk.restarted("b", 2.5)
    chk.leader("c", 3, 3.0)
    assert chk.violations() == [] and chk.ok
    assert chk.summary()["leader_terms"] == 3


def test_election_safety_two_leaders_of_one_term_are_flagged() -> None:
    chk = RaftProperties()
    chk.leader("a", 4, 1.0)
    chk.leader("b", 4, 2.25)
    [v] = chk.records()
    assert v.prop == ELECTION_SAFETY and v.nodes == ("a", "b") and v.term == 4 and v.at == 2.25
    assert v.text == ("Election Safety: nodes a and b were both leader of term 4 (from 1 and 2.25).")


# --- 2. Leader Append-Only -------------------------------------------------------------------


def test_leader_append_only_appending_and_follower_truncation_pass() -> None:
    chk = RaftProperties()
    chk.appended("a", [E(1, 1), E(2, 1)], 1)
    chk.leader("a", 2, 2)
    chk.appended("a", [E(3, 2)], 3)
    chk.appended("a", [E(4, 2), E(5, 2)], 4)
    chk.appended("b", [E(1, 1), E(2, 1), E(3, 1, "old")], 4)
    chk.appended("b", [E(3, 2), E(4, 2)], 5)  # a follower replaces its conflicting suffix
    chk.stepped_down("a", 6)
    chk.appended("a", [E(5, 3, "new")], 7)  # no longer leader: it may be overwritten
    chk.leader("b", 4, 8)
    chk.snapshot("b", 3, 2, 9)  # a leader's compaction is not a deletion
    assert chk.violations() == []


def test_leader_append_only_overwrite_is_flagged() -> None:
    chk = RaftProperties()
    chk.leader("a", 2, 1)
    chk.appended("a", [E(1, 2), E(2, 2)], 2)
    chk.appended("a", [E(2, 2, "other")], 3)
    v, lm = chk.records()  # two entries of one term at one index: Log Matching too
    assert (v.prop, v.nodes, v.term, v.index, v.at) == (LEADER_APPEND_ONLY, ("a",), 2, 2, 3)
    assert v.text == ("Leader Append-Only: node a, leader of term 2, overwrote its entry at index 2 (term 2) "
                      "with one of term 2 at 3.")
    assert lm.prop == LOG_MATCHING and "node a held and holds different entries at index 2" in lm.text


def test_leader_append_only_deletion_is_flagged() -> None:
    chk = RaftProperties()
    chk.leader("a", 2, 1)
    chk.appended("a", [E(1, 2), E(2, 2), E(3, 2)], 2)
    chk.appended("a", [E(1, 2)], 3)  # the same first entry, but 2..3 are gone
    [v] = chk.records()
    assert v.prop == LEADER_APPEND_ONLY and v.index == 2 and "deleted its entries at indexes 2..3" in v.text


def test_leader_append_only_snapshot_discarding_the_log_is_flagged() -> None:
    chk = RaftProperties()
    chk.leader("a", 1, 1)
    chk.appended("a", [E(1, 1), E(2, 1)], 2)
    chk.snapshot("a", 5, 1, 3)  # a snapshot the leader's log does not hold replaces it
    assert props_of(chk) == [LEADER_APPEND_ONLY]


# --- 3. Log Matching -------------------------------------------------------------------------


def test_log_matching_same_entries_and_conflicts_in_other_terms_pass() -> None:
    chk = RaftProperties()
    replicate(chk, "abc", [E(1, 1), E(2, 1)], 1)
    chk.appended("a", [E(3, 1, "x")], 2)
    chk.appended("b", [E(3, 2, "y")], 2)  # another term at index 3: allowed
    chk.appended("c", [E(3, 2, "y"), E(4, 2)], 3)
    chk.snapshot("c", 3, 2, 4)
    chk.appended("c", [E(5, 2)], 5)  # right after the snapshot: prev is the snapshot's term
    chk.appended("b", [E(4, 2), E(5, 2)], 6)
    assert chk.violations() == []


def test_log_matching_different_entries_at_one_index_and_term_are_flagged() -> None:
    chk = RaftProperties()
    chk.appended("a", [E(1, 1, "x")], 1)
    chk.appended("b", [E(1, 1, "y")], 2)
    [v] = chk.records()
    assert (v.prop, v.nodes, v.term, v.index) == (LOG_MATCHING, ("a", "b"), 1, 1)
    assert v.text == "Log Matching: nodes a and b hold different entries at index 1 in term 1 (seen on b at 2)."


def test_log_matching_is_checked_at_an_index_that_saw_several_terms() -> None:
    chk = RaftProperties()
    chk.appended("a", [E(1, 1, "x")], 1)
    chk.appended("b", [E(1, 2, "y")], 2)
    chk.appended("c", [E(1, 3, "z")], 3)
    chk.appended("d", [E(1, 2, "y")], 4)
    assert chk.violations() == []
    chk.appended("e", [E(1, 2, "w")], 5)
    assert [(v.prop, v.nodes, v.term) for v in chk.records()] == [(LOG_MATCHING, ("b", "e"), 2)]


def test_log_matching_disagreeing_prefixes_are_flagged() -> None:
    chk = RaftProperties()
    chk.appended("a", [E(1, 1), E(2, 3)], 1)
    chk.appended("b", [E(1, 2), E(2, 3)], 2)  # (2, 3) agrees, but the entries before it do not
    [v] = chk.records()
    assert v.prop == LOG_MATCHING and v.index == 2 and "disagree at index 1 (terms 1 and 2" in v.text


# --- 4. Leader Completeness and Figure 8 ------------------------------------------------------


def figure8_until_c(chk: RaftProperties) -> None:
    """Figure 8 (a)-(c) as events on servers 1..5 (each leader's no-op left out)."""
    chk.leader("1", 1, 0)
    replicate(chk, "12345", [E(1, 1)], 0, commit=1)
    chk.leader("1", 2, 1)  # (a) S1 leads term 2; its entry at index 2 reaches S2 only
    replicate(chk, "12", [E(2, 2)], 1)
    chk.crashed("1", 2)  # (b) S1 crashes; S5 is elected for term 3 by S3, S4, S5
    chk.leader("5", 3, 2)
    chk.appended("5", [E(2, 3)], 2)
    chk.crashed("5", 3)
    chk.restarted("1", 3, [E(1, 1), E(2, 2)], commit=1)  # (c) S1 restarts, leads term 4
    chk.leader("1", 4, 3)
    chk.appended("3", [E(2, 2)], 3)  # 2/2 on S1, S2, S3: a majority, of an older term


def test_figure8_e_committing_through_the_current_term_passes() -> None:
    """(e): S1 replicates 4/3 to a majority, which commits 2/2 with it; S5 cannot win, S2 does."""
    chk = RaftProperties()
    figure8_until_c(chk)
    replicate(chk, "123", [E(3, 4)], 4, commit=3)
    for n in "123":
        chk.applied(n, 2, 2, E(2, 2)[2], 4)
    chk.crashed("1", 5)
    chk.restarted("5", 5, [E(1, 1), E(2, 3)], commit=1)
    chk.leader("2", 5, 6)
    assert chk.violations() == []


def test_figure8_losing_an_entry_committed_by_counting_is_flagged() -> None:
    """A broken (c): S1 commits 2/2 by counting replicas of an older term and applies it; (d) S5
    is then elected for term 5 without it (Leader Completeness) and overwrites it on S2 and S3,
    which apply its 3/2 (State Machine Safety)."""
    chk = RaftProperties()
    figure8_until_c(chk)
    chk.committed("1", 2, 4)  # the broken rule: an old term's entry counted as committed
    chk.applied("1", 2, 2, E(2, 2)[2], 4)
    chk.crashed("1", 5)
    chk.restarted("5", 5, [E(1, 1), E(2, 3)], commit=1)
    chk.leader("5", 5, 6)
    replicate(chk, "234", [E(2, 3), E(3, 5)], 7, commit=3)
    for n in "234":
        chk.applied(n, 2, 3, E(2, 3)[2], 8)
    records = chk.records()
    assert [v.prop for v in records] == [LEADER_COMPLETENESS, STATE_MACHINE_SAFETY]
    lc, sms = records
    assert (lc.nodes, lc.term, lc.index, lc.at) == (("5", "1"), 5, 2, 6)
    assert lc.text == ("Leader Completeness: node 5 became leader of term 5 at 6 without the entry committed "
                       "at index 2 (term 2, known committed from node 1 at 4); it holds term 3 there.")
    assert sms.index == 2 and sms.nodes == ("1", "2")


def test_a_late_leader_of_an_older_term_lacking_a_newer_commit_passes() -> None:
    """A leader of term 2 whose votes arrive after a leader of term 3 committed an entry of term
    1 it lacks is not flagged: the entry was committed in term 3, not before term 2."""
    chk = RaftProperties()
    chk.leader("a", 1, 0)
    chk.appended("a", [E(1, 1)], 0)  # on A only; C campaigns for term 2, D and E vote for it
    chk.leader("a", 3, 1)  # A wins term 3 with B and D, commits 1/1 with its 3/2
    replicate(chk, "abd", [E(1, 1), E(2, 3)], 2, commit=2)
    chk.leader("c", 2, 3)  # the late votes of term 2 reach C
    assert chk.violations() == []


def test_a_current_leader_missing_a_newly_known_commit_is_flagged() -> None:
    """Leader Completeness holds through the term: when an entry committed before a leader's
    term becomes known, the leader must hold it."""
    chk = RaftProperties()
    chk.leader("a", 1, 0)
    replicate(chk, "ab", [E(1, 1)], 0)
    chk.leader("c", 2, 1)  # C leads term 2 without 1/1 (it is not known committed yet)
    chk.committed("b", 1, 2, node_term=1)  # ... then B, still in term 1, reports 1/1 committed
    assert props_of(chk) == [LEADER_COMPLETENESS]
    assert "node c is leader of term 2" in chk.violations()[0]


def test_a_snapshot_holds_its_last_entry_but_not_what_follows() -> None:
    chk = RaftProperties()
    chk.leader("a", 1, 0)
    replicate(chk, "abc", [E(1, 1), E(2, 1), E(3, 1)], 0, commit=3)
    chk.snapshot("b", 3, 1, 1)
    chk.crashed("a", 2)
    chk.leader("b", 2, 3)  # its snapshot ends at the committed 3/1: it holds it
    assert chk.violations() == []
    chk.restarted("c", 4, [], snapshot=(2, 1))
    chk.leader("c", 3, 5)  # its snapshot covers 2, and 3 is gone (lost in a crash): flagged
    [v] = chk.records()
    assert (v.prop, v.nodes, v.term, v.index) == (LEADER_COMPLETENESS, ("c", "a"), 3, 3)
    assert v.text.endswith("it holds no entry there.")


# --- 5. State Machine Safety -----------------------------------------------------------------


def test_state_machine_safety_same_entries_applied_pass() -> None:
    chk = RaftProperties()
    chk.leader("a", 1, 0)
    replicate(chk, "abc", [E(1, 1), E(2, 1)], 0, commit=2)
    for n in "abc":
        for i in (1, 2):
            chk.applied(n, i, 1, E(i, 1)[2], 1)
    chk.crashed("c", 2)
    chk.restarted("c", 3, [E(1, 1), E(2, 1)], commit=2)
    chk.applied("c", 1, 1, E(1, 1)[2], 4)  # a restart applies again, the same entries
    chk.applied("c", 2, 1, E(2, 1)[2], 4)
    assert chk.violations() == [] and chk.notes() == []
    assert chk.summary()["applied"] == 8 and chk.summary()["committed"] == 2


def test_state_machine_safety_different_entries_applied_at_one_index_are_flagged() -> None:
    chk = RaftProperties()
    chk.applied("a", 1, 1, b"x", 1)
    chk.applied("b", 1, 2, b"y", 2)
    [v] = chk.records()
    assert (v.prop, v.nodes, v.index) == (STATE_MACHINE_SAFETY, ("a", "b"), 1)
    assert v.text == ("State Machine Safety: node b applied an entry of term 2 at index 1 at 2, but node a "
                      "applied a different one (term 1) there at 1.")


def test_a_snapshot_disagreeing_with_a_committed_entry_is_flagged() -> None:
    chk = RaftProperties()
    replicate(chk, "ab", [E(1, 1), E(2, 1)], 0, commit=2)
    chk.snapshot("c", 2, 3, 1)
    assert props_of(chk) == [STATE_MACHINE_SAFETY]


# --- cost, pruning, odd input ----------------------------------------------------------------


def test_records_below_every_snapshot_are_pruned() -> None:
    chk = RaftProperties()
    chk.leader("a", 1, 0)
    for i in range(1, 2001):
        replicate(chk, "abc", [E(i, 1)], i, commit=i)
        for n in "abc":
            chk.applied(n, i, 1, E(i, 1)[2], i)
        if i % 100 == 0:
            for n in "abc":
                chk.snapshot(n, i - 50, 1, i)
    assert chk.violations() == [] and chk.notes() == []
    assert chk.summary()["held"] <= 150  # kept: indexes above the lowest snapshot only
    assert chk.summary()["applied"] == 6000
    assert chk.summary()["committed"] == 2000


def test_a_removed_node_no_longer_holds_the_pruning_back() -> None:
    chk = RaftProperties()
    chk.leader("a", 1, 0)
    replicate(chk, "abc", [E(i, 1) for i in range(1, 101)], 1, commit=100)
    chk.snapshot("a", 90, 1, 2)
    chk.snapshot("b", 90, 1, 2)
    assert chk.summary()["held"] == 100  # c's log still starts at 1
    chk.crashed("c", 3)
    chk.removed("c", 3)
    assert chk.summary()["held"] == 10
    chk.appended("c", [E(1, 1)], 4)  # back as a new member: it starts afresh, below the pruning
    chk.leader("a", 1, 5)
    assert chk.violations() == [] and chk.notes() == []


def test_odd_input_is_noted_not_raised() -> None:
    chk = RaftProperties()
    chk.appended("a", [E(1, 1), E(3, 1)], 0)  # not contiguous
    chk.appended("a", [E(5, 1)], 0)  # a gap after an empty log
    chk.appended("", [E(1, 1)], 0)
    chk.appended("a", "junk", 0)  # type: ignore[arg-type]
    chk.leader("a", -1, 0)
    chk.committed("a", 7, 0)  # beyond its log
    chk.applied("a", 0, 1, b"", 0)
    chk.applied("a", 1, 1, "text", 0)  # type: ignore[arg-type]
    chk.snapshot("a", -1, 0, 0)
    chk.leader("a", 1, "noon")  # type: ignore[arg-type]
    chk.crashed("a", 1)
    chk.appended("a", [E(1, 1)], 2)  # crashed, not restarted
    chk.restarted("a", 3, [E(2, 1)], snapshot=(0, 0))  # does not follow the snapshot
    notes = chk.notes()
    assert chk.violations() == [] and len(notes) == 12
    assert "a gap" in notes[1] and "crashed and has not restarted" in notes[10]


def test_violations_are_deduplicated_and_capped() -> None:
    chk = RaftProperties(max_violations=2)
    for term in range(1, 6):
        chk.leader("a", term, 0)
        chk.leader("b", term, 0)
        chk.leader("b", term, 0)
    out = chk.violations()
    assert len(out) == 3 and out[-1] == "... and 3 more violation(s) not listed (cap 2)."
    assert chk.summary()["violations"] == 5


def _event() -> st.SearchStrategy[tuple[object, ...]]:
    node = st.sampled_from(["a", "b", "c", "", 3, None, ["a"]])
    num = st.one_of(st.integers(-2, 8), st.just(1.5), st.none())
    entry = st.tuples(num, num, st.sampled_from([b"x", b"y", "z"]))
    entries = st.one_of(st.lists(entry, max_size=4), st.lists(st.builds(E, st.integers(1, 6), st.integers(1, 3),
                                                                        st.sampled_from(["x", "y"])), max_size=4))
    return st.one_of(
        st.tuples(st.just("leader"), node, num, num),
        st.tuples(st.just("stepped_down"), node, num),
        st.tuples(st.just("appended"), node, entries, num),
        st.tuples(st.just("snapshot"), node, num, num, num),
        st.tuples(st.just("committed"), node, num, num),
        st.tuples(st.just("applied"), node, num, num, st.sampled_from([b"x", b"y", None]), num),
        st.tuples(st.just("crashed"), node, num),
        st.tuples(st.just("removed"), node, num),
        st.tuples(st.just("restarted"), node, num, entries, st.tuples(num, num), num),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_event(), max_size=40))
def test_any_event_sequence_never_raises(events: list[tuple[object, ...]]) -> None:
    chk = RaftProperties()
    for name, *args in events:
        getattr(chk, str(name))(*args)
    for text in chk.violations():  # at most 40 events: never past the cap
        assert text.split(":")[0] in PROPERTIES
    assert len(chk.notes()) <= len(events)
