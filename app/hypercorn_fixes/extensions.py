"""Is a ``Sec-WebSocket-Extensions`` offer well formed?  (RFC 6455 §9.1, RFC 7692 §7)

Livefeed negotiates no WebSocket extension (:mod:`app.hypercorn_fixes.websocket`),
so nothing here chooses what a connection uses: it decides which handshakes are
refused.  A header that breaks RFC 6455's grammar, or a ``permessage-deflate``
offer with a parameter RFC 7692 does not define or a value it does not allow, is
a client bug the client should hear about: before, wsproto met such a value only
while accepting the handshake and raised from inside the application's accept
(no answer at all, ~4 KB of tracebacks per request).

The sentences returned name the rule that was broken, never the client's bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
TOKEN = re.compile(_TOKEN)
#: RFC 6455 §9.1: a quoted value must still be a token once unescaped.
_QUOTED = r'"(?:\\?[!#$%&\'*+\-.^_`|~0-9A-Za-z])+"'
PARAM = re.compile(rf"({_TOKEN})(?:\s*=\s*({_TOKEN}|{_QUOTED}))?")

DEFLATE = "permessage-deflate"
#: RFC 7692 §7.1.2: a window size is a decimal from 8 to 15, without leading zeros.
WINDOW_BITS = re.compile(r"8|9|1[0-5]")
#: The parameters RFC 7692 §7.1 defines for an offer; True when a value is required,
#: None when it is optional, False when none is allowed.
DEFLATE_PARAMS: dict[str, bool | None] = {
    "server_no_context_takeover": False,
    "client_no_context_takeover": False,
    "server_max_window_bits": True,
    "client_max_window_bits": None,
}


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _deflate_problem(params: list[tuple[str, str | None]]) -> str | None:
    """What RFC 7692 §7.1 says is wrong with one permessage-deflate offer."""
    seen: set[str] = set()
    for name, value in params:
        name = name.lower()
        if name not in DEFLATE_PARAMS:
            return f"{DEFLATE} has a parameter that RFC 7692 does not define"
        if name in seen:
            return f"{DEFLATE} names {name} twice"
        seen.add(name)
        needs_value = DEFLATE_PARAMS[name]
        if value is None and needs_value:
            return f"{DEFLATE}: {name} needs a value"
        if value is not None and needs_value is False:
            return f"{DEFLATE}: {name} takes no value"
        if value is not None and not WINDOW_BITS.fullmatch(_unquote(value)):
            return f"{DEFLATE}: {name} must be a whole number from 8 to 15"
    return None


def _element_problem(element: str) -> str | None:
    name, *raw_params = (part.strip() for part in element.split(";"))
    if not TOKEN.fullmatch(name):
        return "names an extension that is not a token"
    params: list[tuple[str, str | None]] = []
    for raw in raw_params:
        match = PARAM.fullmatch(raw)
        if match is None:
            return "has a parameter that is not token or token=value"
        params.append((match[1], match[2]))
    return _deflate_problem(params) if name.lower() == DEFLATE else None


def offer_problem(values: Iterable[bytes]) -> str | None:
    """Why these ``Sec-WebSocket-Extensions`` header values are refused, or None.

    Extensions other than permessage-deflate are checked for grammar only: a server
    ignores an extension it does not know (RFC 6455 §9.1)."""
    for value in values:
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return "is not ASCII"
        for element in text.split(","):  # a comma cannot occur inside a valid element
            if element.strip():
                problem = _element_problem(element)
                if problem is not None:
                    return problem
    return None
