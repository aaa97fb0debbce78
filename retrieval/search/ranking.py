"""Re-ranking a search's candidates: freshness, a score floor, newest first.

Freshness works like Elasticsearch's exponential decay function with `boost_mode:
multiply`, bounded below: an article `age` days old (by its date, against a reference
date `now`) has its score scaled by

    factor = RECENCY_FLOOR + (1 - RECENCY_FLOOR) * 0.5 ** (age / half_life_days)

which is 1 for an article of `now` (or dated after it), 0.75 at one half-life, and tends
to RECENCY_FLOOR (0.5) for very old ones: freshness can at most halve a score, so it
reorders articles of similar relevance and never lifts an unrelated passage over a
relevant one twice its score. An undated article gets the floor, as if it were very old:
a caller who asks for fresh news is owed articles known to be fresh, and leaving undated
ones unscaled would rank them above yesterday's articles of the same relevance.

Scores may be negative (cosines, z-score fused scores): a positive score is multiplied by
the factor and a negative one divided by it, so that ageing always lowers a score, and
the decayed score is increasing in both the score and the freshness. Decay therefore
never raises a score, which bounds what a candidate outside the pool can reach.
"""

from __future__ import annotations

import datetime
import math

from retrieval.records import is_iso_date

RECENCY_FLOOR = 0.5
SORTS = ("score", "date")


def today_utc() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


def recency_factor(date: str | None, now: datetime.date, half_life_days: float) -> float:
    """The factor in [RECENCY_FLOOR, 1] for an article dated `date` (ISO, or None)."""
    if date is None:
        return RECENCY_FLOOR
    try:
        age = (now - datetime.date.fromisoformat(date)).days
    except ValueError:  # stored dates are checked on the way in; never trust, though
        return RECENCY_FLOOR
    decay = 0.5 ** (max(age, 0) / float(half_life_days))
    return RECENCY_FLOOR + (1.0 - RECENCY_FLOOR) * float(decay)


def decayed(score: float, factor: float) -> float:
    """`score` aged by `factor` in (0, 1]: never higher than `score`, whatever its sign."""
    return score * factor if score >= 0 else score / factor


def check_recency(half_life_days: float | None, now: str | None) -> str | None:
    """What is wrong with the recency options, or None."""
    if half_life_days is not None and not (
        math.isfinite(half_life_days) and half_life_days > 0
    ):
        return f"recency_half_life_days must be a positive number of days, got {half_life_days}"
    if now is not None and not is_iso_date(now):
        return f"now must be a date YYYY-MM-DD, got {now!r}"
    return None
