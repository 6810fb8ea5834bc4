"""What every HTTP endpoint needs: the runtime, the caller's address, JSON answers."""

from __future__ import annotations

from quart import Response, current_app, request

from app.errors import ApiError
from app.runtime import RUNTIME_KEY, Runtime
from app.scope import declares_json
from app.security.hosts import client_address
from app.security.tokens import ReadGrant

#: The HTML pages' policy (dashboard, API docs): same-origin files only, no inline script
#: or style, never framed.  ``connect-src 'self'`` covers same-origin ``ws:``/``wss:``.
PAGE_CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # small pages whose config can change between deployments
    "Cache-Control": "no-cache",
}


def runtime() -> Runtime:
    current: Runtime | None = current_app.extensions.get(RUNTIME_KEY)
    if current is None:
        raise ApiError(503, "unavailable", "the server is starting; try again shortly")
    return current


def request_client(rt: Runtime) -> str:
    """The caller's address (the nearest untrusted hop behind LIVEFEED_TRUST_PROXY)."""
    return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), rt.settings)


async def authorize_read(rt: Runtime, params: dict[str, list[str]]) -> ReadGrant:
    """The read-credential check, with failed attempts rate-limited per client."""
    return await rt.access.read(request_client(rt), request.headers.get("Authorization"), params)


async def authorize_figures(rt: Runtime, *, scrape: bool) -> None:
    """The metrics token or a read credential, for ``/api/stats`` and ``/metrics``."""
    await rt.access.figures(
        request_client(rt),
        request.headers.get("Authorization"),
        request.args.to_dict(flat=False),
        scrape=scrape,
    )


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = Response(body, status=status, content_type="application/json")
    response.headers.update(headers or {})
    return response


def require_json_content_type() -> None:
    """415 unless the body is declared JSON in UTF-8.  It also keeps other sites' pages
    out: a cross-site form or ``text/plain`` post needs no CORS preflight, JSON does."""
    if not declares_json(request.content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send 'Content-Type: application/json' (UTF-8); "
            f"got {request.content_type or 'none'!r}",
        )


async def request_body() -> bytes:
    """The raw body, read once and not cached (publish bodies can be 8 MiB)."""
    body = await request.get_data(cache=False, as_text=False)
    return body if isinstance(body, bytes) else body.encode()
