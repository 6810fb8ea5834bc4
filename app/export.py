"""``livefeed export``: the log as NDJSON or CSV, to a file or to stdout.

A file is written under a temporary name beside it and renamed when the
export is complete, so a failed or interrupted export leaves no file that
looks whole.  The progress bar measures the id reached against the newest
id, not lines against a count, so a filtered export (which skips ids) still
ends at 100 %.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

from app.cli_errors import CommandError, refused

# The id that starts an NDJSON envelope ({"id":42,...) or a CSV row (42,...).
LINE_ID = re.compile(rb'(?:\{"id":)?([0-9]+)')
BAR_WIDTH = 30
REDRAW_S = 0.1


@contextlib.contextmanager
def destination(output: str) -> Iterator[IO[bytes]]:
    """stdout for ``-``; otherwise a temporary file renamed to ``output`` on success."""
    if output == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(output)
    if target.is_dir():
        raise CommandError(f"-o {output}: that is a directory; name a file in it")
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed or removed below)
            dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
        )
    except OSError as exc:
        problem = f"{target.parent} does not exist" if not target.parent.exists() else exc.strerror
        raise CommandError(f"-o {output}: cannot write there ({problem}); choose another path")
    try:
        with handle:
            yield handle
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)  # as a plain open() would have made it
        os.replace(handle.name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise


class Progress:
    """``[#####     ]  42 %  1200 events, 0.3 MB`` on stderr, redrawn in place."""

    def __init__(self, first_id: int, last_id: int) -> None:
        self._first, self._last = first_id, last_id
        self._reached = first_id
        self.lines = self.bytes = 0
        self._drawn = 0.0

    def feed(self, chunk: bytes, tail: bytes) -> bytes:
        """Count ``chunk``; returns the unfinished line to pass back with the next one."""
        self.bytes += len(chunk)
        self.lines += chunk.count(b"\n")
        text = tail + chunk
        end = text.rfind(b"\n")
        if end < 0:
            return text
        start = text.rfind(b"\n", 0, end) + 1
        match = LINE_ID.match(text, start, end)
        if match:
            self._reached = max(self._reached, int(match.group(1)))
        if time.monotonic() - self._drawn >= REDRAW_S:
            self.draw()
        return text[end + 1 :]

    def draw(self, done: bool = False) -> None:
        span = self._last - self._first
        share = 1.0 if done or span <= 0 else min((self._reached - self._first) / span, 1.0)
        bar = "#" * int(share * BAR_WIDTH)
        print(
            f"\r[{bar:<{BAR_WIDTH}}] {share * 100:3.0f} %  {self.lines} lines, "
            f"{self.bytes / 1e6:.1f} MB",
            end="\n" if done else "",
            file=sys.stderr,
            flush=True,
        )
        self._drawn = time.monotonic()


def _id_range(client: httpx.Client, after: int) -> tuple[int, int]:
    """From the first id to export to the newest; (after, after) when stats are hidden."""
    response = client.get("/api/stats")
    if response.status_code != 200:
        return after, after
    stats = response.json()
    return max(after, stats.get("oldest_id", 1) - 1), stats.get("latest_id", after)


def export(client: httpx.Client, url: str, params: dict[str, str], output: str, after: int) -> None:
    """Stream ``/api/events`` from the server at ``url`` into ``output``; progress on stderr."""
    with destination(output) as out:
        progress = Progress(*_id_range(client, after))
        with client.stream("GET", "/api/events", params=params) as response:
            if response.status_code != 200:
                raise refused(url, response)
            tail = b""
            for chunk in response.iter_bytes():
                out.write(chunk)
                tail = progress.feed(chunk, tail)
        progress.draw(done=True)
