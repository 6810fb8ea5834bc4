"""The baseline: what a Python user would write instead of Livefeed.

Starlette + sse-starlette on uvicorn, one in-memory ``asyncio.Queue`` per
subscriber, no persistence, JSON encoded per subscriber: the usual tutorial
shape.  It speaks just enough of Livefeed's API for the same load generator
to measure it — ``POST /api/events`` (one event or an array), ``GET
/sse/{channel}`` and ``/ws/{channel}`` with a ``connection_established``
frame first and ``Last-Event-ID`` replay from an in-memory list, ``GET
/readyz`` — so the two are compared on the same harness in the same run.

    python -m bench.baseline_app --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


class Broker:
    """Every event ever published (for replay) and one queue per live subscriber."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def publish(self, body: dict[str, Any]) -> dict[str, Any]:
        event = {"id": len(self.history) + 1, "type": body.get("type", "message"), **body}
        self.history.append(event)
        for queue in self.queues:
            queue.put_nowait(event)
        return event

    async def events(self, after: int) -> AsyncIterator[dict[str, Any]]:
        """Replay after ``after`` from memory, then live; registered first, so nothing is missed."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.queues.add(queue)
        try:
            replayed = after
            for event in self.history[after:]:
                replayed = event["id"]
                yield event
            while True:
                event = await queue.get()
                if event["id"] > replayed:
                    yield event
        finally:
            self.queues.discard(queue)


broker = Broker()


def cursor(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


async def readyz(request: Request) -> Response:
    return JSONResponse({"status": "ready"})


async def publish(request: Request) -> Response:
    body = await request.json()
    if isinstance(body, list):
        ids = [broker.publish(item)["id"] for item in body]
        return JSONResponse({"events": [{"id": i} for i in ids]}, status_code=201)
    return JSONResponse({"id": broker.publish(body)["id"]}, status_code=201)


async def sse(request: Request) -> Response:
    after = cursor(
        request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    )

    async def stream() -> AsyncIterator[dict[str, Any]]:
        yield {"event": "connection_established", "data": json.dumps({"type": "hello"})}
        async for event in broker.events(after):
            yield {"id": str(event["id"]), "event": event["type"], "data": json.dumps(event)}

    # "\n" line ends (sse-starlette defaults to "\r\n") so that the load generator's
    # frame splitter, written for Livefeed's frames, reads these too; it costs nothing.
    return EventSourceResponse(stream(), sep="\n")


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    after = cursor(websocket.query_params.get("last_event_id"))
    await websocket.send_text(json.dumps({"type": "connection_established"}))
    try:
        async for event in broker.events(after):
            await websocket.send_text(json.dumps(event))
    except WebSocketDisconnect:
        pass


app = Starlette(
    routes=[
        Route("/readyz", readyz),
        Route("/api/events", publish, methods=["POST"]),
        Route("/sse/{channel}", sse),
        WebSocketRoute("/ws/{channel}", ws),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0: any free port")
    args = parser.parse_args()
    # Bound here, as run.py serve does, so that with --port 0 the benchmark learns the port.
    sock = socket.create_server((args.host, args.port), backlog=2048)
    print(f"listening on http://{args.host}:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,  # open streams would hold a SIGTERM for good
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
