"""The dashboard by Lighthouse's measure, on the live page while demo events stream.

Lighthouse (npm ``lighthouse``, pinned and installed into ``build/lighthouse``
by ``scripts/test.sh``) drives Debian's Chromium (``CHROME_PATH``); it never
downloads a browser.  Targets: accessibility and best practices 1.0,
performance at least 0.95, cumulative layout shift at most 0.1, for the phone
profile (Lighthouse's default, throttled) and the desktop one.  The figures
are printed and kept in ``tests/e2e/artifacts/lighthouse.json``.  A missing
Lighthouse or Chromium skips the test on a developer machine and fails it in
CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CHROMIUM
from tests.support import ROOT, skip_or_fail

pytestmark = pytest.mark.serial  # Lighthouse's performance score needs the machine to itself

ARTIFACTS = Path(__file__).parent / "artifacts"
LIGHTHOUSE = Path(
    os.environ.get("LIVEFEED_LIGHTHOUSE", ROOT / "build/lighthouse/node_modules/.bin/lighthouse")
)
DEMO_RATE = "5"  # events per second, as `run.py serve --demo-rate 5`
RUN_TIMEOUT_S = 90
CHROME_FLAGS = "--headless=new --no-sandbox --disable-gpu --disable-background-networking"
TARGETS = {"accessibility": 1.0, "best-practices": 1.0, "performance": 0.95}
MAX_CLS = 0.1


def require(path: Path, what: str) -> None:
    """Skip without ``path`` on a developer machine; fail in CI."""
    if not path.exists():
        skip_or_fail(f"{path} is missing: {what}")


def lighthouse(url: str, out: Path, preset: str) -> dict[str, Any]:
    """One Lighthouse run of ``url`` with ``preset`` ("mobile" or "desktop"): its figures."""
    command = [
        str(LIGHTHOUSE),
        url,
        "--output=json",
        f"--output-path={out}",
        "--quiet",
        "--only-categories=performance,accessibility,best-practices",
        f"--chrome-flags={CHROME_FLAGS}",
    ]
    if preset == "desktop":
        command.append("--preset=desktop")
    env = {**os.environ, "CHROME_PATH": CHROMIUM}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, f"lighthouse failed ({done.returncode}):\n{done.stderr[-3000:]}"
    report = json.loads(out.read_text())
    audits = report["audits"]
    failing = [
        f"{category['id']}/{ref['id']}"
        for category in report["categories"].values()
        for ref in category["auditRefs"]
        if ref["weight"] and (audits[ref["id"]]["score"] or 0) < 1
    ]
    return {
        "preset": preset,
        "lighthouse": report["lighthouseVersion"],
        **{key: category["score"] for key, category in report["categories"].items()},
        "cls": audits["cumulative-layout-shift"]["numericValue"],
        "lcp_ms": round(audits["largest-contentful-paint"]["numericValue"]),
        "tbt_ms": round(audits["total-blocking-time"]["numericValue"]),
        "below_full_marks": failing,
    }


def misses(figures: dict[str, Any]) -> list[str]:
    """The targets ``figures`` misses."""
    missed = [
        f"{key} {figures[key]} < {want}" for key, want in TARGETS.items() if figures[key] < want
    ]
    if figures["cls"] > MAX_CLS:
        missed.append(f"CLS {figures['cls']:.3f} > {MAX_CLS}")
    return missed


def test_dashboard_meets_the_lighthouse_targets_while_events_stream(
    start_server: Callable[..., Any], tmp_path: Path
) -> None:
    """Accessibility and best practices 1.0, performance ≥ 0.95 and CLS ≤ 0.1, phone and desktop."""
    require(LIGHTHOUSE, "scripts/test.sh installs it (npm)")
    require(Path(CHROMIUM), "apt-get install chromium")
    server = start_server(LIVEFEED_DEMO_RATE=DEMO_RATE)
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/api/stats", timeout=5).json()["latest_id"] < 10:
        assert time.monotonic() < deadline, "the demo traffic did not start"
        time.sleep(0.2)
    results = []
    for preset in ("mobile", "desktop"):
        figures = lighthouse(server.url + "/dashboard/", tmp_path / f"{preset}.json", preset)
        if misses(figures) and not [m for m in misses(figures) if not m.startswith("performance")]:
            # Performance is timed on a machine other tests share: one more run before it counts.
            figures = lighthouse(server.url + "/dashboard/", tmp_path / f"{preset}-2.json", preset)
        results.append(figures)
        print(json.dumps(figures))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "lighthouse.json").write_text(json.dumps(results, indent=2) + "\n")
    missed = {r["preset"]: misses(r) for r in results if misses(r)}
    assert not missed, f"Lighthouse targets missed: {missed}; figures: {results}"
