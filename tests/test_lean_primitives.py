"""The receive queue and event Hypercorn's connections get instead of asyncio's
(app/hypercorn_fixes/lean.py): the same contract, without lists until something
waits.  Real connections use them in every server test; here each rule is pinned
where a race can be set up exactly."""

from __future__ import annotations

import asyncio
import sys

import pytest

from app.hypercorn_fixes.lean import LeanEvent, LeanQueue

pytestmark = pytest.mark.asyncio


async def settle() -> None:
    """Let every task that can run, run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_items_come_out_in_order_and_a_getter_waits_for_the_next() -> None:
    queue = LeanQueue(10)
    await queue.put({"type": "a"})
    await queue.put({"type": "b"})
    assert [await queue.get(), await queue.get()] == [{"type": "a"}, {"type": "b"}]
    getter = asyncio.create_task(queue.get())
    await settle()
    assert not getter.done()
    await queue.put({"type": "c"})
    assert await getter == {"type": "c"}


async def test_put_waits_while_full_and_goes_on_when_one_is_taken() -> None:
    queue = LeanQueue(2)
    await queue.put({"n": 1})
    await queue.put({"n": 2})
    third = asyncio.create_task(queue.put({"n": 3}))
    await settle()
    assert not third.done() and queue.qsize() == 2
    assert await queue.get() == {"n": 1}
    await third
    assert [await queue.get(), await queue.get()] == [{"n": 2}, {"n": 3}]


async def test_unbounded_when_maxsize_is_zero() -> None:
    queue = LeanQueue(0)
    for n in range(100):
        await queue.put({"n": n})
    assert queue.qsize() == 100


async def test_a_cancelled_getter_does_not_swallow_an_item() -> None:
    """Woken for an item, then cancelled before it ran: the item stays, and the next
    getter is woken for it."""
    queue = LeanQueue(10)
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await settle()
    await queue.put({"type": "only"})  # wakes ``first``
    first.cancel()
    await settle()
    assert first.cancelled()
    assert await asyncio.wait_for(second, 1) == {"type": "only"}


async def test_a_cancelled_putter_leaves_no_item_and_passes_its_turn() -> None:
    queue = LeanQueue(1)
    await queue.put({"n": 0})
    cancelled = asyncio.create_task(queue.put({"n": "never"}))
    waiting = asyncio.create_task(queue.put({"n": 1}))
    await settle()
    assert await queue.get() == {"n": 0}  # wakes ``cancelled``
    cancelled.cancel()
    await asyncio.wait_for(waiting, 1)
    assert await queue.get() == {"n": 1}
    assert queue.qsize() == 0


async def test_no_lists_until_something_waits() -> None:
    """The point of it: an idle connection's queue and event hold no waiter lists
    (asyncio's make four and one deques up front, 760 bytes each)."""
    queue, event = LeanQueue(10), LeanEvent()
    assert queue._getters is None and queue._putters is None and event._waiters is None
    lean = sys.getsizeof(queue) + sys.getsizeof(queue._items) + sys.getsizeof(event)
    stock = sys.getsizeof(asyncio.Queue(10)._getters) * 5
    assert lean < stock / 10


async def test_event_wakes_every_waiter_and_stays_set_until_cleared() -> None:
    event = LeanEvent()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await settle()
    assert not any(w.done() for w in waiters) and not event.is_set()
    await event.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    await asyncio.wait_for(event.wait(), 1)  # set: returns at once
    await event.clear()
    late = asyncio.create_task(event.wait())
    await settle()
    assert not late.done()
    late.cancel()
    await settle()
    assert event._waiters == []  # the cancelled waiter left nothing behind


async def test_the_disconnect_notice_completes_a_future_and_leaves_the_message() -> None:
    """Told before or after the disconnect, the future gets its value; body chunks
    are dropped once it is asked for (nobody reads them); the disconnect stays
    queued for ``get``."""
    loop = asyncio.get_running_loop()
    queue = LeanQueue(10)
    await queue.put({"type": "http.request", "body": b"", "more_body": True})
    before: asyncio.Future[str] = loop.create_future()
    queue.notify_disconnect(before, "closed")
    await queue.put({"type": "http.request", "body": b"x", "more_body": False})
    assert not before.done() and queue.qsize() == 0
    await queue.put({"type": "http.disconnect"})
    assert before.result() == "closed"
    after: asyncio.Future[str] = loop.create_future()
    queue.notify_disconnect(after, "already")
    assert after.result() == "already"
    assert await queue.get() == {"type": "http.disconnect"}


async def test_an_endless_body_cannot_hide_the_disconnect() -> None:
    """A client whose body chunks filled the queue before the notice was asked for:
    the waiting put is released (its chunk dropped), and the disconnect still tells."""
    queue = LeanQueue(2)
    for n in range(2):
        await queue.put({"type": "http.request", "body": b"%d" % n, "more_body": True})
    blocked = asyncio.create_task(queue.put({"type": "http.request", "body": b"2"}))
    await settle()
    assert not blocked.done()  # the connection's reading stopped here
    closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    queue.notify_disconnect(closed, "closed")
    await blocked
    assert queue.qsize() == 0
    await queue.put({"type": "http.disconnect"})
    assert closed.result() == "closed"


async def test_a_cancelled_notice_is_left_alone() -> None:
    queue = LeanQueue(10)
    watched: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    queue.notify_disconnect(watched, "closed")
    watched.cancel()
    await queue.put({"type": "http.disconnect"})  # no InvalidStateError
    assert watched.cancelled()
