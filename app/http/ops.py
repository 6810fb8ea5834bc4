"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Response

from app.errors import ApiError, StoreUnavailable
from app.http.common import authorize_figures, json_response, runtime

operations = Blueprint("operations", __name__)


@operations.get("/healthz")
async def healthz() -> Response:
    """The process is up (says nothing about the database)."""
    return json_response(b'{"status":"ok"}')


@operations.get("/readyz")
async def readyz() -> Response:
    """The database answers; a load balancer should send traffic here."""
    try:
        await runtime().store.ping()
    except StoreUnavailable as exc:
        raise ApiError(503, "unavailable", f"not ready: {exc}", {"Retry-After": "1"})
    return json_response(b'{"status":"ready"}')


@operations.get("/metrics")
async def metrics() -> Response:
    """Prometheus text format: this process, or all workers under ``--workers``.
    Needs the metrics token (or a read credential) when either is configured."""
    rt = runtime()
    await authorize_figures(rt, scrape=True)
    return Response(rt.metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
