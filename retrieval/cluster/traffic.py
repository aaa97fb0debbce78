"""Counted, not assumed: the rounds and shard calls each sharded search makes."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Traffic:
    """What the router sent to shards, counted (not assumed).

    Attributes:
        searches: reads of the collection as search (`reading()`: one per search batch).
        rounds: groups of shard calls sent together and awaited together; a search's
            latency is at least its rounds times one round trip.
        calls: shard calls (a round to every shard of N is N calls).
    """

    searches: int = 0
    rounds: int = 0
    calls: int = 0

    def __sub__(self, before: Traffic) -> Traffic:
        return Traffic(self.searches - before.searches, self.rounds - before.rounds,
                       self.calls - before.calls)


class TrafficCounter:
    """`Traffic` counted from any thread (concurrent searches share the router)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = Traffic()

    def count(self, *, searches: int = 0, rounds: int = 0, calls: int = 0) -> None:
        with self._lock:
            now = self._counts
            self._counts = Traffic(now.searches + searches, now.rounds + rounds,
                                   now.calls + calls)

    def now(self) -> Traffic:
        with self._lock:
            return self._counts
