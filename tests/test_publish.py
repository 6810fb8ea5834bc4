"""POST /api/events: durable, all or none, and every bad input a clear JSON error."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.support import ServerProcess, assert_error

pytestmark = pytest.mark.both_engines


def post(
    server: ServerProcess,
    body: bytes,
    content_type: str | None = "application/json",
    **headers: str,
) -> httpx.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return httpx.post(server.url + "/api/events", content=body, headers=headers, timeout=10)


def test_single_publish_returns_id_and_ts(server: ServerProcess):
    """201 with the assigned id and the store's timestamp."""
    response = post(server, b'{"type":"validation_created","workflow_id":"wf_1","data":{"a":1}}')
    assert response.status_code == 201
    body = response.json()
    assert body["id"] == 1 and body["ts"].endswith("Z")
    assert server.events()[0] == {
        "id": 1,
        "type": "validation_created",
        "workflow_id": "wf_1",
        "ts": body["ts"],
        "data": {"a": 1},
    }


def test_batch_publish_is_one_transaction_with_increasing_ids(server: ServerProcess):
    """An array gets consecutive ids in order; omitted or null data is {}."""
    response = post(server, b'[{"type":"a"},{"type":"b","data":null},{"type":"c","data":{}}]')
    assert response.status_code == 201
    ids = [e["id"] for e in response.json()["events"]]
    assert ids == [1, 2, 3]
    assert [e["data"] for e in server.events()] == [{}, {}, {}]


BAD_BODIES = [
    (b"{", 400, "bad_json"),
    (b'{"type":"a","data":{"x":NaN}}', 400, "bad_json"),
    (b'{"type":"a","data":{"x":Infinity}}', 400, "bad_json"),
    (b'{"type":"a","data":{"x":1e400}}', 400, "bad_json"),
    (b'{"type":"a","data":{"x":123456789012345678901234567890}}', 400, "bad_json"),
    (b'{"type":"a","type":"b"}', 400, "bad_json"),
    (b'{"type":"a","data":{"x":"\\ud800"}}', 400, "invalid_event"),
    (b'{"type":"a","data":{"x":"\xff"}}', 400, "bad_json"),
    (b'{"type":"a","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, None),
    (b'{"type":"a","data":' + b'{"a":' * 65 + b"1" + b"}" * 65 + b"}", 400, "invalid_event"),
    (b'{"type":"Upper"}', 400, "invalid_event"),
    (b'{"type":"a\\nevent: x"}', 400, "invalid_event"),
    (b'{"type":"' + b"a" * 65 + b'"}', 400, "invalid_event"),
    (b'{"type":"a","workflow_id":"a/b"}', 400, "invalid_event"),
    (b'{"type":"a","workflow_id":"' + b"w" * 129 + b'"}', 400, "invalid_event"),
    (b'{"type":"a","workflow_id":"validation_updates"}', 400, "invalid_event"),
    (b'{"type":"a","data":[1,2]}', 400, "invalid_event"),
    (b'{"type":"a","id":5}', 400, "invalid_event"),
    (b'{"type":5}', 400, "invalid_event"),
    (b'"just a string"', 400, "invalid_event"),
    (b"[]", 400, "invalid_event"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"), BAD_BODIES, ids=[f"bad{n}" for n in range(len(BAD_BODIES))]
)
def test_bad_bodies_are_refused_and_nothing_is_written(server: ServerProcess, body, status, code):
    """Strict JSON and the envelope rules: 400 JSON, the log untouched."""
    assert_error(post(server, body), status, code)
    assert server.events() == []


def test_batch_with_one_bad_item_writes_nothing(server: ServerProcess):
    """All or none: the error names the bad item."""
    body = orjson.dumps([{"type": "ok"}] * 5 + [{"type": "BAD"}] + [{"type": "ok"}])
    error = assert_error(post(server, body), 400, "invalid_event")
    assert "events[5].type" in error["detail"]
    assert server.events() == []


def test_batch_over_1000_and_oversized_event_are_413(server: ServerProcess):
    """Size limits refuse the whole request."""
    assert_error(post(server, orjson.dumps([{"type": "a"}] * 1001)), 413, "batch_too_large")
    big = {"type": "a", "data": {"blob": "x" * (64 * 1024)}}
    assert_error(post(server, orjson.dumps([{"type": "a"}, big])), 413, "event_too_large")
    assert server.events() == []


@pytest.mark.parametrize("megabytes", [10, 20])
def test_body_over_8_mib_is_refused_before_reading(server: ServerProcess, megabytes: int):
    """A 10 or 20 MB body gets 413 JSON."""
    assert_error(post(server, b"[" + b" " * (megabytes * 1024 * 1024) + b"]"), 413)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        None,
        "application/json; charset=latin-1",
        "application/x-www-form-urlencoded",
    ],
)
def test_wrong_content_type_is_415(server: ServerProcess, content_type):
    """Only JSON in UTF-8 is accepted."""
    assert_error(post(server, b'{"type":"a"}', content_type), 415, "unsupported_media_type")


def test_publish_token_rules(start_server):
    """With a publish token: missing/wrong is 401 with WWW-Authenticate; the read token is 403."""
    server = start_server(LIVEFEED_PUBLISH_TOKEN="pub-secret", LIVEFEED_READ_TOKEN="read-secret")
    missing = post(server, b'{"type":"a"}')
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_error(post(server, b'{"type":"a"}', Authorization="Bearer pub-secreT"), 401)
    assert_error(post(server, b'{"type":"a"}', Authorization="Bearer read-secret"), 403)
    assert post(server, b'{"type":"a"}', Authorization="Bearer pub-secret").status_code == 201


def test_framework_errors_are_json(server: ServerProcess):
    """404 and 405 from the framework use the same JSON shape; /ws paths list valid ones."""
    assert_error(httpx.get(server.url + "/nope"), 404, "not_found")
    assert_error(httpx.delete(server.url + "/api/events"), 405, "method_not_allowed")
    body = assert_error(httpx.get(server.url + "/sse/validation_updates/"), 404)
    assert "/sse/{channel}" in body["detail"] and "/ws/{channel}" in body["detail"]
    assert_error(httpx.get(server.url + "/api/events/999"), 404)
    upgrade = assert_error(httpx.get(server.url + "/ws/validation_updates"), 426)
    assert "WebSocket" in upgrade["detail"]
    assert_error(httpx.get(server.url + "/api/events/99999999999999999999"), 400, "bad_cursor")
