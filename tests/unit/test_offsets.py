"""Offset tracker: commit N+1 only when every record <= N is acknowledged; revokes ignore late acks."""

from __future__ import annotations

import random
import threading

import pytest

from inspector.pipeline.offsets import OffsetTracker


def test_commit_waits_for_the_oldest_unacked():
    t = OffsetTracker()
    t.assign(["p0"])
    tickets = [t.track("p0", o) for o in range(10, 15)]
    assert t.committable() == {"p0": 10}  # nothing done: commit point stays at the first record
    t.mark_committed({"p0": 10})
    t.ack(tickets[2])
    t.ack(tickets[1])
    assert t.committable() == {}  # 10 is still in flight
    t.ack(tickets[0])
    assert t.committable() == {"p0": 13}
    t.mark_committed({"p0": 13})
    for tk in tickets[3:]:
        t.ack(tk)
    assert t.committable() == {"p0": 15} and t.pending() == 0


def test_gaps_in_offsets_are_fine():
    t = OffsetTracker()
    t.assign([0])
    a, b = t.track(0, 5), t.track(0, 9)  # e.g. compacted or transaction markers between
    t.ack(b)
    assert t.committable() == {0: 5}
    t.ack(a)
    assert t.committable() == {0: 10}


def test_partitions_independent_and_pending_counts():
    t = OffsetTracker()
    t.assign(["a", "b"])
    ta = t.track("a", 0)
    tb = t.track("b", 0)
    t.ack(tb)
    assert t.committable() == {"a": 0, "b": 1}
    assert t.pending() == 1 and t.pending(["b"]) == 0 and t.pending(["a"]) == 1
    t.ack(ta)
    assert t.committable(["a"]) == {"a": 1}


def test_revoke_ignores_late_acks_even_after_reassign():
    t = OffsetTracker()
    t.assign(["p"])
    old = t.track("p", 0)
    t.revoke(["p"])
    assert not t.ack(old) and t.committable() == {}
    t.assign(["p"])  # re-assigned: records come again from the committed offset
    new = t.track("p", 0)
    assert not t.ack(old)  # stale generation must not advance the new assignment
    assert not t.is_current(old) and t.is_current(new)
    assert t.committable() == {"p": 0}
    assert t.ack(new)
    assert t.committable() == {"p": 1}


def test_misuse_is_refused():
    t = OffsetTracker()
    with pytest.raises(KeyError):
        t.track("x", 0)
    t.assign(["x"])
    t.track("x", 5)
    with pytest.raises(ValueError):
        t.track("x", 4)


def test_concurrent_acks_random_order():
    t = OffsetTracker()
    t.assign(["p"])
    tickets = [t.track("p", o) for o in range(2000)]
    random.Random(1).shuffle(tickets)
    chunks = [tickets[i::4] for i in range(4)]
    threads = [threading.Thread(target=lambda c=c: [t.ack(x) for x in c]) for c in chunks]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.committable() == {"p": 2000} and t.pending() == 0


def test_commit_never_skips_an_unacked_record():
    rng = random.Random(7)
    t = OffsetTracker()
    t.assign(["p"])
    tickets = [t.track("p", o) for o in range(300)]
    order = list(range(300))
    rng.shuffle(order)
    acked = set()
    for i in order:
        t.ack(tickets[i])
        acked.add(i)
        point = t.committable().get("p")
        if point is not None:
            t.mark_committed({"p": point})
            assert all(o in acked for o in range(point))
            assert point == 300 or point not in acked
