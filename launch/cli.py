"""The ``eventpipe`` command: one subcommand per process, plus ``dev`` and ``query``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from eventpipe.logs import configure
from eventpipe.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _settings(**overrides: Any) -> Settings:
    s = Settings()
    s = s.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    configure(s.log_level, s.log_json)
    return s


@app.command()
def dev(
    port: Annotated[int | None, typer.Option(help="HTTP port (0: a free one)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="where chDB and dev state live")] = None,
    host: Annotated[str | None, typer.Option(help="HTTP bind address")] = None,
) -> None:
    """Run the whole pipeline: embedded Kafka and ClickHouse unless URLs are configured."""
    from launch.dev import run_dev

    run_dev(_settings(port=port, data_dir=data_dir, host=host))


@app.command()
def edge(
    port: Annotated[int | None, typer.Option()] = None,
    host: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Run the HTTP edge against EVENTPIPE_KAFKA_BOOTSTRAP (keys from EVENTPIPE_API_KEYS).

    With EVENTPIPE_ADMIN_TOKEN set, the /admin routes are served on EVENTPIPE_ADMIN_LISTEN
    (127.0.0.1:9001), never on the public port."""
    from launch.processes import build_edge
    from producers.admin import create_admin_app
    from producers.server import serve

    s = _settings(port=port, host=host)
    catalog = None  # the catalog needs a ClickHouse server: chDB belongs to one process
    if not s.embedded_clickhouse:
        from eventpipe.catalog import Catalog
        from sinks.clickhouse import connect

        catalog = Catalog.from_settings(connect(s.clickhouse_dsn), s)
    edge_ = build_edge(s, catalog=catalog)
    try:
        admin = [(create_admin_app(s, edge_.keys), *s.admin_address)] if s.admin_token else []
        serve(edge_.app, s.host, s.port, also=admin)
    finally:
        edge_.close()


@app.command()
def worker() -> None:
    """Run the Faust agents (normalize, dedupe) against EVENTPIPE_KAFKA_BOOTSTRAP."""
    from streams.worker import run_worker

    run_worker(_settings())


@app.command()
def sink() -> None:
    """Run the ClickHouse sink: clean and rejected topics into EVENTPIPE_CLICKHOUSE_URL."""
    from launch.processes import build_sink

    sink_ = build_sink(_settings())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sink_.run(stop)


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="events.raw, events.clean, identities, ...")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="go on printing")] = False,
    start: Annotated[
        str | None, typer.Option("--from", help="an offset, a time (ISO 8601) or 15m ago")
    ] = None,
    last: Annotated[
        int | None, typer.Option("-n", help="the last N records (10; all with --from)")
    ] = None,
    product: Annotated[str | None, typer.Option(help="only this workspace's records")] = None,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Print a topic's records decoded as JSON lines (either Avro framing)."""
    from launch.tail import run_tail

    s = _settings(data_dir=data_dir)
    run_tail(s, topic, start=start, last=last, product=product, follow=follow)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="a read-only SQL statement")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Run read-only SQL against the pipeline's ClickHouse and print the result.

    With a ClickHouse server configured it connects directly; with the embedded chDB it goes
    through the running ``eventpipe dev`` (which owns the directory), or opens the directory
    itself when nothing runs.
    """
    s = _settings(data_dir=data_dir)
    columns, rows = _run_query(s, sql)
    if as_json:
        typer.echo(orjson.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str))
        return
    table = Table(*columns)
    for r in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in r))
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 240))  # do not cut columns in pipes and logs
    console.print(table)


def _run_query(s: Settings, sql: str) -> tuple[list[str], list[list[Any]]]:
    from launch.dev import DevState

    state = DevState.read(s.data_dir) if s.embedded_clickhouse else None
    if state is not None:
        resp = httpx.post(
            f"{state.url}/admin/query",
            json={"sql": sql},
            headers={"Authorization": f"Bearer {state.admin_token}"},
            timeout=60,
        )
        body = resp.json()
        if resp.status_code != 200:
            raise typer.BadParameter(body.get("message", resp.text), param_hint="SQL")
        return body["columns"], body["rows"]
    from eventpipe.errors import EventpipeError
    from producers.query import ReadOnlyQuery
    from sinks.clickhouse import connect

    try:
        return ReadOnlyQuery(connect(s.clickhouse_dsn), s)(sql)
    except EventpipeError as exc:
        raise typer.BadParameter(exc.message, param_hint="SQL") from None


def main() -> None:
    app()
