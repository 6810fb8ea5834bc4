"""app.client without a server: the URLs a feed asks for, and the ladder's verdicts."""

from __future__ import annotations

import pytest

from app.client.errors import Down
from app.client.ladder import Verdict, classify
from app.client.options import FeedOptions, name_list


def test_several_channels_make_one_comma_separated_list():
    """Channels given as a list or as "a,b" are one de-duplicated list in every URL."""
    options = FeedOptions("https://h:1/base/", name_list(["wf_a", "wf_b", "wf_a"]), types=("x",))
    assert options.stream_url("ws", 5) == (
        "wss://h:1/base/ws/wf_a,wf_b?types=x&last_event_id=5&batch=1"
    )
    assert options.stream_url("sse", None) == "https://h:1/base/sse/wf_a,wf_b?types=x"
    assert options.filter_params() == {"workflow_id": "wf_a,wf_b", "types": "x"}
    assert name_list("wf_a,wf_b") == ("wf_a", "wf_b")
    every = FeedOptions("http://h", ("wf_a", "validation_updates"), tail=5)
    assert every.filter_params() == {} and every.stream_url("sse", None).endswith("?tail=5")
    with pytest.raises(ValueError):
        name_list(["wf_a", ""])
    with pytest.raises(ValueError):
        FeedOptions("ftp://h", ("wf_a",))


@pytest.mark.parametrize(
    ("down", "was_live", "server_error", "verdict"),
    [
        (Down("ws", "x", status=401, error="unauthorized"), False, None, Verdict.REFUSE),
        (Down("sse", "x", status=400, error="bad_cursor"), False, None, Verdict.REFUSE),
        (Down("ws", "x", status=403, error="forbidden"), False, None, Verdict.REFUSE),
        (Down("ws", "x", status=403, error="origin_not_allowed"), False, None, Verdict.FALL),
        (Down("ws", "proxy page", status=403), False, None, Verdict.FALL),
        (Down("sse", "x", status=404), False, None, Verdict.FALL),
        (Down("sse", "text/html", status=200), False, None, Verdict.FALL),
        (Down("ws", "x", status=503, error="shutting_down"), False, None, Verdict.LATER),
        (Down("poll", "x", status=429, retry_after=2), False, None, Verdict.LATER),
        (Down("ws", "closed", close_code=1012), True, "shutting_down", Verdict.LATER),
        (Down("sse", "ended"), True, "overloaded", Verdict.LATER),
        (Down("ws", "refused", network=True), False, None, Verdict.RETRY),
        (Down("ws", "lost"), True, None, Verdict.RETRY),
        (Down("ws", "silent", silent=True), True, None, Verdict.PROBE),
        (Down("ws", "no connection_established"), False, None, Verdict.PROBE),
    ],
)
def test_what_each_failure_means(down: Down, was_live: bool, server_error, verdict: Verdict):
    """Credentials and bad requests end the feed, a blocked transport is left,
    a busy or stopped server is waited for on the same transport."""
    assert classify(down, was_live=was_live, server_error=server_error) is verdict
