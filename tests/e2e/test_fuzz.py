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
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        r = case.call(base_url=stack.url, headers=auth)
        assert r.status_code < 500, f"{case.method} {case.path}: {r.status_code} {r.text[:500]}"
        if r.status_code >= 400:
            body = r.json()
            assert isinstance(body.get("error"), str) and body["error"], r.text[:500]
            assert isinstance(body.get("message"), str) and body["message"], r.text[:500]

    check()


def test_the_document_lists_the_six_endpoints(stack: Stack) -> None:
    doc = stack.http.get("/openapi.json").json()
    assert sorted(doc["paths"]) == sorted(PATHS)
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
