"""The one query that reads the catalog: discovered resources (the observed tables of migration
006) and curated entries (``catalog_resources``) of one workspace, merged by id.

Per id, a curated row wins every field it has (argMax on ``origin``: 1 curated, 0 discovered),
and observed figures come from the discovered row only. A tombstone (a deleted curated row)
hides the resource unless traffic was received after it.

Every value is a query parameter: ``{product:String}``, ``{window_days:UInt32}`` and the
filter's own (``eventpipe.catalog.filters``); only fixed column names are written into the text.
"""

from __future__ import annotations

from eventpipe.catalog.model import EVENT, EVENT_CATEGORY, EVENT_PROPERTY, INTEGRATION

# Hour buckets of occurred_at: "24 h" is this hour and the 23 before it, "30 days" today and the
# 29 days before, the window today and the window_days - 1 before.
H24 = "toStartOfHour(now()) - INTERVAL 23 HOUR"
D30 = "toStartOfDay(now()) - INTERVAL 29 DAY"
WINDOW = "toStartOfDay(now()) - toIntervalDay({window_days:UInt32} - 1)"

COLUMNS = (
    "id",
    "entity_type",
    "title",
    "parent_id",
    "integration_id",
    "description",
    "definition",
    "pii",
    "verified",
    "published",
    "teams",
    "owners",
    "collections",
    "tags",
    "subscribers",
    "created_at",
    "updated_at",
    "deleted",
)
"""Columns a curated row has (catalog_resources), in the union's order."""

OBSERVED = (
    "first_seen_at",
    "last_seen_at",
    "last_received_at",
    "volume_24h",
    "volume_30d",
    "versions",
    "sources",
    "json_types",
    "share",
)

_EMPTY = "CAST([] AS Array(String))"
_ZERO_TS = "toDateTime64(0, 3, 'UTC')"
_NO_SHARE = "CAST(NULL AS Nullable(Float64))"
_UNCURATED = (
    f"'' AS u_description, '' AS u_definition, false AS u_pii, false AS u_verified, "
    f"false AS u_published, {_EMPTY} AS u_teams, {_EMPTY} AS u_owners, "
    f"{_EMPTY} AS u_collections, {_EMPTY} AS u_tags, {_EMPTY} AS u_subscribers"
)


def id_sql(entity_type: str, *names: str) -> str:
    """eventpipe.catalog.model.stable_id in SQL: md5 of (product, type, names) NUL-joined."""
    parts = ", '\\0', ".join((f"'{entity_type}'", *names))
    return f"lower(hex(MD5(concat({{product:String}}, '\\0', {parts}))))"


def _integration(source: str) -> str:
    return f"if({source} = '', '', {id_sql(INTEGRATION, source)})"


def _found(entity_type: str, id_expr: str, title: str, parent: str, sources: str) -> str:
    return (
        f"0 AS origin, {id_expr} AS u_id, '{entity_type}' AS u_entity_type, {title} AS u_title, "
        f"{parent} AS u_parent_id, {_integration(f'arraySort({sources})[1]')} AS u_integration_id, "
        f"{_UNCURATED}"
    )


RESOURCES = f"""
WITH
ev AS (
    SELECT event_type, canonical_name,
           groupUniqArrayArray(sources) AS e_sources,
           min(first_seen_at) AS e_first, max(last_seen_at) AS e_last,
           min(first_received_at) AS e_first_recv, max(last_received_at) AS e_last_recv,
           uniqCombinedMergeIf(14)(events, hour >= {H24}) AS e_v24,
           uniqCombinedMergeIf(14)(events, hour >= {D30}) AS e_v30,
           uniqCombinedMergeIf(14)(events, hour >= {WINDOW}) AS e_vwin,
           arraySort(groupUniqArrayIf(version, version != '')) AS e_versions
    FROM catalog_event_hourly
    WHERE product = {{product:String}}
    GROUP BY event_type, canonical_name
),
pr AS (
    SELECT canonical_name AS p_name, property,
           arraySort(groupUniqArrayArray(json_types)) AS p_types,
           min(first_seen_at) AS p_first, max(last_seen_at) AS p_last,
           min(first_received_at) AS p_first_recv, max(last_received_at) AS p_last_recv,
           uniqCombinedMergeIf(14)(events, hour >= {H24}) AS p_v24,
           uniqCombinedMergeIf(14)(events, hour >= {D30}) AS p_v30,
           uniqCombinedMergeIf(14)(events, hour >= {WINDOW}) AS p_vwin,
           arraySort(groupUniqArrayIf(version, version != '')) AS p_versions
    FROM catalog_property_hourly
    WHERE product = {{product:String}}
    GROUP BY canonical_name, property
),
found AS (
    SELECT {
    _found(
        EVENT_CATEGORY,
        id_sql(EVENT_CATEGORY, "event_type"),
        "event_type",
        "''",
        "groupUniqArrayArray(e_sources)",
    )
},
           min(e_first_recv) AS u_created_at, min(e_first_recv) AS u_updated_at,
           false AS u_deleted, min(e_first) AS u_first_seen_at, max(e_last) AS u_last_seen_at,
           max(e_last_recv) AS u_last_received_at, sum(e_v24) AS u_volume_24h,
           sum(e_v30) AS u_volume_30d, arraySort(groupUniqArrayArray(e_versions)) AS u_versions,
           arraySort(groupUniqArrayArray(e_sources)) AS u_sources, {_EMPTY} AS u_json_types,
           {_NO_SHARE} AS u_share
    FROM ev GROUP BY event_type
    UNION ALL
    SELECT {
    _found(
        EVENT,
        id_sql(EVENT, "canonical_name"),
        "canonical_name",
        id_sql(EVENT_CATEGORY, "event_type"),
        "e_sources",
    )
},
           e_first_recv, e_first_recv, false, e_first, e_last, e_last_recv,
           toUInt64(e_v24), toUInt64(e_v30), e_versions, arraySort(e_sources), {_EMPTY},
           {_NO_SHARE}
    FROM ev
    UNION ALL
    SELECT {
    _found(
        EVENT_PROPERTY,
        id_sql(EVENT_PROPERTY, "p_name", "property"),
        "property",
        id_sql(EVENT, "p_name"),
        "e_sources",
    )
},
           p_first_recv, p_first_recv, false, p_first, p_last, p_last_recv,
           toUInt64(p_v24), toUInt64(p_v30), p_versions, arraySort(e_sources), p_types,
           if(e_vwin = 0, NULL, least(1.0, p_vwin / e_vwin))
    FROM pr LEFT JOIN ev ON pr.p_name = ev.canonical_name
),
curated AS (
    SELECT 1 AS origin, {", ".join(f"{c} AS u_{c}" for c in COLUMNS)},
           {_ZERO_TS}, {_ZERO_TS}, {_ZERO_TS}, toUInt64(0), toUInt64(0), {_EMPTY}, {_EMPTY},
           {_EMPTY}, {_NO_SHARE}
    FROM catalog_resources FINAL
    WHERE product = {{product:String}}
),
merged AS (
    SELECT u_id AS id,
           min(origin) = 0 AS discovered,
           max(origin) = 1 AS has_curated,
           {", ".join(f"argMax(u_{c}, origin) AS {c}" for c in COLUMNS[1:])},
           {", ".join(f"anyIf(u_{c}, origin = 0) AS {c}" for c in OBSERVED)}
    FROM (SELECT * FROM found UNION ALL SELECT * FROM curated)
    GROUP BY u_id
)
SELECT * FROM merged
WHERE NOT deleted OR (discovered AND last_received_at > updated_at)
"""


def list_sql(where: str, order_by: str) -> str:
    """A page of visible resources matching ``where``, with the total count on every row."""
    return (
        f"SELECT *, count() OVER () AS total FROM ({RESOURCES}) WHERE {where} "
        f"ORDER BY {order_by} LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}"
    )


def count_sql(where: str) -> str:
    return f"SELECT count() AS total FROM ({RESOURCES}) WHERE {where}"
