"""``run.py`` subcommands: serve, demo, publish, tail, export, verify, migrate, trim.

Flags override the ``LIVEFEED_*`` environment, and both go through the same
validation (:func:`app.config.from_env`), so a mistake reads the same way
wherever it was made.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence

import httpx
import orjson

from app.config import ConfigError, Retention, Settings, from_env
from app.logs import configure_logging

DEFAULT_URL = "http://127.0.0.1:8080"
QUICKSTART_DEMO_RATE = "2"
SERVER_FLAGS = {
    "host": "LIVEFEED_HOST",
    "port": "LIVEFEED_PORT",
    "workers": "LIVEFEED_WORKERS",
    "database_url": "LIVEFEED_DATABASE_URL",
    "demo_rate": "LIVEFEED_DEMO_RATE",
    "log_format": "LIVEFEED_LOG_FORMAT",
    "retention": "LIVEFEED_RETENTION",
}


def _environment(args: argparse.Namespace) -> dict[str, str]:
    """The process environment with the command-line flags written over it."""
    env = dict(os.environ)
    for flag, name in SERVER_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            env[name] = str(value)
    return env


def _settings(args: argparse.Namespace) -> Settings:
    return from_env(_environment(args))


def _client_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def cmd_serve(args: argparse.Namespace) -> int:
    from app.server import run
    from app.supervisor import Supervisor

    settings = _settings(args)
    configure_logging(settings.log_format)
    if settings.workers > 1 and not args.as_worker:
        cmd_migrate(args)  # once, before the workers race for it
        return Supervisor(settings.workers, _environment(args)).run()
    run(settings, worker=args.as_worker)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.store import open_store

    async def migrate() -> None:
        store = open_store(_settings(args))
        await store.open()  # applies pending migrations under the write lock
        await store.close()

    asyncio.run(migrate())
    print("migrations applied", file=sys.stderr)
    return 0


def cmd_trim(args: argparse.Namespace) -> int:
    from app.store import open_store

    settings = _settings(args)
    if settings.retention is None:
        raise ConfigError("nothing to trim by: set LIVEFEED_RETENTION or pass --retention 30d")
    retention: Retention = settings.retention

    async def trim() -> int:
        store = open_store(settings)
        await store.open()
        try:
            return await store.trim(retention)
        finally:
            await store.close()

    print(f"trimmed {asyncio.run(trim())} events", file=sys.stderr)
    return 0


def _post_events(client: httpx.Client, events: list[dict[str, object]]) -> list[int]:
    body = events[0] if len(events) == 1 else events
    response = client.post(
        "/api/events", content=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    if response.status_code != 201:
        raise SystemExit(f"publish failed: {response.status_code} {response.text}")
    answer = response.json()
    return [item["id"] for item in answer["events"]] if "events" in answer else [answer["id"]]


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        data = orjson.loads(args.data) if args.data else None
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"--data is not JSON: {exc}")
    event: dict[str, object] = {"type": args.type, "data": data}
    if args.workflow_id:
        event["workflow_id"] = args.workflow_id
    with httpx.Client(base_url=args.url, headers=_client_headers(args.token)) as client:
        ids = _post_events(client, [event] * args.count)
    print(" ".join(map(str, ids)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import demo_drafts

    sent = 0
    with httpx.Client(base_url=args.url, headers=_client_headers(args.token)) as client:
        for draft in demo_drafts():
            event = {
                "type": draft.type,
                "workflow_id": draft.workflow_id,
                "data": orjson.loads(draft.data),
            }
            _post_events(client, [event])
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
    params: dict[str, str] = {"format": args.format, "after": str(args.after)}
    for name in ("workflow_id", "types", "since", "until"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    headers = _client_headers(args.token)
    with httpx.Client(
        base_url=args.url, headers=headers, timeout=httpx.Timeout(30, read=None)
    ) as client:
        total = client.get("/api/stats").json().get("latest_id", 0) - args.after
        out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
        written = lines = 0
        try:
            with client.stream("GET", "/api/events", params=params) as response:
                if response.status_code != 200:
                    raise SystemExit(f"{response.status_code}: {response.read().decode()}")
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
                    lines += chunk.count(b"\n")
                    _progress(lines, total, written)
        finally:
            if out is not sys.stdout.buffer:
                out.close()
    print(file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 only when the export verified against the signed checkpoint."""
    from pathlib import Path

    from app.tlog.audit import verify_files

    report = verify_files(Path(args.file), Path(args.checkpoint), Path(args.key))
    for problem in report.problems:
        print(f"FAIL {problem}")
    if report.problems or report.checkpoint is None:
        print(f"not verified: {len(report.problems)} problems in {report.events} lines")
        return 1
    cp = report.checkpoint
    print(f"verified: {report.events} events, ids 1..{cp.size}, signed by {cp.origin}")
    return 0


def _progress(lines: int, total: int, written: int) -> None:
    share = min(lines / total, 1.0) if total > 0 else 1.0
    bar = "#" * int(share * 30)
    print(f"\r[{bar:<30}] {lines} lines, {written / 1e6:.1f} MB", end="", file=sys.stderr)


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (LIVEFEED_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (LIVEFEED_PORT, default 8080)")
    parser.add_argument("--workers", type=int, help="worker processes (LIVEFEED_WORKERS)")
    parser.add_argument(
        "--database-url", help="sqlite:///path.db or postgresql://... (LIVEFEED_DATABASE_URL)"
    )
    parser.add_argument("--demo-rate", type=float, help="publish demo events per second")
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.add_argument("--retention", help="keep e.g. 30d or 1000000 events")


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("LIVEFEED_URL", DEFAULT_URL),
        help=f"server URL (LIVEFEED_URL, default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", default=os.environ.get("LIVEFEED_TOKEN"), help="bearer token (LIVEFEED_TOKEN)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Livefeed. With no command: serve on SQLite with demo events.",
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the API, streams and dashboard")
    _server_flags(serve)
    serve.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)
    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    _server_flags(migrate)
    migrate.set_defaults(func=cmd_migrate)
    trim = sub.add_parser("trim", help="delete events the retention policy no longer keeps")
    _server_flags(trim)
    trim.set_defaults(func=cmd_trim)
    demo = sub.add_parser("demo", help="publish realistic workflow events to a server")
    _client_flags(demo)
    demo.add_argument("--rate", type=float, default=2.0, help="events per second")
    demo.add_argument("--count", type=int, default=0, help="stop after N events (0: never)")
    demo.set_defaults(func=cmd_demo)
    publish = sub.add_parser("publish", help="publish one event")
    _client_flags(publish)
    publish.add_argument("type", help="event type, e.g. validation_created")
    publish.add_argument("--workflow-id")
    publish.add_argument("--data", help="a JSON object")
    publish.add_argument("--count", type=int, default=1, help="publish it N times in one batch")
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
    export.add_argument("--format", choices=["ndjson", "csv"], default="ndjson")
    export.add_argument("--output", "-o", default="-", help="file (default: stdout)")
    export.add_argument("--after", type=int, default=0)
    export.add_argument("--workflow-id")
    export.add_argument("--types")
    export.add_argument("--since")
    export.add_argument("--until")
    export.set_defaults(func=cmd_export)
    verify = sub.add_parser("verify", help="verify a complete export against a checkpoint")
    verify.add_argument("file", help="an NDJSON or CSV export of ids 1..N")
    verify.add_argument("--checkpoint", required=True, help="file: GET /api/log/checkpoint")
    verify.add_argument("--key", required=True, help="file: the pinned GET /api/log/key")
    verify.set_defaults(func=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:  # the quickstart: serve with demo traffic
        args = build_parser().parse_args(["serve", "--demo-rate", QUICKSTART_DEMO_RATE])
    configure_logging("text")
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
