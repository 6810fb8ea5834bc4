"""A spec-strict Server-Sent Events parser for tests.

Written from WHATWG HTML §9.2.6 "Interpreting an event stream", not from any
server's encoder, so it catches framing bugs the way a browser's EventSource
would see them.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

_EOL = re.compile(r"\r\n|\r|\n")
_ASCII_DIGITS = re.compile(r"[0-9]+")


@dataclass
class SSEMessage:
    """A dispatched event as EventSource would deliver it."""

    event: str  # "message" when no event field was given
    data: str
    id: str  # the last event ID buffer at dispatch time (persists across events)
    retry: int | None  # a valid retry field seen since the previous dispatch, if any


class SSEParser:
    """Incremental parser: feed() bytes split anywhere, get the events they complete."""

    def __init__(self) -> None:
        # "utf-8-sig" is the spec's UTF-8 decode: one leading BOM dropped, even if
        # split across chunks; invalid bytes become U+FFFD.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._line = ""  # text after the last line end
        self._skip_lf = False  # previous chunk ended in CR: a leading LF belongs to it
        self._data = ""
        self._event_type = ""
        self._retry: int | None = None
        self.last_event_id = ""
        self.reconnection_time: int | None = None
        self.comments: list[str] = []  # text after ':' of every comment line, e.g. " ping"

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Parse more bytes; return the events whose blank line arrived."""
        return self._feed_text(self._decoder.decode(chunk))

    def close(self) -> list[SSEMessage]:
        """End of stream: flush the decoder; an unterminated event is discarded (spec)."""
        self._feed_text(self._decoder.decode(b"", final=True))
        self._line = ""
        self._data = ""
        self._event_type = ""
        return []

    def _feed_text(self, text: str) -> list[SSEMessage]:
        if self._skip_lf and text:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._line + text
        messages: list[SSEMessage] = []
        start = 0
        for match in _EOL.finditer(buffer):
            line = buffer[start : match.start()]
            start = match.end()
            if match.group() == "\r" and start == len(buffer):
                self._skip_lf = True
            message = self._process_line(line)
            if message is not None:
                messages.append(message)
        self._line = buffer[start:]
        return messages

    def _process_line(self, line: str) -> SSEMessage | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:])
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event_type = value
        elif field == "data":
            self._data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry" and _ASCII_DIGITS.fullmatch(value):
            self._retry = self.reconnection_time = int(value)
        # any other field is ignored
        return None

    def _dispatch(self) -> SSEMessage | None:
        data, self._data = self._data, ""
        event_type, self._event_type = self._event_type, ""
        retry, self._retry = self._retry, None
        if data == "":
            return None
        return SSEMessage(
            event=event_type or "message",
            data=data.removesuffix("\n"),
            id=self.last_event_id,
            retry=retry,
        )


def parse_all(body: bytes) -> list[SSEMessage]:
    """Parse a complete stream body."""
    parser = SSEParser()
    messages = parser.feed(body)
    parser.close()
    return messages


async def iter_sse(
    response_byte_iterator: AsyncIterable[bytes], parser: SSEParser | None = None
) -> AsyncIterator[SSEMessage]:
    """Yield events from raw bytes, e.g. ``httpx.Response.aiter_raw()``.

    Pass ``parser`` to inspect its comments (pings) or last_event_id meanwhile.
    """
    parser = parser if parser is not None else SSEParser()
    async for chunk in response_byte_iterator:
        for message in parser.feed(chunk):
            yield message
    parser.close()
