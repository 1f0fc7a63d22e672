"""The ``eventpipe`` command: one subcommand per process, plus ``dev`` and ``query``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from eventpipe.errors import StartError
from eventpipe.logs import configure
from eventpipe.settings import Settings

# No locals in tracebacks: they would print client configurations, passwords included.
app = typer.Typer(
    add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False
)


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
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="processes serving the port (EVENTPIPE_EDGE_WORKERS; 1)"),
    ] = None,
    listen_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the HTTP edge against EVENTPIPE_KAFKA_BOOTSTRAP (keys from EVENTPIPE_API_KEYS).

    With EVENTPIPE_ADMIN_TOKEN set, the /admin routes are served on EVENTPIPE_ADMIN_LISTEN
    (127.0.0.1:9001), never on the public port. With --workers N, N processes serve the port."""
    import socket

    from eventpipe import garbage_collection
    from eventpipe.kafka import ensure_topics
    from launch.processes import build_edge
    from producers.admin import create_admin_app
    from producers.server import serve

    s = _settings(port=port, host=host, edge_workers=workers)
    if listen_fd is None:  # a worker's parent checked the topics already
        ensure_topics(s)  # a refused login or a missing topic stops the edge here, not at a 503
    if s.edge_workers > 1 and listen_fd is None:
        from launch.workers import run_workers

        raise typer.Exit(run_workers(s, s.edge_workers))
    sock = None if listen_fd is None else socket.socket(fileno=listen_fd)
    catalog = dashboard = None  # both need a ClickHouse server: chDB is one process's
    if not s.embedded_clickhouse:
        from eventpipe.catalog import Catalog
        from eventpipe.dashboard import Dashboard
        from sinks.clickhouse import connect

        catalog = Catalog.from_settings(connect(s.clickhouse_dsn, ca=s.clickhouse_ca), s)
        dashboard = Dashboard(connect(s.clickhouse_dsn, readonly=True, ca=s.clickhouse_ca))
    edge_ = build_edge(s, catalog=catalog, dashboard=dashboard)
    try:
        admin = [(create_admin_app(s, edge_.keys), *s.admin_address)] if s.admin_token else []
        garbage_collection.settle()
        serve(edge_.app, s.host, s.port, also=admin, sock=sock)
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
    from launch.sink import run_sink_process

    run_sink_process(_settings())


@app.command()
def migrate() -> None:
    """Apply the ClickHouse migrations to EVENTPIPE_CLICKHOUSE_URL (idempotent), then exit."""
    from sinks.clickhouse import connect, materialize_properties
    from sinks.clickhouse import migrate as apply

    s = _settings()
    client = connect(s.clickhouse_dsn, ca=s.clickhouse_ca)
    typer.echo(f"migrations applied: {apply(client) or 'none (up to date)'}")
    columns = materialize_properties(client, s.materialized_properties)
    typer.echo(f"materialized properties: {columns or 'none'}")


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


@app.command()
def replay(
    from_: Annotated[
        str | None, typer.Option("--from", help="ISO 8601 (UTC unless zoned) or -2h, -30m, -7d")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="end, exclusive (same forms)")] = None,
    partition: Annotated[int | None, typer.Option(help="one partition of events.raw")] = None,
    from_offset: Annotated[int | None, typer.Option(help="first offset (with --partition)")] = None,
    to_offset: Annotated[int | None, typer.Option(help="last offset, inclusive")] = None,
    product: Annotated[str | None, typer.Option(help="only this workspace's events")] = None,
    dry_run: Annotated[
        bool | None,
        typer.Option(
            "--dry-run/--execute",
            help="print what would change / write it (default: write up to "
            "EVENTPIPE_REPLAY_CONFIRM_ABOVE records, a dry run above)",
        ),
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="PARTITION:OFFSET,... printed by an interrupted replay")
    ] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the sink at the end")] = 120.0,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Run a range of events.raw through today's rules again; write what changed.

    Reads with its own consumer (assigned, nothing committed) and writes through the topics the
    running sink reads, so it works beside live traffic and leaves one row per event id.
    """
    from launch.reach import NotReachable
    from replay.command import run_command, selection
    from replay.select import SelectionError

    s = _settings(data_dir=data_dir)
    try:
        sel = selection(
            from_=from_,
            to=to,
            partition=partition,
            from_offset=from_offset,
            to_offset=to_offset,
            product=product,
            resume=resume,
        )
        result = run_command(s, sel, dry_run=dry_run, wait_s=wait)
    except SelectionError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.option) from None
    except NotReachable as exc:
        typer.echo(f"eventpipe replay: {exc}", err=True)
        raise typer.Exit(2) from None
    if result.stopped is not None or result.stored is False:
        raise typer.Exit(1)


@app.command()
def forget(
    product: Annotated[str, typer.Option(help="the workspace (product) of the person")],
    person: Annotated[str, typer.Option(help="the person's id (their user id)")],
    lift: Annotated[
        bool, typer.Option("--lift", help="lift the suppression instead: new events land again")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Forget a person: delete their rows (by user id, linked anonymous ids and subject) from
    ClickHouse, report counts per table, and drop their new events until --lift."""
    from launch.forget import describe, run_forget
    from launch.reach import NotReachable

    s = _settings(data_dir=data_dir)
    try:
        report = run_forget(s, product, person, lift=lift)
    except NotReachable as exc:
        typer.echo(f"eventpipe forget: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(orjson.dumps(report).decode() if as_json else describe(report))
    if lift and not report["lifted"]:
        raise typer.Exit(1)


def _rejected_filter(**kw: Any) -> Any:
    from datetime import UTC, datetime

    from replay.select import parse_time
    from sinks.store import RejectedFilter

    now = datetime.now(UTC)
    from_, to = kw.pop("from_"), kw.pop("to")
    return RejectedFilter(
        from_ms=parse_time(from_, now, "--from") if from_ else None,
        to_ms=parse_time(to, now, "--to") if to else None,
        **kw,
    )


FromOpt = Annotated[str | None, typer.Option("--from", help="received at or after (as replay)")]
ToOpt = Annotated[str | None, typer.Option("--to", help="received before")]
ProductOpt = Annotated[str | None, typer.Option(help="one workspace")]
StageOpt = Annotated[str | None, typer.Option(help="normalize, identity, publish, decode, sink")]
ReasonOpt = Annotated[str | None, typer.Option(help="a part of the reason (any case)")]


@app.command()
def rejected(
    product: ProductOpt = None,
    stage: StageOpt = None,
    reason: ReasonOpt = None,
    from_: FromOpt = None,
    to: ToOpt = None,
    events: Annotated[bool, typer.Option("--events", help="one line per rejection")] = False,
    limit: Annotated[int, typer.Option(help="lines at most, with --events")] = 100,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """List rejected events (the ones needing attention), grouped by stage and reason."""
    from launch.reach import pipeline_store
    from replay.rejected import listing
    from replay.select import SelectionError

    s = _settings(data_dir=data_dir)
    try:
        f = _rejected_filter(product=product, stage=stage, reason=reason, from_=from_, to=to)
    except SelectionError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.option) from None
    with pipeline_store(s) as store:
        table = listing(store, f, one_per_line=events, limit=limit)
    Console(width=max(Console().width, 160)).print(table)


@app.command()
def redrive(
    product: ProductOpt = None,
    stage: StageOpt = None,
    reason: ReasonOpt = None,
    from_: FromOpt = None,
    to: ToOpt = None,
    event_id: Annotated[list[str] | None, typer.Option(help="these events (repeatable)")] = None,
    again: Annotated[bool, typer.Option(help="also those a redrive already accepted")] = False,
    limit: Annotated[int, typer.Option(help="rejections at most")] = 100_000,
    dry_run: Annotated[
        bool | None,
        typer.Option("--dry-run/--execute", help="as replay's (default: by count)"),
    ] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the sink at the end")] = 120.0,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Send chosen rejected events through today's rules again; record each outcome."""
    from launch.reach import NotReachable, pipeline
    from replay.redrive import outcome_table, redrive
    from replay.select import SelectionError

    s = _settings(data_dir=data_dir)
    try:
        f = _rejected_filter(
            product=product,
            stage=stage,
            reason=reason,
            from_=from_,
            to=to,
            event_ids=tuple(event_id or ()),
            pending=not again,
        )
        s, store = pipeline(s)
    except SelectionError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.option) from None
    except NotReachable as exc:
        typer.echo(f"eventpipe redrive: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        result = redrive(s, store, f, dry_run=dry_run, limit=limit, wait_s=wait)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    Console(width=max(Console().width, 160)).print(outcome_table(result))
    if result.stored is False:
        typer.echo("the sink has not stored everything written yet (is it running?)", err=True)
        raise typer.Exit(1)


@app.command()
def trace(
    ident: Annotated[str, typer.Argument(metavar="ID", help="an event id (evt_…)")],
    product: ProductOpt = None,
    external: Annotated[bool, typer.Option("--external-id", help="ID is an external id")] = False,
    key: Annotated[bool, typer.Option("--idempotency-key", help="ID is a key")] = False,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Where is my event: accepted, stored (name, person), rejected (stage, reason), dropped as
    a duplicate; nothing found is never accepted, or still in flight."""
    from launch.reach import pipeline_store
    from launch.trace import find, show

    s = _settings(data_dir=data_dir)
    with pipeline_store(s) as store:
        found = find(store, ident, product=product, external=external, idempotency_key=key)
    if not found:
        typer.echo(f"{ident}: not found (never accepted, or still in flight)", err=True)
        raise typer.Exit(1)
    show(Console(width=max(Console().width, 120)), found)


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
        return ReadOnlyQuery(connect(s.clickhouse_dsn, ca=s.clickhouse_ca), s)(sql)
    except EventpipeError as exc:
        raise typer.BadParameter(exc.message, param_hint="SQL") from None


def main() -> None:
    try:
        app()
    except StartError as exc:
        # A setting that cannot work: its message says which, a traceback would bury it.
        typer.echo(f"eventpipe: cannot start: {exc}", err=True)
        raise SystemExit(2) from None
