"""Event name normalization: the one place the naming rules are written.

Used by the edge (for its synchronous answer) and by the agents (authoritatively, on replay too).

Rules (document ``000``):

* **preferred**: ``event_type`` + ``action`` given separately.
* **unified**: one ``event`` string split into ``event_type`` and ``action``. Explicit separators
  win over the underscore: the name is split at the first ``.`` or ``:`` if it has one, otherwise
  at the first ``_``. So ``user.signed_up`` -> (user, signed_up), ``billing:invoice_paid`` ->
  (billing, invoice_paid), ``project_created`` -> (project, created), and the ambiguous
  ``user_profile.updated`` -> (user_profile, updated) rather than the invalid
  (user, profile.updated) a blind "first of . : _" would give. A name with no separator at all
  (``signup``) is rejected: it has no action.
* **legacy**: a flat ``event_type`` with no ``action``, split at its first ``_``
  (``project_created`` -> (project, created)); answered with deprecation headers.

Both parts must match ``^[a-z][a-z0-9_]*$`` and be at most ``MAX_PART_LENGTH`` characters; the
canonical name is ``f"{event_type}_{action}"``.

Segment names (dialect ``segment``, format ``segment``) are free-form ("Order Completed"), and an
SDK's event is never refused for its name: :func:`segment_name` maps any string onto a valid name
(the original is kept in the event, ``properties.$segment.event``):

1. case-folded, accents dropped (NFKD, then ASCII only): ``Café Visited`` -> ``cafe visited``;
2. every run of characters other than ``a-z``, ``0-9``, ``.`` and ``:`` (spaces, ``-``, ``/``,
   ``_``, punctuation) becomes one ``_``, and ``_`` at either end or beside a ``.``/``:`` is
   dropped: ``Order Completed``, ``order-completed`` and ``ORDER_COMPLETED`` are all
   ``order_completed``;
3. one word gets the action ``tracked``: ``Login`` -> ``login_tracked``;
4. then the unified split above: ``Order Completed`` -> (order, completed), ``Checkout Step
   Viewed`` -> (checkout, step_viewed), ``user.signed_up`` -> (user, signed_up), so a name
   already written by our rules keeps its canonical name;
5. when that still breaks the rules (nothing left after step 1, as in ``購入完了``; a part that
   starts with a digit, ``3D Model Viewed``; a part over 64 characters), the name is
   (``segment``, ``h`` + 12 hex digits of the original name's BLAKE2b hash): stable, and distinct
   per original name, which the event keeps.

Segment's other calls have fixed names (``SEGMENT_CALLS``): identify ``user_identified``, alias
``user_aliased``, group ``group_identified``, page ``page_viewed``, screen ``screen_viewed``. A
track call named "Page Viewed" shares ``page_viewed`` with page calls; ``$segment.type`` tells
them apart.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_PART_LENGTH = 64

# The same rules as JSON-schema patterns, for the edge's OpenAPI document;
# tests/unit/test_openapi.py checks that the document accepts exactly the names this accepts.
_PART = f"[a-z][a-z0-9_]{{0,{MAX_PART_LENGTH - 1}}}"
PART_PATTERN = f"^{_PART}$"
"""One part: ``event_type`` and ``action`` (preferred), and a legacy ``event_type`` as a whole."""
FLAT_PATTERN = f"^[a-z][a-z0-9]{{0,{MAX_PART_LENGTH - 1}}}_{_PART}$"
"""A name without ``.`` or ``:``, split at its first ``_`` (unified, or legacy if also a part)."""
UNIFIED_PATTERN = f"^{_PART}[.:]{_PART}$|{FLAT_PATTERN}"
"""A unified ``event`` (and the v1 and named dialects' one-string names)."""
SUNSET = "2026-09-01"


class NameFormat(StrEnum):
    PREFERRED = "preferred"
    UNIFIED = "unified"
    LEGACY = "legacy"
    SEGMENT = "segment"


class InvalidName(ValueError):
    """A name that breaks the rules; ``field`` says which request field carried it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EventName:
    event_type: str
    action: str
    format: NameFormat

    @property
    def canonical(self) -> str:
        return f"{self.event_type}_{self.action}"

    @property
    def deprecated(self) -> bool:
        return self.format is NameFormat.LEGACY


def _check_part(field: str, label: str, value: str) -> str:
    if not value:
        raise InvalidName(field, f"{label} is empty")
    if len(value) > MAX_PART_LENGTH:
        raise InvalidName(field, f"{label} is longer than {MAX_PART_LENGTH} characters")
    if not SNAKE_CASE.match(value):
        raise InvalidName(field, f"{label} {value!r} must match ^[a-z][a-z0-9_]*$")
    return value


def split_unified(name: str, field: str = "event") -> tuple[str, str]:
    """Split a one-string name into (event_type, action) by the rule in the module docstring."""
    cut = -1
    for sep in (".", ":"):
        i = name.find(sep)
        if i != -1 and (cut == -1 or i < cut):
            cut = i
    if cut == -1:
        cut = name.find("_")
    if cut == -1:
        raise InvalidName(
            field, f"{name!r} has no separator ('.', ':' or '_') between noun and verb"
        )
    return (
        _check_part(field, "event_type", name[:cut]),
        _check_part(field, "action", name[cut + 1 :]),
    )


@functools.lru_cache(maxsize=4096)
def normalize(
    *, event: str | None = None, event_type: str | None = None, action: str | None = None
) -> EventName:
    """Resolve the three naming formats of dialect v2 (and the one-string names of v1/named).

    Cached: a batch repeats a handful of names, and this ran for every event at the edge and
    again in the agents (~2-3 us each). Safe, as ``EventName`` is frozen; an invalid name
    raises every time (exceptions are not cached)."""
    if event is not None:
        if event_type is not None or action is not None:
            field = "event_type" if event_type is not None else "action"
            raise InvalidName(field, "give either 'event' or 'event_type' (+ 'action'), not both")
        et, act = split_unified(event, "event")
        return EventName(et, act, NameFormat.UNIFIED)
    if event_type is None:
        raise InvalidName("event", "one of 'event' or 'event_type' is required")
    if action is not None:
        return EventName(
            _check_part("event_type", "event_type", event_type),
            _check_part("action", "action", action),
            NameFormat.PREFERRED,
        )
    _check_part("event_type", "event_type", event_type)
    cut = event_type.find("_")
    if cut == -1:
        raise InvalidName("action", f"event_type {event_type!r} has no action and no '_' to split")
    return EventName(
        _check_part("event_type", "event_type", event_type[:cut]),
        _check_part("event_type", "action", event_type[cut + 1 :]),
        NameFormat.LEGACY,
    )


SEGMENT_CALLS: dict[str, EventName] = {
    call: EventName(event_type, action, NameFormat.SEGMENT)
    for call, (event_type, action) in {
        "identify": ("user", "identified"),
        "alias": ("user", "aliased"),
        "group": ("group", "identified"),
        "page": ("page", "viewed"),
        "screen": ("screen", "viewed"),
    }.items()
}
"""The names of Segment's calls other than track, which carry no event name of their own."""

_NOT_NAME = re.compile(r"[^a-z0-9.:]+")
_STRAY = re.compile(r"_*([.:])_*")


def segment_slug(name: str) -> str:
    """Steps 1 and 2 of the Segment rule (module docstring)."""
    folded = unicodedata.normalize("NFKD", name.casefold()).encode("ascii", "ignore").decode()
    return _STRAY.sub(r"\1", _NOT_NAME.sub("_", folded)).strip("_")


@functools.lru_cache(maxsize=4096)
def segment_name(name: str) -> EventName:
    """A Segment track call's free-form name as a valid name: never raises (module docstring).

    Cached like ``normalize``: an SDK repeats a handful of names."""
    slug = segment_slug(name)
    if slug and not any(sep in slug for sep in "._:"):
        slug += "_tracked"
    try:
        event_type, action = split_unified(slug)
    except InvalidName:
        digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
        event_type, action = "segment", f"h{digest}"
    return EventName(event_type, action, NameFormat.SEGMENT)
