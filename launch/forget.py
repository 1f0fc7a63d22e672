"""``eventpipe forget``: where the forget runs, and how its report is printed.

With the embedded chDB, the running ``eventpipe dev`` owns the directory, so the command asks it
(``POST``/``DELETE /admin/forget``) and dev forgets with its own Kafka producer and ClickHouse
writer. With a ClickHouse server (``EVENTPIPE_CLICKHOUSE_URL``) and ``EVENTPIPE_KAFKA_BOOTSTRAP``,
the command forgets from here (``replay.forget``), as ``eventpipe replay`` replays from here.
"""

from __future__ import annotations

from typing import Any

import httpx

from eventpipe.settings import Settings
from launch.dev import DevState
from launch.reach import NotReachable

FORGET_TIMEOUT_S = 180.0
"""A forget waits for the pipeline to pass its suppression (``replay.forget``: 60 s at most)."""


def run_forget(settings: Settings, product: str, person_id: str, *, lift: bool) -> dict[str, Any]:
    """Forget (or with ``lift``, lift the suppression of) one person; the report."""
    state = DevState.read(settings.data_dir) if settings.embedded_clickhouse else None
    if state is not None:
        resp = httpx.request(
            "DELETE" if lift else "POST",
            f"{state.url}/admin/forget",
            json={"product": product, "person_id": person_id},
            headers={"Authorization": f"Bearer {state.admin_token}"},
            timeout=FORGET_TIMEOUT_S,
        )
        body: dict[str, Any] = resp.json()
        if resp.status_code != 200:
            raise NotReachable(f"eventpipe dev answered {resp.status_code}: {body.get('message')}")
        return body
    if settings.embedded_clickhouse:
        raise NotReachable(
            f"no eventpipe dev runs on {settings.data_dir} (it owns the embedded ClickHouse): "
            "start it, or set EVENTPIPE_CLICKHOUSE_URL and EVENTPIPE_KAFKA_BOOTSTRAP"
        )
    if not settings.kafka_bootstrap:
        raise NotReachable("EVENTPIPE_KAFKA_BOOTSTRAP is not set: the suppression goes to Kafka")
    from replay.forget import ForgetError, Forgetter
    from sinks.clickhouse import connect
    from sinks.forget import PersonEraser
    from streams.app import app_id

    client = connect(settings.clickhouse_dsn, ca=settings.clickhouse_ca)
    forgetter = Forgetter(settings, PersonEraser(client), app_id(settings))
    try:
        if lift:
            return forgetter.lift(product, person_id)
        return forgetter.forget(product, person_id)
    except ForgetError as exc:
        raise NotReachable(exc.message) from None
    finally:
        forgetter.close()
        client.close()


def describe(report: dict[str, Any]) -> str:
    """The report as lines for a person to read."""
    if "lifted" in report:
        if report["lifted"]:
            return f"suppression lifted in {report['product']}: new events land again"
        return f"nobody by that id is suppressed in {report['product']}"
    lines = [
        f"forgotten in {report['product']} (with {report['anonymous_ids']} linked anonymous "
        "ids); new events are suppressed until lifted",
        *(f"  {table:<16} {n:>10,} deleted" for table, n in report["deleted"].items()),
    ]
    if not report["settled"]:
        lines.append(
            "  the pipeline did not pass the suppression in time: rows in flight may still "
            "land; forget again once it has caught up"
        )
    return "\n".join(lines)
