"""Records the tests build, in one place: a clean event as the worker makes it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

CLEAN_AT = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)


def clean_record(event_id: str, product: str = "p", **over: Any) -> dict[str, Any]:
    """A ``CleanEvent`` with every field set (a page view at :data:`CLEAN_AT`); ``over``
    replaces any of them."""
    rec: dict[str, Any] = {
        "event_id": event_id,
        "product": product,
        "source": "api",
        "dialect": "v2",
        "event_type": "page",
        "action": "view",
        "canonical_name": "page.view",
        "name_format": "unified",
        "occurred_at": CLEAN_AT,
        "received_at": CLEAN_AT,
        "external_id": None,
        "subject_type": None,
        "subject_id": None,
        "user_id": None,
        "anonymous_id": None,
        "person_id": "",
        "version": None,
        "properties": "{}",
        "traits": "{}",
    }
    rec.update(over)
    return rec
