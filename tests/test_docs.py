"""The README and docs/ say what the repository holds, and the README's quick start works.

Links and repository paths must name files that exist (a page that cites a module the
code no longer has misleads a newcomer), dotted names must import, every `retrieval ...`
line of the README must parse, and its library, HTTP and client snippets must run
against a collection built from seeds/.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import ROOT, SEEDS

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
REPO_PATH = re.compile(r"^(?:retrieval|service|tests|scripts|seeds|docs)/[\w./-]*$")
DOTTED = re.compile(r"^(?:retrieval|service)(?:\.\w+)+$")


def prose(page: Path) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", page.read_text("utf-8"))


def code_blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text("utf-8")) if lang == language]


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lowercased, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", prose(page), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_point_to_files_and_headings(page):
    for target in LINK.findall(prose(page)):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(resolved), f"{page.name}: no heading for {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_repository_paths_exist(page):
    for span in CODE_SPAN.findall(prose(page)):
        if REPO_PATH.match(span):
            assert (ROOT / span).exists(), f"{page.name} names {span}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_dotted_names_import(page):
    for span in CODE_SPAN.findall(prose(page)):
        if DOTTED.match(span):
            assert resolves(span), f"{page.name} names {span}, which does not import"


def resolves(dotted: str) -> bool:
    """True for an entry point group (`retrieval.commands`), or when some prefix of the
    name is a module and the rest its attributes."""
    if entry_points(group=dotted):
        return True
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        return True
    return False


def readme_command_lines() -> list[str]:
    blocks = [block.replace("\\\n", " ") for block in code_blocks(README, "sh")]
    lines = [line for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("retrieval ")]


def test_the_readme_shows_command_lines():
    assert len(readme_command_lines()) >= 10


@pytest.mark.parametrize("line", readme_command_lines())
def test_readme_command_lines_parse(line):
    from retrieval.cli.main import build_parser

    argv = shlex.split(line, comments=True)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"`{line}` does not parse (exit {exit_.code})")


@pytest.mark.slow
def test_readme_quick_start_runs(tmp_path, monkeypatch, capsys):
    """The library snippet builds data/news from seeds/; the HTTP and client snippets
    then run against the real app over it (in process, as the README's 127.0.0.1:8000)."""
    from starlette.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    library, client = code_blocks(README, "python")
    shutil.copytree(SEEDS, tmp_path / "seeds")
    monkeypatch.chdir(tmp_path)
    exec(compile(library, "README library snippet", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed and printed[0].startswith("1 "), "the seed article should be found"

    base = "http://127.0.0.1:8000"
    assert f'RetrievalClient("{base}")' in client
    with TestClient(create_app(Settings(collection=tmp_path / "data" / "news"))) as http:
        for path, body in readme_posts():
            answer = http.post(path, json=body)
            assert answer.status_code == 200, (path, answer.text)
        client = client.replace(f'RetrievalClient("{base}")', "RetrievalClient(http=http)")
        exec(compile(client, "README client snippet", "exec"), {"http": http})
    printed = capsys.readouterr().out.splitlines()
    assert printed and printed[0].startswith("1 ")


def readme_posts() -> list[tuple[str, object]]:
    """(path, JSON body) of each `curl -X POST` in the README's shell blocks."""
    text = "\n".join(code_blocks(README, "sh")).replace("\\\n", " ")
    posts = re.findall(r"curl -s -X POST 127\.0\.0\.1:8000(/\S+) .*?-d '([^']+)'", text)
    assert posts, "the README should show how to search over HTTP"
    return [(path, json.loads(body)) for path, body in posts]
