"""Writes in flight: the one owner of the order in which overlapping writes commit.

The runner submits batches and takes the results in order; it never sees a turn. A sink that
lets writes overlap (``Capabilities.max_in_flight`` > 1, PostgreSQL) runs them on that many
connections at once, and each write waits, at the points the sink's write path names, for the
write submitted before it (``WriteTurn``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from connector.batch import Batch
from sinks.base import ClosesOnExit, WriteResult


class WriteTurn:
    """The place of one write among the writes in flight at once.

    Writes in flight at once still commit in the order they were submitted. A write plans its
    columns only once the previous write has settled the table's definition (it changes
    nothing, or it ended), and moves its checkpoint only once the previous write ended: its
    compare-and-set then sees the offsets the previous write committed, or, if that one rolled
    back, finds the checkpoint of every partition they share where it was and fails too
    (partitions they do not share may commit: checkpoints are per partition).
    """

    __slots__ = ("_ended", "_previous_ended", "_previous_settled", "_settled")

    def __init__(self, previous: WriteTurn | None = None) -> None:
        self._settled, self._ended = threading.Event(), threading.Event()
        self._previous_settled = previous._settled if previous is not None else None
        self._previous_ended = previous._ended if previous is not None else None

    def wait_previous_settled(self) -> None:
        """Until the previous write is known to leave the table's columns alone, or ended."""
        if self._previous_settled is not None:
            self._previous_settled.wait()

    def wait_previous_ended(self) -> None:
        """Until the previous write committed or rolled back."""
        if self._previous_ended is not None:
            self._previous_ended.wait()

    def settled(self) -> None:
        """This write leaves the table's definition as it is."""
        self._settled.set()

    def end(self) -> None:
        self._settled.set()
        self._ended.set()


#: One write of a sink, taking its place in the order: ``(batch, replay, turn) -> result``.
TurnWrite = Callable[[Batch, bool, WriteTurn], WriteResult]
#: Refits a batch to the table as the previous write leaves it (schema conflicts set aside).
Fit = Callable[[Batch], Batch]
#: Told of each write once it committed: ``(batch as written, result)``.
Written = Callable[[Batch, WriteResult], None]


class InFlight(ClosesOnExit):
    """Batches submitted to one sink, written up to ``depth`` at once, committed in order.

    ``submit`` returns a future of ``(batch as written, result)``; taking the futures in the
    order submitted gives the results in commit order. Closing waits for every write.
    """

    def __init__(self, write: TurnWrite, depth: int) -> None:
        self.depth = max(depth, 1)
        self._write = write
        self._last: WriteTurn | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=self.depth, thread_name_prefix="kafka-etl-writer"
        )

    def submit(
        self,
        batch: Batch,
        *,
        replay: bool = False,
        fit: Fit | None = None,
        written: Written | None = None,
    ) -> Future[tuple[Batch, WriteResult]]:
        """Write ``batch`` after the writes submitted before it; ``fit`` runs first, once the
        previous write has settled the table's columns, and ``written`` right after the commit,
        on the writer's thread (so a count it keeps never misses a committed batch)."""
        turn = WriteTurn(self._last)
        self._last = turn
        # Taken out of the list by the write, so the batch can be freed as soon as it is
        # written rather than living on in the executor's work item.
        handover = [batch]

        def run() -> tuple[Batch, WriteResult]:
            try:
                todo = handover.pop()
                if fit is not None:
                    turn.wait_previous_settled()
                    todo = fit(todo)
                result = self._write(todo, replay, turn)
                if written is not None:
                    written(todo, result)
            finally:
                turn.end()
            pa.default_memory_pool().release_unused()  # keep RSS flat across batches
            return todo, result

        return self._pool.submit(run)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
