"""Saved HTML pages: the article a page holds, found by trafilatura, as one `Article`.

trafilatura separates the article from the page around it (navigation, advertising,
related links, footer) and reads its metadata (title, date, author, canonical URL, site
name). This module only maps its result onto an `Article`:

- text: the extracted paragraphs, one blank line between two (the chunker splits there);
  a first paragraph that repeats the title is dropped, since the title is stored apart.
- title, date (`YYYY-MM-DD`), url (the canonical URL, else `og:url`), source (the site
  name: `og:site_name`, a publisher name, else what trafilatura derives from the URL),
  metadata["author"] when the page names one.
- a page with a title and no article text is a title-only article: its text is its title.

trafilatura is imported here only, and this module only when a page is loaded; when
trafilatura cannot be imported, importing this module raises MissingDependencyError,
which names the extra to install.
"""

from __future__ import annotations

from typing import Any

from retrieval.errors import InputError, MissingDependencyError
from retrieval.records import Article, iso_date

try:
    import trafilatura
    from trafilatura.xml import xmltotxt
except ImportError as error:  # e.g. lxml without lxml_html_clean, which justext imports
    raise MissingDependencyError("reading HTML pages", "trafilatura", "engine", error) from error

# Dates from the page's markup (meta tags, JSON-LD, <time>, the URL) only: the extensive
# search also guesses from any date-like text, such as a copyright line's year.
_DATE_PARAMS = {"extensive_search": False, "original_date": True}


def article_from_page(html: str, doc_id: str) -> Article:
    """Build an article from the decoded contents of a saved HTML page.

    Args:
        html: the whole page, decoded.
        doc_id: the article id (the file stem).

    Returns:
        The article; fields as in the module docstring.

    Raises:
        InputError: the page holds neither article text nor a title.
    """
    document = trafilatura.bare_extraction(
        html,
        with_metadata=True,
        date_extraction_params=_DATE_PARAMS,
        # Precision over recall: when a page holds little article text, the default
        # falls back to taking the whole page, navigation and footer included.
        favor_precision=True,
        include_comments=False,
    )
    if document is None:  # no article text at all; the metadata may still name a title
        document = trafilatura.extract_metadata(html, date_config=_DATE_PARAMS)
    title = _clean(getattr(document, "title", None))
    paragraphs = _paragraphs(getattr(document, "body", None))
    if paragraphs and title and " ".join(paragraphs[0].split()) == " ".join(title.split()):
        paragraphs = paragraphs[1:]
    text = "\n\n".join(paragraphs) or title
    if not text:
        raise InputError("no article text found")
    author = _clean(getattr(document, "author", None))
    return Article(
        id=doc_id,
        title=title,
        text=text,
        date=iso_date(date) if (date := getattr(document, "date", None)) else None,
        source=_clean(getattr(document, "sitename", None)) or None,
        url=_clean(getattr(document, "url", None)) or None,
        metadata={"author": author} if author else {},
    )


def _paragraphs(body: Any) -> list[str]:
    """The text of each block of trafilatura's article tree (paragraph, heading, list...)."""
    if body is None:
        return []
    blocks = (xmltotxt(block, include_formatting=False) for block in body)
    return [text for block in blocks if (text := _clean(block))]


def _clean(value: str | None) -> str:
    return (value or "").replace("\r\n", "\n").replace("\r", "\n").strip()
