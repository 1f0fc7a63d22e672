"""The replay's rules (``replay.rules``) and selection (``replay.select``): no broker, no
ClickHouse (a store of dicts stands in for ``sinks.store.EventStore``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from eventpipe.ids import event_id_for
from eventpipe.suppression import Suppression
from replay.report import resume_hint
from replay.rules import Rules, compare, rekeyed
from replay.select import Range, Selection, SelectionError, parse_resume, parse_time
from sinks.store import ROW_COLUMNS
from streams.agents import Forward, process

WINDOW = 3600 * 1000
T0_MS = 1_777_636_800_000


class FakeStore:
    def __init__(self) -> None:
        self.stored: dict[str, list[dict[str, Any]]] = {}
        self.first_links: dict[tuple[str, str], str] = {}
        self.rejected: set[tuple[str, str, str]] = set()
        self.suppressed: list[Suppression] = []

    def suppressions(self) -> list[Suppression]:
        return self.suppressed

    def now_ms(self) -> int:
        return T0_MS

    def rows(self, ids: Mapping[str, Sequence[str]]) -> dict[str, list[dict[str, Any]]]:
        return {i: self.stored[i] for v in ids.values() for i in v if i in self.stored}

    def links(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        return {k: self.first_links[k] for k in keys if k in self.first_links}

    def rejections(self, ids: Mapping[str, Sequence[str]]) -> set[tuple[str, str, str]]:
        return self.rejected

    def delete_superseded(self, product: str, ids: Sequence[str], since_ms: int) -> int:
        return 0

    def delete_events(self, product: str, ids: Sequence[str]) -> int:
        return 0


def test_a_replay_rejects_a_forgotten_persons_events_as_the_worker_does() -> None:
    store = FakeStore()
    store.suppressed = [Suppression.of("shop", "u1", ["a1"], T0_MS)]
    theirs = raw({"event": "page_viewed", "user_id": "u1"}, "k1")
    anonymous = raw({"event": "page_viewed", "anonymous_id": "a1"}, "k2")
    other = raw({"event": "page_viewed", "user_id": "u2"}, "k3")
    plan = Rules(store, WINDOW).plan([theirs, anonymous, other])
    assert [r["event_id"] for r, _ in plan.clean] == [other["event_id"]]
    assert [r["stage"] for r in plan.rejections] == ["suppressed", "suppressed"]
    assert all(r["payload"] == b"" and r["external_id"] is None for r in plan.rejections)


def raw(body: dict[str, Any], external_id: str | None = None, at_ms: int = T0_MS) -> dict[str, Any]:
    return {
        "event_id": event_id_for("shop", "api", external_id),
        "dialect": "v1",
        "product": "shop",
        "source": "api",
        "external_id": external_id,
        "received_at": at_ms,
        "payload": orjson.dumps({"timestamp": "2026-05-01T12:00:00Z", **body}),
    }


def stored_row(r: dict[str, Any]) -> dict[str, Any]:
    """The row the live worker stored for ``r`` (no link known then)."""
    out = process(r, {}.get, WINDOW)
    assert isinstance(out, Forward)
    record = dict(out.record)
    return {c: record[c] for c in ROW_COLUMNS}


def test_an_unchanged_row_is_identical_and_not_written() -> None:
    store, r = FakeStore(), raw({"event": "page_viewed", "user_id": "u1"})
    store.stored[r["event_id"]] = [stored_row(r)]
    rules = Rules(store, WINDOW)
    plan = rules.plan([r])
    assert plan.clean == [] and rules.summary.identical == 1


def test_a_missing_row_is_new_even_for_a_keyed_event() -> None:
    """#4902: nothing in the store means written, whatever a live dedupe table knows."""
    rules = Rules(FakeStore(), WINDOW)
    plan = rules.plan([raw({"event": "order_paid", "user_id": "u1"}, external_id="o1")])
    assert len(plan.clean) == 1 and rules.summary.new == 1


def test_a_replayed_keyed_event_is_a_redelivery_of_itself_never_a_duplicate() -> None:
    store, r = FakeStore(), raw({"event": "order_paid", "user_id": "u1"}, external_id="o1")
    store.stored[r["event_id"]] = [stored_row(r)]
    rules = Rules(store, WINDOW)
    rules.plan([r])
    assert rules.summary.duplicates == 0 and rules.summary.identical == 1


def test_a_client_retry_is_a_duplicate_of_the_stored_copy() -> None:
    store = FakeStore()
    first = raw({"event": "order_paid", "user_id": "u1"}, external_id="o1")
    store.stored[first["event_id"]] = [stored_row(first)]
    retry = raw({"event": "order_paid", "user_id": "u1"}, external_id="o1", at_ms=T0_MS + 5000)
    rules = Rules(store, WINDOW)
    assert rules.plan([retry]).clean == []
    assert rules.summary.duplicates == 1


def test_a_retry_after_a_missing_first_copy_is_dropped_once_the_first_is_replayed() -> None:
    first = raw({"event": "order_paid", "user_id": "u1"}, external_id="o1")
    retry = raw({"event": "order_paid", "user_id": "u1"}, external_id="o1", at_ms=T0_MS + 5000)
    rules = Rules(FakeStore(), WINDOW)
    assert len(rules.plan([first]).clean) == 1
    assert rules.plan([retry]).clean == [], "the first batch's key is remembered"
    assert (rules.summary.new, rules.summary.duplicates) == (1, 1)


def test_a_stored_link_is_never_repointed() -> None:
    store = FakeStore()
    store.first_links[("shop", "device-1")] = "alice"
    rules = Rules(store, WINDOW)
    login = raw({"event": "page_viewed", "anonymous_id": "device-1", "user_id": "mallory"})
    anon = raw({"event": "page_viewed", "anonymous_id": "device-1"})
    plan = rules.plan([login, anon])
    assert [link["status"] for _, link, _ in plan.links] == ["conflict"]
    persons = {rec["event_id"]: rec["person_id"] for rec, _ in plan.clean}
    assert persons[anon["event_id"]] == "alice", "resolved through the stored first link"
    assert rules.summary.links_new == 0


def test_a_link_made_by_the_replay_is_first_for_the_rest_of_it() -> None:
    rules = Rules(FakeStore(), WINDOW)
    login = raw({"event": "page_viewed", "anonymous_id": "device-2", "user_id": "bob"})
    later = raw({"event": "page_viewed", "anonymous_id": "device-2", "user_id": "eve"})
    first = rules.plan([login])
    second = rules.plan([later])
    assert [link["status"] for _, link, _ in first.links + second.links] == ["linked", "conflict"]


def test_a_new_link_changes_the_person_of_an_anonymous_row() -> None:
    store = FakeStore()
    anon = raw({"event": "page_viewed", "anonymous_id": "device-3"})
    store.stored[anon["event_id"]] = [stored_row(anon)]
    store.first_links[("shop", "device-3")] = "carol"
    rules = Rules(store, WINDOW)
    plan = rules.plan([anon])
    assert [rec["person_id"] for rec, _ in plan.clean] == ["carol"]
    assert rules.summary.changed_columns == {"person_id": 1}
    assert plan.changed == {"shop": [anon["event_id"]]}


def test_a_rejection_already_stored_is_counted_not_written_again() -> None:
    store, bad = FakeStore(), raw({"event": "Not A Name", "user_id": "u1"})
    rules = Rules(store, WINDOW)
    first = rules.plan([bad])
    assert len(first.rejections) == 1
    rejection = first.rejections[0]
    store.rejected.add((rejection["event_id"], rejection["stage"], rejection["reason"]))
    again = Rules(store, WINDOW)
    assert again.plan([bad]).rejections == []
    assert sum(again.summary.rejected.values()) == 1 and again.summary.rejections_new == 0


def test_two_stored_copies_count_as_changed() -> None:
    r = raw({"event": "page_viewed", "user_id": "u1"})
    row = stored_row(r)
    assert compare(row, [row]) == []
    assert compare(row, [row, {**row, "canonical_name": "old_name"}]) == ["copies"]
    assert compare(row, []) is None


NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("now", T0_MS),
        ("-2h", T0_MS - 2 * 3600_000),
        ("-30m", T0_MS - 30 * 60_000),
        ("-7d", T0_MS - 7 * 86400_000),
        ("2026-05-01T11:00:00", T0_MS - 3600_000),
        ("2026-05-01T13:00:00+02:00", T0_MS - 3600_000),
        ("2026-05-01T11:00:00Z", T0_MS - 3600_000),
    ],
)
def test_times_are_iso_8601_or_relative(text: str, ms: int) -> None:
    assert parse_time(text, NOW) == ms


def test_a_bad_selection_names_its_option() -> None:
    with pytest.raises(SelectionError) as exc:
        parse_time("yesterday", NOW, "--to")
    assert exc.value.option == "--to"
    with pytest.raises(SelectionError, match="--partition"):
        Selection(from_offset=3)
    with pytest.raises(SelectionError, match="--to"):
        Selection(from_ms=2, to_ms=1)
    with pytest.raises(SelectionError, match="--resume"):
        parse_resume("0:12,x")


def test_the_time_range_is_half_open_and_the_product_filters() -> None:
    sel = Selection(from_ms=10, to_ms=20, product="shop")
    assert [sel.wants(t, "shop") for t in (9, 10, 19, 20)] == [False, True, True, False]
    assert not sel.wants(15, "other")


def test_the_resume_hint_lists_what_is_left() -> None:
    ranges = [Range(0, 0, 10, next=10), Range(1, 5, 9, next=7), Range(2, 0, 3)]
    assert resume_hint(ranges) == "1:7,2:0"
    assert parse_resume("1:7,2:0") == {1: 7, 2: 0}
    assert resume_hint([Range(0, 0, 0)]) is None


def test_each_record_gets_its_outcome_in_order() -> None:
    store = FakeStore()
    stored = raw({"event": "page_viewed", "user_id": "u1"}, external_id="s1")
    store.stored[stored["event_id"]] = [stored_row(stored)]
    retry = {**stored, "received_at": T0_MS + 1}
    bad = raw({"event": "Not A Name", "user_id": "u1"})
    fresh = raw({"event": "page_viewed", "user_id": "u2"})
    plan = Rules(store, WINDOW).plan([stored, retry, bad, fresh])
    assert [(e, o) for e, o, _ in plan.outcomes] == [
        (stored["event_id"], "accepted"),
        (stored["event_id"], "duplicate"),
        (bad["event_id"], "rejected"),
        (fresh["event_id"], "accepted"),
    ]
    assert [d for _, o, d in plan.outcomes if o == "accepted"] == ["identical", "new"]


def test_a_segment_message_the_edge_could_not_parse_gets_the_id_it_would_get_today() -> None:
    envelope = {"message": {"type": "track", "event": "Signed Up", "messageId": "m1"}}
    refused = {
        **raw({}),
        "dialect": "segment",
        "payload": orjson.dumps(envelope),
        "event_id": "evt_random",
    }
    assert rekeyed(refused) is refused, "still refused today: kept as it was"
    envelope["message"]["userId"] = "u1"
    fixed = rekeyed({**refused, "payload": orjson.dumps(envelope)})
    assert fixed["external_id"] == "m1"
    assert fixed["event_id"] == event_id_for("shop", "api", "m1")
    keyed = raw({"event": "page_viewed", "user_id": "u1"}, external_id="k")
    assert rekeyed(keyed) is keyed
