"""Livefeed installed from a wheel, as a person installs it, run from elsewhere.

The wheel is built from a copy of the sources and installed (without its
dependencies, which the running interpreter already has and lends through a
``.pth`` line) into a fresh virtual environment.  No checkout is on the path
there, so only what the wheel ships is found: migrations, templates, static
files and the ``livefeed`` command.  Every example in README.md then runs
against such an installed server.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT
from tests.test_cli import clean_env, event_count, running

SOURCES = ["setup.cfg", "pyproject.toml", "README.md", "app"]
QUICK_START = "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/livefeed"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the wheel installed; its bin/ directory."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", base / "dist", source], check=True)
    [wheel] = (base / "dist").glob("livefeed-*.whl")
    environment = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", environment], check=True)
    python = environment / "bin" / "python"
    [packages] = (environment / "lib").glob("python3*/site-packages")
    # the dependencies come from this interpreter's site-packages; its .pth files (an
    # editable install of this checkout among them) are not read from a .pth line
    (packages / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([*pip, "--python", python, "install", "--no-deps", wheel], check=True)
    return environment / "bin"


def in_venv(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a shell whose virtual environment is activated."""
    env = clean_env(**extra)
    return {**env, "PATH": f"{venv}:{env['PATH']}", "VIRTUAL_ENV": str(venv.parent)}


def test_the_wheel_runs_from_any_directory(venv: Path, tmp_path: Path):
    """From a directory with no checkout, the installed livefeed migrates a new database,
    serves (the bare command with --port), and publishes."""
    where = subprocess.run(
        [venv / "python", "-c", "import app; print(app.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv.parent)), where  # the wheel's copy, not a checkout
    usage = subprocess.run([venv / "livefeed", "--help"], capture_output=True, text=True).stdout
    verbs = ("serve", "demo", "publish", "tail", "export", "verify", "migrate", "trim")
    assert all(f"\n    {verb} " in usage for verb in verbs), usage
    migrated = subprocess.run(
        [venv / "livefeed", "migrate", "--database-url", "sqlite:///elsewhere.db"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=in_venv(venv),
    )
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "elsewhere.db").exists()
    with running([venv / "livefeed", "--port", "0"], tmp_path, in_venv(venv)) as (_, _, port):
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/readyz").json() == {"status": "ready"}
        published = subprocess.run(
            [venv / "livefeed", "publish", "t", "--data", '{"n": 1}', "--url", url],
            capture_output=True,
            text=True,
            env=in_venv(venv),
        )
        assert published.returncode == 0, published.stderr
        [event_id] = map(int, published.stdout.split())
        assert httpx.get(f"{url}/api/events/{event_id}").json()["data"] == {"n": 1}
        assert httpx.get(url + "/dashboard/").status_code == 200  # templates shipped
        assert httpx.get(url + "/static/livefeed-client.js").status_code == 200
    assert (tmp_path / "data" / "livefeed.db").exists()


def test_installed_workers_publish_demo_events_at_the_servers_rate(venv: Path, tmp_path: Path):
    """`livefeed serve --workers 2 --demo-rate 1` publishes about 1 event/s in all, not 2."""
    command = [venv / "livefeed", "serve", "--workers", "2", "--demo-rate", "1"]
    with running([*command, "--port", "0"], tmp_path, in_venv(venv)) as (_, log, port):
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while event_count(url) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        first = event_count(url)
        time.sleep(8)
        published = event_count(url) - first
        text = log.read_text()
    assert 4 <= published <= 12, published  # 8 expected; 16 at 1/s per worker
    assert text.count("serving http://") == 2  # both workers started from the wheel
    assert "with 2 workers" in text and "demo events are flowing at 1/s" in text


# README.md: its quick start, then every example in its sh blocks.


def readme_commands() -> list[str]:
    """Command lines of README.md's ``sh`` blocks that run against a server."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    joined = "".join(blocks).replace("\\\n", " ")  # continuation lines
    lines = [" ".join(line.split()) for line in joined.splitlines()]
    return [line for line in lines if line.startswith(("curl", ".venv/bin/livefeed "))]


STREAMS = ("curl -N", ".venv/bin/livefeed tail", ".venv/bin/livefeed demo")


def test_readme_quick_start_is_one_command_in_a_virtualenv():
    """The quick start makes the virtualenv, installs and starts, in one line."""
    assert QUICK_START in (ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def readme_server(venv: Path, tmp_path_factory: pytest.TempPathFactory):
    """The quick start as installed: the bare command, in a directory of its own."""
    workdir = tmp_path_factory.mktemp("readme")
    (workdir / ".venv").symlink_to(venv.parent)
    command = [venv / "livefeed", "--port", "0", "--demo-rate", "20"]
    with running(command, workdir, in_venv(venv)) as (_, _, port):
        yield workdir, port


def tail_has_transports(venv: Path) -> bool:
    help_text = subprocess.run(
        [venv / "livefeed", "tail", "--help"], capture_output=True, text=True
    ).stdout
    return "--transport" in help_text


@pytest.mark.parametrize("line", readme_commands())
def test_readme_example_works(line: str, venv: Path, readme_server: tuple[Path, int]):
    """Each README example runs after the README's install: streams show events and keep
    going, other commands succeed, and nothing prints a traceback."""
    workdir, port = readme_server
    if "--transport" in line and not tail_has_transports(venv):
        pytest.skip("livefeed tail --transport comes with the tail rewrite")
    command = line.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    env = in_venv(venv, LIVEFEED_URL=f"http://127.0.0.1:{port}")
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    streaming = line.startswith(STREAMS) and "--count" not in line
    try:
        out, err = process.communicate(timeout=3 if streaming else 60)
        finished = True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        out, err = process.communicate()
        finished = False
    assert "Traceback" not in err and "rror" not in err, err
    if streaming:
        assert not finished, f"{shlex.quote(line)} ended: {err}"
        assert out or "demo" in line, "a stream showed nothing"
    else:
        assert finished and process.returncode == 0, err
