"""A missing optional library is a clear error naming the extra to install, never a traceback.

An import is made to fail by a `None` entry in `sys.modules`, the way Python itself marks
a module that cannot be imported: the boundary between this project and its environment.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from retrieval.errors import MissingDependencyError
from retrieval.ingestion.loaders import load_file
from retrieval.models.backends import make_embedder

ROOT = Path(__file__).resolve().parents[1]
NEWS = Path(__file__).resolve().parent / "data" / "news"


def forget(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Drop our modules that import the blocked library, so that they import it again."""
    for name in modules:
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_html_indexing_without_lxml_html_clean_says_which_extra_to_install(tmp_path):
    # pip < 24 does not add lxml's html_clean extra to an lxml already installed, so
    # trafilatura (through justext) fails to import: the reported setup, reproduced.
    script = (
        "import sys\n"
        "sys.modules['lxml_html_clean'] = None\n"
        "from retrieval.cli.main import main\n"
        f"sys.exit(main(['index', {str(NEWS / 'ledger-flash-quake.html')!r}, "
        f"'--collection', {str(tmp_path / 'c')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: reading HTML pages needs trafilatura" in done.stderr
    assert "pip install 'retrieval[engine]'" in done.stderr
    assert "lxml_html_clean" in done.stderr  # the cause, as the import gave it


def test_a_feed_without_feedparser_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "feedparser", None)
    forget(monkeypatch, "retrieval.ingestion.feeds")
    with pytest.raises(MissingDependencyError, match=r"reading feeds needs feedparser.*"
                       r"pip install 'retrieval\[engine\]'"):
        load_file(NEWS / "ledger-business.rss")


def test_a_feed_without_inscriptis_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "inscriptis", None)
    forget(monkeypatch, "retrieval.ingestion.feeds")
    with pytest.raises(MissingDependencyError, match=r"needs feedparser and inscriptis"):
        load_file(NEWS / "ledger-business.rss")


@pytest.mark.parametrize("backend", ["openvino-int8", "openvino-fp32"])
def test_an_openvino_backend_without_openvino_names_the_fast_extra(monkeypatch, backend):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=rf"the {backend} backend needs openvino.*"
                       r"pip install 'retrieval\[fast\]'"):
        make_embedder(backend)


def test_the_engine_extra_declares_what_trafilatura_needs_through_an_extra():
    # justext asks for lxml[html_clean]; an older pip skips that extra when lxml is already
    # installed, so the engine extra names lxml_html_clean itself.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"][
        "optional-dependencies"]
    declared = {requirement.split(">")[0].split("=")[0] for requirement in extras["engine"]}
    assert {"trafilatura", "lxml_html_clean", "feedparser", "inscriptis"} <= declared
