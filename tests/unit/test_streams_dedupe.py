"""The dedupe rule and the sentinel key (streams.dedupe): pure, no broker."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from eventpipe.event import to_ms
from streams.dedupe import SENTINEL_KEY, SENTINEL_VALUE, Decision, decide, table_key

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
