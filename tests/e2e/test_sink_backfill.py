"""The sink through the real pipeline: a backfill ClickHouse would refuse as one insert.

``events`` is partitioned by month; ClickHouse refuses an insert block spanning more than 100
partitions with TOO_MANY_PARTS, a code that is otherwise retried (merges catching up), so such
a batch stalled the sink for good. Real input reaches it: the edge accepts any time from 1970
to 2100, and one request's events go to the sink as one batch.
"""

from __future__ import annotations

from tests.conftest import Stack, Workspace

MONTHS = 400


def test_a_batch_spanning_hundreds_of_months_lands_and_the_sink_goes_on(
    stack: Stack, ws: Workspace
) -> None:
    events = [
        {
            "event": "invoice.paid",
            "occurred_at": f"{1980 + m // 12:04d}-{1 + m % 12:02d}-15T12:00:00Z",
        }
        for m in range(MONTHS)
    ]
    r = ws.post("/api/v2/events/batch", {"events": events})
    assert r.status_code == 202, r.text
    ids = {d["uuid"] for d in r.json()["data"]}
    sql = (
        "SELECT count() AS n, uniqExact(toYYYYMM(occurred_at)) AS months "
        f"FROM events WHERE product = '{ws.product}'"
    )
    rows = stack.wait_for(sql, lambda rs: rs[0]["n"] >= MONTHS)
    assert rows[0] == {"n": MONTHS, "months": MONTHS}
    landed = stack.query(f"SELECT event_id FROM events WHERE product = '{ws.product}'")
    assert {row["event_id"] for row in landed} == ids
    stack.prove_nothing_else_landed(ws, rows_before=MONTHS)
