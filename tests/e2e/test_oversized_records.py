"""One record too large for Kafka never stops the pipeline (issue 12).

The "pill": a v1 event whose ``properties.traits`` holds ten 60,000-character strings. Its raw
record (~600 KB) is within ``EVENTPIPE_MAX_EVENT_BYTES``, but its clean record carries the traits
twice (``properties`` and ``traits``), ~1.2 MB, over the producers' ``message.max.bytes``. The
edge refuses it (413 naming the field), and a raw record that bypasses the edge (an older edge,
a replay) becomes a ``rejected_events`` row while everything behind it still lands.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson

from eventpipe.codec import AvroCodec
from eventpipe.identity import identity_key
from eventpipe.ids import event_id_for
from eventpipe.kafka import MESSAGE_MAX_BYTES, producer_config
from eventpipe.publisher import KafkaPublisher
from eventpipe.settings import Settings
from eventpipe.topics import RAW
from tests.conftest import Stack, Workspace

TS = "2026-03-15T14:20:00Z"
FOLLOWERS = 100


def pill(user_id: str, traits: int = 10) -> dict[str, Any]:
    big = {f"t{i}": "x" * 60_000 for i in range(traits)}
    return {"event": "profile.updated", "user_id": user_id, "timestamp": TS, "properties": {
        "traits": big}}  # fmt: skip


def followers(stack: Stack, users: list[str], ws: Workspace | None = None) -> Workspace:
    """Send one small v1 event per user (a batch, so the rate limit is one request), from
    another workspace unless ``ws`` is given; return the workspace."""
    ws = ws or stack.workspace()
    events = [{"event": "page.viewed", "user_id": u, "timestamp": TS} for u in users]
    r = ws.post("/v1/batch/events", {"events": events})
    assert r.status_code == 202 and r.json()["accepted"] == len(users), r.text
    return ws


def wait_for_events(stack: Stack, ws: Workspace, n: int) -> None:
    stack.wait_for(
        f"SELECT count() AS n FROM events WHERE product = '{ws.product}'",
        lambda rs: rs[0]["n"] >= n,
    )


def test_the_pill_is_refused_at_the_edge_naming_the_field_and_others_still_land(
    stack: Stack, ws: Workspace
) -> None:
    r = ws.post("/v1/events", pill("u-pill"))
    assert r.status_code == 413, r.text[:300]
    body = r.json()
    assert body["error"] == "payload_too_large" and body["field"] == "properties.traits", body
    assert "stored twice" in body["message"] and len(r.content) < 4096, body

    small = {"event": "page.viewed", "user_id": "u-ok", "timestamp": TS}
    r = ws.post("/v1/batch/events", {"events": [small, pill("u-pill")]})
    assert r.status_code == 202, r.text[:300]
    assert r.json()["accepted"] == 1 and r.json()["errors"][0]["index"] == 1, r.text[:300]
    assert r.json()["errors"][0]["reason"].startswith("properties.traits: "), r.text[:300]

    others = followers(stack, [f"u{i}" for i in range(FOLLOWERS)])
    wait_for_events(stack, others, FOLLOWERS)
    wait_for_events(stack, ws, 1)
    assert stack.query(f"SELECT count() AS n FROM rejected_events WHERE product = '{ws.product}'")[
        0
    ]["n"] == 0, "the refused pill never reached Kafka"  # fmt: skip


def test_a_raw_record_whose_clean_record_kafka_refuses_is_rejected_and_the_rest_lands(
    stack: Stack, ws: Workspace, backend_env: dict[str, str]
) -> None:
    """As an older edge or a replay would: the raw record goes to ``events.raw`` directly, with
    the project's own codec and publisher, so the edge's check never sees it."""
    payload = orjson.dumps(pill("u-pill", traits=9))
    received_ms = 1_773_584_400_000
    event_id = event_id_for(ws.product, "api", None)
    value = AvroCodec().raw_encoder("v1", ws.product, "api", received_ms)(event_id, None, payload)
    key = identity_key(ws.product, None, "u-pill", event_id)
    assert len(key) + len(value) < MESSAGE_MAX_BYTES < 2 * len(payload), "raw fits, clean not"

    state = json.loads((stack.data_dir / "dev.json").read_text())
    settings = Settings(kafka_bootstrap=state["kafka_bootstrap"])
    publisher = KafkaPublisher(producer_config(settings, log_level=0))  # none once it stops
    try:
        topic = backend_env.get("EVENTPIPE_TOPIC_PREFIX", "") + RAW
        failures = asyncio.run(publisher.publish(topic, [(key, value)]))
        assert failures == [None], failures
    finally:
        publisher.close()

    # Behind it: the same user (its partition: same identity key) and 100 others (every one).
    followers(stack, ["u-pill"] * 3, ws)
    others = followers(stack, [f"u{i}" for i in range(FOLLOWERS)])
    wait_for_events(stack, others, FOLLOWERS)
    wait_for_events(stack, ws, 3)
    rows = stack.wait_for(
        f"SELECT stage, field, reason, length(payload) AS n FROM rejected_events "
        f"WHERE event_id = '{event_id}'",
        lambda rs: len(rs) >= 1,
    )
    assert rows[0]["stage"] == "publish" and rows[0]["n"] == len(payload), rows[0]
    assert "events.clean refused the record (" in rows[0]["reason"], rows[0]
    assert "MSG_SIZE_TOO_LARGE" in rows[0]["reason"], rows[0]
    assert stack.query(f"SELECT 1 FROM events WHERE event_id = '{event_id}'") == []
