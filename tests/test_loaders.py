"""Loaders: text, Markdown and JSONL files in, articles and located errors out."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DATASETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.errors import InputError, LoadError
from retrieval.ingestion.loaders import LoadResult, load_articles, load_file
from retrieval.records import Article

SEED = Path(__file__).resolve().parents[1] / "seeds" / "000_88e63c04297101a7.txt"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def write_jsonl(path: Path, *lines: Any) -> Path:
    """Write each line as JSON, or verbatim when it is already a str."""
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    return write(path, text + "\n")


def only_error(result: LoadResult) -> LoadError:
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


# ---- text articles -------------------------------------------------------------------


def test_seed_file_has_date_derived_title_and_text_starting_with_it(tmp_path: Path) -> None:
    seed = shutil.copy(SEED, tmp_path / SEED.name)
    result = load_file(seed)
    assert result.errors == []
    [article] = result.articles
    assert article.id == SEED.stem
    assert article.date == "2021-08-30"
    assert article.title == (
        "Xi calls for more fruitful practical cooperation with Ecuador President Xi Jinping"
    )
    assert article.text.startswith(article.title + " spoke by telephone on Monday")
    assert article.text == article.text.strip()
    assert (article.source, article.url, article.metadata) == (None, None, {})


def test_derived_title_is_a_short_first_sentence_without_its_period(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "Rain fell in Paris today. It was wet. More rain came.\n")
    [article] = load_file(path).articles
    assert article.title == "Rain fell in Paris today"
    assert article.text == "Rain fell in Paris today. It was wet. More rain came."


def test_md_heading_is_the_title_and_leaves_the_body(tmp_path: Path) -> None:
    path = write(tmp_path / "note.md", "date 2024-02-29\n\n# Leap day news\n\nBody one.\n\nTwo.\n")
    [article] = load_file(path).articles
    assert (article.id, article.title, article.date) == ("note", "Leap day news", "2024-02-29")
    assert article.text == "Body one.\n\nTwo."


def test_short_first_line_is_the_title_crlf_becomes_lf(tmp_path: Path) -> None:
    path = write(
        tmp_path / "plain.txt", "Markets rally on rate hopes\r\n\r\nShares rose.\r\nAgain.\r\n"
    )
    [article] = load_file(path).articles
    assert article.title == "Markets rally on rate hopes"
    assert article.text == "Shares rose.\nAgain."
    assert article.date is None


def test_date_line_tolerates_case_spaces_and_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "\ufeff\n   DATE   2020-01-02  \n\n\nHeadline\n\nBody.")
    [article] = load_file(path).articles
    assert (article.date, article.title, article.text) == ("2020-01-02", "Headline", "Body.")


def test_a_line_starting_with_date_but_no_digits_is_not_a_date_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "Date night ideas\n\nGo out.")
    [article] = load_file(path).articles
    assert (article.date, article.title) == (None, "Date night ideas")


@pytest.mark.parametrize("line", ["date 2021-02-30", "date 2021-8-1", "date 20210830"])
def test_bad_date_line_is_an_error_with_its_line(tmp_path: Path, line: str) -> None:
    path = write(tmp_path / "a.txt", f"\n{line}\n\nBody.")
    result = load_file(path)
    error = only_error(result)
    assert result.articles == []
    assert error.line == 2
    assert "expected 'date YYYY-MM-DD'" in error.reason
    assert str(error).startswith(f"{path}:2: ")


@pytest.mark.parametrize("content", ["", "  \n\n", "date 2021-01-01\n\n\n"])
def test_no_title_and_no_text_is_an_error(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "empty.md", content)
    result = load_file(path)
    assert result.articles == []
    assert "empty text" in only_error(result).reason


def test_md_with_a_heading_only_is_a_title_only_article(tmp_path: Path) -> None:
    path = write(tmp_path / "flash.md", "date 2005-03-20\n\n# Quake strikes off Japan\n")
    [article] = load_file(path).articles
    assert (article.title, article.text, article.date) == (
        "Quake strikes off Japan",
        "Quake strikes off Japan",
        "2005-03-20",
    )


def test_bad_utf8_names_path_and_byte_offset(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.txt", b"Title\n\nCaf\xe9 au lait.")
    error = only_error(load_file(path))
    assert error.path == str(path)
    assert "invalid UTF-8 at byte 10" in error.reason


# ---- folders and paths ---------------------------------------------------------------


def test_folder_is_walked_sorted_recursively_skipping_hidden_and_other_suffixes(
    tmp_path: Path,
) -> None:
    write(tmp_path / "b.txt", "B\n\nBody b.")
    write(tmp_path / "a" / "z.md", "# Z\n\nBody z.")
    write(tmp_path / "a" / "c.jsonl", '{"_id": "c1", "text": "Body c1."}\n')
    write(tmp_path / ".hidden.txt", "H\n\nBody h.")
    write(tmp_path / ".git" / "x.txt", "X\n\nBody x.")
    write(tmp_path / "notes.csv", "id,text\n")
    result = load_articles([tmp_path])
    assert result.errors == []
    assert [a.id for a in result.articles] == ["c1", "z", "b"]


def test_a_file_named_twice_is_loaded_once(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "A\n\nBody.")
    result = load_articles([tmp_path, path, str(path)])
    assert (len(result.articles), result.errors) == (1, [])


def test_single_path_is_not_iterated_as_characters(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "A\n\nBody.")
    assert len(load_articles(str(tmp_path)).articles) == 1  # type: ignore[arg-type]


def test_unsupported_suffix_named_directly_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "data.xyz", "whatever")
    result = load_articles([path])
    assert result.articles == []
    error = only_error(result)
    assert error.reason == (
        "unsupported file type .xyz: expected .txt, .md, .jsonl, .html, .htm, .rss, .atom or .xml"
    )


def test_missing_path_raises_before_loading_anything(tmp_path: Path) -> None:
    good = write(tmp_path / "a.txt", "A\n\nBody.")
    missing = tmp_path / "nope"
    with pytest.raises(LoadError) as info:
        load_articles([good, missing])
    assert info.value.path == str(missing)
    assert isinstance(info.value, InputError)
    with pytest.raises(LoadError):
        load_file(missing)


def test_load_file_refuses_a_folder(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="use load_articles"):
        load_file(tmp_path)


def test_duplicate_id_across_files_keeps_the_first(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", {"_id": "x", "text": "First."})
    second = write(tmp_path / "b" / "x.txt", "Second\n\nBody.")
    result = load_articles([tmp_path])
    assert [a.text for a in result.articles] == ["First."]
    error = only_error(result)
    assert error.path == str(second)
    assert error.reason == f"duplicate id 'x' (first seen at {first}:1)"


# ---- JSONL ---------------------------------------------------------------------------


def test_jsonl_ids_fields_metadata_and_dates(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl",
        {"_id": "a", "title": " T ", "text": " Body.\r\n\r\nMore. ", "category": "tech"},
        {"id": 7, "text": "Seven.", "date": "2021-08-30T23:30:00+05:00", "source": "Wire"},
        {
            "id": "b",
            "text": "B.",
            "url": "https://x.org/b",
            "metadata": {"k": 1, "c": "old"},
            "c": "new",
            "date": None,
        },
        {"_id": "d", "id": "other", "text": "D.", "date": "2020-02-02 10:00"},
    )
    result = load_file(path)
    assert result.errors == []
    assert result.articles == [
        Article(id="a", title="T", text="Body.\n\nMore.", metadata={"category": "tech"}),
        Article(id="7", title="", text="Seven.", date="2021-08-30", source="Wire"),
        Article(id="b", title="", text="B.", url="https://x.org/b", metadata={"k": 1, "c": "new"}),
        Article(id="d", title="", text="D.", date="2020-02-02", metadata={"id": "other"}),
    ]


def test_bad_json_line_is_reported_and_neighbours_still_load(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl",
        {"_id": "1", "text": "One."},
        "",
        '{"_id": "2", "text": "Two."',
        {"_id": "3", "text": "Three."},
    )
    result = load_file(path)
    assert [a.id for a in result.articles] == ["1", "3"]
    error = only_error(result)
    assert error.line == 3
    assert str(error).startswith(f"{path}:3: bad JSON")


def test_bad_utf8_line_loses_only_that_line(tmp_path: Path) -> None:
    good = b'{"_id": "1", "text": "One."}\n'
    path = write(
        tmp_path / "c.jsonl", good + b'{"_id": "2", "text": "\xff"}\n' + good.replace(b"1", b"3")
    )
    result = load_file(path)
    assert [a.id for a in result.articles] == ["1", "3"]
    error = only_error(result)
    assert error.line == 2
    assert f"invalid UTF-8 at byte {len(good) + 22}" in error.reason


def test_jsonl_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", b'\xef\xbb\xbf{"_id": "1", "text": "One."}\n')
    assert [a.id for a in load_file(path).articles] == ["1"]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("[1, 2]", "expected a JSON object, got array"),
        ('{"text": "No id."}', "missing id"),
        ('{"_id": "", "text": "Empty id."}', "missing id"),
        ('{"_id": true, "text": "Bool id."}', "missing id"),
        ('{"_id": "a", "text": "   "}', "empty text"),
        ('{"_id": "a"}', "empty text"),
        ('{"_id": "a", "title": "  ", "text": null}', "empty text"),
        ('{"_id": "a", "text": 3}', "'text' must be a string or null, got number"),
        (
            '{"_id": "a", "text": "x", "date": "30/08/2021"}',
            "bad date '30/08/2021', expected YYYY-MM-DD",
        ),
        ('{"_id": "a", "text": "x", "date": "2021-13-01"}', "bad date"),
        ('{"_id": "a", "text": "x", "date": 20210830}', "bad date"),
        ('{"_id": "a", "text": "x", "title": 3}', "'title' must be a string or null, got number"),
        ('{"_id": "a", "text": "x", "url": ["u"]}', "'url' must be a string or null, got array"),
        ('{"_id": "a", "text": "x", "metadata": "m"}', "'metadata' must be an object"),
        ('{"_id": "a", "text": "x", "score": NaN}', "NaN is not a JSON value"),
    ],
)
def test_bad_record_is_an_error_at_its_line(tmp_path: Path, record: str, reason: str) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", {"_id": "ok", "text": "Fine."}, record)
    result = load_file(path)
    assert [a.id for a in result.articles] == ["ok"]
    error = only_error(result)
    assert (error.path, error.line) == (str(path), 2)
    assert reason in error.reason
    assert str(error) == f"{path}:2: {error.reason}"


def test_title_only_records_take_their_title_as_text(tmp_path: Path) -> None:
    title = "Flash: Kyrgyz opposition claims victory"
    path = write_jsonl(
        tmp_path / "flash.jsonl",
        {"_id": "missing", "title": title, "date": "2005-03-24"},
        {"_id": "null", "title": f" {title} ", "text": None},
        {"_id": "blank", "title": title, "text": " \r\n "},
    )
    result = load_file(path)
    assert result.errors == []
    assert [(a.id, a.title, a.text) for a in result.articles] == [
        (doc_id, title, title) for doc_id in ("missing", "null", "blank")
    ]
    assert result.articles[0].date == "2005-03-24"


def test_content_hash_of_an_article_with_text_is_unchanged() -> None:
    # Title-only support must not change the hash of stored articles: a changed hash
    # would re-embed every article of every collection on the next ingest.
    article = Article(id="a", title="T", text="Body.", date="2021-08-30", metadata={"k": 1})
    assert article.content_hash() == (
        "0f3f187477fec5a60280226b900c23e75e81ee3cf902931cf97eb7e125b13674"
    )


def test_duplicate_id_within_a_jsonl_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", {"_id": "1", "text": "A."}, {"id": 1, "text": "B."})
    result = load_file(path)
    assert [a.text for a in result.articles] == ["A."]
    assert str(only_error(result)) == f"{path}:2: duplicate id '1' (first seen at {path}:1)"


# ---- property: valid records round-trip ----------------------------------------------

_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r")
_clean = st.text(_chars, min_size=1, max_size=40).filter(lambda s: s == s.strip())
# No NaN or infinity: json.dumps writes them as bare NaN/Infinity, which the loader refuses.
_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
_reserved = {"_id", "id", "title", "text", "date", "source", "url", "metadata"}


@st.composite
def records(draw: st.DrawFn) -> tuple[dict[str, Any], Article]:
    """A valid JSON record and the article it must load as."""
    doc_id = draw(st.integers() | _clean)
    fields = {
        "title": draw(st.just("") | _clean),
        "text": draw(_clean),
        "date": draw(st.none() | st.dates().map(lambda d: d.isoformat())),
        "source": draw(st.none() | _clean),
        "url": draw(st.none() | _clean),
    }
    metadata = draw(st.dictionaries(st.text().filter(lambda k: k not in _reserved), _json))
    record = {draw(st.sampled_from(["_id", "id"])): doc_id, **fields, **metadata}
    return record, Article(id=str(doc_id), **fields, metadata=metadata)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(records(), max_size=8, unique_by=lambda pair: pair[1].id))
def test_valid_records_round_trip_through_jsonl(
    tmp_path: Path, pairs: list[tuple[dict[str, Any], Article]]
) -> None:
    path = tmp_path / "round.jsonl"
    lines = [json.dumps(record, ensure_ascii=False) for record, _ in pairs]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    result = load_file(path)
    assert result.errors == []
    assert result.articles == [article for _, article in pairs]


# ---- the real datasets, read in place ------------------------------------------------


@pytest.mark.parametrize(("name", "count"), [("bbc", 2225), ("scifact", 5183)])
def test_real_corpus_loads_fast_without_errors(name: str, count: int) -> None:
    corpus = DATASETS / name / "corpus.jsonl"
    if not corpus.exists():
        pytest.skip(f"{corpus} is absent: the shared datasets live beside the repository")
    start = time.perf_counter()
    result = load_articles([corpus])
    elapsed = time.perf_counter() - start
    assert result.errors == []
    assert len(result.articles) == count
    # Generous bound (about 0.05 s here) so a busy machine does not make it flaky.
    assert elapsed < 2.0
    if name == "bbc":
        assert all(a.metadata["category"] for a in result.articles)


def test_a_beir_folder_loads_its_corpus_only(tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "Doc one."}\n')
    (beir / "queries.jsonl").write_text('{"_id": "d1", "text": "a query, not an article"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    result = load_articles([tmp_path])
    assert [a.id for a in result.articles] == ["d1"] and not result.errors
    assert result.articles[0].text == "Doc one."
