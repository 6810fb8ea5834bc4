"""Realistic demo traffic: several validation workflows interleaved.

Each workflow walks workflow_started -> validation_created ->
recommendation_created (1-3) -> recommendation_approved/rejected/applied ->
validation_enhanced? -> validation_approved/rejected -> workflow_completed
(or workflow_failed), so a fresh dashboard has something true-to-life to show.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Iterator

import orjson

from app.errors import StoreUnavailable
from app.events import Draft
from app.store import Store

log = logging.getLogger(__name__)

FILES = [
    "docs/getting-started.md",
    "docs/api/events.md",
    "handbook/onboarding.md",
    "policies/security.md",
    "guides/deploy.md",
    "reference/config.md",
    "README.md",
]
USERS = ["alice", "bob", "chen", "dana", "emeka", "farah"]
VALIDATORS = ["links", "spelling", "structure", "style", "truth"]
SUGGESTIONS = [
    "Fix the broken link to the install guide",
    "Replace passive voice in the second paragraph",
    "Add a code sample for the retry option",
    "Split the overlong table into two",
    "Update the version number to 2.4",
]


def _workflow(number: int, rng: random.Random) -> Iterator[Draft]:
    """The events of one workflow, in order."""
    workflow_id = f"wf_{number:05d}"
    file = rng.choice(FILES)

    def draft(type: str, **data: object) -> Draft:
        return Draft(type, workflow_id, orjson.dumps(data).decode())

    yield draft("workflow_started", file=file, started_by=rng.choice(USERS))
    yield draft("validation_created", file=file, validator=rng.choice(VALIDATORS))
    applied = 0
    for n in range(rng.randint(1, 3)):
        rec_id = f"rec_{number:05d}_{n}"
        suggestion = rng.choice(SUGGESTIONS)
        yield draft(
            "recommendation_created",
            recommendation_id=rec_id,
            text=suggestion,
            confidence=round(rng.uniform(0.55, 0.99), 2),
        )
        verdict = rng.choices(["approved", "rejected"], weights=[3, 1])[0]
        yield draft(f"recommendation_{verdict}", recommendation_id=rec_id, by=rng.choice(USERS))
        if verdict == "approved":
            applied += 1
            yield draft("recommendation_applied", recommendation_id=rec_id, file=file)
    if applied:
        yield draft("validation_enhanced", file=file, applied=applied)
    if rng.random() < 0.85:
        yield draft("validation_approved", file=file, score=round(rng.uniform(0.8, 1.0), 2))
        yield draft("workflow_completed", file=file, recommendations_applied=applied)
    else:
        yield draft("validation_rejected", file=file, reason="score below threshold")
        yield draft("workflow_failed", file=file, error="validation rejected")


def demo_drafts(seed: int | None = None, concurrent: int = 4) -> Iterator[Draft]:
    """An endless stream of drafts from ``concurrent`` interleaved workflows."""
    rng = random.Random(seed)
    numbers = itertools.count(rng.randint(1, 9000))
    running = [_workflow(next(numbers), rng) for _ in range(concurrent)]
    while True:
        index = rng.randrange(len(running))
        try:
            yield next(running[index])
        except StopIteration:
            running[index] = _workflow(next(numbers), rng)


async def publish_demo_events(
    store: Store, rate: float, on_published: Callable[[int], None] | None = None
) -> None:
    """Append demo events at about ``rate`` per second until cancelled."""
    interval = 1.0 / rate
    for draft in demo_drafts():
        try:
            await store.append([draft])
            if on_published is not None:
                on_published(1)
        except StoreUnavailable as exc:
            log.warning("demo event not written: %s", exc)
        await asyncio.sleep(interval * random.uniform(0.5, 1.5))
