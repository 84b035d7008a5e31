"""AWS event-stream framing (application/vnd.amazon.eventstream), as Bedrock's ConverseStream sends it.

Each message: total length (u32), headers length (u32), prelude CRC32, headers, payload, message CRC32;
all integers big-endian. Headers are (name length u8, name, type u8, value); only string values
(type 7) carry meaning for Bedrock, the others are skipped by their fixed or prefixed size.
"""

from __future__ import annotations

import struct
import zlib

from modelplex.providers.base import BinaryEvent

_PRELUDE = 12
_MIN_MESSAGE = 16
_MAX_MESSAGE = 16 * 1024 * 1024
# Value sizes of the fixed-size header types; -1: a u16 length prefix follows (bytes, string).
_SIZES = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 6: -1, 7: -1, 8: 8, 9: 16}


def _headers(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(raw):
        name_len = raw[i]
        name = raw[i + 1 : i + 1 + name_len].decode("utf-8")
        i += 1 + name_len
        kind = raw[i]
        i += 1
        size = _SIZES.get(kind)
        if size is None:
            raise ValueError(f"unknown event-stream header type {kind}")
        if size == -1:
            (length,) = struct.unpack_from(">H", raw, i)
            value = raw[i + 2 : i + 2 + length]
            i += 2 + length
            if kind == 7:
                out[name] = value.decode("utf-8")
        else:
            i += size
    return out


class EventStreamDecoder:
    """Incremental decoder: bytes in, BinaryEvent out. Raises ValueError on a bad frame or CRC."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[BinaryEvent]:
        self._buf += chunk
        events: list[BinaryEvent] = []
        while len(self._buf) >= _PRELUDE:
            total, headers_len, prelude_crc = struct.unpack_from(">III", self._buf, 0)
            if zlib.crc32(self._buf[:8]) != prelude_crc:
                raise ValueError("event-stream prelude CRC mismatch")
            if not _MIN_MESSAGE <= total <= _MAX_MESSAGE or headers_len > total - _MIN_MESSAGE:
                raise ValueError(f"event-stream message of impossible length {total}")
            if len(self._buf) < total:
                break
            message, self._buf = self._buf[:total], self._buf[total:]
            (crc,) = struct.unpack_from(">I", message, total - 4)
            if zlib.crc32(message[:-4]) != crc:
                raise ValueError("event-stream message CRC mismatch")
            headers = _headers(message[_PRELUDE : _PRELUDE + headers_len])
            events.append(BinaryEvent(headers=headers, payload=message[_PRELUDE + headers_len : total - 4]))
        return events

    def flush(self) -> list[BinaryEvent]:
        if self._buf:
            raise ValueError(f"event-stream ended inside a message ({len(self._buf)} bytes left)")
        return []


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers (used by the simulator and tests)."""
    raw = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = _PRELUDE + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw + payload
    return body + struct.pack(">I", zlib.crc32(body))
