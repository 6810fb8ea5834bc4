"""sse-starlette's own tests, run against ``app.sse``.

The sse-starlette sdist ships its tests. This fetches the pinned sdist from
PyPI (once; kept in pytest's cache and checked against its SHA-256), unpacks
``tests/test_event.py`` and ``tests/test_sse.py`` into a temporary directory,
and runs them in a subprocess pytest in which ``import sse_starlette`` loads
``app.sse`` (the shim in ``tests/sse_starlette_shim/``). Nothing of theirs is
committed here.

``NOT_PORTABLE`` lists the tests that cannot run against us and why; each
reason names the test here that checks the same behaviour instead, when there
is one. They are skipped, and the run must skip exactly those and pass all
the others.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

from tests.support import ROOT

VERSION = "3.7.1"
SDIST = f"sse_starlette-{VERSION}.tar.gz"
SDIST_SHA256 = "9a8256e3e80a0fdc8d1dec14f2bb0b3f304c99f23a6d4d26c61ff50145761597"
INDEX = "https://pypi.org/simple/sse-starlette/"
TEST_FILES = ("test_event.py", "test_sse.py")
SHIM = Path(__file__).parent / "sse_starlette_shim"
PARITY = "test_sse_starlette_parity.py"

_STARLETTE_BACKGROUND = "needs Starlette's BackgroundTask (background= is Starlette's)"
_PING_PROPERTY = (
    "builds EventSourceResponse(0), content we refuse at construction (app.sse note 1: "
    f"it would fail mid-stream); {PARITY}::test_ping_interval_property checks the rest"
)
NOT_PORTABLE = {
    "test_sse.py::test_disconnect_whenClientDisconnects_thenHandlesGracefully": (
        "needs the httpx_client fixture of upstream's conftest.py, which the sdist does not "
        "ship, and asserts on upstream's log text; test_sse_helpers.py::"
        "test_response_pings_when_idle_and_closes_content_on_disconnect checks the behaviour "
        "through Hypercorn"
    ),
    "test_sse.py::test_send_whenInterrupted_thenClosesSuspendedGenerator": (
        f"{_STARLETTE_BACKGROUND}, patches the private uvicorn-shutdown hook and reads upstream's "
        f"logger; {PARITY}::test_interrupted_send_closes_suspended_content checks the rest"
    ),
    "test_sse.py::test_stream_whenEncodingFails_thenClosesSuspendedGenerator": (
        f"{_STARLETTE_BACKGROUND} and reads upstream's logger; "
        f"{PARITY}::test_encoding_failure_closes_suspended_content checks the rest"
    ),
    "test_sse.py::test_headers_whenCustomHeadersProvided_thenMergesCorrectly": (
        "expects Connection: keep-alive, which we never send (app.sse note 2: hop-by-hop, "
        f"forbidden in HTTP/2); {PARITY}::test_custom_headers_merge_with_sse_headers checks "
        "the rest"
    ),
    "test_sse.py::test_ping_whenTimerTicks_thenSendsOneMessagePerTick": (
        "drives the private _ping loop and patches anyio.sleep inside sse_starlette.sse; "
        f"{PARITY}::test_one_ping_per_quiet_interval checks the cadence through the ASGI call"
    ),
    "test_sse.py::test_ping_whenSendTimesOut_thenRaisesSendTimeoutError": (
        "drives the private _ping loop; upstream's test_ping_whenSendTimesOut_"
        "thenTearsDownResponseAndRunsCleanup, which runs here, checks it through the ASGI call"
    ),
    "test_sse.py::test_ping_whenConcurrentWithEvents_thenRespectsLocking": (
        "expects send to be called while another send is running (anyio.WouldBlock); we never "
        f"do (app.sse note 3), which {PARITY}::test_pings_and_events_never_overlap_in_send checks"
    ),
    "test_sse.py::test_pingInterval_whenCreated_thenUsesDefaultValue": _PING_PROPERTY,
    "test_sse.py::test_pingInterval_whenValidValueSet_thenUpdatesInterval": _PING_PROPERTY,
    "test_sse.py::test_pingInterval_whenStringProvided_thenRaisesTypeError": _PING_PROPERTY,
    "test_sse.py::test_pingInterval_whenNegativeValue_thenRaisesValueError": _PING_PROPERTY,
    "test_sse.py::test_pingInterval_whenZero_thenAcceptedAsDisabled": _PING_PROPERTY,
    "test_sse.py::test_backgroundTask_whenProvided_thenExecutesAfterResponse": (
        f"{_STARLETTE_BACKGROUND}; nothing to port"
    ),
}


def _sdist(cache_dir: Path) -> bytes:
    """The pinned sdist, from the cache or from PyPI's simple index; its hash is checked."""
    cached = cache_dir / SDIST
    if cached.exists() and hashlib.sha256(cached.read_bytes()).hexdigest() == SDIST_SHA256:
        return cached.read_bytes()
    accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    with httpx.Client(timeout=60, follow_redirects=True) as client:
        files = client.get(INDEX, headers=accept).raise_for_status().json()["files"]
        (url,) = [entry["url"] for entry in files if entry["filename"] == SDIST]
        payload = client.get(url).raise_for_status().content
    digest = hashlib.sha256(payload).hexdigest()
    assert digest == SDIST_SHA256, f"{SDIST} from PyPI has SHA-256 {digest}, not the pinned one"
    cached.write_bytes(payload)
    return payload


def _unpack_tests(payload: bytes, work: Path) -> None:
    """Upstream's two test files into work/tests, with our stand-ins beside them."""
    tests = work / "tests"
    tests.mkdir()
    with tarfile.open(fileobj=io.BytesIO(payload)) as sdist:
        for name in TEST_FILES:
            member = sdist.extractfile(f"sse_starlette-{VERSION}/tests/{name}")
            assert member is not None, f"{SDIST} has no tests/{name}"
            (tests / name).write_bytes(member.read())
    (tests / "__init__.py").write_text("")
    shutil.copy(SHIM / "anyio_compat.py", tests / "anyio_compat.py")
    shutil.copy(SHIM / "upstream_conftest.py", work / "conftest.py")
    (work / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )


def _outcomes(junit: Path) -> list[tuple[str, str]]:
    """``("<file>::<test function>", "passed"|"skipped"|"failed")`` per case of a JUnit report."""
    found = []
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "").split(".")[1]  # tests.test_sse.TestEventSourceResponse
        name = f"{module}.py::{case.get('name', '').split('[')[0]}"
        if case.find("skipped") is not None:
            found.append((name, "skipped"))
        elif case.find("failure") is not None or case.find("error") is not None:
            found.append((name, "failed"))
        else:
            found.append((name, "passed"))
    return found


def test_sse_starlette_portable_tests_pass_against_app_sse(request, tmp_path):
    """Every portable test of sse-starlette's test_event.py and test_sse.py passes against us."""
    cache = getattr(request.config, "cache", None)
    cache_dir = cache.mkdir("sse-starlette-sdist") if cache is not None else tmp_path
    work = tmp_path / "upstream"
    work.mkdir()
    _unpack_tests(_sdist(cache_dir), work)
    junit = tmp_path / "junit.xml"
    inherited = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        # The shim first, so that ``sse_starlette`` is ours; then this checkout's ``app``.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SHIM), str(ROOT), inherited])),
        "SSE_STARLETTE_NOT_PORTABLE": json.dumps(NOT_PORTABLE),
    }
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-c",
               str(work / "pytest.ini"), "--rootdir", str(work), f"--junitxml={junit}",
               *(f"tests/{name}" for name in TEST_FILES)]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                            timeout=100)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert junit.exists(), report
    outcomes = _outcomes(junit)
    assert [name for name, outcome in outcomes if outcome == "failed"] == [], report
    skipped = {name for name, outcome in outcomes if outcome == "skipped"}
    assert skipped == set(NOT_PORTABLE), report  # the list names real tests, and only those
    passed = [name for name, outcome in outcomes if outcome == "passed"]
    for file in TEST_FILES:  # both files really ran
        assert any(name.startswith(f"{file}::") for name in passed), report
    assert result.returncode == 0, report
