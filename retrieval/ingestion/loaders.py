"""Turn files and folders into `Article` records, reporting bad input by file and line.

Formats, chosen by suffix (case-insensitive):

- A folder is walked recursively in sorted order. `.txt` and `.md` files are text
  articles, `.jsonl` files hold one record a line, `.html`/`.htm` files are saved pages,
  `.rss`, `.atom` and `.xml` files are feeds; other suffixes are ignored, and so are
  hidden files and folders (names starting with '.'). A file named directly with another
  suffix is an error. A folder in the BEIR layout (`corpus.jsonl` beside `queries.jsonl`)
  contributes its `corpus.jsonl` alone: its queries and qrels are not articles.
- Text article (`.txt`, `.md`): the id is the file stem. UTF-8 (a BOM is allowed), CRLF or
  CR line ends become LF. The seed format opens with a line `date YYYY-MM-DD` (any case,
  surrounding spaces allowed), then blank lines, then the body. The title is, in order:
    1. `.md` only: a leading ATX heading line (`# Heading`), removed from the body;
    2. a first paragraph that is a single short line (at most 20 words, not ending in
       '.') followed by a blank line, removed from the body;
    3. otherwise (the seed format runs the headline into the first sentence, and the two
       cannot be told apart) a display title derived from the body: the first sentence,
       cut to at most 12 words at a word boundary. The body keeps that text, so the
       article text starts with its title.
  `source` and `url` are None and `metadata` is {}: a path differs between machines and
  would change the content hash.
- JSONL (`.jsonl`, BEIR `corpus.jsonl` included): one JSON object a line, blank lines
  skipped. `_id` (else `id`): a non-empty string or an integer; `title` (optional);
  `text` (a string; may be missing, null or blank when there is a title); `date`
  (optional, `YYYY-MM-DD` or an ISO datetime whose written date part is kept, no time
  zone conversion); `source`, `url` (optional strings). Every other field goes into
  `metadata`, merged over the keys of a nested `metadata` object. Each line is decoded
  and parsed on its own, so a bad line loses only itself.
- Saved HTML page (`.html`, `.htm`; UTF-8, a BOM allowed): one article, id = the file
  stem. trafilatura finds the article text (paragraphs kept apart by blank lines), title,
  date, canonical URL (`url`), site name (`source`) and author (`metadata["author"]`);
  see `retrieval.ingestion.pages`. A page with no text and no title is an error.
- Feed (`.rss`, `.atom`, `.xml`, read by feedparser; an `.xml` file that is no RSS or
  Atom feed is an error): one article an entry, id = the entry's id/guid, else its link;
  text from its content, else its summary; see `retrieval.ingestion.feeds`. A bad entry loses only
  itself and is reported as `path: entry N (id '...'): what is wrong`; a malformed feed
  with no readable entry is an error for the file.

In every format, title and text are stripped of surrounding whitespace. An article with
a title and no text (a news flash, a headline-only item) is title-only: its text is its
title. One with neither is an error. An id seen twice in one load keeps its first
article; the later one is an error.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blingfire

from retrieval.errors import InputError, LoadError
from retrieval.records import Article, iso_date

TEXT_SUFFIXES = frozenset({".txt", ".md"})
JSONL_SUFFIXES = frozenset({".jsonl"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
FEED_SUFFIXES = frozenset({".rss", ".atom", ".xml"})
_LOADABLE = TEXT_SUFFIXES | JSONL_SUFFIXES | HTML_SUFFIXES | FEED_SUFFIXES
TITLE_LINE_MAX_WORDS = 20
DERIVED_TITLE_MAX_WORDS = 12
# The first sentence is all a derived title needs; bounding the scan keeps a huge
# single-paragraph file from being sentence-split in full.
_TITLE_SCAN_CHARS = 2000
# Only a value starting with a digit makes a date line, so that a headline such as
# "Date night" is read as a title, not as a malformed date.
_DATE_LINE = re.compile(r"date\s*:?\s*(\d\S*)", re.IGNORECASE)
_MD_HEADING = re.compile(r"#{1,6}\s+(.*?)(?:\s+#+)?")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_RECORD_FIELDS = frozenset({"title", "text", "date", "source", "url", "metadata"})


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load produced: the good articles and one error per bad file or line.

    Attributes:
        articles: loaded articles, in file order, then line order.
        errors: each names its path, its 1-based line (JSONL) or entry (feeds), and
            what to fix.
    """

    articles: list[Article] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)


class _Invalid(Exception):
    """A record that cannot become an article; wrapped into a LoadError by the caller."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def load_articles(paths: Sequence[str | Path]) -> LoadResult:
    """Load every article under the given files and folders.

    Bad content never raises: unreadable files, bad lines and duplicate ids go to
    `errors`, and the caller decides whether any error refuses the whole batch. A file
    reached twice (named directly and inside a named folder) is loaded once.

    Args:
        paths: files and folders; a single str or Path is taken as a one-element list.

    Returns:
        The loaded articles and the errors, in a deterministic (sorted walk) order.

    Raises:
        LoadError: a path does not exist (checked for all paths before loading any).
    """
    roots = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    for root in roots:
        _require_exists(root)
    batch = _Batch()
    for path in _unique(path for root in roots for path in _files_under(root)):
        batch.add_file(path)
    return batch.result()


def load_file(path: str | Path) -> LoadResult:
    """Load one file, its format chosen by its suffix.

    Args:
        path: a file of a format in the module docstring; another suffix is reported
            in `errors`.

    Returns:
        The file's articles (duplicate ids within it are errors) and its errors.

    Raises:
        LoadError: the path does not exist or is a folder.
    """
    file = Path(path)
    _require_exists(file)
    if file.is_dir():
        raise LoadError(str(file), "is a folder: use load_articles to load a folder")
    batch = _Batch()
    batch.add_file(file)
    return batch.result()


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise LoadError(str(path), "no such file or folder")


def _files_under(root: Path) -> Iterator[Path]:
    """Yield `root` if it is a file, else its loadable files, sorted by path components."""
    if not root.is_dir():
        yield root
        return
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(root):
        if _is_beir_folder(filenames):
            dirnames[:] = []
            found.append(Path(folder, BEIR_CORPUS))
            continue
        # Pruning in place stops os.walk from descending into hidden folders.
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        found.extend(
            Path(folder, name)
            for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in _LOADABLE
        )
    yield from sorted(found, key=lambda path: path.relative_to(root).parts)


BEIR_CORPUS = "corpus.jsonl"
_EXPECTED_SUFFIXES = ".txt, .md, .jsonl, .html, .htm, .rss, .atom or .xml"


def _is_beir_folder(filenames: list[str]) -> bool:
    return BEIR_CORPUS in filenames and "queries.jsonl" in filenames


def _unique(paths: Iterable[Path]) -> Iterator[Path]:
    seen: set[Path] = set()
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            yield path


class _Batch:
    """Collects articles and errors over several files, tracking ids across all of them."""

    def __init__(self) -> None:
        self._articles: list[Article] = []
        self._errors: list[LoadError] = []
        self._first_seen: dict[str, str] = {}

    def result(self) -> LoadResult:
        return LoadResult(articles=self._articles, errors=self._errors)

    def add_file(self, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix in TEXT_SUFFIXES:
            self._add_text_file(path)
        elif suffix in JSONL_SUFFIXES:
            self._add_jsonl_file(path)
        elif suffix in HTML_SUFFIXES:
            self._add_html_file(path)
        elif suffix in FEED_SUFFIXES:
            self._add_feed_file(path)
        else:
            shown = suffix or "(no suffix)"
            self._error(path, f"unsupported file type {shown}: expected {_EXPECTED_SUFFIXES}")

    def _add_text_file(self, path: Path) -> None:
        data = self._read(path)
        if data is None:
            return
        try:
            text = _decode(data, offset=0, encoding="utf-8-sig")
            article = _parse_text_article(text, path.stem, markdown=path.suffix.lower() == ".md")
        except _Invalid as exc:
            self._error(path, exc.reason, exc.line)
            return
        self._accept(article, path)

    def _add_jsonl_file(self, path: Path) -> None:
        data = self._read(path)
        if data is None:
            return
        offset = 0
        for number, raw in enumerate(data.split(b"\n"), start=1):
            line_offset, offset = offset, offset + len(raw) + 1
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw, line_offset = raw[len(codecs.BOM_UTF8) :], line_offset + 3
            if not raw.strip():
                continue
            try:
                article = _article_from_record(_parse_json_object(_decode(raw, line_offset)))
            except _Invalid as exc:
                self._error(path, exc.reason, number)
                continue
            self._accept(article, path, number)

    def _add_html_file(self, path: Path) -> None:
        from retrieval.ingestion.pages import article_from_page  # trafilatura: only when needed

        data = self._read(path)
        if data is None:
            return
        try:
            article = article_from_page(_decode(data, offset=0, encoding="utf-8-sig"), path.stem)
        except _Invalid as exc:
            self._error(path, exc.reason)
            return
        except InputError as exc:
            self._error(path, str(exc))
            return
        self._accept(article, path)

    def _add_feed_file(self, path: Path) -> None:
        from retrieval.ingestion.feeds import read_feed  # feedparser, inscriptis: only when needed

        data = self._read(path)
        if data is None:
            return
        try:
            entries = read_feed(data)
        except InputError as exc:
            self._error(path, str(exc))
            return
        for entry in entries:
            if entry.article is None:
                reason = entry.problem or "bad entry"
                self._error(path, reason, entry=entry.number, entry_id=entry.id)
            else:
                self._accept(entry.article, path, entry=entry.number)

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError as exc:
            self._error(path, f"cannot read the file: {exc.strerror or exc}")
            return None

    def _accept(
        self, article: Article, path: Path, line: int | None = None, *, entry: int | None = None
    ) -> None:
        first = self._first_seen.get(article.id)
        if first is not None:
            reason = f"duplicate id {article.id!r} (first seen at {first})"
            self._error(path, reason, line, entry=entry, entry_id=article.id)
            return
        self._first_seen[article.id] = LoadError.locate(str(path), line, entry=entry)
        self._articles.append(article)

    def _error(
        self,
        path: Path,
        reason: str,
        line: int | None = None,
        *,
        entry: int | None = None,
        entry_id: str | None = None,
    ) -> None:
        self._errors.append(LoadError(str(path), reason, line, entry=entry, entry_id=entry_id))


def _decode(data: bytes, offset: int, encoding: str = "utf-8") -> str:
    """Decode strictly; `offset` is where `data` starts in its file, for the message."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        where = offset + exc.start
        raise _Invalid(f"invalid UTF-8 at byte {where}: save the file as UTF-8") from None


# ---- text articles -------------------------------------------------------------------


def _parse_text_article(text: str, doc_id: str, *, markdown: bool = False) -> Article:
    """Build an article from the decoded contents of a `.txt` or `.md` file.

    Args:
        text: the whole file, decoded.
        doc_id: the article id (the file stem).
        markdown: whether a leading `# Heading` line is the title.

    Returns:
        The article; its title follows the rules in the module docstring.

    Raises:
        _Invalid: a malformed date line, or neither a title nor a body after the date.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    date, lines = _take_date_line(lines)
    body = "\n".join(lines).strip()
    title, body = _split_title(body, markdown=markdown) if body else ("", "")
    if not body and not title:
        raise _Invalid("empty text: the file holds no title and no body after its date")
    # A headline alone (a news flash) is a title-only article: its text is its title.
    return Article(id=doc_id, title=title, text=body or title, date=date)


def _take_date_line(lines: list[str]) -> tuple[str | None, list[str]]:
    """Split off a leading `date YYYY-MM-DD` line, if the first non-empty line is one."""
    index = next((i for i, line in enumerate(lines) if line.strip()), None)
    if index is None:
        return None, lines
    match = _DATE_LINE.fullmatch(lines[index].strip())
    if match is None:
        return None, lines
    value = match.group(1)
    date = iso_date(value)
    if date is None:
        reason = f"bad date line {lines[index].strip()!r}: expected 'date YYYY-MM-DD'"
        raise _Invalid(reason, line=index + 1)
    return date, lines[index + 1 :]


def _split_title(body: str, *, markdown: bool) -> tuple[str, str]:
    """Return (title, body without a title line); `body` is stripped and non-empty."""
    first_line, _, rest = body.partition("\n")
    heading = _MD_HEADING.fullmatch(first_line.strip()) if markdown else None
    if heading is not None:
        return heading.group(1).strip(), rest.strip()
    parts = _BLANK_LINE.split(body, maxsplit=1)
    if len(parts) == 2 and _is_title_line(parts[0]):
        return parts[0].strip(), parts[1].strip()
    return _derive_title(body), body


def _is_title_line(paragraph: str) -> bool:
    line = paragraph.strip()
    words = line.split()
    return "\n" not in line and len(words) <= TITLE_LINE_MAX_WORDS and not line.endswith(".")


def _derive_title(body: str) -> str:
    """A display title for a body whose headline is run into its first sentence.

    Takes the first sentence (blingfire), cut to at most 12 words at a word boundary.
    The words come from `body` itself, so for single-spaced text the body starts with
    the title; runs of whitespace are collapsed to one space.

    Args:
        body: stripped, non-empty article text.

    Returns:
        The title, without a trailing comma, colon or semicolon, nor the sentence's final
        period (an abbreviation such as "U.S." keeps its period).
    """
    sentences = blingfire.text_to_sentences(body[:_TITLE_SCAN_CHARS])
    sentence_words = len(sentences.split("\n", 1)[0].split())
    count = max(1, min(sentence_words, DERIVED_TITLE_MAX_WORDS))
    words = body.split(maxsplit=count)[:count]
    title = " ".join(words).rstrip(",;:")
    last = words[-1]
    if count == sentence_words and last.endswith(".") and "." not in last[:-1]:
        title = title.removesuffix(".")
    return title


# ---- JSONL records -------------------------------------------------------------------


def _parse_json_object(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _Invalid(
            f"bad JSON at column {exc.colno}: {exc.msg}; each line must be one JSON object"
        ) from None
    if not isinstance(value, dict):
        raise _Invalid(f"expected a JSON object, got {_json_type(value)}")
    return value


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; accepting them would store metadata that other
    # JSON readers (and the HTTP layer) refuse.
    raise _Invalid(f"bad JSON: {name} is not a JSON value")


def _article_from_record(record: dict[str, Any]) -> Article:
    """Build an article from one JSON object (a JSONL line or a BEIR corpus record).

    Args:
        record: the parsed object; fields as in the module docstring.

    Returns:
        The article, with id converted to str and other fields kept as metadata.

    Raises:
        _Invalid: a missing or empty id, neither title nor text, a field of the wrong type,
            a bad date.
    """
    id_key = "_id" if "_id" in record else "id"
    doc_id = _record_id(record.get(id_key))
    title = (_optional_str(record, "title") or "").strip()
    # A headline alone (a news flash) is a title-only article: its text is its title.
    text = _record_text(record.get("text")) or title
    if not text:
        raise _Invalid("empty text: 'text' must hold more than whitespace when there is no 'title'")
    return Article(
        id=doc_id,
        title=title,
        text=text,
        date=_record_date(record.get("date")),
        source=_optional_str(record, "source") or None,
        url=_optional_str(record, "url") or None,
        metadata=_record_metadata(record, id_key),
    )


def _record_id(value: Any) -> str:
    # bool is an int subclass, but True as an id is surely a mistake.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    raise _Invalid(
        f"missing id: expected a non-empty string or integer in '_id' or 'id', got {value!r}"
    )


def _record_text(value: Any) -> str:
    """The record's text, stripped; "" when missing or null (a title may stand in)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Invalid(f"'text' must be a string or null, got {_json_type(value)}")
    # Same line ends as text files, so chunking sees paragraphs the same way.
    return value.replace("\r\n", "\n").replace("\r", "\n").strip()


def _record_date(value: Any) -> str | None:
    if value is None or value == "":
        return None
    date = iso_date(value) if isinstance(value, str) else None
    if date is None:
        raise _Invalid(f"bad date {value!r}, expected YYYY-MM-DD (or an ISO datetime)")
    return date


def _optional_str(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise _Invalid(f"'{key}' must be a string or null, got {_json_type(value)}")
    return value


def _record_metadata(record: dict[str, Any], id_key: str) -> dict[str, Any]:
    nested = record.get("metadata")
    if nested is not None and not isinstance(nested, dict):
        raise _Invalid(f"'metadata' must be an object or null, got {_json_type(nested)}")
    extra = {k: v for k, v in record.items() if k != id_key and k not in _RECORD_FIELDS}
    # A top-level field wins over a nested key of the same name: it is the more visible.
    return {**(nested or {}), **extra}


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
