"""Saved HTML pages and RSS/Atom feeds: real-looking files in tests/data/news/, no network.

The pages carry the boilerplate of a news site (cookie banner, navigation, advertising,
share buttons, newsletter box, most-read list, footer) around the article; the feeds
cover RSS 2.0 with content:encoded, RSS with descriptions only, Atom (html, xhtml and
text constructs), a feed with bad entries, and an XML file that is not a feed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.cli.main import main
from retrieval.errors import LoadError
from retrieval.ingestion.loaders import LoadResult, load_articles, load_file

ROOT = Path(__file__).resolve().parents[1]
NEWS = Path(__file__).resolve().parent / "data" / "news"

# Text around the articles on the saved pages: none of it may reach an article's text.
BOILERPLATE = [
    "cookie policy",
    "Accept all",
    "Advertisement",
    "Switch your broadband",
    "Luxury cruises",
    "Home",
    "Subscribe",
    "Share on Facebook",
    "By Jane Smith",
    "Business Briefing",
    "never miss a market move",
    "Most read",
    "Weather warning",
    "All rights reserved",
    "Privacy",
    "Log in",
    "Front page",
    "Sponsored",
    "Related stories",
    "Read 42 comments",
    "Market data",
    "Cheap flights",
    "Courier Newspapers",
]


def by_id(result: LoadResult) -> dict[str, object]:
    return {article.id: article for article in result.articles}


def only_error(result: LoadResult) -> LoadError:
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def rss(*items: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Wire</title>'
        + "".join(f"<item>{item}</item>" for item in items)
        + "</channel></rss>"
    )


# ---- saved HTML pages ----------------------------------------------------------------


def test_page_gives_title_date_url_source_author_and_paragraphs() -> None:
    result = load_file(NEWS / "ledger-timewarner-profit.html")
    assert result.errors == []
    [article] = result.articles
    assert article.id == "ledger-timewarner-profit"  # the file stem, not the URL
    assert article.title == "Ad sales boost Time Warner profit"
    assert article.date == "2005-02-10"
    assert article.url == (
        "https://www.dailyledger.example/business/2005/02/10/time-warner-profit"
    )
    assert article.source == "The Daily Ledger"
    assert article.metadata == {"author": "Jane Smith"}
    paragraphs = article.text.split("\n\n")
    assert len(paragraphs) == 6 and all(p.strip() == p and p for p in paragraphs)
    assert paragraphs[0].startswith("Quarterly profits at US media giant TimeWarner")
    assert "(£600m)" in paragraphs[0]  # the &pound; entity, decoded
    assert paragraphs[-1].endswith("under review by the Securities and Exchange Commission.")


@pytest.mark.parametrize("name", ["ledger-timewarner-profit.html", "courier-dollar-greenspan.htm"])
def test_page_boilerplate_and_headline_stay_out_of_the_text(name: str) -> None:
    [article] = load_file(NEWS / name).articles
    for phrase in BOILERPLATE:
        assert phrase not in article.text, phrase
    # The headline is stored as the title, not repeated as the first paragraph.
    assert not article.text.startswith(article.title)
    assert "<" not in article.text and "&pound;" not in article.text


def test_htm_page_reads_json_ld_metadata_and_keeps_the_written_date() -> None:
    [article] = load_file(NEWS / "courier-dollar-greenspan.htm").articles
    assert article.id == "courier-dollar-greenspan"
    assert article.title == "Dollar gains on Greenspan speech"
    # datePublished 2005-02-05T18:05:00-05:00: the written date, not the UTC one.
    assert article.date == "2005-02-05"
    assert article.source == "Northern Courier"
    assert article.url == (
        "https://northerncourier.example/markets/dollar-gains-on-greenspan-speech-20050205"
    )
    assert article.metadata == {"author": "Tom Baker"}
    paragraphs = article.text.split("\n\n")
    assert len(paragraphs) == 4
    assert paragraphs[2].startswith('"I think the chairman')


def test_page_with_a_headline_only_is_a_title_only_article() -> None:
    [article] = load_file(NEWS / "ledger-flash-quake.html").articles
    assert article.title == "Breaking: Strong earthquake strikes off northern Japan"
    assert article.text == article.title  # navigation and footer are not its text
    assert article.date == "2005-03-20"
    assert article.source == "The Daily Ledger"
    assert article.url.endswith("/japan-earthquake-flash")


def test_page_with_only_a_title_element_is_title_only(tmp_path: Path) -> None:
    path = write(tmp_path / "bare.html", "<html><head><title>Polls close</title></head></html>")
    [article] = load_file(path).articles
    assert (article.id, article.title, article.text) == ("bare", "Polls close", "Polls close")


@pytest.mark.parametrize(
    "page",
    ["", "<html><head></head><body></body></html>", "<html><body><script>x=1</script></body>"],
)
def test_page_with_no_text_and_no_title_is_an_error(tmp_path: Path, page: str) -> None:
    path = write(tmp_path / "empty.html", page)
    result = load_file(path)
    assert result.articles == []
    assert str(only_error(result)) == f"{path}: no article text found"


def test_page_bad_utf8_is_reported_like_a_text_file_and_a_bom_is_accepted(tmp_path: Path) -> None:
    page = "<html><head><title>Caf{}</title></head><body><p>Body.</p></body></html>"
    bad = write(tmp_path / "bad.html", page.format("\xe9").encode("latin-1"))
    error = only_error(load_file(bad))
    assert (error.path, error.line) == (str(bad), None)
    assert error.reason == f"invalid UTF-8 at byte {page.index('{}')}: save the file as UTF-8"
    bom = write(tmp_path / "bom.htm", b"\xef\xbb\xbf" + page.format("\xe9").encode("utf-8"))
    [article] = load_file(bom).articles
    assert article.title == "Café"


def test_an_unreadable_page_is_reported_and_the_rest_loads(tmp_path: Path) -> None:
    (tmp_path / "gone.html").symlink_to(tmp_path / "missing-target.html")
    write(tmp_path / "ok.txt", "Headline\n\nBody.")
    result = load_articles([tmp_path])
    assert [a.id for a in result.articles] == ["ok"]
    error = only_error(result)
    assert error.path == str(tmp_path / "gone.html")
    assert error.reason.startswith("cannot read the file")


# ---- RSS and Atom feeds --------------------------------------------------------------


def test_rss_content_encoded_is_the_text_and_guid_the_id() -> None:
    path = NEWS / "ledger-business.rss"
    result = load_file(path)
    assert result.errors == []
    articles = by_id(result)
    assert list(articles) == [
        "ledger-business-20050204-tobacco",
        "https://www.dailyledger.example/business/2005/02/10/time-warner-profit",
    ]
    tobacco = articles["ledger-business-20050204-tobacco"]
    assert tobacco.title == "Court rejects $280bn tobacco case"
    # Fri, 04 Feb 2005 22:45:00 -0500 is already the 5th in UTC: the written date is kept.
    assert tobacco.date == "2005-02-04"
    assert tobacco.url == "https://www.dailyledger.example/business/2005/02/04/tobacco-case-rejected"
    assert tobacco.source == "The Daily Ledger - Business"
    assert tobacco.metadata == {"author": "Maria Lopez"}
    # content:encoded, not the shorter description; paragraphs, caption and list kept.
    assert tobacco.text.split("\n\n") == [
        "A US government claim accusing the country's biggest tobacco companies of covering "
        "up the effects of smoking has been thrown out by an appeal court.",
        "The demand for $280bn (£155bn) - filed by the Clinton administration in 1999 - was "
        "rejected in a 2-1 decision. The court in Washington found that the case could not "
        "be brought under federal anti-racketeering laws.",
        "The appeal court in Washington",
        "Among the accused were Altria Group, RJ Reynolds Tobacco, Lorillard Tobacco, Liggett "
        "Group and Brown and Williamson. Shares of tobacco companies closed higher after the "
        "ruling, with Altria rising 5%.",
        "* Filed: 1999\n* Decision: 2-1",
    ]
    profit = articles["https://www.dailyledger.example/business/2005/02/10/time-warner-profit"]
    assert profit.date == "2005-02-10"
    assert profit.text.count("\n\n") == 1 and "<p>" not in profit.text


def test_rss_descriptions_links_as_ids_authors_and_a_title_only_flash() -> None:
    result = load_file(NEWS / "wire-world-briefs.rss")
    assert result.errors == []
    jarre, iaaf, flash = result.articles
    # No guid: the link is the id.
    assert jarre.id == jarre.url == (
        "https://wirebriefs.example/world/2005/02/21/jarre-andersen-concert"
    )
    assert jarre.metadata == {"author": "Henrik Nielsen"}  # from "email (name)"
    assert jarre.source == "Wire Briefs: World"
    # An HTML-escaped description becomes paragraphs.
    assert jarre.text.split("\n\n") == [
        "French musician Jean-Michel Jarre is to perform at a concert in Copenhagen to mark "
        "the bicentennial of the birth of writer Hans Christian Andersen.",
        "Denmark is holding a three-day celebration of the life of the fairy-tale author, "
        "with a concert at Parken stadium on 2 April.",
    ]
    assert iaaf.text.startswith("The IAAF, athletics' world governing body, has met")
    assert "\n" not in iaaf.text and iaaf.metadata == {}
    assert flash.title == "Flash: Kyrgyz opposition claims victory in Bishkek"
    assert flash.text == flash.title
    assert flash.date == "2005-03-24"


def test_atom_entries_html_xhtml_and_text_constructs() -> None:
    result = load_file(NEWS / "techdesk.atom")
    assert result.errors == []
    google, ink, creative = result.articles
    assert google.id == "tag:northerncourier.example,2005-02-17:google-autolink"
    assert google.url == "https://northerncourier.example/tech/2005/02/17/google-autolink"
    # published 2005-02-17T23:15:00-08:00 wins over updated, and keeps its written date.
    assert google.date == "2005-02-17"
    assert google.source == "Tech Desk"
    assert google.metadata == {"author": "Priya Patel"}  # the name, not the email
    paragraphs = google.text.split("\n\n")
    assert len(paragraphs) == 3
    assert paragraphs[2] == (
        'Dan Gillmor, founder of Grassroots Media, said the tool was a "bad idea, and an '
        'unfortunate move".'
    )
    # Content is preferred to the summary.
    assert "worries some net users" not in google.text
    assert ink.title == "Ink helps drive democracy in Asia"  # an HTML title, as text
    assert ink.date == "2005-02-15"  # no published: updated
    assert ink.text.split("\n\n")[1] == (
        "The ink is sprayed on a person's left thumb. It dries and is not visible under "
        "normal light."
    )
    # No content: the plain-text summary, its entity decoded.
    assert creative.text.startswith("The hi-tech and the arts worlds have for some time")
    assert "danced around each other & offered" in creative.text
    assert creative.metadata == {}


def test_bad_entries_are_reported_by_entry_and_skipped() -> None:
    path = NEWS / "sportswire-broken.xml"
    result = load_file(path)
    assert [a.id for a in result.articles] == ["sportswire-2005-02-06-derby"]
    [derby] = result.articles
    assert derby.url == "https://sportswire.example/football/2005/02/06/derby-late-winner"
    assert [str(error) for error in result.errors] == [
        f"{path}: entry 2 (id 'sportswire-2005-02-07-empty'): "
        "empty entry: no title, content or summary",
        f"{path}: entry 3 (id 'sportswire-2005-02-08-marathon'): "
        "bad date 'the eighth of February': expected an RFC 822 or ISO 8601 date",
        f"{path}: entry 4: no id: the entry has neither an id/guid nor a link",
    ]
    first = result.errors[0]
    assert (first.path, first.line, first.entry) == (str(path), None, 2)
    assert first.entry_id == "sportswire-2005-02-07-empty"
    assert result.errors[2].entry_id is None


def test_a_guid_that_is_no_url_is_an_id_but_not_a_url(tmp_path: Path) -> None:
    # feedparser takes a guid as the link when there is none.
    path = write(tmp_path / "f.rss", rss("<guid>wire-1</guid><title>T</title>"))
    [article] = load_file(path).articles
    assert (article.id, article.url, article.text) == ("wire-1", None, "T")


def test_xml_that_is_not_a_feed_is_an_error() -> None:
    path = NEWS / "sitemap.xml"
    result = load_file(path)
    assert result.articles == []
    assert str(only_error(result)) == f"{path}: not a feed: expected an RSS or Atom document"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("this is not XML at all", "not a feed: not well-formed XML (line 2, column 0: "),
        ("", "not a feed: expected an RSS or Atom document"),
        ('<?xml version="1.0"?><rss version="2.0"><channel><title>T', "malformed feed: line 1"),
    ],
)
def test_a_file_that_is_no_readable_feed_is_an_error(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = write(tmp_path / "broken.rss", content)
    result = load_file(path)
    assert result.articles == []
    error = only_error(result)
    assert (error.path, error.line, error.entry) == (str(path), None, None)
    assert error.reason.startswith(reason)


def test_a_truncated_feed_keeps_the_entries_it_recovered(tmp_path: Path) -> None:
    whole = "<guid>a</guid><title>A</title><description>First.</description>"
    path = write(tmp_path / "cut.rss", rss(whole)[:-20] + "<item><guid>b</guid><title>B")
    result = load_file(path)
    assert [a.id for a in result.articles][:1] == ["a"]
    assert result.articles[0].text == "First."


def test_feed_with_bad_utf8_is_an_error_for_the_file(tmp_path: Path) -> None:
    data = rss("<guid>g</guid><title>Caf\xe9</title>").encode("latin-1")
    path = write(tmp_path / "bad.rss", data)
    offset = data.index(b"\xe9")
    error = only_error(load_file(path))
    assert error.reason == f"invalid UTF-8 at byte {offset}: save the file as UTF-8"


def test_a_feed_in_its_declared_encoding_loads(tmp_path: Path) -> None:
    data = rss("<guid>g</guid><title>Caf\xe9</title>").replace("UTF-8", "ISO-8859-1")
    path = write(tmp_path / "latin.rss", data.encode("latin-1"))
    [article] = load_file(path).articles
    assert article.title == "Café"


def test_duplicate_entry_ids_keep_the_first(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dup.atom",
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>F</title>'
        "<entry><id>urn:x:1</id><title>One</title></entry>"
        "<entry><id>urn:x:1</id><title>Again</title></entry></feed>",
    )
    result = load_file(path)
    assert [a.title for a in result.articles] == ["One"]
    assert str(only_error(result)) == (
        f"{path}: entry 2 (id 'urn:x:1'): duplicate id 'urn:x:1' (first seen at {path}: entry 1)"
    )


# ---- the whole folder ----------------------------------------------------------------


def test_the_news_folder_loads_pages_and_feeds_and_reports_the_bad_files() -> None:
    result = load_articles([NEWS])
    ids = [a.id for a in result.articles]
    assert len(ids) == len(set(ids)) == 12
    assert {"ledger-timewarner-profit", "courier-dollar-greenspan", "ledger-flash-quake"} <= set(
        ids
    )
    assert "tag:northerncourier.example,2005-02-12:creative-bug" in ids
    assert sorted({Path(e.path).name for e in result.errors}) == [
        "sitemap.xml",
        "sportswire-broken.xml",
    ]
    assert len(result.errors) == 4


def test_strict_refuses_the_folder_and_writes_nothing(tmp_path: Path, capsys) -> None:
    collection = tmp_path / "collection"
    assert main(["index", str(NEWS), "--collection", str(collection), "--strict", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{NEWS / 'sitemap.xml'}: not a feed" in err
    assert f"{NEWS / 'sportswire-broken.xml'}: entry 4: no id" in err
    assert "refused: 4 bad input(s) and --strict; nothing was indexed" in err
    assert not collection.exists()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "retrieval", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def top_hit(query: str, collection: Path) -> dict[str, object]:
    searched = run("search", query, "--collection", str(collection), "-k", "3", "--json")
    assert searched.returncode == 0, searched.stderr
    return json.loads(searched.stdout)[0]


@pytest.mark.slow
def test_index_the_news_folder_then_search_finds_a_page_and_a_feed_entry(tmp_path: Path) -> None:
    collection = tmp_path / "collection"
    indexed = run("index", str(NEWS), "--collection", str(collection), "--quiet")
    assert indexed.returncode == 0, indexed.stderr
    assert "12 added" in indexed.stdout and "4 skipped" in indexed.stdout
    assert "sportswire-broken.xml: entry 3 (id 'sportswire-2005-02-08-marathon')" in indexed.stderr

    page = top_hit("Greenspan speech lifts the dollar against the euro", collection)
    assert page["article_id"] == "courier-dollar-greenspan"
    assert page["source"] == "Northern Courier"
    assert page["url"].startswith("https://northerncourier.example/markets/")

    entry = top_hit("Google toolbar links book ISBN numbers to Amazon", collection)
    assert entry["article_id"] == "tag:northerncourier.example,2005-02-17:google-autolink"
    assert entry["source"] == "Tech Desk" and entry["date"] == "2005-02-17"
