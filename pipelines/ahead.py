"""Work done on a few threads ahead of its consumer, whose results are taken in submit order.

The runner decodes micro-batches this way (``decode_threads``): the reading thread submits each
batch as it is read and takes the decoded batches strictly in read order, so the one ordered
writer downstream sees exactly the sequence it would see with decoding on the reading thread.
At most ``threads`` batches are submitted and not yet taken, which bounds the memory decoding
adds. A failure is raised when its batch's turn comes, never earlier: the batches read before
it are taken (and written) first, and nothing read after it is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from sinks.base import ClosesOnExit

T = TypeVar("T")
R = TypeVar("R")


class Ahead(ClosesOnExit, Generic[T, R]):
    """``work`` on up to ``threads`` items at once; ``take`` gives the results in order.

    With one thread there is no pool: ``submit`` does the work there and then, on the calling
    thread, exactly as a plain call would. Closing drops what was not taken: work not started is
    cancelled and work running is waited for, so no thread outlives the owner's ``with``.
    """

    def __init__(self, work: Callable[[T], R], threads: int, name: str) -> None:
        self.threads = max(threads, 1)
        self._work = work
        self._pending: deque[Future[R]] = deque()
        self._pool = (
            ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=name)
            if self.threads > 1
            else None
        )

    def submit(self, item: T) -> None:
        """Start ``work(item)``; only while ``full`` is false (the caller takes first)."""
        assert not self.full, "take a result before submitting more"
        if self._pool is not None:
            self._pending.append(self._pool.submit(self._work, item))
            return
        done: Future[R] = Future()
        done.set_result(self._work(item))  # a failure is raised here: it is this item's turn
        self._pending.append(done)

    @property
    def full(self) -> bool:
        """``threads`` items submitted and not taken: take one before submitting another."""
        return len(self._pending) >= self.threads

    def __len__(self) -> int:
        return len(self._pending)

    def take(self) -> R:
        """The result of the oldest item not yet taken (waiting for it), or its exception."""
        return self._pending.popleft().result()

    def close(self) -> None:
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
