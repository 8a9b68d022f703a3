"""A byte budget for decoded images: what bounds a worker's memory when frames compress well.

The in-flight limits count *encoded* bytes; a 60 KB PNG can decode to 190 MB. Each decode takes
its image's size from the budget (known from the header, before any pixel is decoded) and gives
it back when the image is dropped (after inference, or when the frame is finished otherwise), so
decoded pixels held by a worker stay below ``limit`` plus one image per decoder thread.

Frames leave the decoders in poll order, so a waiting decode can be the one every decoded frame
behind it waits for; if those later frames hold the whole budget, nothing is ever released. The
caller breaks that cycle with ``overdraw``: the frame at the head of the line may take its bytes
even when they do not fit (the pipeline can always finish it), which costs at most one image more.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from collections.abc import Callable


class ByteBudget:
    """Counting semaphore over bytes. Thread-safe.

    ``acquire(n)`` waits until ``n`` bytes fit; a request larger than the whole budget waits for
    an empty budget and then takes it (so one oversized image cannot dead-lock the pipeline).
    A waiter whose ``overdraw()`` turns true takes its bytes at once; ``wake()`` makes waiters
    look again after something they depend on changed.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._used = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        with self._cond:
            return self._used

    def acquire(self, n: int, timeout: float | None = None, overdraw: Callable[[], bool] | None = None) -> bool:
        """Take ``n`` bytes, waiting up to ``timeout`` s (None: forever). False: not taken."""
        n = max(0, int(n))
        deadline = None if timeout is None else time.monotonic() + timeout

        def fits() -> bool:
            return self._used + n <= self.limit or self._used == 0 or (overdraw is not None and overdraw())

        with self._cond:
            while not fits():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            self._used += n
            return True

    def force(self, n: int) -> None:
        """Take ``n`` bytes without waiting (corrections after the fact; may overshoot)."""
        with self._cond:
            self._used += max(0, int(n))

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def release(self, n: int) -> None:
        with self._cond:
            self._used = max(0, self._used - max(0, int(n)))
            self._cond.notify_all()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` in /proc/<pid>/status; Linux); 0 once it is gone.
    What the memory bound above is checked against by the tests and the soak."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pin_mmap_threshold(threshold: int | None) -> bool:
    """Fix glibc's mmap threshold (``mallopt(M_MMAP_THRESHOLD)``), so that freed decoded images go
    back to the system at once. By default glibc raises the threshold to the size of the largest
    mapped block freed (up to 32 MB), after which 12 MB images come from its heaps and stay
    resident after use: RSS then grows beyond what the decoded-bytes budget holds. False where
    there is no glibc (or ``threshold`` is None)."""
    if threshold is None:
        return False
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3
    return bool(mallopt(ctypes.c_int(m_mmap_threshold), ctypes.c_int(int(threshold))))
