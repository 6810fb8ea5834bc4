#!/usr/bin/env bash
# Install everything the tests need, then run them: lint, then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k sse).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Browser tests drive Debian's Chromium with Playwright (its own browser
# downloads are not used).  Installed here when we can; otherwise those tests
# skip on a developer machine, and fail in CI.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-liberation >/dev/null
    else
        echo "note: /usr/bin/chromium is missing; install Debian's chromium to run browser tests" >&2
    fi
fi

python3 -m ruff check .
python3 -m pytest "$@"
