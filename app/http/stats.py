"""``GET /api/stats``: the figures the dashboard shows."""

from __future__ import annotations

import time

import orjson
from quart import Blueprint, Response

from app.http.common import authorize_figures, json_response, runtime

statistics = Blueprint("statistics", __name__)


@statistics.get("/api/stats")
async def stats() -> Response:
    """Figures for the dashboard: this process's connections and the log's size.
    Needs a read credential (or the metrics token) when reading does."""
    rt = runtime()
    await authorize_figures(rt, scrape=False)
    bounds = await rt.store.bounds()
    # ids have no gaps and trimming removes the oldest, so this is exact and needs
    # no count(*) (which scans the whole table on PostgreSQL)
    stored = max(0, bounds.latest_id - bounds.oldest_id + 1)
    return json_response(
        orjson.dumps(
            {
                "node": rt.node,
                "connections": rt.metrics.connection_counts(),
                "subscribers": rt.hub.subscriber_count,
                "latest_id": bounds.latest_id,
                "oldest_id": bounds.oldest_id if stored else None,
                "events_stored": stored,
                "events_published": rt.metrics.published_total(),
                "fell_behind": rt.hub.stats.fell_behind,
                "uptime_s": round(time.time() - rt.started_at, 3),
            }
        )
    )
