"""One event on the wire: sse-starlette's encoding rules, byte for byte (notes: ``app.sse``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, TypedDict, Unpack

DEFAULT_SEPARATOR = "\r\n"
SEPARATORS = ("\r\n", "\r", "\n")
# Only CR, LF and CRLF end a line in an event stream; str.splitlines() would also
# split on U+2028, U+0085, VT, FF, ... and corrupt data that contains them.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _check_retry(retry: object) -> None:
    """Browsers only honour an all-digits retry, so anything else is a caller bug (note 1)."""
    if retry is None:
        return
    if isinstance(retry, bool) or not isinstance(retry, int):
        raise TypeError("retry argument must be int")  # sse-starlette's words; tests match them
    if retry < 0:
        raise ValueError(f"retry argument must be >= 0 milliseconds, got {retry}")


def check_sep(sep: object, default: str = DEFAULT_SEPARATOR) -> str:
    """Any other separator would not end lines for a spec-compliant parser (note 1)."""
    if sep is None:
        return default
    if sep not in SEPARATORS:
        raise ValueError(f"sep must be one of '\\r\\n', '\\r', '\\n', got {sep!r}")
    return sep


class EventFields(TypedDict, total=False):
    """The keyword fields of an event, beside its data."""

    event: str | None
    id: str | int | None
    retry: int | None
    comment: str | None
    sep: str | None


class ServerSentEvent:
    """One event, encoded with sse-starlette's rules so ported code emits the same bytes."""

    DEFAULT_SEPARATOR: ClassVar[str] = DEFAULT_SEPARATOR

    def __init__(
        self,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | int | None = None,  # sse-starlette's keyword
        retry: int | None = None,
        comment: str | None = None,
        sep: str | None = None,
    ) -> None:
        if event is not None and not isinstance(event, str):
            raise TypeError(f"event must be a str, got {type(event).__name__}")
        if id is not None:
            if isinstance(id, bool) or not isinstance(id, str | int):
                raise TypeError(f"id must be a str or int, got {type(id).__name__}")
            if "\0" in str(id):
                raise ValueError("id must not contain NUL")  # note 1
        _check_retry(retry)
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry
        self.comment = comment
        self._sep = check_sep(sep, self.DEFAULT_SEPARATOR)

    @property
    def sep(self) -> str:
        """Line separator used by encode()."""
        return self._sep

    def encode(self) -> bytes:
        """Comment lines, id, event, data lines, retry, then the blank line that dispatches."""
        _check_retry(self.retry)  # attributes may have been changed after __init__
        lines: list[str] = []
        if self.comment is not None:
            lines.extend(f": {part}" for part in _LINE_BREAK.split(str(self.comment)))
        if self.id is not None:
            lines.append("id: " + _LINE_BREAK.sub("", str(self.id)))
        if self.event is not None:
            lines.append("event: " + _LINE_BREAK.sub("", str(self.event)))
        if self.data is not None:
            lines.extend(f"data: {part}" for part in _LINE_BREAK.split(str(self.data)))
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        lines.append("")
        return (self._sep.join(lines) + self._sep).encode("utf-8")


class JSONServerSentEvent(ServerSentEvent):
    """Data as compact JSON, exactly as sse-starlette writes it.

    That is ``json.dumps`` with non-ASCII kept, so int keys and integers of any
    size encode as they do there, and NaN/Infinity raise ``ValueError`` (they are
    not JSON). JSON escapes CR and LF, so the data is always one ``data:`` line.
    """

    def __init__(self, data: Any = None, **fields: Unpack[EventFields]) -> None:
        # None means "no data line", as in sse-starlette (not the JSON literal null).
        encoded = (
            None
            if data is None
            else json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        )
        super().__init__(encoded, **fields)


def ensure_bytes(data: bytes | dict[str, Any] | ServerSentEvent | Any, sep: str) -> bytes:
    """Turn one stream item into wire bytes; bytes pass through as already-framed events."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, ServerSentEvent):
        return data.encode()
    if isinstance(data, Mapping):
        return ServerSentEvent(**{**data, "sep": sep}).encode()  # the caller's dict is kept
    return ServerSentEvent(str(data), sep=sep).encode()
