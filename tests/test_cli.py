"""The command line as a person meets it: the quick start, and one-line errors.

Every command runs as a subprocess (``python run.py ...``) against real
servers on loopback ports.  Anything a person can get wrong must end in one
line on stderr, naming the setting or flag and the fix, with exit status 2.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import ROOT, ServerProcess, fresh_postgres_url, refused_port
from tests.test_fault_rows import make_read_only  # noqa: F401 (a fixture)

START_TIMEOUT_S = 20.0


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without LIVEFEED_* settings, plus ``extra``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("LIVEFEED_")}
    return {**inherited, "PYTHONUNBUFFERED": "1", **extra}


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env or clean_env(),
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit status 2, no traceback, and the last stderr line carries every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "nothing said"
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


@contextmanager
def running(
    command: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    """A server started by ``command`` with ``--port 0``, ready on the port it announced;
    its log file beside it."""
    log_path = cwd / f"server-{len(list(cwd.glob('server-*.log')))}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env or clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        port = None
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited early:\n{log_path.read_text()}")
            announced = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log_path.read_text())
            port = int(announced.group(1)) if announced else None
            try:
                ready = port and httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if ready and ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not become ready:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield process, log_path, port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


@contextmanager
def port_taken() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def event_count(url: str) -> int:
    return httpx.get(url + "/api/stats", timeout=5).json()["latest_id"]


# Start-up


def test_quick_start_takes_serves_flags_and_names_the_dashboard(tmp_path: Path):
    """`run.py --port P` is the quick start on P: demo events flow, and the start line
    names the dashboard and how to turn the demo events off."""
    command = [sys.executable, str(ROOT / "run.py"), "--port", "0"]
    with running(command, tmp_path) as (_process, log, port):
        deadline = time.monotonic() + 10
        while event_count(f"http://127.0.0.1:{port}") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert event_count(f"http://127.0.0.1:{port}") >= 2
        text = log.read_text()
    assert (tmp_path / "data" / "livefeed.db").exists()  # the default, beside the caller
    assert f"dashboard at http://127.0.0.1:{port}/dashboard/" in text
    assert "demo events are flowing at 2/s" in text and "--demo-rate 0" in text


def test_quick_start_with_demo_rate_zero_publishes_nothing(tmp_path: Path):
    """`run.py --demo-rate 0` serves without demo events and does not claim any."""
    command = [sys.executable, str(ROOT / "run.py"), "--port", "0", "--demo-rate", "0"]
    with running(command, tmp_path) as (_process, log, port):
        time.sleep(1.5)
        assert event_count(f"http://127.0.0.1:{port}") == 0
        assert "demo events" not in log.read_text()


@pytest.mark.parametrize(
    "args",
    [["serve"], ["serve", "--workers", "2"], []],
    ids=["serve", "workers", "quick-start"],
)
def test_port_in_use_is_one_line(args: list[str], tmp_path: Path):
    """A port another program holds stops serve (and the quick start) with the flag and a
    free port to try, before anything is written."""
    with port_taken() as port:
        result = run_cli(*args, "--port", str(port), cwd=tmp_path)
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is in use", "--port")
    assert not (tmp_path / "data").exists()


def test_port_in_use_set_by_the_environment_names_the_variable(tmp_path: Path):
    """LIVEFEED_PORT taken: the fix names LIVEFEED_PORT, since that is what was set."""
    with port_taken() as port:
        result = run_cli("serve", cwd=tmp_path, env=clean_env(LIVEFEED_PORT=str(port)))
    assert_one_line_error(result, "is in use", f"LIVEFEED_PORT={port + 1}")


def test_sqlite_url_with_two_slashes_is_refused_with_the_right_form(tmp_path: Path):
    """sqlite://./x.db (a host named '.') is refused, nothing is written in the
    current directory, and the message gives sqlite:///./x.db."""
    for command in ("serve", "migrate"):
        result = run_cli(command, "--database-url", "sqlite://./x.db", cwd=tmp_path)
        assert_one_line_error(result, "--database-url sqlite://./x.db", "'sqlite:///./x.db'")
    assert list(tmp_path.iterdir()) == []


def test_database_directory_under_a_file_names_the_path(tmp_path: Path):
    """A database path whose 'directory' is a file names that file."""
    (tmp_path / "notes.txt").write_text("a file")
    url = f"sqlite:///{tmp_path}/notes.txt/feed/x.db"
    result = run_cli("serve", "--port", "0", "--database-url", url, cwd=tmp_path)
    assert_one_line_error(result, "--database-url", f"{tmp_path}/notes.txt is a file")


def test_unwritable_database_directory_names_the_path(tmp_path: Path, make_read_only):  # noqa: F811
    """A directory or database file that cannot be written (immutable, so even for root)
    is named: the database's own directory, one a missing directory would be made in,
    and a read-only database file."""
    locked = tmp_path / "locked"
    locked.mkdir()
    database = tmp_path / "feed.db"
    assert run_cli("migrate", "--database-url", f"sqlite:///{database}").returncode == 0
    make_read_only([database], True)
    try:
        read_only = run_cli("serve", "--port", "0", "--database-url", f"sqlite:///{database}")
    finally:
        make_read_only([database], False)
    assert_one_line_error(read_only, f"the database file {database} is read-only")
    make_read_only([locked], True)
    try:
        inside = run_cli("migrate", "--database-url", f"sqlite:///{locked}/x.db", cwd=tmp_path)
        below = run_cli(
            "migrate",
            cwd=tmp_path,
            env=clean_env(LIVEFEED_DATABASE_URL=f"sqlite:///{locked}/a/x.db"),
        )
    finally:
        make_read_only([locked], False)
    assert_one_line_error(inside, "--database-url", f"the directory {locked} is not writable")
    assert_one_line_error(
        below, "LIVEFEED_DATABASE_URL", f"{locked}/a does not exist and {locked} is not writable"
    )


def test_unreachable_postgresql_is_one_line(tmp_path: Path):
    """Nothing listening where the URL points: the setting, the host and the fix."""
    with refused_port() as nobody:
        url = f"postgresql://livefeed@127.0.0.1:{nobody}/livefeed"
        serve = run_cli("serve", "--port", "0", "--database-url", url, cwd=tmp_path)
        migrate = run_cli("migrate", "--database-url", url, cwd=tmp_path)
    for result in (serve, migrate):
        assert_one_line_error(result, "--database-url", "cannot reach PostgreSQL at 127.0.0.1")


def test_missing_postgresql_database_or_role_says_how_to_create_it(tmp_path: Path):
    """A database or a role that does not exist: one line with the SQL that creates it
    (docs/deploy.md shows the same)."""
    parts = urlsplit(fresh_postgres_url())
    no_database = parts._replace(path="/livefeed_never_created").geturl()
    no_role = parts._replace(netloc=f"livefeed_no_role@{parts.hostname}:{parts.port}").geturl()
    env = clean_env(LIVEFEED_DATABASE_URL=no_database)
    missing_database = run_cli("serve", "--port", "0", cwd=tmp_path, env=env)
    missing_role = run_cli("migrate", "--database-url", no_role, cwd=tmp_path)
    assert_one_line_error(
        missing_database,
        "LIVEFEED_DATABASE_URL",
        "no database 'livefeed_never_created'",
        "CREATE DATABASE livefeed_never_created",
        "docs/deploy.md",
    )
    assert_one_line_error(
        missing_role, "--database-url", "CREATE ROLE livefeed_no_role LOGIN", "docs/deploy.md"
    )


def test_demo_rate_out_of_range_names_the_flag(tmp_path: Path):
    """--demo-rate -1 is named as typed, not as the variable it sets."""
    result = run_cli("--demo-rate", "-1", cwd=tmp_path)
    line = assert_one_line_error(result, "--demo-rate -1 is out of range", "0..10000")
    assert "LIVEFEED_DEMO_RATE" not in line


# Client commands


@pytest.mark.parametrize(
    "args",
    [["publish", "validation_created"], ["export", "-o", "out.csv"], ["demo", "--count", "1"]],
    ids=["publish", "export", "demo"],
)
def test_client_commands_against_a_stopped_server_name_the_url(args: list[str], tmp_path: Path):
    """publish, export and demo with no server: one line with the URL and --url."""
    with refused_port() as nobody:
        url = f"http://127.0.0.1:{nobody}"
        result = run_cli(*args, "--url", url, cwd=tmp_path)
    assert_one_line_error(result, f"cannot reach the Livefeed server at {url}", "--url")
    assert list(tmp_path.iterdir()) == []  # the export left no file behind


def test_a_refused_publish_is_one_line_with_the_token_hint(start_server, tmp_path: Path):
    """A server that wants a token answers 401: its error, and --token as the fix."""
    server = start_server(LIVEFEED_PUBLISH_TOKEN="p-token")
    refused = run_cli("publish", "t", "--url", server.url, cwd=tmp_path)
    assert_one_line_error(refused, f"the server at {server.url} answered 401", "--token")
    accepted = run_cli("publish", "t", "--url", server.url, "--token", "p-token")
    assert accepted.returncode == 0 and accepted.stdout.split() == ["1"]


def test_demo_rate_zero_is_refused(tmp_path: Path):
    """demo --rate 0 would divide by zero; it is refused, naming --rate."""
    result = run_cli("demo", "--rate", "0", cwd=tmp_path)
    assert_one_line_error(result, "--rate", "'0' is not a rate above 0")


def test_export_into_a_missing_directory_is_one_line(tmp_path: Path):
    """-o into a directory that does not exist names the path, before any request."""
    target = tmp_path / "missing" / "a.csv"
    result = run_cli("export", "-o", str(target), "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert_one_line_error(result, f"-o {target}", f"{tmp_path / 'missing'} does not exist")


def test_filtered_export_reaches_100_percent(server: ServerProcess, tmp_path: Path):
    """An export of one type out of two still ends its progress at 100 %."""
    server.publish([{"type": "a" if n % 3 else "b", "data": {"n": n}} for n in range(300)])
    out = tmp_path / "b.ndjson"
    result = run_cli("export", "--types", "b", "-o", str(out), "--url", server.url)
    assert result.returncode == 0, result.stderr
    assert out.read_text().count("\n") == 100
    assert result.stderr.rstrip().endswith("100 %  100 lines, 0.0 MB")


def test_failed_export_leaves_the_old_file_and_no_partial_one(
    server: ServerProcess, tmp_path: Path
):
    """An export the server refuses removes its temporary file; an earlier export of
    the same name is untouched."""
    server.publish({"type": "a"})
    exports = tmp_path / "exports"
    exports.mkdir()
    out = exports / "audit.csv"
    out.write_text("an earlier export\n")
    result = run_cli("export", "--since", "yesterday", "-o", str(out), "--url", server.url)
    assert_one_line_error(result, f"the server at {server.url} answered 400")
    assert out.read_text() == "an earlier export\n"
    assert sorted(p.name for p in exports.iterdir()) == ["audit.csv"]


def test_export_into_a_closed_pipe_is_quiet(server: ServerProcess):
    """`export | head -1` ends without a traceback or a broken-pipe message."""
    server.publish([{"type": "t", "data": {"pad": "x" * 500}}] * 1000)
    script = (
        f"{sys.executable} {ROOT / 'run.py'} export --url {server.url} | head -1; "
        'echo "status=${PIPESTATUS[0]}" >&2'
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert result.stdout.startswith('{"id":1,')
    assert "status=141" in result.stderr  # 128 + SIGPIPE, as `cat` would end
    assert "Traceback" not in result.stderr and "Broken pipe" not in result.stderr
    assert "Exception ignored" not in result.stderr


# Help


def test_migrate_and_trim_help_list_only_what_they_use():
    """migrate takes the database; trim the database and the retention; nothing else."""
    migrate = run_cli("migrate", "--help").stdout
    trim = run_cli("trim", "--help").stdout
    for text in (migrate, trim):
        assert "--database-url" in text
        assert not any(flag in text for flag in ("--port", "--host", "--workers", "--demo-rate"))
    assert "--retention" in trim and "--retention" not in migrate


def test_every_option_has_help_text():
    """Each option and argument of every command says what it is for."""
    from app.cli import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if a.dest == "command"]
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not action.help and action.dest != "help"
    ]
    assert missing == []
    assert len(commands.choices) == 8  # serve demo publish tail export verify migrate trim
