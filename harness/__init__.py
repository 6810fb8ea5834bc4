"""Running Livefeed as users run it, for the tests and the benchmarks alike.

``ServerProcess`` starts a server process on a port it binds itself (``--port
0``) and learns from the line it announces; ``fresh_database`` gives a caller a
PostgreSQL database of its own.  Neither knows about pytest: the tests decide
what a missing PostgreSQL means for them, the benchmarks decide for theirs.
"""

from harness.postgres import PostgresUnavailable, fresh_database
from harness.server import (
    ROOT,
    RUN_PY,
    ServerFailed,
    ServerProcess,
    http_status,
    livefeed_command,
)

__all__ = [
    "ROOT",
    "RUN_PY",
    "PostgresUnavailable",
    "ServerFailed",
    "ServerProcess",
    "fresh_database",
    "http_status",
    "livefeed_command",
]
