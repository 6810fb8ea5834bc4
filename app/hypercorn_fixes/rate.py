"""How many of something happened in the current second, against a cap."""

from __future__ import annotations

import time


class PerSecondCap:
    """Counts in one-second windows; a window that passes ``cap`` is over it.  Cheaper
    than a sliding window, and enough to tell a flood from a client."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._second = time.monotonic()
        self._count = 0

    def add(self, count: int = 1) -> bool:
        """Count ``count`` more; True if this second is now over the cap."""
        now = time.monotonic()
        if now - self._second >= 1:
            self._second, self._count = now, 0
        self._count += count
        return self._count > self.cap
