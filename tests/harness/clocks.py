"""A clock a test sets by hand (node clocks, certificate authorities, enrolment tokens)."""

from __future__ import annotations

from datetime import datetime


class Clock:
    """Shows ``now`` until the test sets another time (naive or aware, as the code under test expects)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
