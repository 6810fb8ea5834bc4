"""conftest.py of the run of sse-starlette's tests against ``app.sse``.

``tests/test_sse_starlette_suite.py`` copies it beside upstream's test files.

- ``anyio_backend`` is pinned to asyncio: ``app.sse`` runs on asyncio (Quart,
  Hypercorn's asyncio worker), while anyio's plugin would also try trio.
- The tests listed in ``SSE_STARLETTE_NOT_PORTABLE`` (JSON ``{"<file>::<test
  function>": reason}``, set by ``tests/test_sse_starlette_suite.py``, which
  keeps the list) are skipped with their reasons.
"""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reasons = json.loads(os.environ["SSE_STARLETTE_NOT_PORTABLE"])
    for item in items:
        name = getattr(item, "originalname", item.name)
        reason = reasons.get(f"{item.path.name}::{name}")
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
