"""Segment's real SDKs pointed at ``eventpipe dev``: ``segment-analytics-python`` (PyPI, in the
``test`` extra) and ``@segment/analytics-node`` (npm, ``tests/sdk/node``, installed with
``npm ci`` when its ``node_modules`` is missing).

Each sends the same calls (track with an anonymous id and a user id, identify, alias, page,
screen, group, then a burst of tracks the SDK uploads as a batch) and flushes; then the rows are
read from ClickHouse: names (canonical and original), the two links, the traits, the resolved
person of the anonymous events, the external ids, the clock-corrected backdated event.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from segment.analytics import Client

from tests.conftest import Stack, Workspace

NODE_DIR = Path(__file__).resolve().parents[1] / "sdk" / "node"
BACKDATED = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
BURST = 10
CANONICAL = {
    "order_completed": 1,
    "user_identified": 1,
    "user_aliased": 1,
    "page_viewed": 1,
    "screen_viewed": 1,
    "group_identified": 1,
    "product_viewed": BURST,
}


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """The Node SDK's folder, with its locked dependencies installed."""
    npm = shutil.which("npm")
    assert npm is not None and shutil.which("node"), "Node.js and npm are needed for this test"
    if not (NODE_DIR / "node_modules" / "@segment" / "analytics-node").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
        )
    return NODE_DIR


def _check_rows(stack: Stack, ws: Workspace) -> None:
    p = ws.product
    total = sum(CANONICAL.values())
    rows = stack.wait_for(
        f"SELECT canonical_name, name_format, external_id, user_id, anonymous_id, "
        f"JSONExtractString(properties, '$segment', 'event') AS original, occurred_at "
        f"FROM events FINAL WHERE product = '{p}'",
        lambda rs: len(rs) >= total,
    )
    assert len(rows) == total
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_name.setdefault(r["canonical_name"], []).append(r)
    assert {n: len(rs) for n, rs in by_name.items()} == CANONICAL
    assert {r["name_format"] for r in rows} == {"segment"}
    order = by_name["order_completed"][0]
    assert order["original"] == "Order Completed"
    assert order["external_id"] == f"{p}-m1", "messageId is the external id"
    assert (order["user_id"], order["anonymous_id"]) == ("u1", "a1")
    backdated = [r for r in by_name["product_viewed"] if r["occurred_at"].startswith("2024-01-01")]
    assert len(backdated) == 1, "the backdated timestamp is kept (corrected by sentAt only)"

    links = stack.wait_for(
        f"SELECT anonymous_id, user_id, status FROM identity_links FINAL WHERE product = '{p}'",
        lambda rs: len(rs) >= 2,
    )
    assert sorted((r["anonymous_id"], r["user_id"], r["status"]) for r in links) == [
        ("a1", "u1", "linked"),  # anonymousId + userId in one track
        ("a2", "u1", "linked"),  # alias previousId -> userId
    ]
    traits = stack.wait_for(
        f"SELECT user_id, trait, current_value FROM user_traits_current WHERE product = '{p}'",
        lambda rs: len(rs) >= 2,
    )
    assert {(r["user_id"], r["trait"]): json.loads(r["current_value"]) for r in traits} == {
        ("u1", "plan"): "pro",
        ("u1", "group:g1"): {"name": "Acme"},
    }
    resolved = stack.query(
        f"SELECT DISTINCT resolved_person_id FROM events_resolved "
        f"WHERE product = '{p}' AND anonymous_id = 'a2' AND canonical_name = 'product_viewed'"
    )
    assert resolved == [{"resolved_person_id": "u1"}], "the aliased anonymous id resolves"
    assert stack.query(f"SELECT reason FROM rejected_events WHERE product = '{p}'") == []


def test_the_python_sdk_sends_every_call(stack: Stack, ws: Workspace) -> None:
    errors: list[str] = []
    client = Client(
        write_key=ws.key,
        host=stack.url,
        gzip=True,  # as the Kotlin SDK always does
        max_retries=3,
        upload_interval=0.2,
        on_error=lambda exc, batch: errors.append(repr(exc)),
    )
    p = ws.product
    client.track(
        user_id="u1",
        anonymous_id="a1",
        event="Order Completed",
        properties={"revenue": 9.5},
        message_id=f"{p}-m1",
    )
    client.identify(user_id="u1", traits={"plan": "pro"})
    client.alias(previous_id="a2", user_id="u1")
    client.page(user_id="u1", category="Docs", name="Pricing", properties={"path": "/pricing"})
    client.screen(user_id="u1", name="Home")
    client.group(user_id="u1", group_id="g1", traits={"name": "Acme"})
    for i in range(BURST):
        client.track(
            anonymous_id="a2",
            event="Product Viewed",
            properties={"i": i},
            timestamp=BACKDATED if i == 0 else None,
        )
    client.flush()
    client.shutdown()
    assert errors == []
    _check_rows(stack, ws)


def test_the_node_sdk_sends_every_call(stack: Stack, ws: Workspace, node_sdk: Path) -> None:
    p = ws.product
    calls: list[tuple[str, dict[str, Any]]] = [
        (
            "track",
            {
                "userId": "u1",
                "anonymousId": "a1",
                "event": "Order Completed",
                "properties": {"revenue": 9.5},
                "messageId": f"{p}-m1",
            },
        ),
        ("identify", {"userId": "u1", "traits": {"plan": "pro"}}),
        ("alias", {"previousId": "a2", "userId": "u1"}),
        ("page", {"userId": "u1", "category": "Docs", "name": "Pricing"}),
        ("screen", {"userId": "u1", "name": "Home"}),
        ("group", {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}}),
        *(
            (
                "track",
                {
                    "anonymousId": "a2",
                    "event": "Product Viewed",
                    "properties": {"i": i},
                    **({"timestamp": BACKDATED.isoformat()} if i == 0 else {}),
                },
            )
            for i in range(BURST)
        ),
    ]
    plan = {"writeKey": ws.key, "host": stack.url, "calls": calls, "flushAt": 20}
    done = subprocess.run(
        ["node", "send.mjs"],
        cwd=node_sdk,
        input=json.dumps(plan).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = json.loads(done.stdout)
    assert report["errors"] == []
    assert report["statuses"] and set(report["statuses"]) == {200}
    _check_rows(stack, ws)
