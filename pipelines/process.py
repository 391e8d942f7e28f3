"""Process-wide settings a load needs to run fast in flat memory, in one place.

A run allocates millions of short-lived objects: every consumed message is a Python object
(confluent-kafka builds them in C) and every batch is a few Arrow buffers. Two defaults of the
interpreter work against that:

* glibc gives each thread that allocates its own malloc arena (up to 8 per core). The reading
  thread, the writer thread and librdkafka's threads each keep freed batches in their own arena,
  so RSS creeps up with the backlog (measured: +130 MB over 3,000,000 messages). Capping the
  arenas keeps it flat at no measurable cost in speed.
* The cyclic garbage collector runs a collection every 700 new container objects, and a full one
  whenever the survivors grow by a quarter. Batches of consumed messages are exactly that, so the
  reading thread spent about a quarter of its time in the collector, holding the GIL. During a
  run the objects loaded before it are frozen out of collections and the young generation is
  collected less often; both are restored when the run ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Iterator
from contextlib import contextmanager

_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
_ARENAS = 2
_YOUNG_THRESHOLD = 50_000

_arenas_limited = False


def limit_malloc_arenas(arenas: int = _ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads started from now on; False where not glibc."""
    global _arenas_limited
    if _arenas_limited:
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _arenas_limited = bool(mallopt(_M_ARENA_MAX, arenas))
    return _arenas_limited


@contextmanager
def bulk_allocation() -> Iterator[None]:
    """Tune the garbage collector for a run's allocation pattern; restore it afterwards."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], _YOUNG_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
