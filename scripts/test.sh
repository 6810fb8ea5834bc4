#!/usr/bin/env bash
# Install everything the tests need, then run them: lint, the browser client's
# unit tests (Node's own runner, no npm packages), then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k sse).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's own python3 refuses `pip install` outside a virtual environment
# (PEP 668, "externally managed"): there the tests run in .venv, made here.
# Any other python3 (or one already in a virtual environment) is used as it is.
python=python3
managed='import os, sys, sysconfig
stdlib = sysconfig.get_path("stdlib")
marker = os.path.exists(os.path.join(stdlib, "EXTERNALLY-MANAGED"))
sys.exit(0 if marker and sys.prefix == sys.base_prefix else 1)'
if python3 -c "$managed"; then
    if ! python3 -c 'import ensurepip' 2>/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    [ -x .venv/bin/python ] || python3 -m venv .venv
    python=.venv/bin/python
fi

"$python" -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'

# Browser tests drive Debian's Chromium with Playwright (its own browser
# downloads are not used); the multi-node test runs Debian's nginx in front of
# two servers; one fault test steps a running server's wall clock back with
# libfaketime (package faketime); the browser client's unit tests run on Node.js
# (package nodejs, 18 or newer), and the dashboard's Lighthouse test on npm's
# lighthouse (below; package npm brings npm).  Installed here when we can;
# otherwise those tests skip on a developer machine, and fail in CI.
# PostgreSQL tests use the server on 127.0.0.1:5432 (or LIVEFEED_TEST_POSTGRES_URL).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-liberation)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || missing+=(faketime)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "note: missing ${missing[*]}; install them to run the browser and proxy tests" >&2
    fi
fi

# Lighthouse, pinned, into build/lighthouse (git ignores build/), once: it drives
# the Chromium above (CHROME_PATH) and downloads no browser of its own.
LIGHTHOUSE_VERSION=12.8.2
lighthouse_pkg=build/lighthouse/node_modules/lighthouse/package.json
if ! grep -qs "\"version\": \"$LIGHTHOUSE_VERSION\"" "$lighthouse_pkg"; then
    if command -v npm >/dev/null; then
        npm install --no-save --no-audit --no-fund --loglevel=error --prefix build/lighthouse \
            "lighthouse@$LIGHTHOUSE_VERSION" >/dev/null
    else
        echo "note: npm is missing; the dashboard's Lighthouse test will not run" >&2
    fi
fi

"$python" -m ruff check .
lint_imports='import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())'
"$python" -c "$lint_imports" --no-cache >/dev/null || "$python" -c "$lint_imports" --no-cache  # the layers of app/ (pyproject.toml)
"$python" -m mypy  # strict, over app/ (pyproject.toml)
if command -v node >/dev/null || [ "${CI:-}" = true ]; then
    node --test tests/js/
else
    echo "note: node is missing; the browser client's unit tests (tests/js) did not run" >&2
fi
# Most tests wait on servers, browsers and timeouts rather than the CPU, so they run
# in four processes (a file's tests stay together: they share its fixtures). Tests
# marked serial bound a delay or need the machine to themselves: they run after,
# one at a time. Exit status 5 ("no tests collected", e.g. a -k that selects only
# one kind) is not a failure.
phase() { "$python" -m pytest "$@" || { status=$?; [ "$status" = 5 ] || return "$status"; }; }
failed=0
phase -n 4 --dist loadfile -m "not serial" "$@" || failed=$?
phase -p no:xdist -m serial "$@" || failed=$?
exit "$failed"
