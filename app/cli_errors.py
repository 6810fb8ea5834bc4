"""Mistakes a person running ``livefeed`` can fix: one line, exit status 2.

The client commands (publish, demo, export, tail) share the wording for a
server that cannot be reached or that refused a request, so every command
names the URL and the flag that points elsewhere the same way.
"""

from __future__ import annotations

import httpx
import orjson

URL_HINT = "start it with `livefeed serve`, or point --url (LIVEFEED_URL) at it"
TOKEN_HINT = "pass --token (LIVEFEED_TOKEN) with a token the server accepts"


class CommandError(Exception):
    """The command cannot do what was asked; the message says why and what to do."""


def _reason(exc: httpx.TransportError) -> str:
    """``connection refused`` rather than httpx's nested errno text."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def unreachable(url: str, exc: httpx.TransportError) -> str:
    """Why the server at ``url`` could not be talked to, without the fix."""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return f"--url {url!r} is not an http:// or https:// URL"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return f"cannot reach the Livefeed server at {url} ({_reason(exc)})"
    return f"lost the Livefeed server at {url} ({_reason(exc)})"


def cannot_reach(url: str, exc: httpx.TransportError) -> CommandError:
    """A client command's failure to reach the server, with the fix."""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return CommandError(f"{unreachable(url, exc)}; write e.g. http://127.0.0.1:8080")
    return CommandError(f"{unreachable(url, exc)}; {URL_HINT}")


def retrying(url: str, exc: httpx.TransportError, delay_s: float, most_s: float) -> str:
    """What a command that keeps retrying (``tail``) says about each failed attempt."""
    return (
        f"# {unreachable(url, exc)}; retrying in {delay_s:g} s, then at most every "
        f"{most_s:g} s (Ctrl-C stops)"
    )


def refused(url: str, response: httpx.Response) -> CommandError:
    """The server answered with an error: its ``{"error", "detail"}`` in one line."""
    try:
        body = orjson.loads(response.read())
        what = f"{body['error']}: {body['detail']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        what = response.text[:200].strip() or response.reason_phrase
    hint = f"; {TOKEN_HINT}" if response.status_code in (401, 403) else ""
    return CommandError(f"the server at {url} answered {response.status_code} ({what}){hint}")
