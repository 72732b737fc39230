"""Schemathesis over the server's own ``/openapi.json``: generated requests to every
operation (bounded examples) never get a 5xx, and every documented answer fits its schema."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from serve_support import serving, write_apps

#: A workflow app, a chat app and one that pauses for input.
APPS = ("greet", "notes", "review")
EXAMPLES = 8


def test_no_server_error_and_answers_fit_the_schema(tmp_path: Path) -> None:
    with serving(write_apps(tmp_path / "apps", APPS), tmp_path / "runs.db") as served:
        root = served.url.removesuffix("/v1")
        schema = schemathesis.openapi.from_url(root + "/openapi.json")
        operations = [found.ok() for found in schema.get_all_operations()]
        assert len(operations) >= 18
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                for app in APPS:
                    case.call_and_validate(base_url=root, headers={"X-Cellwire-App": app,
                                                    "Authorization": f"Bearer {served.key}"},
                                           checks=[not_a_server_error,
                                                   response_schema_conformance], timeout=30)

            check()
