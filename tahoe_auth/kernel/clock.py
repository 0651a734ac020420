"""Time, injectable so that tests can move it."""

from __future__ import annotations

import datetime as dt
import time


class Clock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def timestamp(self) -> float:
        return time.time()


class FakeClock(Clock):
    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def timestamp(self) -> float:
        return self._now.timestamp()

    def advance(self, seconds: float) -> None:
        self._now += dt.timedelta(seconds=seconds)
