"""``pipelines.ahead.Ahead``: work on a few threads, results in submit order, bounded."""

from __future__ import annotations

import random
import threading
import time

import pytest

from pipelines.ahead import Ahead


def _run(ahead: Ahead[int, int], items: range) -> list[int]:
    out = []
    for i in items:
        ahead.submit(i)
        if ahead.full:
            out.append(ahead.take())
    while ahead:
        out.append(ahead.take())
    return out


def test_results_come_in_submit_order_with_at_most_threads_at_once() -> None:
    running, most = [0], [0]
    lock = threading.Lock()
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.004) for _ in range(200)]

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(delays[i])
        with lock:
            running[0] -= 1
        return i * i

    with Ahead(work, 3, "test-ahead") as ahead:
        assert _run(ahead, range(200)) == [i * i for i in range(200)]
    assert 1 < most[0] <= 3


def test_a_failure_is_raised_in_its_turn_and_close_waits_for_the_rest() -> None:
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        if i == 5:
            time.sleep(0.01)
            raise ValueError("bad 5")
        return i

    taken: list[int] = []
    with pytest.raises(ValueError, match="bad 5"), Ahead(work, 3, "test-ahead") as ahead:
        for i in range(20):
            ahead.submit(i)
            if ahead.full:
                taken.append(ahead.take())
    assert taken == [0, 1, 2, 3, 4]
    assert max(started) <= 7  # at most three submitted and not taken
    assert not [t for t in threading.enumerate() if t.name.startswith("test-ahead")]


def test_one_thread_works_on_the_calling_thread() -> None:
    where: list[str] = []

    def work(i: int) -> int:
        where.append(threading.current_thread().name)
        return i

    with Ahead(work, 1, "test-ahead") as ahead:
        assert _run(ahead, range(5)) == list(range(5))
    assert set(where) == {threading.current_thread().name}
