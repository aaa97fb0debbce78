"""Candidates made into `Hit`s: one read of their rows, and their copies when collapsed."""

from __future__ import annotations

from collections.abc import Sequence

from retrieval.collection.reading import SearchReader
from retrieval.records import Filters, Hit
from retrieval.search.fusion import Candidate


def make_hits(
    reader: SearchReader, candidates: Sequence[Candidate],
    copies_within: Filters | None = None,
) -> list[Hit]:
    """The candidates as hits, ranked from 1; given `copies_within` (a collapsed search's
    filters), each carries the other articles of its group that match them."""
    rows = reader.hit_rows([c.passage_id for c in candidates])
    copies: dict[str, list[str]] = {}
    if copies_within is not None:
        owners = dict.fromkeys(row["article_id"] for row in rows.values())
        copies = reader.duplicates_of(list(owners), copies_within)
    hits: list[Hit] = []
    for candidate in candidates:
        row = rows.get(candidate.passage_id)
        if row is None:  # cannot happen in one snapshot; never return a dangling hit
            continue
        others = copies.get(row["article_id"], ())
        hits.append(
            Hit(
                passage_id=candidate.passage_id,
                article_id=row["article_id"],
                title=row["title"],
                date=row["date"],
                source=row["source"],
                url=row["url"],
                text=row["text"],
                score=candidate.score,
                rank=len(hits) + 1,
                start=row["start"],
                end=row["end"],
                duplicates=len(others),
                duplicate_ids=tuple(others),
            )
        )
    return hits
