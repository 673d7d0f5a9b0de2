"""A small TensorBoard event-file writer: scalars only, pure Python, no TensorFlow (`--log_backend tensorboard`).

An event file is a sequence of TFRecords, each
    uint64 length (little endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data,
where the data is a serialized `tensorflow.Event` protobuf. The first event carries `file_version`
("brain.Event:2"); every later one a wall time, a step and a `Summary` of `simple_value` scalars, which
TensorBoard's scalar dashboard reads, or a `SessionLog` START (a resumed run: TensorBoard drops the points
at and after its step that an earlier, interrupted file holds). The protobuf is encoded by hand (the fields used):

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
              SessionLog session_log = 7; }
    Summary { repeated Value value = 1; }     Value { string tag = 1; float simple_value = 2; }
    SessionLog { SessionStatus status = 1; }  (START = 1)
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Mapping

_CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's mask: rotate right by 15 bits and add a constant (a CRC of data holding CRCs stays strong)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while True:
        bits, n = n & 0x7F, n >> 7
        out.append(bits | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int | None = None, scalars: Mapping[str, float] | None = None,
                 file_version: str | None = None, session_start: bool = False) -> bytes:
    """One serialized `Event` (field order as protobuf's own serializer writes it)."""
    out = bytearray(_varint(1 << 3 | 1) + struct.pack("<d", wall_time))
    if step is not None:
        out += _varint(2 << 3 | 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", float(value)))
            for tag, value in scalars.items())
        out += _bytes_field(5, summary)
    if session_start:
        out += _bytes_field(7, _varint(1 << 3 | 0) + _varint(1))
    return bytes(out)


class EventFileWriter:
    """Appends scalar events to a new `events.out.tfevents.*` file in `logdir` (one TensorBoard run); each event
    is flushed, so a killed run keeps every curve point written so far."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = self.logdir / f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.jaxtrade"
        self._file = open(self.path, "ab")
        self._write(encode_event(now, file_version="brain.Event:2"))

    def _write(self, event: bytes) -> None:
        self._file.write(tfrecord(event))
        self._file.flush()

    def add_scalars(self, step: int, scalars: Mapping[str, float], wall_time: float | None = None) -> None:
        self._write(encode_event(time.time() if wall_time is None else wall_time, step, scalars))

    def add_session_start(self, step: int) -> None:
        """Mark a restart at `step`: readers drop the points of earlier files at steps >= `step`."""
        self._write(encode_event(time.time(), step, session_start=True))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
