"""A small, known mix of traffic for the dashboard tests: events of four names, a duplicate, an
identity link, and rejections, with what the rollups must then say about it."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.conftest import Stack, Workspace


@dataclass(frozen=True)
class Sent:
    events: dict[str, int]
    """canonical name -> events stored (the duplicate excluded)."""
    persons: int
    """Distinct persons once identities are resolved."""
    links: int
    duplicates: int
    rejected_segment: int


def send_traffic(ws: Workspace) -> Sent:
    checkouts = [
        {"event": "checkout.completed", "subject_type": "user", "subject_id": f"u{i % 3 + 1}"}
        for i in range(6)
    ]
    visits = [{"event": "page.viewed", "properties": {"anonymous_id": "a1"}} for _ in range(4)]
    login = {
        "event": "user.signed_up",
        "subject_type": "user",
        "subject_id": "u1",
        "properties": {"anonymous_id": "a1"},  # links a1 -> u1: the visits are u1's
    }
    r = ws.post("/api/v2/events/batch", {"events": [*checkouts, *visits, login]})
    assert r.status_code == 202, r.text
    refund = {"event": "order.refunded", "subject_type": "user", "subject_id": "u2"}
    for _ in range(2):  # a client's retry: the second is dropped as a duplicate
        r = ws.post("/api/v2/events", {**refund, "external_id": f"{ws.product}-refund"})
        assert r.status_code == 202, r.text
    bad = {"batch": [{"type": "track", "event": "Order Completed", "messageId": "no-user"}]}
    r = ws.post("/v1/batch", content=json.dumps(bad).encode())
    assert r.status_code == 200, r.text
    return Sent(
        events={
            "checkout_completed": 6,
            "page_viewed": 4,
            "user_signed_up": 1,
            "order_refunded": 1,
        },
        persons=3,
        links=1,
        duplicates=1,
        rejected_segment=1,
    )


def wait_for_rollups(stack: Stack, ws: Workspace, sent: Sent) -> None:
    """Until the rollups hold every event, the duplicate and the rejection."""
    p = ws.product
    want = sum(sent.events.values())
    stack.wait_for(
        "SELECT toUInt64(sum(n)) AS n FROM (SELECT uniqCombinedMerge(14)(events) AS n "
        f"FROM events_minutely WHERE product = '{p}' GROUP BY canonical_name)",
        lambda rs: rs[0]["n"] >= want,
    )
    stack.wait_for(
        f"SELECT stage, sum(rejected) AS n FROM rejections_hourly WHERE product = '{p}' "
        "GROUP BY stage",
        lambda rs: sum(r["n"] for r in rs) >= sent.duplicates + sent.rejected_segment,
    )
    stack.wait_for(
        f"SELECT 1 FROM identity_links_daily WHERE product = '{p}'", lambda rs: len(rs) > 0
    )
