"""The search page in a real headless browser, against the real service on 127.0.0.1.

Chromium and chromedriver come from Debian (`make browser`, which `.ci/run` calls); the
tests skip only where neither is installed. The service runs in a thread of this process
(uvicorn on a socket bound to a free port), over a collection indexed from seeds/.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_fixtures import NEWS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "no headless browser: install Debian's chromium and chromium-driver (`make browser`)",
        allow_module_level=True,
    )

import httpx2  # noqa: E402 - only once a browser is known to be there
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

PHONE_CALL = "phone call between the Cuban and Chinese presidents"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
)  # fmt: skip
WAIT_S = 20


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, embedder, seed_articles) -> Iterator[str]:
    """The real service, serving a collection of the seed articles, on a free port."""
    import uvicorn

    from retrieval.collection.collection import Collection
    from service.app import create_app
    from service.settings import Settings

    path = tmp_path_factory.mktemp("page") / "collection"
    with Collection.open(path, embedder) as collection:
        collection.add_articles([*seed_articles, *NEWS])
    server = uvicorn.Server(
        uvicorn.Config(create_app(Settings(collection=path)), log_level="warning")
    )
    sock = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver) -> WebDriverWait[Any]:
    return WebDriverWait(driver, WAIT_S)


def submit_search(driver: WebDriver, base_url: str, query: str, mode: str = "dense") -> None:
    driver.get(base_url + "/")
    box = driver.find_element(By.ID, "query")
    assert driver.switch_to.active_element == box, "the query box should have the focus"
    driver.find_element(By.CSS_SELECTOR, f"#mode option[value='{mode}']").click()
    box.send_keys(query, Keys.ENTER)


def test_a_query_finds_the_passage_with_its_sentence_marked(browser, base_url, seed_articles):
    seed = seed_articles[0]
    submit_search(browser, base_url, PHONE_CALL)
    first = wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#results > li:first-child"))
    )
    title = first.find_element(By.CSS_SELECTOR, "h2 a")
    passage = first.find_element(By.CSS_SELECTOR, ".passage")
    text = passage.text
    assert title.text == seed.title
    assert "by telephone" in text and "Diaz-Canel" in text
    marked = passage.find_element(By.TAG_NAME, "mark").text
    assert marked and marked in text and len(marked) < len(text)
    assert "Diaz-Canel" in marked  # the sentence about the call, not another one
    meta = first.find_element(By.CSS_SELECTOR, ".meta").text
    assert "#1" in meta and "2021" in meta and re.search(r"score \d\.\d{3}\b", meta)
    assert re.match(r"\d+ passages? \(dense, \d+ ms\)", browser.find_element(By.ID, "status").text)

    title.click()  # the whole-article view, the found passage outlined
    heading = wait(browser).until(ec.visibility_of_element_located((By.ID, "article-title")))
    assert heading.text == seed.title
    found = browser.find_element(By.CSS_SELECTOR, ".found-passage")
    assert " ".join(found.text.split()) == " ".join(text.split())
    assert found.find_element(By.TAG_NAME, "mark").text == marked
    assert browser.find_element(By.ID, "article-text").text.startswith(seed.text[:40])


def test_no_match_and_server_errors_are_said_on_the_page(browser, base_url):
    submit_search(browser, base_url, "zzyzx qwvbn", mode="lexical")  # BM25: no shared word
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"), "No passages match"))
    assert browser.find_elements(By.CSS_SELECTOR, "#results > li") == []

    # Past the box's maxlength (a script can do it): the service's own message shows.
    browser.execute_script("document.getElementById('query').value = 'word '.repeat(3000)")
    browser.find_element(By.ID, "submit").click()
    error = wait(browser).until(ec.visibility_of_element_located((By.ID, "error")))
    assert "query" in error.text.lower() and "{" not in error.text


def test_server_text_is_shown_as_text_never_as_html(browser, base_url):
    trap = "<img src=x onerror=\"document.title='pwned'\"> Marmalade <b>bold</b>"
    article = {"id": "trap", "title": trap, "text": f"{trap} marmalade factory output rose."}
    added = httpx2.post(f"{base_url}/articles", json={"articles": [article]}, timeout=30)
    assert added.status_code == 200, added.text
    submit_search(browser, base_url, "marmalade", mode="lexical")
    first = wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#results > li:first-child"))
    )
    assert first.find_element(By.CSS_SELECTOR, "h2 a").text == trap
    assert first.find_elements(By.TAG_NAME, "img") == []
    assert first.find_elements(By.TAG_NAME, "b") == []
    assert browser.title != "pwned"


def test_min_score_and_date_order_come_from_the_address(browser, base_url):
    # Dense: a cosine floor means the same for every query (a hybrid score does not).
    browser.get(base_url + "/?q=floods+from+heavy+rain&mode=dense&min_score=0.3&sort=date")
    wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#results > li:first-child"))
    )
    hits = browser.find_elements(By.CSS_SELECTOR, "#results > li")
    titles = [hit.find_element(By.CSS_SELECTOR, "h2 a").text for hit in hits]
    assert titles == ["River floods town", "Storms hit the coast"]  # 12 Jan, then 10 Jan
    assert browser.find_element(By.ID, "min-score").get_attribute("value") == "0.3"
    assert browser.find_element(By.ID, "sort").get_attribute("value") == "date"

    browser.get(base_url + "/?q=floods+from+heavy+rain&mode=dense&min_score=0.99")  # none
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"), "at least 0.99"))
    assert browser.find_elements(By.CSS_SELECTOR, "#results > li") == []


def test_the_article_view_lists_related_articles(browser, base_url):
    browser.get(base_url + "/static/article.html?id=rain")
    first = wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#related-list > li:first-child a"))
    )
    items = browser.find_elements(By.CSS_SELECTOR, "#related-list > li")
    ids = [item.get_attribute("data-article-id") for item in items]
    assert ids[0] == "flood" and "rain" not in ids and len(ids) == len(set(ids))
    assert first.text == "River floods town"
    assert re.search(r"score -?\d\.\d{3}", items[0].text)
    first.click()  # the related article's own view, with its own related list
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "article-title"), "River"))
    wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#related-list > li:first-child"))
    )
    assert browser.find_element(By.CSS_SELECTOR, "#related-list > li").get_attribute(
        "data-article-id"
    ) == "rain"


def test_the_page_is_served_with_its_assets(base_url):
    page = httpx2.get(base_url + "/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', page.text):
        assert httpx2.get(f"{base_url}/{asset}", timeout=10).status_code == 200, asset
    assert httpx2.get(base_url + "/static/article.html", timeout=10).status_code == 200


STATIC = Path(__file__).resolve().parent.parent / "service" / "static"


def test_no_server_string_goes_through_inner_html():
    scripts = "\n".join(p.read_text() for p in STATIC.glob("*.js"))
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", scripts)


def test_copies_are_folded_into_one_result_unless_asked_not_to(browser, base_url):
    # Last in the module: the copy it adds joins "rain"'s duplicate group.
    copy = {"id": "rain-copy", "title": "Coast hit by storms", "source": "other wire",
            "text": "Heavy rain flooded roads along the coast on Monday.\n\n"
                    "Emergency crews rescued drivers from stranded cars."}
    added = httpx2.post(f"{base_url}/articles", json={"articles": [copy]}, timeout=30)
    assert added.status_code == 200, added.text
    browser.get(base_url + "/?q=heavy+rain+flooded+coastal+roads&k=3")
    first = wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#results > li:first-child"))
    )
    copies = first.find_element(By.CSS_SELECTOR, ".copies")
    assert copies.text.startswith("and 1 copy (")
    other = copies.find_element(By.TAG_NAME, "a")
    assert other.text in ("rain", "rain-copy") and other.text in other.get_attribute("href")
    assert browser.find_element(By.ID, "collapse").is_selected()

    browser.find_element(By.ID, "collapse").click()  # off: every article on its own
    browser.find_element(By.ID, "submit").click()
    wait(browser).until(lambda driver: "collapse=0" in driver.current_url)
    wait(browser).until(lambda driver: not driver.find_elements(By.CSS_SELECTOR, ".copies"))
    hits = browser.find_elements(By.CSS_SELECTOR, "#results > li")
    titles = {hit.find_element(By.CSS_SELECTOR, "h2 a").text for hit in hits}
    assert {"Storms hit the coast", "Coast hit by storms"} <= titles
