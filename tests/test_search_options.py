"""One definition of the search options: every surface is held to `SearchOptions`.

The library's `search` and `search_batch`, the HTTP schema, both Python clients and
`retrieval search`'s flags take the same options with the same defaults. The one
deliberate difference, a terminal's worth of hits from the CLI, is pinned here too.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from retrieval.cli.main import CLI_K, build_parser
from retrieval.search.options import DEFAULTS, OPTION_NAMES, SearchOptions, option_help
from retrieval.search.retriever import Retriever
from service.client import AsyncRetrievalClient, RetrievalClient
from service.schemas import SearchOptionsIn

SIGNATURES = {
    "Retriever.search": Retriever.search,
    "Retriever.search_batch": Retriever.search_batch,
    "RetrievalClient.search": RetrievalClient.search,
    "RetrievalClient.search_batch": RetrievalClient.search_batch,
    "AsyncRetrievalClient.search": AsyncRetrievalClient.search,
    "AsyncRetrievalClient.search_batch": AsyncRetrievalClient.search_batch,
}


@pytest.mark.parametrize("name", SIGNATURES)
def test_search_methods_take_every_option_with_its_default(name):
    parameters = inspect.signature(SIGNATURES[name]).parameters
    options = {p: parameters[p].default for p in list(parameters)[2:]}  # after self, query
    assert options == {f: getattr(DEFAULTS, f) for f in OPTION_NAMES}


def test_http_schema_has_every_option_with_its_default_and_help():
    fields = SearchOptionsIn.model_fields
    assert list(fields) == list(OPTION_NAMES)
    for name in OPTION_NAMES:
        default = getattr(DEFAULTS, name)
        assert fields[name].default == default, name
        assert option_help(name) in (fields[name].description or ""), name


def test_cli_flags_default_like_the_library_but_for_k():
    args = build_parser().parse_args(["search", "anything"])
    for name in OPTION_NAMES:
        if name in ("k", "filters", "highlight"):
            continue  # k: below; filters: one flag per field; highlight: not offered
        assert getattr(args, name) == getattr(DEFAULTS, name), name
    assert args.k == CLI_K == 5 and DEFAULTS.k == 10
    assert build_parser().parse_args(["search", "x", "--no-collapse"]).collapse is False


def test_collapse_is_on_everywhere():
    """News wires repeat stories: one hit per story is what every surface answers."""
    assert DEFAULTS.collapse is True
    assert SearchOptionsIn.model_fields["collapse"].default is True


def test_every_option_has_help():
    for field in dataclasses.fields(SearchOptions):
        assert option_help(field.name).strip(), field.name
