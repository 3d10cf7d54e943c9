"""The OpenAPI document tells the truth: schemathesis generates requests from it against the real app
(the tiny model behind it, with and without an API key) and checks every answer against it, on every route."""

import pytest
import schemathesis
from helpers import SERVER_KEY
from hypothesis import HealthCheck, Phase, settings  # hypothesis comes with schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          positive_data_acceptance]


@pytest.fixture(scope="module", params=[SERVER_KEY, None], ids=["with-key", "without-key"])
def api_schema(request, tiny_generator):
    from chatgentitle.serving.app import create_app

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app([tiny_generator], api_key=request.param))
    schema.key = request.param
    return schema


ROUTES = [("GET", "/health"), ("POST", "/v1/titles"), ("GET", "/v1/models"), ("POST", "/v1/completions"),
          ("POST", "/v1/chat/completions")]


def test_every_route_is_fuzzed(api_schema):
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert found == set(ROUTES)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_schemathesis(api_schema, method, path):
    """>= 100 generated requests per route, every check clean."""
    from hypothesis import given

    @given(case=api_schema[path][method].as_strategy())
    @settings(max_examples=100, deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        # a phrase's length in tokens is not in the schema: a phrase that cannot fit max_new_tokens is a 422
        checks = [c for c in CHECKS if c is not positive_data_acceptance or not _has_phrases(case.body)]
        case.call_and_validate(headers={"Authorization": f"Bearer {api_schema.key}"} if api_schema.key else {},
                               checks=checks)

    fuzz()


def _has_phrases(body) -> bool:
    if not isinstance(body, dict):
        return False
    options = body.get("options")
    return bool(body.get("include") or (isinstance(options, dict) and options.get("include")))
