"""The simulator's clock: real time, optionally faster, and movable forward by tests (``POST /_sim/clock``).

Expiry and card settlement happen on this clock, so a test can jump a day ahead instead of waiting one.
"""

from __future__ import annotations

import time
from datetime import datetime

from infra.midtrans_sim.state import WIB


class SimClock:
    """``now()`` runs ``speed`` times as fast as real time, plus whatever :meth:`advance` added."""

    def __init__(self, speed: float = 1.0):
        if speed <= 0:
            raise ValueError("the clock speed must be positive")
        self._start_wall = time.time()
        self._start_mono = time.monotonic()
        self.speed = speed
        self.offset = 0.0  # seconds added by advance()

    def now(self) -> datetime:
        """The simulator's current time (Jakarta time)."""
        elapsed = (time.monotonic() - self._start_mono) * self.speed
        return datetime.fromtimestamp(self._start_wall + elapsed + self.offset, WIB)

    def advance(self, seconds: float) -> datetime:
        """Move the clock ``seconds`` forward (never back: Midtrans's time does not run backwards)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds
        return self.now()

    def set_speed(self, speed: float) -> None:
        """Run ``speed`` times as fast from now on, without jumping."""
        if speed <= 0:
            raise ValueError("the clock speed must be positive")
        now = self.now().timestamp()
        self._start_wall, self._start_mono, self.offset, self.speed = now, time.monotonic(), 0.0, speed
