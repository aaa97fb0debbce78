"""The candidate pool: enough ranked candidates, in their final order, to fill a page.

A per-article cap and collapsing drop candidates, and freshness or date order reorders
them, so those searches ask for more and more (4x each round) until `complete` says no
candidate further down could change the answer, or every candidate is seen.

Re-ranking (freshness, `sort="date"`) starts at max(4 (k + offset), RERANK_POOL)
candidates and grows 4x until no candidate below it could enter the answer (decay never
raises a score, so one ranked below the pool ends at most at the pool's lowest score),
or it holds RERANK_MAX_POOL candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from retrieval.collection.reading import SearchReader
from retrieval.search.fusion import Candidate
from retrieval.search.options import SearchOptions
from retrieval.search.ranking import decayed, recency_factor

# Candidates a re-ranked search starts from, at least; and the most it gathers.
RERANK_POOL = 100
RERANK_MAX_POOL = 10_000
# Collapsing drops every candidate of a group but its best, so a group of thousands of
# copies (boilerplate, a wire story filed all day) would make each search read deeper
# and deeper: 4x per round, up to the whole collection. It stops at this many
# candidates; past them, fewer than k groups may come back.
COLLAPSE_MAX_POOL = 10_000


def gather(
    reader: SearchReader,
    ranked: Callable[[int], list[Candidate]],
    options: SearchOptions,
    wanted: int,
) -> list[Candidate]:
    """The first `wanted` candidates (or more) in their final order.

    Args:
        ranked: the search's ranking, cut to the depth it is given, best first.
        wanted: k + offset.
    """
    cap = options.max_per_article
    fetch, ceiling = first_pool(options, wanted)
    while True:
        raw = ranked(fetch)
        kept = with_freshness(reader, raw, options)
        if options.min_score is not None:
            kept = [c for c in kept if c.score >= options.min_score]
        if cap:
            kept = cap_per_article(kept, cap, reader)
        if options.collapse:
            kept = one_per_group(kept, reader)
        if len(raw) < fetch or fetch == ceiling or complete(kept, raw, wanted, options):
            break
        fetch = fetch * 4 if ceiling is None else min(fetch * 4, ceiling)
    return newest_first(kept, reader) if options.sort == "date" else kept


def first_pool(options: SearchOptions, wanted: int) -> tuple[int, int | None]:
    """(candidates a search ranks first, the most it may grow to; None: no limit).

    A sharded collection's query phase reads this deep up front (cluster/router.py).
    """
    if options.reranks:
        ceiling = max(RERANK_MAX_POOL, wanted)
        return min(max(wanted * 4, RERANK_POOL), ceiling), ceiling
    if options.collapse:
        ceiling = max(COLLAPSE_MAX_POOL, wanted)
        return min(wanted * 4, ceiling), ceiling
    if options.max_per_article:
        return wanted * 4, None
    return wanted, None


def with_freshness(
    reader: SearchReader, candidates: list[Candidate], options: SearchOptions
) -> list[Candidate]:
    """The candidates with freshness blended into their scores, best first."""
    half_life = options.recency_half_life_days
    if half_life is None or not candidates:
        return candidates
    now = options.reference_date()
    dates = reader.dates_of([c.passage_id for c in candidates])
    aged = [
        Candidate(
            c.passage_id,
            decayed(c.score, recency_factor(dates.get(c.passage_id), now, half_life)),
        )
        for c in candidates
    ]
    return sorted(aged, key=lambda c: (-c.score, c.passage_id))


def cap_per_article(
    candidates: Sequence[Candidate], cap: int, reader: SearchReader
) -> list[Candidate]:
    """Keeps at most `cap` candidates of each article, in rank order."""
    owners = reader.article_of([c.passage_id for c in candidates])
    seen: dict[str, int] = {}
    kept = []
    for candidate in candidates:
        article = owners.get(candidate.passage_id, "")
        if seen.get(article, 0) < cap:
            seen[article] = seen.get(article, 0) + 1
            kept.append(candidate)
    return kept


def one_per_group(candidates: Sequence[Candidate], reader: SearchReader) -> list[Candidate]:
    """Keeps the first (best-ranked) candidate of each duplicate group, in rank order.

    Before date order on purpose: a group is represented by its best match, and then
    placed by that article's date.
    """
    groups = reader.group_keys([c.passage_id for c in candidates])
    seen: set[str] = set()
    kept = []
    for candidate in candidates:
        group = groups.get(candidate.passage_id, f"p{candidate.passage_id}")
        if group not in seen:
            seen.add(group)
            kept.append(candidate)
    return kept


def complete(
    kept: Sequence[Candidate], raw: Sequence[Candidate], wanted: int, options: SearchOptions
) -> bool:
    """True when no candidate ranked below `raw` could change the answer.

    Such a candidate scores at most raw[-1].score before decay, so at most that after
    (decay never raises a score): it cannot pass a min_score above that, nor displace
    the wanted-th kept candidate when that one scores at least as much.
    """
    bound = raw[-1].score
    if options.min_score is not None and bound < options.min_score:
        return True
    if options.sort == "date":  # every hit above min_score must be in the pool
        return False
    return len(kept) >= wanted and kept[wanted - 1].score >= bound


def newest_first(candidates: Sequence[Candidate], reader: SearchReader) -> list[Candidate]:
    """Newest article first, undated ones last; ties keep their (score) order."""
    dates = reader.dates_of([c.passage_id for c in candidates])
    # sorted() is stable, with reverse=True too: equal dates keep the score order.
    return sorted(candidates, key=lambda c: dates.get(c.passage_id) or "", reverse=True)


