"""The ``livefeed`` command (also ``python run.py``): serve, demo, publish, tail,
export, verify, migrate, trim.

Flags override the ``LIVEFEED_*`` environment, and both go through the same
validation (:func:`app.config.from_env`), so a mistake reads the same way
wherever it was made and names what the person typed.  Anything a person can
get wrong ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import httpx
import orjson

from app import __version__
from app.cli_errors import CommandError, cannot_reach, refused
from app.config import ConfigError, Settings, Source, from_env
from app.logs import configure_logging

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"
QUICKSTART_DEMO_RATE = "2"
HELP_FLAGS = ("-h", "--help", "--version")
EXAMPLE_DATA = '{"file": "a.md"}'
# dest of a command-line flag -> the setting it overrides
FLAG_SETTINGS = {
    "host": "LIVEFEED_HOST",
    "port": "LIVEFEED_PORT",
    "workers": "LIVEFEED_WORKERS",
    "database_url": "LIVEFEED_DATABASE_URL",
    "demo_rate": "LIVEFEED_DEMO_RATE",
    "log_format": "LIVEFEED_LOG_FORMAT",
    "retention": "LIVEFEED_RETENTION",
    "certfile": "LIVEFEED_TLS_CERT",
    "keyfile": "LIVEFEED_TLS_KEY",
}


def _source(args: argparse.Namespace) -> Source:
    """The process environment with the flags written over it, remembering which."""
    env = dict(os.environ)
    flags = {}
    for dest, name in FLAG_SETTINGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            env[name] = str(value)
            flags[name] = "--" + dest.replace("_", "-")
    return Source(env, flags)


def _settings(args: argparse.Namespace) -> tuple[Settings, Source]:
    source = _source(args)
    return from_env(source.env, source.flags), source


def _client_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check_store(settings: Settings, source: Source) -> None:
    """Open the database once (applying migrations) and close it again."""
    from app.preflight import opened_store

    async def check() -> None:
        async with opened_store(settings, source):
            pass

    asyncio.run(check())


def cmd_serve(args: argparse.Namespace) -> int:
    from app.banner import start_line
    from app.preflight import check_port, check_tls, listening
    from app.server import run
    from app.supervisor import Supervisor

    settings, source = _settings(args)
    configure_logging(settings.log_format)
    if not args.as_worker:
        check_tls(settings, source)
        check_port(settings, source)
        _check_store(settings, source)  # migrations run once, before any worker starts
    if settings.workers > 1 and not args.as_worker:
        log.info("%s", start_line(settings))
        # --demo-rate is the server's rate: each worker publishes its share
        share = {"LIVEFEED_DEMO_RATE": repr(settings.demo_rate / settings.workers)}
        return Supervisor(settings.workers, {**source.env, **share}).run()
    with listening(settings, source):
        run(settings, worker=args.as_worker)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _check_store(*_settings(args))
    print("migrations applied", file=sys.stderr)
    return 0


def cmd_trim(args: argparse.Namespace) -> int:
    from app.preflight import opened_store

    settings, source = _settings(args)
    retention = settings.retention
    if retention is None:
        raise ConfigError("nothing to trim by: pass --retention 30d (or set LIVEFEED_RETENTION)")

    async def trim() -> int:
        async with opened_store(settings, source) as store:
            return await store.trim(retention)

    print(f"trimmed {asyncio.run(trim())} events", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _client(args: argparse.Namespace, timeout: httpx.Timeout) -> Iterator[httpx.Client]:
    """A client for ``--url``; failing to reach it is one line naming the URL."""
    try:
        with httpx.Client(
            base_url=args.url, headers=_client_headers(args.token), timeout=timeout
        ) as client:
            yield client
    except httpx.InvalidURL as exc:
        raise CommandError(f"--url {args.url!r} is not a URL ({exc}); write e.g. {DEFAULT_URL}")
    except httpx.TransportError as exc:
        raise cannot_reach(args.url, exc) from exc


def _post_events(client: httpx.Client, url: str, events: list[dict[str, object]]) -> list[int]:
    body = events[0] if len(events) == 1 else events
    response = client.post(
        "/api/events", content=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    if response.status_code != 201:
        raise refused(url, response)
    answer = response.json()
    return [item["id"] for item in answer["events"]] if "events" in answer else [answer["id"]]


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        data = orjson.loads(args.data) if args.data else None
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"--data is not JSON ({exc}); write e.g. --data '{EXAMPLE_DATA}'")
    event: dict[str, object] = {"type": args.type, "data": data}
    if args.workflow_id:
        event["workflow_id"] = args.workflow_id
    with _client(args, httpx.Timeout(30)) as client:
        ids = _post_events(client, args.url, [event] * args.count)
    print(" ".join(map(str, ids)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import demo_drafts

    sent = 0
    with _client(args, httpx.Timeout(30)) as client:
        for draft in demo_drafts():
            event = {
                "type": draft.type,
                "workflow_id": draft.workflow_id,
                "data": orjson.loads(draft.data),
            }
            _post_events(client, args.url, [event])
            sent += 1
            if args.count and sent >= args.count:
                break
            time.sleep(1.0 / args.rate)
    print(f"published {sent} demo events", file=sys.stderr)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    """Follow channels with app.client: one JSON envelope per line on stdout, the
    transport and every reconnection on stderr; resumes after drops and restarts."""
    from app.client import Control, FeedRefused, follow

    def show_heartbeat(control: Control) -> None:
        if control.type == "heartbeat":
            print(orjson.dumps(control.fields).decode(), flush=True)

    async def tail() -> None:
        feed = follow(
            args.url,
            args.channels or ["validation_updates"],
            last_event_id=args.last_event_id,
            types=args.types,
            tail=args.tail,
            token=args.token,
            transport=args.transport,
            on_control=show_heartbeat if args.heartbeats else None,
        )
        async with feed:
            async for event in feed:
                print(event.to_json(), flush=True)

    try:
        asyncio.run(tail())
    except FeedRefused as exc:
        print(f"tail: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from app.export import export

    params: dict[str, str] = {"format": args.format, "after": str(args.after)}
    for name in ("workflow_id", "types", "since", "until"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    with _client(args, httpx.Timeout(30, read=None)) as client:
        export(client, args.url, params, args.output, args.after)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 only when the export verified against the signed checkpoint."""
    from pathlib import Path

    from app.verify import summary, verify

    def path(name: str | None) -> Path | None:
        return Path(name) if name else None

    report, notes = verify(
        Path(args.file), path(args.checkpoint), path(args.key), args.url, args.token
    )
    for note in notes:
        print(note, file=sys.stderr)
    for problem in report.problems:
        print(f"FAIL {problem}")
    if report.problems or report.checkpoint is None:
        print(f"not verified: {len(report.problems)} problems in {report.events} lines")
        return 1
    print(summary(report, report.checkpoint, remote=args.url is not None))
    return 0


def _number(
    kind: Callable[[str], float], allowed: Callable[[float], bool], wanted: str
) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` that ``allowed`` accepts, else an error
    that says what is ``wanted``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not allowed(value):  # `not allowed` also refuses NaN
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value

    return parse


def _database_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="sqlite:///relative/path.db, sqlite:////absolute/path.db or "
        "postgresql://user:password@host/db (LIVEFEED_DATABASE_URL; "
        "default sqlite:///./data/livefeed.db)",
    )


def _retention_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retention",
        help="keep an age such as 30d, 12h, 90m, or a number of events such as 1000000 "
        "(LIVEFEED_RETENTION)",
    )


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (LIVEFEED_HOST, default 127.0.0.1)")
    # Values stay text: the settings' own validation judges them and names the flag.
    parser.add_argument("--port", help="port to listen on (LIVEFEED_PORT, default 8080)")
    parser.add_argument(
        "--workers", help="processes sharing the port (LIVEFEED_WORKERS, default 1)"
    )
    _database_flag(parser)
    parser.add_argument(
        "--demo-rate",
        help="demo events per second published by the server, in total over all workers; "
        "0 turns them off (LIVEFEED_DEMO_RATE; default 0, or 2 with no command)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text, or one JSON object per line (LIVEFEED_LOG_FORMAT, default text)",
    )
    _retention_flag(parser)
    parser.add_argument(
        "--certfile",
        help="PEM certificate chain: with --keyfile, serve HTTPS, WSS and HTTP/2 on the port "
        "(LIVEFEED_TLS_CERT)",
    )
    parser.add_argument(
        "--keyfile", help="PEM private key of --certfile, unencrypted (LIVEFEED_TLS_KEY)"
    )


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("LIVEFEED_URL", DEFAULT_URL),
        help=f"the server (LIVEFEED_URL, default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", default=os.environ.get("LIVEFEED_TOKEN"), help="bearer token (LIVEFEED_TOKEN)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Livefeed: one event log served over WebSocket, Server-Sent Events and "
        "long-poll. With no command, or with only serve's flags (e.g. --port 18080): serve "
        f"on SQLite with demo events at {QUICKSTART_DEMO_RATE}/s.",
    )
    parser.add_argument("--version", action="version", version=f"livefeed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve the API, streams and dashboard")
    _serve_flags(serve)
    serve.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)
    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    _database_flag(migrate)
    migrate.set_defaults(func=cmd_migrate)
    trim = sub.add_parser("trim", help="delete events the retention policy no longer keeps")
    _database_flag(trim)
    _retention_flag(trim)
    trim.set_defaults(func=cmd_trim)
    demo = sub.add_parser("demo", help="publish realistic workflow events to a running server")
    _client_flags(demo)
    demo.add_argument(
        "--rate",
        type=_number(float, lambda v: v > 0, "a rate above 0 events per second, e.g. --rate 2"),
        default=2.0,
        help="events per second (default 2)",
    )
    demo.add_argument(
        "--count",
        type=_number(int, lambda v: v >= 0, "a count of events, or 0 for no limit"),
        default=0,
        help="stop after N events (default 0: never)",
    )
    demo.set_defaults(func=cmd_demo)
    publish = sub.add_parser("publish", help="publish one event")
    _client_flags(publish)
    publish.add_argument("type", help="event type, e.g. validation_created")
    publish.add_argument("--workflow-id", help="the workflow it belongs to, e.g. wf_abc123")
    publish.add_argument("--data", help=f"its data, a JSON object, e.g. '{EXAMPLE_DATA}'")
    publish.add_argument(
        "--count",
        type=_number(int, lambda v: v >= 1, "a count of 1 or more"),
        default=1,
        help="publish it N times in one batch (default 1)",
    )
    publish.set_defaults(func=cmd_publish)
    tail = sub.add_parser("tail", help="follow channels, resuming after drops and restarts")
    _client_flags(tail)
    tail.add_argument(
        "channels", nargs="*", help="channels to follow (default: validation_updates, every event)"
    )
    tail.add_argument("--types", help="comma-separated event types")
    tail.add_argument("--last-event-id", type=int, help="start after this id")
    tail.add_argument("--tail", type=int, default=0, help="with no id: start with the last N")
    tail.add_argument(
        "--transport",
        choices=["auto", "ws", "sse", "poll"],
        default="auto",
        help="auto: WebSocket, falling back to SSE then long-poll (default)",
    )
    tail.add_argument("--heartbeats", action="store_true", help="print heartbeats too")
    tail.set_defaults(func=cmd_tail)
    export = sub.add_parser("export", help="export events as NDJSON or CSV")
    _client_flags(export)
    export.add_argument(
        "--format", choices=["ndjson", "csv"], default="ndjson", help="default ndjson"
    )
    export.add_argument(
        "--output", "-o", default="-", help="file, written whole or not at all (default: stdout)"
    )
    export.add_argument("--after", type=int, default=0, help="start after this event id")
    export.add_argument("--workflow-id", help="only this workflow's events")
    export.add_argument("--types", help="only these comma-separated event types")
    export.add_argument("--since", help="only events at or after this ISO 8601 time")
    export.add_argument("--until", help="only events before this ISO 8601 time")
    export.set_defaults(func=cmd_export)
    verify = sub.add_parser("verify", help="verify an export against a signed checkpoint")
    verify.add_argument("file", help="an NDJSON or CSV export (of ids 1..N, without --url)")
    verify.add_argument("--checkpoint", help="file: GET /api/log/checkpoint (--url: fetched)")
    verify.add_argument("--key", help="file: the pinned GET /api/log/key (--url: fetched)")
    verify.add_argument("--url", help="check each event with the inclusion proofs of this server")
    verify.add_argument(
        "--token", default=os.environ.get("LIVEFEED_TOKEN"), help="read token (LIVEFEED_TOKEN)"
    )
    verify.set_defaults(func=cmd_verify)
    return parser


def _with_command(argv: list[str]) -> tuple[list[str], bool]:
    """``livefeed`` alone, or with serve's flags only, is the quick start: serve."""
    if argv and (argv[0] in HELP_FLAGS or not argv[0].startswith("-")):
        return argv, False
    return ["serve", *argv], True


def main(argv: Sequence[str] | None = None) -> int:
    arguments, quick_start = _with_command(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(arguments)
    if quick_start and args.demo_rate is None and not os.environ.get("LIVEFEED_DEMO_RATE"):
        args.demo_rate = QUICKSTART_DEMO_RATE
    configure_logging("text")
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`livefeed export | head`): stop quietly, as `cat` does,
        # and keep the interpreter's final flush from failing again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        return 130
