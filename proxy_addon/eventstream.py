"""AWS binary event-stream framing (``application/vnd.amazon.eventstream``).

Bedrock ``ConverseStream`` (and other AWS streaming APIs) frame each event as::

    prelude:  total_length u32 | headers_length u32 | prelude_crc u32 (CRC32 of the 8 bytes)
    headers:  repeated  name_len u8 | name (utf-8) | type u8 | value
    payload:  total_length - headers_length - 16 bytes
    trailer:  message_crc u32 (CRC32 of everything before it)

all big-endian. Header value types 0-9: true, false, int8, int16, int32, int64,
byte array (u16 length), string (u16 length), timestamp (int64 ms since epoch),
uuid (16 bytes). Values are returned as botocore returns them (bool, int, bytes,
str; timestamp as int ms; uuid as its 16 raw bytes), so the two decoders can be
compared message for message.

``EventStreamDecoder`` is incremental: a message may be split across chunks at
any byte, and only the bytes of the message in progress are kept.
``encode_event`` builds one message with string headers (for tests and the
simulated provider).
"""

from __future__ import annotations

import struct
import zlib

HeaderValue = bool | int | str | bytes

_PRELUDE_LEN = 12
_TRAILER_LEN = 4
_MIN_MESSAGE_LEN = _PRELUDE_LEN + _TRAILER_LEN
# Same limits as botocore: a larger length field means a corrupt or hostile stream,
# and refusing early stops us buffering up to 4 GiB waiting for a message that never ends.
MAX_HEADERS_LENGTH = 128 * 1024
MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024

_STRING = 7


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad CRC, length or header)."""


def _crc32(data: bytes | memoryview, start: int = 0) -> int:
    return zlib.crc32(data, start) & 0xFFFFFFFF


def decode_headers(data: bytes) -> dict[str, HeaderValue]:
    """Decode the header block of one message. Raises EventStreamError."""
    headers: dict[str, HeaderValue] = {}
    pos = 0
    end = len(data)

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > end:
            raise EventStreamError("header block ends inside a header")
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    while pos < end:
        name_len = take(1)[0]
        try:
            name = take(name_len).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventStreamError("header name is not UTF-8") from exc
        kind = take(1)[0]
        value: HeaderValue
        if kind == 0:
            value = True
        elif kind == 1:
            value = False
        elif kind == 2:
            value = struct.unpack(">b", take(1))[0]
        elif kind == 3:
            value = struct.unpack(">h", take(2))[0]
        elif kind == 4:
            value = struct.unpack(">i", take(4))[0]
        elif kind in (5, 8):  # int64, timestamp (ms since epoch)
            value = struct.unpack(">q", take(8))[0]
        elif kind in (6, _STRING):
            raw = take(struct.unpack(">H", take(2))[0])
            if kind == 6:
                value = raw
            else:
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise EventStreamError(f"header {name!r} is not UTF-8") from exc
        elif kind == 9:
            value = take(16)
        else:
            raise EventStreamError(f"unknown header value type {kind}")
        if name in headers:
            # The spec forbids repeats; botocore rejects them too.
            raise EventStreamError(f"duplicate header {name!r}")
        headers[name] = value
    return headers


class EventStreamDecoder:
    """Incremental decoder: ``feed(chunk)`` returns the messages completed by it.

    After an error every later ``feed`` raises again: a corrupt length field
    leaves no reliable way to find the next message boundary.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._failed: str = ""

    @property
    def buffered(self) -> int:
        """Bytes held for the message in progress (0 at a message boundary)."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[tuple[dict[str, HeaderValue], bytes]]:
        if self._failed:
            raise EventStreamError(self._failed)
        self._buf += chunk
        out: list[tuple[dict[str, HeaderValue], bytes]] = []
        try:
            while True:
                message = self._next_message()
                if message is None:
                    return out
                out.append(message)
        except EventStreamError as exc:
            self._failed = str(exc)
            self._buf.clear()
            raise

    def _next_message(self) -> tuple[dict[str, HeaderValue], bytes] | None:
        buf = self._buf
        if len(buf) < _PRELUDE_LEN:
            return None
        total_len, headers_len, prelude_crc = struct.unpack_from(">III", buf, 0)
        # Validate the prelude before trusting its lengths to decide how much to buffer.
        if _crc32(memoryview(buf)[:8]) != prelude_crc:
            raise EventStreamError("prelude CRC mismatch")
        if headers_len > MAX_HEADERS_LENGTH:
            raise EventStreamError(f"headers length {headers_len} exceeds {MAX_HEADERS_LENGTH}")
        payload_len = total_len - headers_len - _MIN_MESSAGE_LEN
        if total_len < _MIN_MESSAGE_LEN or payload_len < 0:
            raise EventStreamError(f"bad lengths: total {total_len}, headers {headers_len}")
        if payload_len > MAX_PAYLOAD_LENGTH:
            raise EventStreamError(f"payload length {payload_len} exceeds {MAX_PAYLOAD_LENGTH}")
        if len(buf) < total_len:
            return None
        message = bytes(buf[:total_len])
        del buf[:total_len]
        (message_crc,) = struct.unpack_from(">I", message, total_len - _TRAILER_LEN)
        if _crc32(message[: total_len - _TRAILER_LEN]) != message_crc:
            raise EventStreamError("message CRC mismatch")
        headers_end = _PRELUDE_LEN + headers_len
        headers = decode_headers(message[_PRELUDE_LEN:headers_end])
        return headers, message[headers_end : total_len - _TRAILER_LEN]


def encode_headers(headers: dict[str, str]) -> bytes:
    parts: list[bytes] = []
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        if len(raw_name) > 255 or len(raw_value) > 0xFFFF:
            raise ValueError(f"header {name!r} too long for the event-stream format")
        parts.append(struct.pack(">B", len(raw_name)) + raw_name)
        parts.append(struct.pack(">BH", _STRING, len(raw_value)) + raw_value)
    return b"".join(parts)


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string-typed headers and both CRCs."""
    header_bytes = encode_headers(headers)
    total_len = _MIN_MESSAGE_LEN + len(header_bytes) + len(payload)
    prelude = struct.pack(">II", total_len, len(header_bytes))
    prelude += struct.pack(">I", _crc32(prelude))
    body = prelude + header_bytes + payload
    return body + struct.pack(">I", _crc32(body))
