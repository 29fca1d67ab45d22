"""Steps of the wall clock, seen by comparing it with the monotonic clock.

A gateway without a real-time clock boots with whatever time it last saved (or 1970) and
gets the right one from NTP minutes later: the wall clock steps forwards, by days or years.
A bad time source can step it back. Records are stamped with the wall clock when they
arrive, and their age (``max_age``, the LNS replay age, the status page) is the wall clock
now minus that stamp, so without care a step forwards makes every record received before it
look years old (dropped unsent) and a step back makes them look young for years.

The rule the buffer keeps: a record's age is the time that really passed since it arrived.
Records received by this process before a step are re-stamped by the step (their receive
time moves onto the new scale, which is the one NTP says is right); records received after
it already carry the new scale. Which is which is told by the stamp itself: after the step
no stamp can lie outside the short stretch of new-scale time since the previous look at the
clock, and every pre-step stamp does once the step is larger than that stretch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: Smaller differences between the two clocks are NTP slewing or scheduling noise: ignored.
MIN_STEP_S: Final = 10.0
#: Stamps taken this close to the new time are on the new scale already.
SLACK_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class Step:
    """One step of ``delta_us``; stamps inside ``[lo_us, hi_us]`` were taken after it."""

    delta_us: int
    lo_us: int
    hi_us: int
    at: float  # the new wall time when the step was seen, seconds

    def moves(self, stamp_us: int) -> bool:
        return not self.lo_us <= stamp_us <= self.hi_us

    def apply(self, stamp_us: int) -> int:
        return stamp_us + self.delta_us if self.moves(stamp_us) else stamp_us


class StepWatch:
    """Remembers wall minus monotonic; ``check()`` returns a Step when it changed by a step."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.wall = wall
        self.monotonic = monotonic
        self._offset: float | None = None
        self._mono = 0.0

    def check(self) -> Step | None:
        w, m = self.wall(), self.monotonic()
        offset = w - m
        if self._offset is None:
            self._offset, self._mono = offset, m
            return None
        delta, gap = offset - self._offset, max(0.0, m - self._mono)
        # The baseline follows every look, so slewing (<= 0.5 ms/s) never adds up to a step.
        self._offset, self._mono = offset, m
        if abs(delta) < MIN_STEP_S or abs(delta) <= gap + 2 * SLACK_S:
            return None
        return Step(round(delta * 1e6), int((w - gap - SLACK_S) * 1e6), int((w + SLACK_S) * 1e6), w)
