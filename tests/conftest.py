"""Fixtures: a real Livefeed server per test, on a free port and a fresh database.

The store and transport suites run on both engines: a test in one of
``BOTH_ENGINES`` gets a ``backend`` of "sqlite" and "postgresql" (each server on
a fresh PostgreSQL database); ``@pytest.mark.sqlite_only`` keeps a test that
reaches into the SQLite file on SQLite.  Other suites run on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, fresh_postgres_url

BOTH_ENGINES = {"test_streams", "test_replay", "test_publish", "test_credentials", "test_expiry"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: reaches into the SQLite file itself")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    both = module in BOTH_ENGINES and not metafunc.definition.get_closest_marker("sqlite_only")
    metafunc.parametrize("backend", ["sqlite", "postgresql"] if both else ["sqlite"])


@pytest.fixture
def start_server(tmp_path: Path, backend: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with ``LIVEFEED_*`` overrides; all are stopped afterwards."""
    started: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        workdir = tmp_path / f"server{len(started)}"
        workdir.mkdir()
        url = fresh_postgres_url() if backend == "postgresql" else None
        server = ServerProcess(workdir, env, database_url=url)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """One server with default settings (heartbeat 30 s)."""
    return start_server()
