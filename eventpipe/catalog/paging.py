"""Pages of a list: ``page`` (from 1) and ``page_size`` query parameters in, the envelope out.

    {"links": {"next": url | null, "previous": url | null},
     "meta": {"page": n, "previous_page": n | null, "next_page": n | null},
     "count": total matching, "total_pages": n, "results": [...]}

The links are the request's own URL with only ``page`` changed, so filters carry over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from eventpipe.errors import InvalidEvent

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Page:
    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Page:
        return cls(
            _positive(query, "page", 1, 1_000_000),
            _positive(query, "page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
        )


def _positive(query: Mapping[str, str], name: str, default: int, most: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise InvalidEvent(f"{name} must be an integer from 1 to {most}", field=name)
    return int(raw)


def envelope(
    url: str, query: Mapping[str, str], page: Page, count: int, results: list[Any]
) -> dict[str, Any]:
    total_pages = max(1, math.ceil(count / page.size))
    previous = page.number - 1 if page.number > 1 else None
    following = page.number + 1 if page.number < total_pages else None
    return {
        "links": {"next": _link(url, query, following), "previous": _link(url, query, previous)},
        "meta": {"page": page.number, "previous_page": previous, "next_page": following},
        "count": count,
        "total_pages": total_pages,
        "results": results,
    }


def _link(url: str, query: Mapping[str, str], number: int | None) -> str | None:
    if number is None:
        return None
    parts = urlsplit(url)
    params = {k: v for k, v in query.items() if k != "page"}
    params["page"] = str(number)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))
