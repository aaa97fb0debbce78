"""Which sentence of a passage answers the query: the span a result page highlights.

A pure function of the texts, the query and an embedder: passages are split into
sentences (blank lines first, then blingfire within each paragraph), every sentence of
every passage is embedded in one call, and each passage's sentence closest to the query
(cosine) wins.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from retrieval.models.embedding import Embedder
from retrieval.records import Span

# Blingfire joins the lines around a blank line into one "sentence"; paragraphs never share one.
_PARAGRAPH = re.compile(r"\S(?:.*?\S)?(?=\s*\n\s*\n|\s*$)", re.DOTALL)


def sentence_spans(text: str) -> list[Span]:
    """Character spans of the sentences of `text`, in order, trimmed of whitespace."""
    import blingfire

    spans = []
    for paragraph in _PARAGRAPH.finditer(text):
        # blingfire asserts on empty input; a paragraph match is never empty.
        _, offsets = blingfire.text_to_sentences_and_offsets(paragraph.group())
        for start, end in offsets:
            piece = paragraph.group()[start:end]
            if piece.strip():
                lead = len(piece) - len(piece.lstrip())
                first = paragraph.start() + start + lead
                spans.append(Span(first, first + len(piece.strip())))
    return spans


def best_sentences(
    query: str,
    texts: Sequence[str],
    embedder: Embedder,
    *,
    query_vector: NDArray[np.float32] | None = None,
) -> list[Span | None]:
    """For each text, the span of its sentence closest in meaning to the query.

    Args:
        query: the search query (embedded only when `query_vector` is not given).
        texts: passage texts, typically the hits of one search.
        embedder: the collection's model; sentences go through `embed_documents`,
            all of them in one call.
        query_vector: the query's unit vector, (dim,) or (1, dim), when already computed.

    Returns:
        One span per text, indexing into that text; None for a text with no sentence.
        A one-sentence text gets its sentence without a model call. Ties go to the
        earlier sentence.
    """
    per_text = [sentence_spans(text) for text in texts]
    # Only texts with a choice to make need their sentences embedded.
    pending = [(i, span) for i, spans in enumerate(per_text) if len(spans) > 1 for span in spans]
    scores: dict[tuple[int, int, int], float] = {}
    if pending:
        if query_vector is None:
            query_vector = embedder.embed_queries([query])
        vectors = embedder.embed_documents([texts[i][s.start : s.end] for i, s in pending])
        similarities = vectors @ np.asarray(query_vector, dtype=np.float32).reshape(-1)
        for (i, span), score in zip(pending, similarities, strict=True):
            scores[(i, span.start, span.end)] = float(score)
    return [_best(i, spans, scores) for i, spans in enumerate(per_text)]


def _best(i: int, spans: list[Span], scores: dict[tuple[int, int, int], float]) -> Span | None:
    if not spans:
        return None
    # max() keeps the first of equal scores: ties go to the earlier sentence.
    return max(spans, key=lambda s: scores.get((i, s.start, s.end), 0.0))
