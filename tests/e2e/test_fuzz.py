"""Schemathesis against the running stack's ``/openapi.json``: whatever it sends (valid events and,
in its negative phases, invalid ones), the edge answers below 500, and every 4xx carries
``error`` and ``message``. Bounded: ``MAX_EXAMPLES`` per operation and phase, no deadline. Plus
the auth rules: a missing, malformed or unknown key is a 401 that never echoes the key.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.conftest import Stack, Workspace

MAX_EXAMPLES = 30
BOUNDED = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
PATHS = [
    "/api/v2/events",
    "/api/v2/events/batch",
    "/v1/events",
    "/v1/batch/events",
    "/named/events",
    "/named/events/batch",
]


@pytest.fixture(scope="module")
def fuzz_ws(stack: Stack) -> Workspace:
    """A workspace whose rate limit never gets in the fuzzer's way."""
    return stack.workspace(rate_limit_per_minute=1_000_000_000)


@pytest.fixture(scope="module")
def edge_schema(stack: Stack) -> Any:
    return schemathesis.openapi.from_url(f"{stack.url}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path", PATHS)
def test_no_5xx_and_every_4xx_explains_itself(
    stack: Stack, fuzz_ws: Workspace, edge_schema: Any, path: str, mode: GenerationMode
) -> None:
    # Schemathesis's Python API with a plain Hypothesis test: its pytest loader
    # (``schemathesis.pytest.from_fixture``) does not run on pytest 9.
    auth = {"Authorization": f"Bearer {fuzz_ws.key}"}

    @given(case=edge_schema[path]["POST"].as_strategy(generation_mode=mode))
    @BOUNDED
    def check(case: schemathesis.Case) -> None:
        r = case.call(base_url=stack.url, headers=auth)
        assert r.status_code < 500, f"{case.method} {case.path}: {r.status_code} {r.text[:500]}"
        if r.status_code >= 400:
            body = r.json()
            assert isinstance(body.get("error"), str) and body["error"], r.text[:500]
            assert isinstance(body.get("message"), str) and body["message"], r.text[:500]

    check()


OTHER_OPERATIONS = [
    ("/v1/track", "POST"),
    ("/v1/batch", "POST"),
    ("/api/v2/events/{uuid}", "GET"),
    ("/api/v2/events", "GET"),
    ("/api/v1/event/category", "POST"),
    ("/api/v1/event/events", "GET"),
    ("/api/v1/resource/catalog", "GET"),
    ("/dashboard/data", "GET"),
]
"""The other routes' operations, fuzzed less (each reads ClickHouse or answers as Segment)."""


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("path", "method"), OTHER_OPERATIONS)
def test_the_other_routes_never_answer_5xx(
    stack: Stack, fuzz_ws: Workspace, edge_schema: Any, path: str, method: str, mode: GenerationMode
) -> None:
    auth = {"Authorization": f"Bearer {fuzz_ws.key}"}
    segment = path.startswith("/v1/")

    @given(case=edge_schema[path][method].as_strategy(generation_mode=mode))
    @settings(BOUNDED, max_examples=MAX_EXAMPLES // 3)
    def check(case: schemathesis.Case) -> None:
        r = case.call(base_url=stack.url, headers=auth)
        assert r.status_code < 500, f"{case.method} {case.path}: {r.status_code} {r.text[:500]}"
        if r.status_code >= 400:
            body = r.json()
            message = body.get("message")
            assert isinstance(message, str) and message, r.text[:500]
            assert body.get("success") is False if segment else body.get("error"), r.text[:500]

    check()


def test_the_document_lists_every_endpoint(stack: Stack) -> None:
    doc = stack.http.get("/openapi.json").json()
    assert set(PATHS) <= set(doc["paths"])
    assert {p for p, _ in OTHER_OPERATIONS} <= set(doc["paths"])
    for path in PATHS:
        op = doc["paths"][path]["post"]
        assert {"202", "400", "401", "413", "429", "503"} <= set(op["responses"])
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


@pytest.mark.parametrize("path", PATHS)
def test_missing_malformed_or_unknown_key_is_401_without_echo(
    stack: Stack, ws: Workspace, path: str
) -> None:
    secret = "ep_" + "s3cr3t" * 6
    for authorization in [
        None,
        "",
        "Bearer",
        f"Bearer{secret}",
        f"Basic {secret}",
        secret,
        f"Bearer {secret}",
        f"Bearer {ws.key}x",
        f"Token {ws.key}",
    ]:
        headers = {} if authorization is None else {"Authorization": authorization}
        r = stack.http.post(path, json={"events": []}, headers=headers)
        assert r.status_code == 401, (authorization, r.text)
        assert r.json()["error"] == "unauthorized" and r.json()["message"], r.text
        assert secret not in r.text and ws.key not in r.text
