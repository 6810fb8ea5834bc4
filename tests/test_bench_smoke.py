"""The benchmark suite still runs (a few seconds; figures are not judged here)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT, skip_or_fail


def test_benchmark_suite_smoke_run_loses_nothing():
    """python -m bench.run_all --smoke exits non-zero on any error, loss, duplicate or reorder.

    Its scale-out step needs PostgreSQL: without it, that is the suite's only
    failure, and the test skips (fails in CI) as every PostgreSQL test does."""
    result = subprocess.run([sys.executable, "-m", "bench.run_all", "--smoke"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "fan-out" in result.stdout and "replay" in result.stdout, result.stdout + result.stderr
    assert "cross-worker delivery, SQLite" in result.stdout, result.stdout + result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED:")]
    if failed and all("PostgreSQL is not reachable" in line for line in failed):
        skip_or_fail("\n".join(failed))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PostgreSQL publish batch" in result.stdout


def test_heavy_queries_smoke_run_completes():
    """python -m bench.heavy_queries --smoke seeds, measures each shape and the probes."""
    result = subprocess.run([sys.executable, "-m", "bench.heavy_queries", "--smoke"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "new SSE handshake" in result.stdout
