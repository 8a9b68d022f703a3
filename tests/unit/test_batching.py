"""Micro-batcher: flush at max_batch or max_delay after the first item, one model per batch, bounded."""

from __future__ import annotations

import threading
import time

import pytest

from inspector.pipeline.batching import MicroBatcher


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_full_batch_flushes_immediately():
    b = MicroBatcher(max_batch=3, max_delay_s=10.0, max_items=100)
    for i in range(7):
        b.put("m", i)
    first = b.get(timeout=0)
    second = b.get(timeout=0)
    assert first.items == [0, 1, 2] and first.full
    assert second.items == [3, 4, 5]
    assert b.get(timeout=0) is None  # 1 item left, not due yet
    assert len(b) == 1


def test_partial_batch_waits_for_delay_since_first_item():
    clock = FakeClock()
    b = MicroBatcher(max_batch=8, max_delay_s=0.050, max_items=100, clock=clock)
    b.put("m", "a")
    clock.t += 0.030
    b.put("m", "b")
    assert b.get(timeout=0) is None
    clock.t += 0.021  # 51 ms after the FIRST item, 21 ms after the second
    batch = b.get(timeout=0)
    assert batch.items == ["a", "b"] and not batch.full
    assert batch.waited_s == pytest.approx(0.051)


def test_real_time_delay_is_respected():
    b = MicroBatcher(max_batch=64, max_delay_s=0.05, max_items=100)
    t0 = time.monotonic()
    b.put("m", 1)
    batch = b.get(timeout=1.0)
    took = time.monotonic() - t0
    assert batch.items == [1]
    assert 0.045 <= took < 0.5


def test_one_model_per_batch_oldest_first():
    clock = FakeClock()
    b = MicroBatcher(max_batch=4, max_delay_s=0.01, max_items=100, clock=clock)
    b.put("a", 1)
    clock.t += 0.001
    b.put("b", 2)
    b.put("a", 3)
    b.put("b", 4)
    clock.t += 0.02
    got = [b.get(timeout=0), b.get(timeout=0)]
    assert [(x.model, x.items) for x in got] == [("a", [1, 3]), ("b", [2, 4])]


def test_bounded_put_refuses_then_unblocks():
    b = MicroBatcher(max_batch=2, max_delay_s=0.0, max_items=2)
    assert b.put("m", 1, timeout=0) and b.put("m", 2, timeout=0)
    assert not b.put("m", 3, timeout=0.01)
    done = []

    def producer():
        done.append(b.put("m", 3, timeout=2))

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.05)
    assert done == []  # blocked while full
    assert b.get(timeout=0).items == [1, 2]
    t.join(2)
    assert done == [True] and len(b) == 1


def test_get_blocks_until_item_arrives():
    b = MicroBatcher(max_batch=1, max_delay_s=5.0, max_items=10)
    threading.Timer(0.05, lambda: b.put("m", "x")).start()
    t0 = time.monotonic()
    assert b.get(timeout=2).items == ["x"]
    assert time.monotonic() - t0 < 1.0


def test_flush_now_and_close_drain():
    clock = FakeClock()
    b = MicroBatcher(max_batch=8, max_delay_s=60, max_items=10, clock=clock)
    b.put("m", 1)
    assert b.get(timeout=0) is None
    b.flush_now()
    assert b.get(timeout=0).items == [1]
    b.flush_now(False)
    b.put("m", 2)
    b.close()
    assert not b.put("m", 3, timeout=0)
    assert b.get(timeout=0).items == [2]
    assert b.get(timeout=None) is None  # closed and empty: does not block


def test_drop_removes_selected_items():
    b = MicroBatcher(max_batch=8, max_delay_s=0, max_items=10)
    for i in range(6):
        b.put("a" if i % 2 else "b", i)
    dropped = b.drop(lambda x: x >= 3)
    assert sorted(dropped) == [0, 1, 2] and len(b) == 3
    got = []
    while (batch := b.get(timeout=0)) is not None:
        got += batch.items
    assert sorted(got) == [3, 4, 5]
