"""Does the installed Hypercorn still look like the one these fixes were checked against?

Every fix overrides private methods and rebinds module names; each check below is one
of those assumptions, so a Hypercorn release that moved something is noticed before
anything is changed (and nothing is: see :func:`app.hypercorn_fixes.install`).
"""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType

import hypercorn.asyncio.task_group
import hypercorn.protocol
import hypercorn.protocol.events
import hypercorn.protocol.h2
import hypercorn.protocol.h11
import hypercorn.protocol.ws_stream
import hypercorn.typing
from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.asyncio.worker_context import EventWrapper, WorkerContext
from hypercorn.config import Config
from hypercorn.events import Updated
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H2ProtocolAssumedError, H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.protocol.ws_stream import Handshake, WSStream
from wsproto.connection import Connection, ConnectionState

CHECKED_HYPERCORN = "0.18.0"

#: How Hypercorn builds an HTTP/1.1 request's stream (app/hypercorn_fixes/http1.py too).
STREAM_PARAMS = [
    "self", "app", "config", "context", "task_group", "ssl", "client", "server", "send",
    "stream_id",
]  # fmt: skip
#: The stream events app/hypercorn_fixes/http1.py makes and reads, with their fields.
STREAM_EVENTS = {
    "Request": ["stream_id", "headers", "http_version", "method", "raw_path", "state"],
    "Body": ["stream_id", "data"],
    "EndBody": ["stream_id"],
    "Data": ["stream_id", "data"],
    "Response": ["stream_id", "headers", "status_code"],
    "StreamClosed": ["stream_id"],
}
#: Private coroutines overridden or called, with their parameters.
H2_METHODS = {
    "_handle_events": ["self", "events"],
    "_flush": ["self"],
}
WS_METHODS = {
    "handle": ["self", "event"],
    "_send_error_response": ["self", "status_code"],
    "_accept": ["self", "message"],
    "_send_wsproto_event": ["self", "event"],
    "app_send": ["self", "message"],
}
#: What a connection builds Hypercorn's protocol with (app/hypercorn_fixes/connection.py).
PROTOCOL_WRAPPER_PARAMS = [
    "self", "app", "config", "context", "task_group", "state", "ssl", "client", "server",
    "send", "alpn_protocol",
]  # fmt: skip
#: What Hypercorn's task group runs a request with (a connection's tasks call it too).
HANDLE_PARAMS = ["app", "config", "scope", "receive", "send", "sync_spawn", "call_soon"]
#: All that Hypercorn's protocols may ask of a connection's task group.
TASK_GROUP_METHODS = {"spawn_app", "spawn"}
#: The lifespan as app/hypercorn_fixes/serve.py runs it.
LIFESPAN_PARAMS = ["self", "app", "config", "loop", "lifespan_state"]
CONFIG_METHODS = ("create_sockets", "create_ssl_context", "response_headers")
LIFESPAN_COROUTINES = ("handle_lifespan", "wait_for_startup", "wait_for_shutdown")
#: Names a function's code must use: the call sites and lookups the fixes rely on.
USES: list[tuple[object, str, tuple[str, ...]]] = [
    (H2Protocol, "_create_stream", ("WSStream",)),
    (H2Protocol, "handle", ("receive_data", "_handle_events")),
    (H2Protocol, "_flush", ("data_to_send",)),
    (hypercorn.protocol.ProtocolWrapper, "__init__", ("H11Protocol", "H2Protocol")),
    (hypercorn.protocol.ProtocolWrapper, "handle", ("H2ProtocolAssumedError", "H2Protocol")),
    (WSStream, "handle", ("Handshake", "is_valid", "_send_error_response", "spawn_app")),
    (WSStream, "_accept", ("accept", "connection")),
    (WSStream, "app_send", ("_send_error_response",)),
    (WSStream, "_send_wsproto_event", ("send", "Data", "stream_id")),
    (WSStream, "_handle_events", ("FrameTooLargeError", "_send_wsproto_event")),
    (WSStream, "_handle_events", ("REMOTE_CLOSING", "response")),
    (Handshake, "accept", ("extensions", "server_extensions_handshake", "Connection")),
    (Connection, "__init__", ("_state", "_events", "deque", "receive_data")),
    (Connection, "events", ("_state", "REMOTE_CLOSING", "_events", "popleft")),
    # HTTP/2 signals idleness as HTTP/1.1 does (the connection's keep-alive timer).
    (H2Protocol, "_handle_events", ("Updated",)),
    (HTTPStream, "app_send", ("Response", "Body", "_send_closed")),
    (HTTPStream, "_send_closed", ("EndBody", "StreamClosed")),
    (H2Protocol, "__init__", ("event_class",)),
]


def _params(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def _coroutines(owner: type, expected: dict[str, list[str]]) -> list[str]:
    found = []
    for name, params in expected.items():
        method = getattr(owner, name, None)
        if not inspect.iscoroutinefunction(method) or _params(method) != params:
            found.append(f"{owner.__name__}.{name} is not a coroutine of {params}")
    return found


def _stream_events() -> list[str]:
    found = []
    for name, fields in STREAM_EVENTS.items():
        event = getattr(hypercorn.protocol.events, name, None)
        kept = dataclasses.fields(event) if dataclasses.is_dataclass(event) else ()
        if [f.name for f in kept] != fields:
            found.append(f"hypercorn.protocol.events.{name} is not {name}({', '.join(fields)})")
    for stream in (HTTPStream, WSStream):
        if _params(stream.__init__) != STREAM_PARAMS:
            found.append(f"{stream.__name__}.__init__ does not take {STREAM_PARAMS}")
    if _params(H2ProtocolAssumedError.__init__) != ["self", "data"]:
        found.append("H2ProtocolAssumedError does not carry the bytes read")
    if not isinstance(getattr(Config, "keep_alive_max_requests", None), int):
        found.append("Config.keep_alive_max_requests is gone")
    return found


def _bound(module: ModuleType, name: str, expected: object) -> list[str]:
    if getattr(module, name, None) is not expected:
        return [f"{module.__name__}.{name} is not Hypercorn's own"]
    return []


def mismatches() -> list[str]:
    """What no longer looks like the Hypercorn this package was checked against."""
    found = [
        *_bound(hypercorn.protocol, "H11Protocol", H11Protocol),
        *_bound(hypercorn.protocol, "H2Protocol", H2Protocol),
        *_bound(hypercorn.protocol.h11, "WSStream", WSStream),
        *_bound(hypercorn.protocol.h2, "WSStream", WSStream),
        *_bound(hypercorn.protocol.ws_stream, "Handshake", Handshake),
        *_bound(hypercorn.protocol.ws_stream, "Connection", Connection),
        *_stream_events(),
        *_coroutines(H2Protocol, H2_METHODS),
        *_coroutines(WSStream, WS_METHODS),
        *_coroutines(
            hypercorn.protocol.ProtocolWrapper, {"initiate": ["self"], "handle": ["self", "event"]}
        ),
        *_coroutines(
            Lifespan,
            {name: ["self"] for name in LIFESPAN_COROUTINES},
        ),
        *_coroutines(EventWrapper, {name: ["self"] for name in ("set", "clear", "wait")}),
    ]
    if _params(hypercorn.protocol.ProtocolWrapper.__init__) != PROTOCOL_WRAPPER_PARAMS:
        found.append(f"ProtocolWrapper.__init__ does not take {PROTOCOL_WRAPPER_PARAMS}")
    if _params(Lifespan.__init__) != LIFESPAN_PARAMS:
        found.append(f"Lifespan.__init__ does not take {LIFESPAN_PARAMS}")
    asked = {n for n in vars(hypercorn.typing.TaskGroup) if not n.startswith("_")}
    if asked != TASK_GROUP_METHODS:
        found.append(f"Hypercorn's task groups do {sorted(asked)}")
    if not all(callable(getattr(Config, n, None)) for n in CONFIG_METHODS):
        found.append("Config no longer creates the sockets, the TLS context and its headers")
    if not isinstance(getattr(Config, "include_date_header", None), bool):
        found.append("Config.include_date_header is gone (the Date header would be sent twice)")
    handle = getattr(hypercorn.asyncio.task_group, "_handle", None)
    if not inspect.iscoroutinefunction(handle) or _params(handle) != HANDLE_PARAMS:
        found.append(f"hypercorn.asyncio.task_group._handle is not a coroutine of {HANDLE_PARAMS}")
    if getattr(WorkerContext, "event_class", None) is not EventWrapper:
        found.append("WorkerContext.event_class is not EventWrapper")
    for owner, function, names in USES:
        code = getattr(getattr(owner, function, None), "__code__", None)
        missing = [n for n in names if code is None or n not in code.co_names]
        if missing:
            found.append(f"{getattr(owner, '__name__', owner)}.{function} no longer uses {missing}")
    if not isinstance(getattr(Config, "h11_max_incomplete_size", None), int):
        found.append("Config.h11_max_incomplete_size is gone")
    fields = (
        [f.name for f in dataclasses.fields(Updated)] if dataclasses.is_dataclass(Updated) else []
    )
    if fields != ["idle"]:
        found.append("hypercorn.events.Updated is not Updated(idle)")
    if not {"LOCAL_CLOSING", "REMOTE_CLOSING"} <= set(ConnectionState.__members__):
        found.append("wsproto's ConnectionState has no LOCAL_CLOSING or REMOTE_CLOSING")
    return found
