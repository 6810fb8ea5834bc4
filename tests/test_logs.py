"""Logs: one line per stream opened and closed, JSON on request, never a secret."""

from __future__ import annotations

import asyncio
import logging

import orjson
from websockets.asyncio.client import connect

from app.logs import JsonFormatter, RedactSecrets
from tests.support import ServerProcess


def test_secrets_in_urls_are_redacted_from_any_log_line():
    """access_token= and ticket= values never reach a log line."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1,
                               "GET /sse/a?access_token=s3cret&ticket=t1ck&types=b %s", ("!",),
                               None)
    assert RedactSecrets().filter(record)
    line = JsonFormatter().format(record)
    assert "s3cret" not in line and "t1ck" not in line
    message = orjson.loads(line)["message"]
    assert message.endswith("access_token=[redacted]&ticket=[redacted]&types=b !")


def test_stream_open_and_close_are_logged_as_json(start_server):
    """With LIVEFEED_LOG_FORMAT=json every line is a JSON object; streams log open and close."""
    server: ServerProcess = start_server(LIVEFEED_LOG_FORMAT="json")

    async def visit() -> None:
        async with connect(server.ws_url + "/ws/wf_7?last_event_id=0") as ws:
            await ws.recv()

    asyncio.run(visit())
    server.stop()
    entries = [orjson.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    messages = [e["message"] for e in entries]
    assert any(m.startswith("websocket opened channel=wf_7") for m in messages)
    assert any(m.startswith("websocket closed channel=wf_7") and "duration=" in m for m in messages)
