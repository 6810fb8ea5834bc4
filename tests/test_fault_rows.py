"""Fault rows of docs/faults.md that need a scenario of their own.

FAULTS 7 (a reconnect storm with one cursor), 28 (``access_token`` on streams,
``no-store``), 42 (several processes appending to one SQLite file), 43 and 44
(PostgreSQL: an unrelated long transaction; a lost NOTIFY), 45 (the wall clock
stepping back), 47 (Hypercorn's read timeout) and the database file made
read-only.  Real servers and real clients throughout; the clock test runs the
real store with its clock function replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import app.store.sqlite as sqlite_module
import harness
from app.config import Settings
from app.events import Draft, Event, utc_timestamp
from app.server import hypercorn_config
from app.store.postgres import PostgresStore
from app.store.postgres_sql import BUILD_TREE_SQL
from app.store.postgres_tree import load_frontier, node_columns
from app.store.sqlite import SqliteStore
from app.store.tree import grow
from tests.sse_parser import SSEParser
from tests.support import (
    CONTROL_TYPES,
    ROOT,
    ServerProcess,
    collect_sse,
    event_ids,
    fresh_postgres_url,
    skip_or_fail,
    ws_on_every_worker,
)

JSON = {"Content-Type": "application/json"}
CHANNEL = "livefeed_log"  # the NOTIFY channel of app/store/postgres.py


async def ws_ids_until(ws: ClientConnection, last_id: int, timeout: float = 20.0) -> list[int]:
    """Event ids received on ``ws`` until ``last_id`` (controls skipped)."""
    seen: list[int] = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1] < last_id:
            frame = orjson.loads(await ws.recv())
            if "id" in frame:
                seen.append(frame["id"])
    return seen


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on a fresh PostgreSQL database (skips, or fails in CI, without one)."""
    server = ServerProcess(tmp_path, database_url=fresh_postgres_url())
    server.start()
    yield server
    server.kill()


# FAULTS 7: a reconnect storm with one cursor while publishing


def test_row7_200_clients_reconnecting_with_one_cursor_while_publishing_see_no_gap(
    server: ServerProcess,
) -> None:
    """200 clients (100 SSE, 100 WS) reconnect at once with the same Last-Event-ID while
    a publisher keeps publishing: each gets every id after the cursor once, in order,
    with no gap or duplicate where its replay hands over to live events."""
    cursor, clients = 50, 200
    server.publish([{"type": "warmup", "data": {"n": n}} for n in range(150)])
    storm, connected, end = asyncio.Event(), [0], [0]

    async def publisher() -> None:
        """Publishes through the whole storm, and a few batches after its last handshake."""
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            n, after_storm = 0, 0
            while after_storm < 5:
                body = orjson.dumps([{"type": "load", "data": {"n": n, "k": k}} for k in (1, 2)])
                response = await client.post("/api/events", content=body, headers=JSON)
                assert response.status_code == 201
                n += 1
                storm.set()  # the storm starts once publishing is under way
                after_storm += connected[0] == clients
                await asyncio.sleep(0.05)
            response = await client.post("/api/events", content=b'{"type":"end"}', headers=JSON)
            end[0] = response.json()["id"]

    async def sse_client(http: httpx.AsyncClient) -> tuple[int, list[int]]:
        await storm.wait()
        headers = {"Last-Event-ID": str(cursor)}
        async with http.stream("GET", "/sse/validation_updates", headers=headers) as response:
            assert response.status_code == 200
            parser, latest, seen = SSEParser(), -1, []
            async for chunk in response.aiter_raw():
                for message in parser.feed(chunk):
                    if message.event == "connection_established":
                        latest = orjson.loads(message.data)["latest_id"]
                        connected[0] += 1
                    elif message.id and message.event not in CONTROL_TYPES:
                        seen.append(int(message.id))
                        if message.event == "end":
                            return latest, seen
        raise AssertionError("the SSE stream ended early")

    async def ws_client() -> tuple[int, list[int]]:
        await storm.wait()
        url = server.ws_url + "/ws/validation_updates"
        seen: list[int] = []
        async with connect(url, additional_headers={"Last-Event-ID": str(cursor)}) as ws:
            hello = orjson.loads(await ws.recv())
            assert hello["type"] == "connection_established"
            connected[0] += 1
            async for raw in ws:
                frame = orjson.loads(raw)
                if "id" in frame:
                    seen.append(frame["id"])
                    if frame["type"] == "end":
                        return hello["latest_id"], seen
        raise AssertionError("the WebSocket closed early")

    async def scenario() -> list[tuple[int, list[int]]]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with (
            asyncio.timeout(20),
            httpx.AsyncClient(base_url=server.url, timeout=20, limits=limits) as http,
        ):
            half = clients // 2
            storming = [sse_client(http) for _ in range(half)] + [ws_client() for _ in range(half)]
            _, *results = await asyncio.gather(publisher(), *storming)
        return results

    results = asyncio.run(scenario())
    expected = [e["id"] for e in server.events() if e["id"] > cursor]
    assert expected == list(range(cursor + 1, end[0] + 1))
    assert len(results) == clients
    for latest, seen in results:
        assert seen == expected
        assert latest < end[0] - 1  # connected while publishing: live events followed


# FAULTS 28: access_token on /sse and /ws; no-store


def test_row28_access_token_opens_sse_and_ws_and_nothing_is_cached(
    start_server: Callable[..., ServerProcess],
) -> None:
    """?access_token= is the read token on /sse and /ws; a wrong one is 401 JSON.  SSE
    answers carry Cache-Control no-store (and no-cache), and so do JSON errors."""
    server: ServerProcess = start_server(LIVEFEED_READ_TOKEN="r-token")
    [event_id] = server.publish({"type": "secret"})

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async with client.stream(
                "GET", "/sse/validation_updates?last_event_id=0&access_token=r-token"
            ) as response:
                assert response.status_code == 200
                cache_control = response.headers["cache-control"]
                assert "no-store" in cache_control and "no-cache" in cache_control
                parser, ids = SSEParser(), []
                async with asyncio.timeout(10):
                    async for chunk in response.aiter_raw():
                        ids.extend(int(m.id) for m in parser.feed(chunk) if m.event == "secret")
                        if ids:
                            break
                assert ids == [event_id]
            wrong = await client.get("/sse/validation_updates?access_token=r-tokem")
            assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
            assert wrong.headers["cache-control"] == "no-store"
            assert wrong.headers["www-authenticate"].startswith("Bearer")
            missing = await client.get("/api/events/999?access_token=r-token")
            assert missing.status_code == 404 and missing.json()["error"] == "not_found"
            assert missing.headers["cache-control"] == "no-store"

        async with connect(
            server.ws_url + "/ws/validation_updates?last_event_id=0&access_token=r-token"
        ) as ws:
            assert orjson.loads(await ws.recv())["type"] == "connection_established"
            assert orjson.loads(await ws.recv())["id"] == event_id
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url + "/ws/validation_updates?access_token=nope"):
                pass
        response = refused.value.response
        assert response.status_code == 401
        assert orjson.loads(response.body)["error"] == "unauthorized"
        assert response.headers["Cache-Control"] == "no-store"

    asyncio.run(scenario())
    assert "r-token" not in server.log()


# FAULTS 42: several processes appending to one SQLite file at once


def test_row42_three_processes_appending_at_once_never_report_a_locked_database(
    tmp_path: Path,
) -> None:
    """A `--workers 2` server and a separate server on the same SQLite file take
    concurrent publishes: every answer is 201 (no `database is locked`), and every
    stream on every process gets every id once, in order."""
    database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    workers = ServerProcess(tmp_path / "a", {"LIVEFEED_WORKERS": "2"}, database_url=database_url)
    single = ServerProcess(tmp_path / "b", database_url=database_url)
    rng = random.Random(42)
    sizes = [[rng.randint(1, 5) for _ in range(25)] for _ in range(6)]
    total = sum(map(sum, sizes))
    try:
        workers.start()
        single.start()

        async def publisher(
            server: ServerProcess, mine: list[int]
        ) -> list[tuple[int, str, list[int]]]:
            answers = []
            fresh = httpx.Limits(max_keepalive_connections=0)  # a connection per request,
            async with httpx.AsyncClient(  # so the kernel spreads them over the workers
                base_url=server.url, timeout=30, limits=fresh
            ) as client:
                for size in mine:
                    body = orjson.dumps([{"type": "load"}] * size)
                    response = await client.post("/api/events", content=body, headers=JSON)
                    ids = [e["id"] for e in response.json().get("events", [])]
                    answers.append((response.status_code, response.text, ids))
            return answers

        async def scenario() -> tuple[set[str], list[list[int]], list[Any]]:
            sockets, nodes = await ws_on_every_worker(
                workers.ws_url + "/ws/validation_updates", workers=2, at_least=8)
            more, other = await ws_on_every_worker(
                single.ws_url + "/ws/validation_updates", workers=1, at_least=2)
            sockets += more
            nodes |= other
            try:
                targets = [workers, single] * 3
                published = await asyncio.gather(
                    *(publisher(s, mine) for s, mine in zip(targets, sizes, strict=True))
                )
                streams = await asyncio.gather(*(ws_ids_until(ws, total) for ws in sockets))
            finally:
                for ws in sockets:
                    await ws.close()
            return nodes, streams, published

        nodes, streams, published = asyncio.run(scenario())
    finally:
        workers.kill()
        single.kill()
    assert len(nodes) == 3  # both workers and the separate process serve streams
    answers = [answer for answers in published for answer in answers]
    refused = [(status, text) for status, text, _ in answers if status != 201]
    assert refused == [], refused
    for stream in streams:
        assert stream == list(range(1, total + 1))
    via_workers = [i for answers in published[0::2] for _, _, ids in answers for i in ids]
    via_single = [i for answers in published[1::2] for _, _, ids in answers for i in ids]
    assert sorted(via_workers + via_single) == list(range(1, total + 1))
    # the processes really interleaved their appends
    assert min(via_single) < max(via_workers) and min(via_workers) < max(via_single)
    for server in (workers, single):
        assert "locked" not in server.log()


# FAULTS 43: PostgreSQL with an unrelated long-running transaction open


@pytest.mark.serial  # bounds publish delays
def test_row43_postgres_unrelated_long_transaction_does_not_stop_publishing(
    pg_server: ServerProcess,
) -> None:
    """Two other connections sit idle in open transactions (a repeatable-read snapshot
    over the log, and a write to an unrelated table holding its lock) while events are
    published: every publish answers promptly and every event is delivered live."""
    before = pg_server.publish([{"type": "before"}] * 3)

    async def scenario() -> tuple[list[float], list[int], list[int], int]:
        snapshot = await asyncpg.connect(pg_server.database_url)
        other = await asyncpg.connect(pg_server.database_url)
        try:
            await snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            assert await snapshot.fetchval("SELECT count(*) FROM events") == 3
            await other.execute("CREATE TABLE unrelated_work (n integer)")
            await other.execute("BEGIN")
            await other.execute("INSERT INTO unrelated_work VALUES (1)")
            await other.execute("LOCK TABLE unrelated_work IN ACCESS EXCLUSIVE MODE")
            url = "/validation_updates?last_event_id=" + str(before[-1])
            async with connect(pg_server.ws_url + "/ws" + url) as ws:
                sse = asyncio.create_task(
                    collect_sse(
                        pg_server.url + "/sse" + url,
                        lambda ms: len(event_ids(ms)) == 40,
                        timeout=20,
                    )
                )
                latencies: list[float] = []
                async with httpx.AsyncClient(base_url=pg_server.url, timeout=10) as client:
                    for n in range(20):
                        started = time.monotonic()
                        body = orjson.dumps([{"type": "during", "data": {"n": n}}] * 2)
                        response = await client.post("/api/events", content=body, headers=JSON)
                        latencies.append(time.monotonic() - started)
                        assert response.status_code == 201
                last = before[-1] + 40
                ws_seen = await ws_ids_until(ws, last, timeout=5)
                sse_seen = event_ids(await sse)
            # the transactions stayed open throughout: the snapshot still sees 3 events
            still_open = await snapshot.fetchval("SELECT count(*) FROM events")
            idle = await snapshot.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND state = 'idle in transaction'"
            )
            assert idle >= 1  # the other connection, idle in its transaction
            return latencies, ws_seen, sse_seen, still_open
        finally:
            await other.close()
            await snapshot.close()

    latencies, ws_seen, sse_seen, still_open = asyncio.run(scenario())
    expected = list(range(before[-1] + 1, before[-1] + 41))
    assert ws_seen == expected and sse_seen == expected
    assert still_open == 3
    assert max(latencies) < 1.0


# FAULTS 44: PostgreSQL NOTIFY carries only the id; a lost NOTIFY is covered by the poll

async def keep_the_tree(conn: asyncpg.Connection, event_id: int) -> None:
    """Add a directly inserted event's leaf to the log's Merkle tree, as every append
    does (with the store's own tree code), so that later appends find its nodes."""
    row = await conn.fetchrow(
        "SELECT id, type, workflow_id, ts, data FROM events WHERE id = $1", event_id
    )
    frontier = await load_frontier(conn, event_id - 1)
    rows = grow(frontier, [Event.build(*row)])
    await conn.execute(BUILD_TREE_SQL, *node_columns(rows))


SNEAK_IN_SQL = """
WITH head AS (
    SELECT last_id + 1 AS id,
           greatest(to_char(clock_timestamp() AT TIME ZONE 'UTC',
                            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), last_ts) AS ts
    FROM log_head FOR UPDATE
), written AS (
    INSERT INTO events (id, type, workflow_id, ts, data)
    SELECT id, 'sneaked_in', NULL, ts, '{"notify":false}' FROM head
)
UPDATE log_head SET last_id = head.id, last_ts = head.ts FROM head RETURNING head.id
"""


def test_row44_postgres_notify_is_only_the_id_and_a_lost_one_is_covered_by_the_poll(
    pg_server: ServerProcess,
) -> None:
    """The NOTIFY payload is the new head id and nothing else.  An append that commits
    with no NOTIFY at all (as if the notification were lost, with no reconnect) still
    reaches live streams, within the 1 s safety poll, and NOTIFY keeps working after."""

    async def scenario() -> None:
        payloads: list[str] = []
        listener = await asyncpg.connect(pg_server.database_url)
        writer = await asyncpg.connect(pg_server.database_url)
        await listener.add_listener(CHANNEL, lambda *args: payloads.append(args[3]))
        try:
            async with connect(pg_server.ws_url + "/ws/validation_updates") as ws:
                assert orjson.loads(await ws.recv())["type"] == "connection_established"
                [one] = pg_server.publish({"type": "t", "data": {"pad": "x" * 9000}})
                batch = pg_server.publish([{"type": "t", "data": {"pad": "y" * 9000}}] * 3)
                assert await ws_ids_until(ws, batch[-1], timeout=5) == [one, *batch]
                async with asyncio.timeout(5):
                    while len(payloads) < 2:
                        await asyncio.sleep(0.01)
                assert payloads == [str(one), str(batch[-1])]  # the id only, never the data

                async with writer.transaction():
                    sneaked = await writer.fetchval(SNEAK_IN_SQL)
                    await keep_the_tree(writer, sneaked)
                started = time.monotonic()
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
                waited = time.monotonic() - started
                assert frame["id"] == sneaked == batch[-1] + 1
                assert frame["type"] == "sneaked_in" and frame["data"] == {"notify": False}
                assert waited < 2.0  # the safety poll runs every second
                assert payloads == [str(one), str(batch[-1])]  # no NOTIFY was sent

                started = time.monotonic()
                [after] = pg_server.publish({"type": "after"})
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
                assert frame["id"] == after == sneaked + 1
                assert time.monotonic() - started < 0.5  # notified, not polled
        finally:
            await writer.close()
            await listener.close()

    asyncio.run(scenario())
    assert "listener" not in pg_server.log()  # the listener never lost its connection
    ids = [e["id"] for e in pg_server.events()]
    assert ids == list(range(1, ids[-1] + 1))


# FAULTS 45: the wall clock steps back an hour


def drafts(count: int, tag: str) -> list[Draft]:
    return [Draft("clock", None, f'{{"tag":"{tag}","n":{n}}}') for n in range(count)]


@pytest.mark.asyncio
async def test_row45_sqlite_clock_stepping_back_an_hour_keeps_ids_and_ts_increasing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real SQLite store with its clock function replaced by one that jumps back
    1 h: ids keep increasing and ts is clamped to the previous ts, even after a
    restart of the store; when the clock returns, ts moves on."""
    offset = timedelta(0)

    def clock(moment: datetime | None = None) -> str:
        return utc_timestamp(moment or datetime.now(UTC) + offset)

    monkeypatch.setattr(sqlite_module, "utc_timestamp", clock)
    url = f"sqlite:///{tmp_path / 'clock.db'}"
    store = SqliteStore(url)
    await store.open()
    try:
        before = await store.append(drafts(3, "before"))
        offset = timedelta(hours=-1)
        assert clock() < before[-1].ts  # the clock really went back
        during = [await store.append(drafts(2, f"seq{n}")) for n in range(3)]
        during += await asyncio.gather(*(store.append(drafts(3, f"par{n}")) for n in range(4)))
    finally:
        await store.close()
    reopened = SqliteStore(url)  # a restart while the clock is still behind
    await reopened.open()
    try:
        restarted = await reopened.append(drafts(1, "restarted"))
        offset = timedelta(0)
        await asyncio.sleep(0.002)
        after = await reopened.append(drafts(1, "after"))
        stored = (await reopened.read(0, 1000)).events
    finally:
        await reopened.close()
    behind: list[Event] = [e for batch in during for e in batch] + restarted
    assert [e.id for e in stored] == list(range(1, len(stored) + 1)) and len(stored) == 3 + 18 + 2
    assert all(e.ts == before[-1].ts for e in behind)  # clamped, never an hour earlier
    assert [e.ts for e in stored] == sorted(e.ts for e in stored)
    assert after[0].ts > before[-1].ts


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")  # thread-safe


def test_row45_a_running_server_whose_wall_clock_steps_back_an_hour(tmp_path: Path) -> None:
    """The whole server under libfaketime, its wall clock stepped back 1 h while it runs
    (the monotonic clock left alone, as on a real machine whose NTP steps the time):
    ids keep increasing, ts never goes back, an open stream keeps delivering in order,
    and since= still splits the log exactly."""
    if not LIBFAKETIME.exists():
        skip_or_fail(f"{LIBFAKETIME} is missing (Debian package faketime)")
    offset_file = tmp_path / "offset"
    offset_file.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    server = ServerProcess(tmp_path, env=env).start()
    try:

        async def scenario() -> list[int]:
            async with (
                httpx.AsyncClient(timeout=10) as client,
                client.stream("GET", server.url + "/sse/validation_updates") as stream,
            ):
                before = server.publish([{"type": "before", "data": {"n": n}} for n in range(3)])
                offset_file.write_text("-3600\n")
                behind = [server.publish({"type": "behind", "data": {"n": n}})[0] for n in range(3)]
                offset_file.write_text("+0\n")
                after = server.publish({"type": "after"})
                wanted = before + behind + after
                parser, seen = SSEParser(), []
                async with asyncio.timeout(10):
                    async for chunk in stream.aiter_bytes():
                        messages = parser.feed(chunk)
                        seen += [int(m.id) for m in messages if m.event not in CONTROL_TYPES]
                        if len(seen) >= len(wanted):
                            break
                assert seen == wanted
                return wanted

        wanted = asyncio.run(scenario())
        stored = server.events()
        assert [e["id"] for e in stored] == wanted == sorted(wanted)
        stamps = [e["ts"] for e in stored]
        assert stamps == sorted(stamps)  # never back, though the clock went back an hour
        behind_ts = {e["ts"] for e in stored if e["type"] == "behind"}
        assert behind_ts == {stored[2]["ts"]}  # clamped to the last ts before the step
        # since= is exact: the clamped events share the ts of the batch before the step
        assert [e["id"] for e in server.events(since=stored[2]["ts"])] == wanted
        assert [e["id"] for e in server.events(since=stored[-1]["ts"])] == wanted[-1:]
    finally:
        server.stop()


@pytest.mark.asyncio
async def test_row45_postgres_ts_never_goes_back_behind_an_event_stamped_an_hour_ahead() -> None:
    """PostgreSQL stamps ts with the database's clock, which a test cannot move; so the
    log is made to hold an event stamped 1 h ahead (as if the clock then stepped back by
    an hour): later appends get that ts, never an earlier one, and ids keep increasing."""
    url = fresh_postgres_url()
    store = PostgresStore(url)
    await store.open()
    try:
        first = await store.append(drafts(2, "first"))
        ahead = utc_timestamp(datetime.now(UTC) + timedelta(hours=1))
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM log_head FOR UPDATE")
                await conn.execute("UPDATE events SET ts = $1 WHERE id = $2", ahead, first[-1].id)
                await conn.execute("UPDATE log_head SET last_ts = $1", ahead)
        finally:
            await conn.close()
        later = [await store.append(drafts(2, f"seq{n}")) for n in range(3)]
        later += await asyncio.gather(*(store.append(drafts(1, f"par{n}")) for n in range(4)))
        stored = (await store.read(0, 1000)).events
    finally:
        await store.close()
    assert [e.id for e in stored] == list(range(1, 13))
    assert all(e.ts == ahead for batch in later for e in batch)
    assert [e.ts for e in stored] == sorted(e.ts for e in stored)


# FAULTS 47: Hypercorn's read timeout


def test_row47_the_hypercorn_config_never_sets_a_read_timeout() -> None:
    """However Livefeed is configured, the Hypercorn config it builds has no read timeout."""
    for settings in (Settings(), Settings(heartbeat_s=3600.0, workers=4, host="::1")):
        assert hypercorn_config(settings).read_timeout is None


RUN_WITH_READ_TIMEOUT = """
import asyncio, os, sys
from hypercorn.asyncio import serve
from app import create_app
from app.config import from_env
from app.server import announce, hypercorn_config, listening_socket
settings = from_env({**os.environ, "LIVEFEED_PORT": sys.argv[-1]})
sock = listening_socket(settings)
announce(sock)
config = hypercorn_config(settings, sock)
config.read_timeout = 1  # what an operator might set, if Livefeed let them
asyncio.run(serve(create_app(settings), config))
"""


@contextlib.contextmanager
def script_server(script: str, tmp_path: Path) -> Iterator[harness.ServerProcess]:
    """The app served by a small script of the test's own (a setting Livefeed does not
    offer, a fault it cannot be made to have from outside), from this checkout.  The
    script gets ``--port N`` like ``run.py serve`` and announces the port it bound."""
    env = {
        "LIVEFEED_DATABASE_URL": f"sqlite:///{tmp_path / 'script.db'}",
        "LIVEFEED_HEARTBEAT_S": "30",
        "PYTHONPATH": str(ROOT),
    }
    workdir = tmp_path / "script"
    workdir.mkdir()
    server = harness.ServerProcess(workdir, env, command=[sys.executable, "-c", script])
    try:
        yield server.start()
    finally:
        server.kill()


async def quiet_sse(url: str, quiet_s: float) -> tuple[bool, float]:
    """Open an SSE stream and send nothing more: (did it end, when)."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        chunks = response.aiter_raw()
        try:
            async with asyncio.timeout(quiet_s):
                async for _ in chunks:
                    pass
        except TimeoutError:
            return False, time.monotonic() - started
        except httpx.RemoteProtocolError:  # cut in the middle of the chunked body
            pass
        return True, time.monotonic() - started


def test_row47_quiet_streams_outlive_what_a_read_timeout_would_cut(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Why read_timeout must stay None: the same app under Hypercorn with read_timeout=1
    closes a quiet SSE stream after about a second (a stream client sends nothing after
    its request).  Livefeed's own server keeps quiet SSE and WebSocket streams open for
    3 s (heartbeats every 30 s) and they then get the next event."""
    with script_server(RUN_WITH_READ_TIMEOUT, tmp_path) as script:

        async def scenario() -> None:
            url = f"{script.url}/sse/validation_updates"
            ended, after = await quiet_sse(url, 5)
            assert ended and 0.8 < after < 3.0  # cut by the read timeout

            async with connect(server.ws_url + "/ws/validation_updates") as ws:
                assert orjson.loads(await ws.recv())["type"] == "connection_established"
                quiet = asyncio.create_task(quiet_sse(server.url + "/sse/validation_updates", 3))
                ended, _ = await quiet
                assert not ended  # still open after 3 quiet seconds
                [event_id] = server.publish({"type": "after_quiet"})
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 3))["id"] == event_id

        asyncio.run(scenario())


# Row 36: a handler that fails after the stream was accepted

RUN_WITH_A_FAILING_PUMP = """
import asyncio, os, sys
from app.config import from_env
from app.events import Event
from app.hub import Subscription
from app.server import serve_forever

real_next = Subscription.__anext__

async def failing_next(self):
    frames = await real_next(self)
    if any(isinstance(f, Event) and f.type == "boom" for f in frames):
        raise RuntimeError("injected failure after accept")
    return frames

Subscription.__anext__ = failing_next
asyncio.run(serve_forever(from_env({**os.environ, "LIVEFEED_PORT": sys.argv[-1]})))
"""


def test_row36_a_handler_failing_after_accept_closes_1011_and_the_server_goes_on(
    tmp_path: Path,
) -> None:
    """A bug in the stream path (here: the subscription raises once a "boom" event
    arrives) must not look like a normal end: WebSocket closes 1011 "internal error;
    reconnect", SSE sends an ``internal_error`` event and ends, the traceback is
    logged, and the server keeps serving everyone else."""
    with script_server(RUN_WITH_A_FAILING_PUMP, tmp_path) as script:
        base, ws_base = script.url, script.ws_url

        async def scenario() -> None:
            async with (
                connect(ws_base + "/ws/validation_updates") as ws,
                httpx.AsyncClient(timeout=10) as client,
                client.stream("GET", base + "/sse/validation_updates") as sse,
            ):
                assert orjson.loads(await ws.recv())["type"] == "connection_established"
                published = await client.post(
                    base + "/api/events", json={"type": "boom", "data": {}}
                )
                assert published.status_code == 201
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1011
                assert closed.value.rcvd.reason == "internal error; reconnect"
                parser, errors = SSEParser(), []
                async with asyncio.timeout(5):
                    async for chunk in sse.aiter_bytes():  # ends with the response
                        errors += [m for m in parser.feed(chunk) if m.event == "stream_error"]
                assert [orjson.loads(m.data)["error"] for m in errors] == ["internal_error"]

            async with connect(ws_base + "/ws/validation_updates") as ws:
                assert orjson.loads(await ws.recv())["type"] == "connection_established"
                async with httpx.AsyncClient(timeout=10) as client:
                    await client.post(base + "/api/events", json={"type": "after", "data": {}})
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "after"

        asyncio.run(scenario())
        log = script.log()
        assert "websocket stream failed" in log and "sse stream failed" in log
        assert log.count("RuntimeError: injected failure after accept") == 2


# The database file made read-only


def set_immutable(paths: list[Path], on: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chattr", "+i" if on else "-i", *map(str, paths)], capture_output=True, text=True
    )


@pytest.fixture
def make_read_only(tmp_path: Path) -> Iterator[Callable[[list[Path], bool], None]]:
    """Make files read-only even for root: the ext4/xfs/btrfs immutable flag.

    The tests run as root, for whom file modes stop nothing.  Skips where the flag
    cannot be set or does not stop writes, and fails there in CI.  Every flag set
    is cleared afterwards, so the temporary directory can be removed.
    """
    probe = tmp_path / "immutable-probe"
    probe.write_text("probe")
    if shutil.which("chattr") is None:
        skip_or_fail("chattr (e2fsprogs) is not installed: cannot make a file read-only")
    result = set_immutable([probe], True)
    if result.returncode != 0:
        skip_or_fail(f"the immutable flag cannot be set under {tmp_path}: {result.stderr}")
    try:
        with open(probe, "a") as handle:
            handle.write("written")
        stops_writes = False
    except PermissionError:
        stops_writes = True
    finally:
        set_immutable([probe], False)
    if not stops_writes:
        skip_or_fail(f"the immutable flag does not stop writes under {tmp_path}")
    flagged: list[Path] = []

    def apply(paths: list[Path], on: bool) -> None:
        result = set_immutable(paths, on)
        assert result.returncode == 0, result.stderr
        if on:
            flagged.extend(paths)

    yield apply
    set_immutable(flagged, False)


def test_read_only_database_file_gives_503_keeps_streams_and_recovers(
    tmp_path: Path, make_read_only: Callable[[list[Path], bool], None]
) -> None:
    """The database file (and its WAL and directory) made read-only under a running
    server: /readyz fails at once, a 1000-event batch gets 503 JSON naming the cause and
    writes nothing, open SSE and WS streams stay open; when the fault goes, all recovers."""
    (tmp_path / "db").mkdir()
    (tmp_path / "server").mkdir()
    database = tmp_path / "db" / "livefeed.db"
    server = ServerProcess(
        tmp_path / "server", {"LIVEFEED_HEARTBEAT_S": "0.3"}, database_url=f"sqlite:///{database}"
    )
    # Not the -shm file: SQLite writes it through a shared mapping, and a write fault
    # there is a SIGBUS, not an error; the database and its WAL are where data goes.
    read_only = [database, database.with_name("livefeed.db-wal"), database.parent]
    try:
        server.start()
        [before] = server.publish({"type": "before"})

        async def scenario() -> list[str]:
            sse_events: list[str] = []

            async def sse() -> None:
                url = server.url + "/sse/validation_updates?last_event_id=0"
                async with httpx.AsyncClient(timeout=30) as client:
                    async with client.stream("GET", url) as response:
                        parser = SSEParser()
                        async for chunk in response.aiter_raw():
                            for message in parser.feed(chunk):
                                sse_events.append(message.event)
                                if message.event == "after":
                                    return

            sse_task = asyncio.create_task(sse())
            async with connect(server.ws_url + "/ws/validation_updates?last_event_id=0") as ws:
                assert orjson.loads(await ws.recv())["type"] == "connection_established"
                assert orjson.loads(await ws.recv())["id"] == before
                make_read_only(read_only, True)
                try:
                    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                        ready = await client.get("/readyz")
                        assert ready.status_code == 503, ready.text
                        assert "read-only" in ready.json()["detail"]
                        body = orjson.dumps(
                            [{"type": "lost", "data": {"n": n}} for n in range(1000)]
                        )
                        refused = await client.post("/api/events", content=body, headers=JSON)
                        assert refused.status_code == 503, refused.text
                        assert refused.json()["error"] == "unavailable"
                        assert "read-only" in refused.json()["detail"]
                        assert refused.headers["retry-after"] == "1"
                        assert refused.headers["cache-control"] == "no-store"
                        assert (await client.get("/readyz")).status_code == 503
                        beats = sse_events.count("heartbeat")
                        await ws.send('{"type":"ping"}')
                        async with asyncio.timeout(5):  # heartbeats may come first
                            while (reply := orjson.loads(await ws.recv()))["type"] == "heartbeat":
                                pass
                        assert reply == {"type": "pong"}
                        await asyncio.sleep(0.7)
                        assert sse_events.count("heartbeat") > beats  # SSE is still served
                        assert not sse_task.done()
                finally:
                    make_read_only(read_only, False)
                [after] = server.publish({"type": "after"})
                assert after == before + 1  # the refused batch used no id
                assert await ws_ids_until(ws, after, timeout=5) == [after]
            await asyncio.wait_for(sse_task, 10)
            return sse_events

        sse_events = asyncio.run(scenario())
        assert [e for e in sse_events if e not in ("connection_established", "heartbeat")] == [
            "before",
            "after",
        ]
        assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200
        assert [e["type"] for e in server.events()] == ["before", "after"]
    finally:
        server.kill()
