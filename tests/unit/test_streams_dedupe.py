"""The dedupe rule and the sentinel key (streams.dedupe): pure, no broker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventpipe.event import to_ms
from streams.dedupe import (
    SENTINEL_KEY,
    SENTINEL_VALUE,
    Decision,
    Expiry,
    decide,
    expired,
    table_key,
)

WINDOW = 24 * 3600 * 1000


def test_first_occurrence_is_kept() -> None:
    assert decide(None, 1_000, WINDOW) is Decision.FIRST


def test_copy_within_window_is_a_duplicate() -> None:
    assert decide(1_000, 1_001, WINDOW) is Decision.DUPLICATE
    assert decide(1_000, 1_000 + WINDOW - 1, WINDOW) is Decision.DUPLICATE


def test_copy_with_earlier_clock_is_a_duplicate() -> None:
    # edge replicas' clocks differ: distance is absolute
    assert decide(5_000, 4_000, WINDOW) is Decision.DUPLICATE


def test_copy_outside_window_is_kept_again() -> None:
    assert decide(1_000, 1_000 + WINDOW, WINDOW) is Decision.FIRST


def test_same_record_read_again_is_forwarded_not_dropped() -> None:
    # at-least-once redelivery after a crash: its clean record may never have been sent
    assert decide(1_000, 1_000, WINDOW) is Decision.REDELIVERY


@given(st.text(), st.text(), st.text())
def test_sentinel_never_collides_with_a_dedupe_key(product: str, source: str, ext: str) -> None:
    assert table_key(product, source, ext) != SENTINEL_KEY


def test_sentinel_value_is_what_the_table_serializer_reads() -> None:
    import json

    assert json.loads(SENTINEL_VALUE) == 0


def test_to_ms_is_exact() -> None:
    dt = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    assert to_ms(dt) == 1_767_323_045_678
    assert to_ms(dt.replace(tzinfo=None)) == 1_767_323_045_678
    assert to_ms(42) == 42


# --- the window's end: expired() and Expiry -----------------------------------------------------


def test_a_key_expires_exactly_when_a_copy_would_be_first_again() -> None:
    assert not expired(1_000, 1_000 + WINDOW - 1, WINDOW)
    assert expired(1_000, 1_000 + WINDOW, WINDOW)
    assert decide(1_000, 1_000 + WINDOW, WINDOW) is Decision.FIRST


@given(st.integers(0, 10**13), st.integers(0, 10**13), st.integers(0, 10**9), st.integers(1, 10**9))
def test_forgetting_a_key_never_changes_a_later_decision(
    first: int, horizon: int, later: int, window: int
) -> None:
    # Any record at or after the horizon would be FIRST anyway: the key need not be kept.
    if expired(first, horizon, window):
        assert decide(first, horizon + later, window) is Decision.FIRST


def test_due_pops_the_keys_out_of_the_window_in_order_and_stops_at_the_first_kept() -> None:
    e = Expiry(WINDOW)
    for i, key in enumerate((b"a", b"b", b"c")):
        e.track(0, key, 1_000 + i)
    e.observe(0, 1_001 + WINDOW)
    assert e.due([0]) == [(0, b"a", 1_000), (0, b"b", 1_001)]
    assert e.due([0]) == []
    assert len(e) == 1


def test_each_partition_is_measured_at_its_own_horizon() -> None:
    # A lagging partition (a backlog) keeps its keys while another one is a day ahead.
    e = Expiry(WINDOW)
    e.track(0, b"ahead", 1_000)
    e.track(1, b"lagging", 1_000)
    e.observe(0, 1_000 + 2 * WINDOW)
    e.observe(1, 1_000 + WINDOW - 1)
    assert e.due([0, 1]) == [(0, b"ahead", 1_000)]


def test_the_horizon_never_moves_back() -> None:
    e = Expiry(WINDOW)
    e.track(0, b"k", 1_000)
    e.observe(0, 1_000 + WINDOW)
    e.observe(0, 5)  # an edge with a slow clock
    assert e.due([0]) == [(0, b"k", 1_000)]


def test_only_the_asked_partitions_are_swept() -> None:
    e = Expiry(WINDOW)
    e.track(3, b"k", 1_000)
    e.observe(3, 1_000 + WINDOW)
    assert e.due([0, 1]) == []
    assert e.due([3]) == [(3, b"k", 1_000)]


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10 * WINDOW)), max_size=60))
def test_no_key_is_ever_due_inside_the_window(records: list[tuple[int, int]]) -> None:
    e = Expiry(WINDOW)
    for i, (partition, received) in enumerate(records):
        e.track(partition, b"%d" % i, received)
        for p, _key, first in e.due([partition]):
            horizon = max(r for q, r in records[: i + 1] if q == p)
            assert expired(first, horizon, WINDOW)


def test_dropping_a_partition_hands_back_its_keys() -> None:
    e = Expiry(WINDOW)
    e.track(2, b"k", 1_000)
    assert e.drop(2) == [(b"k", 1_000)]
    assert e.partitions() == set() and len(e) == 0


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Expiry(0)
