"""The catalog's resources (document 002): the three entity types, their ids, the bodies of a
create and a patch, and a resource as the API returns it.

Ids are 32 hex characters derived from (workspace, entity type, name), so a resource discovered in
traffic and one created by hand with the same name are the same resource, and a discovered
resource keeps its id across restarts and replays. ``eventpipe.catalog.sql`` computes the same
digest in ClickHouse; the e2e tests check the two agree.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from eventpipe.errors import InvalidEvent

EVENT_CATEGORY = "event_category"
EVENT = "event"
EVENT_PROPERTY = "event_property"
ENTITY_TYPES = (EVENT_CATEGORY, EVENT, EVENT_PROPERTY)
PARENT_TYPE = {EVENT: EVENT_CATEGORY, EVENT_PROPERTY: EVENT}
INTEGRATION = "integration"

HEX_ID = re.compile(r"^[0-9a-f]{32}$")

# ClickHouse JSONType names -> JSON's own type names, as the API reports observed types.
JSON_TYPES = {
    "Int64": "integer",
    "UInt64": "integer",
    "Double": "number",
    "String": "string",
    "Bool": "boolean",
    "Null": "null",
    "Array": "array",
    "Object": "object",
}

Title = Annotated[str, Meta(min_length=1, max_length=512)]
Text = Annotated[str, Meta(max_length=65_536)]
Ids = Annotated[list[Annotated[str, Meta(max_length=256)]], Meta(max_length=1000)]


def stable_id(product: str, entity_type: str, *names: str) -> str:
    """md5 of the NUL-joined parts, in hex; eventpipe.catalog.sql.id_sql is the same in SQL."""
    return hashlib.md5("\x00".join((product, entity_type, *names)).encode()).hexdigest()


def integration_id(product: str, source: str) -> str:
    """An integration is the pipeline's ``source``: its id is derived from the source name."""
    return stable_id(product, INTEGRATION, source)


class Patch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The curated fields: the only ones a PATCH may change, and never written by traffic."""

    description: Text | UnsetType = UNSET
    definition: Text | UnsetType = UNSET
    pii: bool | UnsetType = UNSET
    verified: bool | UnsetType = UNSET
    published: bool | UnsetType = UNSET
    teams: Ids | UnsetType = UNSET
    owners: Ids | UnsetType = UNSET
    collections: Ids | UnsetType = UNSET
    tags: Ids | UnsetType = UNSET
    subscribers: Ids | UnsetType = UNSET

    def changes(self) -> dict[str, Any]:
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not UNSET}


CURATED_FIELDS: tuple[str, ...] = Patch.__struct_fields__


class Create(Patch, kw_only=True):
    """A POST body: a title, where it belongs, and any curated field. ``integration`` is the
    document's name for a category's integration; ``integration_id`` is accepted too."""

    title: Title | UnsetType = UNSET
    integration: Annotated[str, Meta(max_length=256)] | UnsetType = UNSET
    integration_id: Annotated[str, Meta(max_length=256)] | UnsetType = UNSET
    parent_id: Annotated[str, Meta(max_length=64)] | UnsetType = UNSET

    def integration_of(self, product: str) -> str | None:
        """The integration id given: a 32-hex id as is, else a source name turned into its id."""
        given = self.integration if self.integration is not UNSET else self.integration_id
        if given is UNSET or not given:
            return None
        return given if HEX_ID.match(given) else integration_id(product, given)


T = TypeVar("T", Patch, Create)

_AT = re.compile(r"at `\$\.([^`\[]+)")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")


def decode(body: bytes, kind: type[T]) -> T:
    """A body as ``kind``; a bad one is a 400 naming the field it is about."""
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = _AT.search(text) or _UNKNOWN.search(text)
        raise InvalidEvent(text, field=found.group(1) if found else None) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from None


class Observed(msgspec.Struct, kw_only=True):
    """What traffic shows about a resource (null on a resource never seen in traffic)."""

    first_seen_at: datetime
    last_seen_at: datetime
    volume_24h: int
    volume_30d: int
    versions: list[str]
    integrations: list[str]
    json_types: list[str] | None = None
    share: float | None = None
    """Properties: the share of the event's events that carry it, over the catalog window."""


class Resource(msgspec.Struct, kw_only=True):
    id: str
    entity_type: str
    title: str
    description: str
    definition: str
    pii: bool
    verified: bool
    published: bool
    parent_id: str | None
    integration_id: str | None
    teams: list[str]
    owners: list[str]
    collections: list[str]
    tags: list[str]
    subscribers: list[str]
    created_at: datetime
    updated_at: datetime
    discovered: bool
    observed: Observed | None


def resource_from_row(row: dict[str, Any], product: str) -> Resource:
    """A row of eventpipe.catalog.sql's resource query as the API's resource."""
    observed = None
    if row["discovered"]:
        is_property = row["entity_type"] == EVENT_PROPERTY
        types = sorted({JSON_TYPES.get(t, t.lower()) for t in row["json_types"]})
        observed = Observed(
            first_seen_at=row["first_seen_at"],
            last_seen_at=row["last_seen_at"],
            volume_24h=int(row["volume_24h"]),
            volume_30d=int(row["volume_30d"]),
            versions=list(row["versions"]),
            integrations=sorted(integration_id(product, s) for s in row["sources"]),
            json_types=types if is_property else None,
            share=row["share"] if is_property else None,
        )
    return Resource(
        id=row["id"],
        entity_type=row["entity_type"],
        title=row["title"],
        description=row["description"],
        definition=row["definition"],
        pii=bool(row["pii"]),
        verified=bool(row["verified"]),
        published=bool(row["published"]),
        parent_id=row["parent_id"] or None,
        integration_id=row["integration_id"] or None,
        teams=list(row["teams"]),
        owners=list(row["owners"]),
        collections=list(row["collections"]),
        tags=list(row["tags"]),
        subscribers=list(row["subscribers"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        discovered=bool(row["discovered"]),
        observed=observed,
    )
