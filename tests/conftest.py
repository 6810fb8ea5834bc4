"""Fixtures: a real Livefeed server per test, on a port of its own and a fresh database.

``engine`` is the one place a test's database engine is chosen.  A module
marked ``pytestmark = pytest.mark.both_engines`` runs each test that uses it
(through ``server``, ``start_server`` or a store fixture) on "sqlite" and
"postgresql"; ``@pytest.mark.sqlite_only`` keeps a test that reaches into the
SQLite file on SQLite.  Everything else runs on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, fresh_postgres_url

ENGINES = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_engines: run on SQLite and on PostgreSQL")
    config.addinivalue_line("markers", "sqlite_only: reaches into the SQLite file itself")
    config.addinivalue_line(
        "markers",
        "serial: bounds a delay or needs the machine to itself; scripts/test.sh runs these"
        " after the parallel run, one at a time",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    marked = metafunc.definition.get_closest_marker
    both = marked("both_engines") is not None and marked("sqlite_only") is None
    metafunc.parametrize("engine", ENGINES if both else ENGINES[:1], indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The engine of this test's servers and stores: "sqlite" or "postgresql"."""
    return str(request.param)


@pytest.fixture
def start_server(tmp_path: Path, engine: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with ``LIVEFEED_*`` overrides; all are stopped afterwards.
    On PostgreSQL each server gets a fresh database of its own."""
    started: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        workdir = tmp_path / f"server{len(started)}"
        workdir.mkdir()
        url = fresh_postgres_url() if engine == "postgresql" else None
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
