"""POST /api/events: durable, all or none, and every bad input a clear JSON error."""

from __future__ import annotations

import socket

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


#: Headers that differ between any two answers, whoever writes them.
PER_ANSWER = {"date", "content-length", "transfer-encoding"}


def answer_shape(response: httpx.Response) -> tuple[int, set[str], dict[str, str]]:
    """Status, header names and the headers' values, but for what differs per answer."""
    names = {name for name in response.headers if name not in PER_ANSWER}
    return response.status_code, names, {n: response.headers[n] for n in names}


def chunked(server: ServerProcess, body: bytes, **headers: str) -> httpx.Response:
    """The same publish with a chunked body (no Content-Length): Quart's route answers it,
    where a body of declared length takes the plain-ASGI path."""
    headers = {"Content-Type": "application/json", **headers}
    return httpx.post(
        server.url + "/api/events", content=iter([body]), headers=headers, timeout=10
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"a","workflow_id":"wf_1"}',
        b'[{"type":"a"},{"type":"b"}]',
        b'{"type":"a"',
        b'{"type":"Upper"}',
        b"[" + b'{"type":"a"},' * 1000 + b'{"type":"a"}]',
    ],
)
def test_both_publish_paths_answer_alike(server: ServerProcess, body: bytes):
    """A publish answered without the framework gets the answer Quart's route gives:
    status, every header (security, cache, content type) and the body's shape."""
    fast, framework = post(server, body), chunked(server, body)
    assert framework.request.headers.get("content-length") is None
    assert answer_shape(fast) == answer_shape(framework)
    if fast.status_code == 201:
        assert fast.json().keys() == framework.json().keys()
    else:
        assert fast.json() == framework.json()
    assert int(fast.headers["content-length"]) == len(fast.content)


def test_both_publish_paths_refuse_credentials_alike(start_server):
    """401 with its WWW-Authenticate, 403, and the idempotent replay header, both ways."""
    server = start_server(LIVEFEED_PUBLISH_TOKEN="pub-secret", LIVEFEED_READ_TOKEN="read-secret")
    body = b'{"type":"a"}'
    for authorization in ("", "Bearer nope", "Bearer read-secret"):
        fast = post(server, body, Authorization=authorization)
        framework = chunked(server, body, Authorization=authorization)
        assert fast.status_code in (401, 403)
        assert answer_shape(fast) == answer_shape(framework)
        assert fast.json() == framework.json()
    keyed = {"Authorization": "Bearer pub-secret", "Idempotency-Key": "k-1"}
    first, again = post(server, body, **keyed), chunked(server, body, **keyed)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    assert post(server, body, **keyed).headers["idempotent-replayed"] == "true"
    assert first.json() == again.json()
    later = post(server, b'{"type":"b"}', Authorization="Bearer pub-secret")
    assert later.json()["id"] == first.json()["id"] + 1  # the replays wrote nothing


def test_a_publisher_that_leaves_mid_body_writes_nothing(server: ServerProcess):
    """Half a body, then the connection closes: no event, and the server goes on."""
    body = b'[{"type":"a"},{"type":"b"}]'
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
    assert post(server, b'{"type":"c"}').json()["id"] == 1
    assert [event["type"] for event in server.events()] == ["c"]


def test_a_publish_from_an_allowed_page_gets_its_cors_answer(start_server):
    """A browser page on another allowed origin (it sends Origin) is answered by the
    route that adds CORS, which the plain path does not write."""
    server = start_server(LIVEFEED_ALLOWED_ORIGINS="https://app.example.com")
    page = post(server, b'{"type":"a"}', Origin="https://app.example.com")
    assert page.status_code == 201
    assert page.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "idempotent-replayed" in page.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in post(server, b'{"type":"b"}').headers
