"""Cut an article into passages by paragraph, each within the embedding model's limit.

The model reads at most `max_tokens` word pieces and silently truncates the rest, so:

1. The text is split into paragraphs on blank lines (a line of only whitespace counts),
   or on single newlines when the text has no blank line at all.
2. A paragraph that fits is one piece. One that does not is split into sentences
   (blingfire), and consecutive sentences are packed into balanced windows that fit.
   A sentence that alone exceeds the limit is cut between word pieces, at a word
   boundary where one is near.
3. Tiny pieces (a dateline, a one-line quote) join the next piece, or the previous one
   when the next will not take them, whenever the joined span still fits.

Every span is checked with `count_tokens` on its own text, because token counts of parts
do not add up exactly. Spans are trimmed, in order, non-overlapping, and together cover
every non-whitespace character of the text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import blingfire

from retrieval.errors import InputError
from retrieval.records import Span

MODES = ("paragraph", "none")
MIN_BUDGET = 8

# A newline, then a line holding only whitespace (or nothing), then a newline. `\s`
# matches what str.isspace() calls whitespace, `\r` included, so CRLF text works too.
_BLANK_LINE = re.compile(r"\n\s*\n")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class ChunkerSettings:
    """How articles are cut into passages; stored in the collection manifest.

    Attributes:
        max_tokens: the model's limit in word pieces, special tokens included.
        min_tokens: a piece with fewer tokens joins a neighbour when the pair still fits.
        mode: "paragraph" (the rule in this module's docstring), or "none": one span for
            the whole text, for evaluation only; it may exceed the limit.

    Raises:
        InputError: max_tokens < 8, min_tokens outside [0, max_tokens), or unknown mode.
    """

    max_tokens: int = 256
    min_tokens: int = 48
    mode: str = "paragraph"

    def __post_init__(self) -> None:
        if not _is_int(self.max_tokens) or self.max_tokens < MIN_BUDGET:
            raise InputError(
                f"max_tokens must be an integer >= {MIN_BUDGET}, got {self.max_tokens!r}"
            )
        if not _is_int(self.min_tokens) or not 0 <= self.min_tokens < self.max_tokens:
            raise InputError(
                f"min_tokens must be an integer in [0, max_tokens={self.max_tokens}), "
                f"got {self.min_tokens!r}"
            )
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")

    def to_dict(self) -> dict[str, int | str]:
        """The settings as plain JSON values, for the collection manifest."""
        return {"max_tokens": self.max_tokens, "min_tokens": self.min_tokens, "mode": self.mode}


DEFAULT_SETTINGS = ChunkerSettings()


class Tokenizer(Protocol):
    """What the chunker needs from the embedding model's tokenizer."""

    def count_tokens(self, text: str) -> int:
        """Word pieces the model reads for `text`, special tokens included."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character offsets `(start, end)` in `text` of each word piece, no special tokens."""
        ...


class _Piece(NamedTuple):
    """A trimmed span of the article text and its token count (specials included)."""

    start: int
    end: int
    tokens: int


@dataclass(frozen=True, slots=True)
class _Budget:
    """The per-passage limit and the tokenizer that measures against it."""

    tokenizer: Tokenizer
    limit: int  # tokens per passage, special tokens included
    overhead: int  # special tokens the tokenizer adds to any text

    @property
    def room(self) -> int:
        """Word pieces of content that fit next to the special tokens."""
        return self.limit - self.overhead

    def count(self, text: str, start: int, end: int) -> int:
        return self.tokenizer.count_tokens(text[start:end])


def chunk_text(
    text: str,
    tokenizer: Tokenizer,
    settings: ChunkerSettings = DEFAULT_SETTINGS,
    *,
    reserved_tokens: int = 0,
) -> list[Span]:
    """Cut `text` into passages that the model reads whole.

    Args:
        text: the article body; spans index into this string.
        tokenizer: the embedding model's tokenizer.
        settings: limits and mode.
        reserved_tokens: tokens of a prefix (an article title) that the caller puts before
            each passage when embedding; each passage gets `max_tokens - reserved_tokens`.

    Returns:
        Spans in text order, non-overlapping, trimmed of whitespace, non-empty, covering
        every non-whitespace character. In "paragraph" mode each span's text has at most
        `max_tokens - reserved_tokens` tokens. Whitespace-only text gives [].

    Raises:
        InputError: reserved_tokens is negative or leaves a budget under 8 tokens, or the
            tokenizer's special tokens alone fill the budget.
    """
    budget = _budget(tokenizer, settings, reserved_tokens)
    if settings.mode == "none":
        whole = _trim(text, 0, len(text))
        return [] if whole is None else [Span(*whole)]
    pieces: list[_Piece] = []
    for start, end in _paragraphs(text):
        pieces.extend(_split_paragraph(text, start, end, budget))
    merged = _merge_tiny(text, pieces, budget, settings.min_tokens)
    return [Span(piece.start, piece.end) for piece in merged]


def _budget(tokenizer: Tokenizer, settings: ChunkerSettings, reserved_tokens: int) -> _Budget:
    if not _is_int(reserved_tokens) or reserved_tokens < 0:
        raise InputError(f"reserved_tokens must be an integer >= 0, got {reserved_tokens!r}")
    limit = settings.max_tokens - reserved_tokens
    if limit < MIN_BUDGET:
        raise InputError(
            f"reserved_tokens={reserved_tokens} leaves {limit} of max_tokens={settings.max_tokens} "
            f"for the passage; at least {MIN_BUDGET} are needed (shorten the title prefix)"
        )
    overhead = tokenizer.count_tokens("")
    if overhead >= limit:
        raise InputError(f"the tokenizer's {overhead} special tokens fill the {limit}-token budget")
    return _Budget(tokenizer, limit, overhead)


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """Trimmed, non-empty paragraph spans, split on blank lines or else on newlines."""
    breaks = [(m.start(), m.end()) for m in _BLANK_LINE.finditer(text)]
    if not breaks:
        # Some sources use a single newline as the paragraph break (no blank lines at all).
        breaks = [(m.start(), m.end()) for m in re.finditer("\n", text)]
    edges = [0, *(position for brk in breaks for position in brk), len(text)]
    spans = (_trim(text, a, b) for a, b in zip(edges[::2], edges[1::2], strict=True))
    return [span for span in spans if span is not None]


def _split_paragraph(text: str, start: int, end: int, budget: _Budget) -> list[_Piece]:
    """The paragraph as one piece if it fits, else as packed sentence windows."""
    tokens = budget.count(text, start, end)
    if tokens <= budget.limit:
        return [_Piece(start, end, tokens)]
    units: list[_Piece] = []
    for sentence in _sentences(text, start, end, budget):
        if sentence.tokens <= budget.limit:
            units.append(sentence)
        else:
            units.extend(_cut_by_tokens(text, sentence, budget))
    return _pack(text, units, budget)


def _sentences(text: str, start: int, end: int, budget: _Budget) -> list[_Piece]:
    """The paragraph's sentences, each trimmed and counted once.

    Only blingfire's sentence starts are used, as cut points: its output text normalises
    whitespace, and cutting at starts means no character can fall between two sentences.
    """
    paragraph = text[start:end]
    try:
        _, offsets = blingfire.text_to_sentences_and_offsets(paragraph)
    except (AssertionError, UnicodeError):
        # Its offset mapping can fail on unusual graphemes; treat the paragraph as one
        # sentence, which is then cut by tokens.
        offsets = []
    cuts = sorted({s for s, _ in offsets if 0 < s < len(paragraph)})
    edges = [start, *(start + cut for cut in cuts), end]
    pieces = (_counted(text, 0, a, b, budget) for a, b in zip(edges, edges[1:], strict=False))
    return [piece for piece in pieces if piece is not None]


def _pack(text: str, units: list[_Piece], budget: _Budget) -> list[_Piece]:
    """Pack consecutive units (each within the limit) into balanced windows that fit."""
    content = [max(unit.tokens - budget.overhead, 0) for unit in units]
    windows = []
    i = 0
    while i < len(units):
        j = _window_end(content, i, budget.room)
        window = _window(text, units, i, j, budget)
        while window.tokens > budget.limit and j - 1 > i:
            # Rare: the parts' counts did not add up. Drop units until the real text fits.
            j -= 1
            window = _window(text, units, i, j, budget)
        windows.append(window)
        i = j
    return windows


def _window(text: str, units: list[_Piece], i: int, j: int, budget: _Budget) -> _Piece:
    """Units i to j - 1 as one piece, counted on its own text."""
    if j == i + 1:
        return units[i]
    start, end = units[i].start, units[j - 1].end
    return _Piece(start, end, budget.count(text, start, end))


def _window_end(content: list[int], i: int, room: int) -> int:
    """End (exclusive) of the window that starts at unit `i`.

    The remaining units need at least n = ceil(rest / room) windows; aiming each at
    rest / n tokens avoids a tiny last window. A window stops short of the aim only when
    the rest still fits in n - 1 windows.
    """
    rest = sum(content[i:])
    windows_needed = max(math.ceil(rest / room), 1)
    aim = rest / windows_needed
    total, j = content[i], i + 1
    while j < len(content) and total + content[j] <= room:
        overshoot, undershoot = total + content[j] - aim, aim - total
        rest_after = rest - total
        if overshoot > undershoot and math.ceil(rest_after / room) <= windows_needed - 1:
            break
        total += content[j]
        j += 1
    return j


def _cut_by_tokens(text: str, sentence: _Piece, budget: _Budget) -> list[_Piece]:
    """Cut an over-long sentence between word pieces, preferring word boundaries.

    Each window runs up to where the next one starts, so characters the tokenizer skips
    still land in a span. Each window is verified on its own text.
    """
    sub = text[sentence.start : sentence.end]
    offsets = [(a, b) for a, b in budget.tokenizer.token_offsets(sub) if b > a]
    if not offsets:
        return [sentence]  # nothing to cut at; cannot happen with a real tokenizer
    pieces, i, char_start = [], 0, 0
    while i < len(offsets):
        j = _token_cut(sub, offsets, i, budget.room)
        window = _counted(text, sentence.start, char_start, _char_at(sub, offsets, j), budget)
        while window is not None and window.tokens > budget.limit and j - 1 > i:
            # Pieces cut mid-word re-tokenise differently; shrink in proportion to the excess.
            j = i + max(1, min(j - i - 1, (j - i) * budget.limit // window.tokens))
            window = _counted(text, sentence.start, char_start, _char_at(sub, offsets, j), budget)
        if window is not None:
            pieces.append(window)
        # max(): a tokenizer with out-of-order offsets must not make spans overlap.
        i, char_start = j, max(char_start, _char_at(sub, offsets, j))
    return pieces


def _char_at(sub: str, offsets: list[tuple[int, int]], j: int) -> int:
    """Where the window ending before piece j ends: the piece's start, or the text's end."""
    return offsets[j][0] if j < len(offsets) else len(sub)


def _counted(text: str, base: int, start: int, end: int, budget: _Budget) -> _Piece | None:
    """The trimmed span `base + [start, end)` with its token count; None if blank."""
    span = _trim(text, base + start, base + end)
    return None if span is None else _Piece(*span, budget.count(text, *span))


def _token_cut(sub: str, offsets: list[tuple[int, int]], i: int, room: int) -> int:
    """Index of the first word piece of the next window, for a window starting at `i`.

    Aim at a balanced share of the remaining pieces; take the word boundary nearest the
    aim in the window's second half, else cut mid-word at the aim.
    """
    remaining = len(offsets) - i
    if remaining <= room:
        return len(offsets)
    aim = i + math.ceil(remaining / math.ceil(remaining / room))
    candidates = range(i + max(1, (aim - i + 1) // 2), i + room + 1)
    boundaries = [j for j in candidates if _starts_word(sub, offsets, j)]
    if not boundaries:
        return aim
    return min(boundaries, key=lambda j: (abs(j - aim), j))


def _starts_word(sub: str, offsets: list[tuple[int, int]], j: int) -> bool:
    """Whether piece j starts a new word: a gap before it, or punctuation on either side."""
    (_, previous_end), (start, _) = offsets[j - 1], offsets[j]
    if start > previous_end:
        return True
    return not (sub[start].isalnum() and sub[previous_end - 1].isalnum())


def _merge_tiny(text: str, pieces: list[_Piece], budget: _Budget, min_tokens: int) -> list[_Piece]:
    """Join each piece under `min_tokens` to its next neighbour, else its previous one."""
    merged: list[_Piece] = []
    pending: _Piece | None = None
    for piece in pieces:
        if pending is not None and pending.tokens < min_tokens:
            joined = _join(text, pending, piece, budget)
            if joined is not None:
                pending = joined  # may still be tiny; it then tries the next piece too
                continue
        if pending is not None:
            _emit(text, merged, pending, budget, min_tokens)
        pending = piece
    if pending is not None:
        _emit(text, merged, pending, budget, min_tokens)
    return merged


def _emit(text: str, merged: list[_Piece], piece: _Piece, budget: _Budget, min_tokens: int) -> None:
    """Append a piece, folding it into the previous one if it is tiny and the pair fits."""
    if piece.tokens < min_tokens and merged:
        joined = _join(text, merged[-1], piece, budget)
        if joined is not None:
            merged[-1] = joined
            return
    merged.append(piece)


def _join(text: str, first: _Piece, second: _Piece, budget: _Budget) -> _Piece | None:
    """The span from `first` to `second` (gap included) if its text fits, else None."""
    tokens = budget.count(text, first.start, second.end)
    return _Piece(first.start, second.end, tokens) if tokens <= budget.limit else None


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    """`[start, end)` without leading and trailing whitespace; None if nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None
