"""What every HTTP endpoint needs: the runtime, the caller's address, JSON answers."""

from __future__ import annotations

from quart import Response, current_app, request

from app.errors import ApiError
from app.runtime import RUNTIME_KEY, Runtime
from app.security.hosts import client_address
from app.security.tokens import ReadGrant


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


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = Response(body, status=status, content_type="application/json")
    response.headers.update(headers or {})
    return response


async def request_body() -> bytes:
    """The raw body, read once and not cached (publish bodies can be 8 MiB)."""
    body = await request.get_data(cache=False, as_text=False)
    return body if isinstance(body, bytes) else body.encode()
