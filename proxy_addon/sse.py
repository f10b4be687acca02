"""Incremental Server-Sent Events decoder shared by the wire-format stream taps.

The capture proxy sees a streamed body as arbitrary byte chunks: an event, a line, even a
multi-byte UTF-8 character can be split anywhere. ``SseDecoder.feed`` takes each chunk as it
arrives and returns the events it completed, following the WHATWG ``text/event-stream``
rules that matter for provider traffic:

- lines end in LF, CRLF or a lone CR (a CR at the end of one chunk and a LF at the start of
  the next are one line break);
- ``field: value`` (one space after the colon is dropped), ``field:value``, or a bare
  ``field`` (empty value); lines starting with ``:`` are comments (keep-alives) and skipped;
- several ``data:`` lines in one event are joined with ``\\n``;
- an event is dispatched at a blank line, and only if it had a ``data`` field;
  ``event`` defaults to ``"message"``; ``id`` persists across events as the spec says;
- a leading UTF-8 byte-order mark is dropped.

Memory is bounded: the decoder holds at most one pending event. An event (or a single
line) that grows past ``max_event_bytes`` (16 MiB by default) is dropped whole: the rest of
it is skipped up to its blank line, and ``dropped_events`` counts it so the caller can say
so in a ``body_note`` instead of silently losing it.

Bytes are decoded as UTF-8 per complete line (invalid bytes become U+FFFD), never per
chunk, so a character split across chunks decodes correctly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_EVENT_BYTES = 16 * 1024 * 1024

_EOL = re.compile(rb"\r\n?|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class SseEvent:
    event: str  # the ``event:`` field, "message" when the event had none
    data: str  # ``data:`` lines joined with "\n"
    id: str = ""  # the last ``id:`` seen on the stream (it persists across events)


class SseDecoder:
    """Turns a byte stream, fed in chunks of any size, into ``SseEvent`` objects."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self.dropped_events = 0  # events discarded for exceeding max_event_bytes
        self._buf = bytearray()  # the unterminated tail line
        self._data: list[str] = []
        self._data_bytes = 0
        self._event = ""
        self._last_id = ""
        self._at_start = True  # still looking for a byte-order mark
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._discarding = False  # inside an oversized event, skipping to its blank line
        self._tail_dropped = False  # bytes of the current line were thrown away already

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Add a chunk; return the events it completed, in order."""
        if not chunk:
            return []
        buf = self._buf
        scanned = len(buf)  # the held tail has no line break: search only the new bytes
        buf += chunk
        if self._at_start:
            scanned = 0
            if len(buf) < len(_BOM) and _BOM.startswith(bytes(buf)):
                return []  # could still be a split BOM: wait for more bytes
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
            self._at_start = False
        pos = 0
        if self._skip_lf and buf:
            self._skip_lf = False
            if buf[0] == 0x0A:
                pos = 1
        events: list[SseEvent] = []
        while (match := _EOL.search(buf, max(pos, scanned))) is not None:
            line = bytes(buf[pos : match.start()])
            pos = match.end()
            if pos == len(buf) and match.group() == b"\r":
                self._skip_lf = True  # its LF may be the next chunk's first byte
            event = self._line(line)
            if event is not None:
                events.append(event)
        del buf[:pos]
        # The unterminated tail counts toward the event's size: one huge line must not grow
        # the buffer without limit while we wait for its line break.
        if buf and (self._discarding or self._data_bytes + len(buf) > self.max_event_bytes):
            if not self._discarding:
                self._drop_event()
            buf.clear()
            self._tail_dropped = True
        return events

    def flush(self) -> list[SseEvent]:
        """End of stream: dispatch a pending event whose ``data`` lines were all complete.

        The spec discards an event not closed by a blank line; we keep it because some
        OpenAI-compatible servers close the connection right after the last ``data:`` line,
        and that line (often the one carrying usage) is complete. An unterminated tail line
        is still discarded: it may be cut mid-value.
        """
        self._buf.clear()
        event = None if self._discarding else self._dispatch()
        self._reset_event()
        self._discarding = self._tail_dropped = False
        return [event] if event is not None else []

    def _line(self, raw: bytes) -> SseEvent | None:
        if self._tail_dropped:
            self._tail_dropped = False  # the end of a line whose start was dropped
            return None
        if not raw:
            if self._discarding:
                self._discarding = False
                return None
            return self._dispatch()
        if self._discarding or raw[:1] == b":":
            return None
        name, sep, value = raw.decode("utf-8", "replace").partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_bytes += len(raw)
            if self._data_bytes > self.max_event_bytes:
                self._drop_event()
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields are ignored, as the spec says.
        return None

    def _dispatch(self) -> SseEvent | None:
        event = None
        if self._data:
            event = SseEvent(self._event or "message", "\n".join(self._data), self._last_id)
        self._reset_event()
        return event

    def _drop_event(self) -> None:
        self.dropped_events += 1
        self._discarding = True
        self._reset_event()

    def _reset_event(self) -> None:
        self._data = []
        self._data_bytes = 0
        self._event = ""
