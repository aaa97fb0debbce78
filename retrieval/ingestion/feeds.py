"""RSS and Atom feeds: each entry an `Article`, or the reason it cannot be one.

feedparser reads the feed (any RSS version, Atom, the encoding the XML declares);
this module maps each entry:

- id: the entry's id (Atom `<id>`, RSS `<guid>`), else its link.
- title; text: the content (RSS `content:encoded`, Atom `<content>`), else the summary
  (RSS `<description>`, Atom `<summary>`). HTML is converted to text by inscriptis, one
  blank line between paragraphs; an entry with a title and no text is title-only (its
  text is its title).
- date: the written date of `published`, else of `updated` (RFC 822 or ISO 8601; no
  time zone conversion, as for JSONL); a date that cannot be read is an error.
- url: the link (an absolute URL); source: the feed's title; metadata["author"]: the
  author's name, when given.

feedparser and inscriptis are imported here only, and this module only when a feed is
loaded; when they cannot be imported, importing this module raises MissingDependencyError,
which names the extra to install.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import io
import xml.sax
from dataclasses import dataclass
from itertools import groupby
from typing import Any
from urllib.parse import urlsplit

from retrieval.errors import InputError, MissingDependencyError
from retrieval.records import Article, iso_date

try:
    import feedparser
    from inscriptis import get_text
except ImportError as error:
    raise MissingDependencyError(
        "reading feeds", "feedparser and inscriptis", "engine", error
    ) from error

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_ENCODING_PROBLEMS = (feedparser.CharacterEncodingOverride, feedparser.CharacterEncodingUnknown)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One entry of a feed: its article, or what is wrong with it.

    Attributes:
        number: 1-based position in the feed.
        id: the entry's id (or link), when it has one.
        article: the article, or None when the entry is bad.
        problem: what is wrong (None when `article` is set).
    """

    number: int
    id: str | None
    article: Article | None = None
    problem: str | None = None


def read_feed(data: bytes) -> list[FeedEntry]:
    """Parse a feed file's bytes into its entries, good and bad, in feed order.

    A feed that feedparser could only partly read (not well-formed XML) still gives the
    entries it recovered; one that gave none is an error.

    Raises:
        InputError: the data is not an RSS or Atom feed, is malformed with no readable
            entry, or does not match its declared character encoding.
    """
    # A stream, never a str: feedparser would take a str that looks like a URL as one.
    parsed = feedparser.parse(io.BytesIO(data))
    problem = dict.get(parsed, "bozo_exception")
    if isinstance(problem, _ENCODING_PROBLEMS):
        raise InputError(_encoding_reason(data, problem))
    if not dict.get(parsed, "version"):
        if problem is not None:
            raise InputError(f"not a feed: not well-formed XML ({_xml_reason(problem)})")
        raise InputError("not a feed: expected an RSS or Atom document")
    entries = dict.get(parsed, "entries") or []
    if problem is not None and not entries:
        raise InputError(f"malformed feed: {_xml_reason(problem)}")
    feed = dict.get(parsed, "feed") or {}
    source = _one_line(dict.get(feed, "title"), dict.get(feed, "title_detail")) or None
    return [_feed_entry(number, entry, source) for number, entry in enumerate(entries, start=1)]


def _feed_entry(number: int, entry: dict[str, Any], source: str | None) -> FeedEntry:
    # dict.get, not entry.get: feedparser's own get() maps a missing `updated` onto
    # `published` with a DeprecationWarning.
    link = _absolute_url(dict.get(entry, "link"))
    entry_id = (dict.get(entry, "id") or "").strip() or link
    if not entry_id:
        return FeedEntry(number, None, problem="no id: the entry has neither an id/guid nor a link")
    title = _one_line(dict.get(entry, "title"), dict.get(entry, "title_detail"))
    text = _entry_text(entry) or title
    if not text:
        return FeedEntry(number, entry_id, problem="empty entry: no title, content or summary")
    try:
        date = _entry_date(entry)
    except InputError as exc:
        return FeedEntry(number, entry_id, problem=str(exc))
    author = _author(entry)
    article = Article(
        id=entry_id,
        title=title,
        text=text,
        date=date,
        source=source,
        url=link,
        metadata={"author": author} if author else {},
    )
    return FeedEntry(number, entry_id, article=article)


def _entry_text(entry: dict[str, Any]) -> str:
    """The first non-empty content, else the summary, as plain text."""
    for content in dict.get(entry, "content") or []:
        if text := _text(dict.get(content, "value"), content):
            return text
    return _text(dict.get(entry, "summary"), dict.get(entry, "summary_detail"))


def _text(value: str | None, detail: dict[str, Any] | None) -> str:
    """A feed's text construct as plain text: HTML converted, paragraphs kept apart."""
    if not value:
        return ""
    kind = dict.get(detail, "type") if detail else "text/html"
    text = get_text(value) if kind in _HTML_TYPES else value
    lines = (line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    # One blank line between paragraphs, however many the converter or the feed wrote.
    return "\n\n".join("\n".join(group) for filled, group in groupby(lines, bool) if filled)


def _one_line(value: str | None, detail: dict[str, Any] | None) -> str:
    """A title as plain text on one line."""
    return " ".join(_text(value, detail).split())


def _entry_date(entry: dict[str, Any]) -> str | None:
    """The written date of `published`, else of `updated`.

    Raises:
        InputError: that field is present but no date can be read from it.
    """
    for key in ("published", "updated"):
        raw = (dict.get(entry, key) or "").strip()
        if not raw:
            continue
        date = iso_date(raw) or _rfc822_date(raw) or _parsed_date(dict.get(entry, f"{key}_parsed"))
        if date is None:
            raise InputError(f"bad date {raw!r}: expected an RFC 822 or ISO 8601 date")
        return date
    return None


def _rfc822_date(raw: str) -> str | None:
    try:
        return email.utils.parsedate_to_datetime(raw).date().isoformat()
    except (TypeError, ValueError):
        return None


def _parsed_date(value: Any) -> str | None:
    """feedparser's own reading of a date it recognised in another format (in UTC)."""
    if value is None:
        return None
    try:
        return dt.date(value.tm_year, value.tm_mon, value.tm_mday).isoformat()
    except (AttributeError, ValueError):
        return None


def _author(entry: dict[str, Any]) -> str:
    detail = dict.get(entry, "author_detail")
    name = dict.get(detail, "name") if detail else None
    return (name or dict.get(entry, "author") or "").strip()


def _absolute_url(value: str | None) -> str | None:
    # feedparser takes an RSS guid as the link when there is no <link>, even when the
    # guid is no URL at all ("sportswire-2005-02-07"): such a link is no url.
    parts = urlsplit((value or "").strip())
    return parts.geturl() if parts.scheme and parts.netloc else None


def _xml_reason(problem: Exception) -> str:
    if isinstance(problem, xml.sax.SAXParseException):
        where = f"line {problem.getLineNumber()}, column {problem.getColumnNumber()}"
        return f"{where}: {problem.getMessage()}"
    return str(problem)


def _encoding_reason(data: bytes, problem: Exception) -> str:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}: save the file as UTF-8"
    return f"bad character encoding: {problem}"
