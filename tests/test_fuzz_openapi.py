"""Every operation of /api/openapi.json fuzzed by schemathesis against the WSGI app.

Valid and invalid inputs generated from the spec (query strings, path ids, JSON
bodies of every shape) must never give a 5xx, and every response must match the
spec: a documented status, the documented content type and the response schema.
The app runs on ``toy_services()`` fakes (in-memory state, recording publisher);
the rate limit is off so that the generated flood is answered, not refused.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app
from api.openapi import SPEC
from tests.fakes import toy_services

#: Examples per operation and mode: bounded so the file runs in well under 60 s.
EXAMPLES = int(os.environ.get("STREAMREC_FUZZ_EXAMPLES", "40"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
def fuzzed_app() -> Flask:
    services = toy_services()
    settings_ = services.settings.model_copy(update={"rate_limit_per_s": 0.0})
    app = create_app(settings_, services=services)
    app.config["TESTING"] = True
    return app


#: (path, method, generation mode): invalid inputs only where there is an input to spoil.
CASES = [
    pytest.param(path, method.upper(), mode, id=f"{mode.value}-{method.upper()} {path}")
    for path, ops in SPEC["paths"].items()
    for method, op in ops.items()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or op.get("parameters") or op.get("requestBody")
]


@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_no_operation_answers_5xx_or_off_spec(
    fuzzed_app: Flask, path: str, method: str, mode: GenerationMode,
) -> None:
    # Driven by hand (not schemathesis' pytest plugin, which does not run on pytest 9).
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", fuzzed_app)
    operation = schema[path][method]

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    check()


def test_the_spec_lists_every_json_route_of_the_app(fuzzed_app: Flask) -> None:
    """An endpoint missing from the spec would escape the fuzzing above."""
    routes = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in fuzzed_app.url_map.iter_rules()
        if rule.rule.startswith("/api/") and rule.rule != "/api/openapi.json"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, ops in SPEC["paths"].items() for method in ops}
    assert routes <= documented, routes - documented
