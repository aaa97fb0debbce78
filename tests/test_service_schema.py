"""Property-based run of the service against its own OpenAPI schema (schemathesis).

Every operation, writes included (on a private collection, writes open), with generated
valid and invalid requests, in process over ASGI: no response may be a server error.
Examples are bounded so the whole run stays well under a minute.

The operations are driven with plain hypothesis `@given` over each operation's strategy
rather than schemathesis's pytest plugin, whose fixture loader does not run on pytest 9.
"""

from __future__ import annotations

import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from service_fixtures import build_collection

from service.app import create_app
from service.settings import Settings

MAX_EXAMPLES = 30


def cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every operation, read from an app that loads nothing.

    Invalid (negative) requests only where there is something to get wrong: a body or a
    typed parameter. An operation taking no input, or any string, has no invalid form.
    """
    schema = create_app(Settings(collection=tempfile.gettempdir())).openapi()
    out = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            out.append((method.upper(), path, GenerationMode.POSITIVE))
            parameters = operation.get("parameters", [])
            typed = [p for p in parameters if p["schema"].get("type") != "string"]
            if "requestBody" in operation or typed:
                out.append((method.upper(), path, GenerationMode.NEGATIVE))
    return out


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, embedder, seed_articles):
    path = build_collection(tmp_path_factory.mktemp("schema") / "c", embedder, seed_articles)
    # schemathesis runs the app's lifespan itself, once for the module.
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(Settings(collection=path)))


@pytest.mark.parametrize(("method", "path", "mode"), cases())
def test_no_request_makes_a_server_error(api_schema, method, path, mode):
    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(checks=[not_a_server_error])

    check()
