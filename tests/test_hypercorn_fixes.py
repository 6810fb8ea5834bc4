"""app/hypercorn_fixes.py in process: it installs only onto the Hypercorn it was checked
against, falls back to Hypercorn's own answer, and never echoes the client's bytes.  The
behaviour on real sockets is in tests/test_hostile.py."""

from __future__ import annotations

from typing import Any

import h11
import hypercorn.protocol
import orjson
import pytest
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.h11 import H11Protocol

from app import hypercorn_fixes
from app.hypercorn_fixes import LivefeedH11Protocol, describe, install


@pytest.fixture(autouse=True)
def hypercorn_as_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from Hypercorn's own class and leaves it as it was."""
    monkeypatch.setattr(hypercorn.protocol, "H11Protocol", H11Protocol)


def test_install_rebinds_the_one_name_and_is_idempotent() -> None:
    assert install() and install()
    assert hypercorn.protocol.H11Protocol is LivefeedH11Protocol


async def _changed_signature(self: H11Protocol, status_code: int, reason: str) -> None:
    """A stand-in for a future Hypercorn whose private method changed."""


@pytest.mark.parametrize("change", ["method removed", "signature changed", "name rebound"])
def test_install_leaves_a_changed_hypercorn_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    if change == "method removed":
        monkeypatch.delattr(H11Protocol, "_send_error_response")
    elif change == "signature changed":
        monkeypatch.setattr(H11Protocol, "_send_error_response", _changed_signature)
    else:
        monkeypatch.setattr(hypercorn.protocol, "H11Protocol", type("Other", (H11Protocol,), {}))
    before = hypercorn.protocol.H11Protocol
    assert not install()
    assert hypercorn.protocol.H11Protocol is before
    assert "stay" in caplog.text


def protocol(sent: list[Event]) -> LivefeedH11Protocol:
    async def send(event: Event) -> None:
        sent.append(event)

    unused: Any = None  # no request reaches an app or a task group in these tests
    return LivefeedH11Protocol(
        app=unused,
        config=Config(),
        context=WorkerContext(None),
        task_group=unused,
        connection_state=unused,
        ssl=False,
        client=None,
        server=None,
        send=send,
    )


def written(sent: list[Event]) -> bytes:
    return b"".join(e.data for e in sent if isinstance(e, RawData))


@pytest.mark.asyncio
async def test_malformed_request_gets_json_naming_the_reason_not_the_bytes() -> None:
    sent: list[Event] = []
    await protocol(sent).handle(RawData(b"GET / HTTP/1.1\r\nHost: x\r\n<script>\x00\r\n\r\n"))
    head, _, body = written(sent).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head
    error = orjson.loads(body)
    assert error["error"] == "bad_request" and "illegal header line" in error["detail"]
    assert "script" not in error["detail"]
    assert isinstance(sent[-1], Closed)


@pytest.mark.asyncio
async def test_a_body_that_cannot_be_built_falls_back_to_hypercorns_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> tuple[str, str]:
        raise RuntimeError("simulated")

    monkeypatch.setattr(hypercorn_fixes, "describe", broken)
    sent: list[Event] = []
    await protocol(sent).handle(RawData(b"\xff\xfe GET /\r\n\r\n"))
    assert written(sent).startswith(b"HTTP/1.1 400 ")
    assert b"content-length: 0\r\n" in written(sent) and written(sent).endswith(b"\r\n\r\n")


def test_details_say_what_was_wrong_and_the_limit() -> None:
    config = Config()
    code, detail = describe(431, config, None)
    assert code == "headers_too_large" and f"{config.h11_max_incomplete_size} bytes" in detail
    code, detail = describe(400, config, h11.RemoteProtocolError("illegal request line"))
    assert code == "bad_request" and "(illegal request line)" in detail
    code, detail = describe(400, config, h11.RemoteProtocolError("x: b'\\x00 <b>'"))
    assert code == "bad_request" and "<b>" not in detail and "(" not in detail.split(":")[0]
    assert describe(501, config, None)[0] == "not_implemented"
