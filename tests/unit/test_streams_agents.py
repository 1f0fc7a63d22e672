"""What one raw record becomes (streams.agents.process) and the Faust codec: no broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from eventpipe.codec import CLEAN_EVENT, DEDUPE_NOTICE, RAW_EVENT, REJECTED_EVENT, AvroCodec
from eventpipe.ids import event_id_for
from streams.agents import Drop, EventAgent, Forward, Reject, process
from streams.codec import AvroRecordCodec, RecordSchema, Undecodable, rejected_undecodable
from streams.dedupe import table_key
from streams.outbox import Outbox
from tests.fakes import FakeTable, ScriptedPublisher

WINDOW = 3600 * 1000
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
T0_MS = 1_777_636_800_000
codec = AvroCodec()


def _message(offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic="events.raw", partition=5, offset=offset)


def raw(payload: bytes, external_id: str | None = None, at_ms: int = T0_MS) -> dict[str, Any]:
    eid = event_id_for("shop", "api", external_id)
    return {
        "event_id": eid,
        "dialect": "v2",
        "product": "shop",
        "source": "api",
        "external_id": external_id,
        "received_at": datetime.fromtimestamp(at_ms / 1000, tz=UTC),
        "payload": payload,
    }


def test_unkeyed_event_is_forwarded_as_a_clean_record_and_marks_nothing() -> None:
    r = raw(b'{"event_type":"project","action":"created"}')
    out = process(r, {}.get, WINDOW)
    assert isinstance(out, Forward)
    assert out.mark is None
    assert out.record["canonical_name"] == "project_created"
    assert out.record["received_at"] == T0_MS
    codec.encode(CLEAN_EVENT, out.record)  # the clean schema accepts it


def test_unkeyed_events_are_never_duplicates() -> None:
    seen: dict[bytes, int] = {}
    payload = b'{"event_type":"project","action":"created"}'
    assert all(isinstance(process(raw(payload), seen.get, WINDOW), Forward) for _ in range(3))


def test_keyed_event_marks_its_key_then_copies_are_dropped() -> None:
    seen: dict[bytes, int] = {}
    payload = b'{"event":"user.signed_up","external_id":"e1"}'
    first = process(raw(payload, "e1"), seen.get, WINDOW)
    assert isinstance(first, Forward)
    assert first.mark == (table_key("shop", "api", "e1"), T0_MS)
    seen[first.mark[0]] = first.mark[1]
    again = process(raw(payload, "e1", T0_MS + 5_000), seen.get, WINDOW)
    assert isinstance(again, Drop)
    assert (again.product, again.key) == ("shop", table_key("shop", "api", "e1"))
    notice = again.notice
    assert (notice["external_id"], notice["received_at"]) == ("e1", T0_MS + 5_000)
    assert notice["first_received_at"] == T0_MS, "a notice says which copy was accepted"
    assert notice["event_id"] == first.record["event_id"]
    codec.encode(DEDUPE_NOTICE, notice)
    # the very same raw record read again (redelivery) is forwarded, not dropped
    redelivered = process(raw(payload, "e1"), seen.get, WINDOW)
    assert isinstance(redelivered, Forward) and redelivered.mark is None


def test_invalid_event_is_rejected_with_field_and_reason() -> None:
    out = process(raw(b'{"event":"signup"}'), {}.get, WINDOW)
    assert isinstance(out, Reject)
    assert out.record["stage"] == "normalize"
    assert out.record["field"] == "event"
    assert "separator" in out.record["reason"]
    codec.encode(REJECTED_EVENT, out.record)


def test_unknown_dialect_is_rejected() -> None:
    r = raw(b"{}") | {"dialect": "v9"}
    out = process(r, {}.get, WINDOW)
    assert isinstance(out, Reject) and out.record["field"] == "dialect"


def test_codec_decodes_records_and_never_raises_on_bad_bytes() -> None:
    c = AvroRecordCodec(RAW_EVENT, codec)
    r = raw(b"{}")
    r["received_at"] = T0_MS
    value = c.loads(c.dumps(r))
    assert value["event_id"] == r["event_id"]
    bad = c.loads(b"\x00not avro")
    assert isinstance(bad, Undecodable) and bad.data == b"\x00not avro"
    wrong = c.loads(codec.encode(REJECTED_EVENT, rejected_undecodable(bad, "t", 0, 7, T0_MS)))
    assert isinstance(wrong, Undecodable) and "expected" in wrong.reason


def test_the_agents_topic_schema_makes_every_record_an_event_with_its_key_as_bytes() -> None:
    """A tombstone (no value) too: Faust's registry gave it as None, which crashed the agent."""
    event = lambda app, key, value, headers, message: (key, value)  # noqa: E731
    app = SimpleNamespace(conf=SimpleNamespace(Event=event))
    decode = RecordSchema(RAW_EVENT, codec).compile(app)  # type: ignore[arg-type]

    def event(value: bytes | None) -> Any:
        message = SimpleNamespace(key=b"\x01k", value=value, headers=[])
        return asyncio.run(decode(message))

    r = raw(b"{}")
    r["received_at"] = T0_MS
    key, value = event(codec.encode(RAW_EVENT, r))
    assert key == b"\x01k" and value == r
    for bad in (None, b"\x00not avro"):
        key, value = event(bad)
        assert key == b"\x01k"
        assert isinstance(value, Undecodable) and value.data == (bad or b"")
    assert "tombstone" in event(None)[1].reason


def test_undecodable_rejection_has_a_stable_id() -> None:
    u = Undecodable(b"x", "bad")
    a = rejected_undecodable(u, "events.raw", 1, 42, T0_MS)
    assert a == rejected_undecodable(u, "events.raw", 1, 42, T0_MS)
    assert a["event_id"] != rejected_undecodable(u, "events.raw", 1, 43, T0_MS)["event_id"]
    codec.encode(REJECTED_EVENT, a)


def test_one_batch_dedupes_links_and_writes_each_table_entry_to_its_partition() -> None:
    linking = b'{"event":"user.signed_up","external_id":"e1","subject_type":"user",'
    linking += b'"subject_id":"u1","properties":{"anonymous_id":"a1"}}'
    records = [
        raw(linking, "e1"),
        raw(linking, "e1", T0_MS + 1_000),  # a client's retry in the same batch: a duplicate
        raw(b'{"event":"page.viewed","properties":{"anonymous_id":"a1"}}'),
    ]
    events = [
        SimpleNamespace(value=r, key=b"k", message=_message(i)) for i, r in enumerate(records)
    ]
    publisher = ScriptedPublisher()
    seen, links = FakeTable("dedupe-changelog"), FakeTable("identity-changelog")
    agent = EventAgent(Outbox(publisher, codec, "rejected"), "clean", "ids", seen, links, WINDOW)  # type: ignore[arg-type]
    counts = asyncio.run(agent.handle(events))  # type: ignore[arg-type]

    assert counts == {"clean:": 2, "duplicate:dedupe": 1}
    clean = [codec.decode(v)[1] for t, _, v, _ in publisher.sent if t == "clean"]
    assert [c["person_id"] for c in clean] == ["u1", "u1"], "the link made earlier in the batch"
    changelogs = {(t, k, p) for t, k, _, p in publisher.sent if t.endswith("changelog")}
    assert changelogs == {
        # dedupe: its key is not the raw key, so the source record's partition
        ("dedupe-changelog", table_key("shop", "api", "e1"), 5),
        # identity: its key is the raw key, so the partitioner's choice is that partition
        ("identity-changelog", b"shop\x1fa1", -1),
    }
    assert seen == {table_key("shop", "api", "e1"): T0_MS}
    assert links == {b"shop\x1fa1": "u1"}


def test_an_event_whose_clean_record_kafka_refuses_is_rejected_and_marks_nothing() -> None:
    """The agent names each output's raw record as its origin (``Outbox.add``/``put``)."""
    traits = b'{"t":"%s"}' % (b"x" * 3_000)
    payload = b'{"event":"user.signed_up","external_id":"e1","subject_type":"user",'
    payload += b'"subject_id":"u1","properties":{"anonymous_id":"a1","traits":%s}}' % traits
    big = raw(payload, "e1")
    small = raw(b'{"event":"page.viewed","external_id":"e2"}', "e2")
    events = [
        SimpleNamespace(value=r, key=b"k", message=_message(i)) for i, r in enumerate((big, small))
    ]
    publisher = ScriptedPublisher(max_bytes=5_000)  # the big one's raw record fits, not its clean
    seen, links = FakeTable("dedupe-changelog"), FakeTable("identity-changelog")
    agent = EventAgent(Outbox(publisher, codec, "rejected"), "clean", "ids", seen, links, WINDOW)  # type: ignore[arg-type]
    asyncio.run(agent.handle(events))  # type: ignore[arg-type]

    assert publisher.refused == [("clean", big["event_id"].encode())]
    notices = [codec.decode(v)[1] for t, _, v, _ in publisher.sent if t == "rejected"]
    assert [(n["event_id"], n["stage"], n["payload"]) for n in notices] == [
        (big["event_id"], "publish", big["payload"])
    ]
    where = [(n["source_topic"], n["source_partition"], n["source_offset"]) for n in notices]
    assert where == [("events.raw", 5, 0)], "a rejection says where its raw record is"
    assert notices[0]["external_id"] == "e1", "and keeps what a redrive needs"
    assert seen == {table_key("shop", "api", "e2"): T0_MS}, "a retry of e1 is no duplicate"
    assert links == {}, "the refused event's link entry is dropped with it"
