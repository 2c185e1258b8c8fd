"""The TFRecord framing, in Python: records written and read the way `tf.io.TFRecordWriter` / `TFRecordDataset`
do, byte for byte, so that shards can be built anywhere and read from any store through the storage layer.

    framed = frame(example_bytes)                  # one record: header + data + footer
    for data in records(file_bytes, name=path): ...   # CRCs checked
    offsets = record_offsets(file_bytes, name=path)   # [records + 1] int64: each record's start, then the size

A record is: uint64 little-endian data length, uint32 masked CRC-32C of those 8 bytes, the data, uint32 masked
CRC-32C of the data. Record i's data is bytes [offsets[i] + HEADER, offsets[i + 1] - FOOTER) of its file: that
is all an index needs (`audiopalm.tokens.shards` writes one beside every shard).
"""

from __future__ import annotations

import struct
from typing import Iterator

import google_crc32c
import numpy as np

HEADER = 12  # uint64 length + uint32 masked CRC of the length
FOOTER = 4  # uint32 masked CRC of the data
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
  """TFRecord's masked CRC-32C of `data`."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
  """One framed record holding `data`."""
  length = struct.pack("<Q", len(data))
  return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def record_size(data_length: int) -> int:
  """Bytes a record of `data_length` bytes takes in a file."""
  return HEADER + data_length + FOOTER


def _header(buffer: bytes | memoryview, position: int, name: str, check: bool) -> int:
  """The data length of the record at `position`."""
  header = bytes(buffer[position:position + HEADER])
  if len(header) < HEADER:
    raise ValueError(f"{name}: truncated record header at byte {position}")
  (length,) = struct.unpack("<Q", header[:8])
  if check and struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
    raise ValueError(f"{name}: corrupt record header at byte {position} (length CRC mismatch)")
  return length


def record_offsets(buffer: bytes | memoryview, name: str = "<tfrecord>") -> np.ndarray:
  """[records + 1] int64: the byte offset of each record of a whole TFRecord file, then the file's size.

  Headers only (their CRCs checked); raises ValueError for a truncated or corrupt framing."""
  offsets, position, size = [], 0, len(buffer)
  while position < size:
    offsets.append(position)
    position += record_size(_header(buffer, position, name, check=True))
  if position != size:
    raise ValueError(f"{name}: the last record runs past the end of the file ({position} > {size})")
  offsets.append(size)
  return np.asarray(offsets, np.int64)


def records(buffer: bytes, name: str = "<tfrecord>") -> Iterator[bytes]:
  """The data of every record of a whole TFRecord file, in order (both CRCs checked)."""
  view = memoryview(buffer)
  position = 0
  while position < len(buffer):
    length = _header(view, position, name, check=True)
    start, end = position + HEADER, position + HEADER + length
    if end + FOOTER > len(buffer):
      raise ValueError(f"{name}: truncated record at byte {position} ({length} bytes of data announced)")
    data = bytes(view[start:end])
    if struct.unpack("<I", view[end:end + FOOTER])[0] != masked_crc(data):
      raise ValueError(f"{name}: corrupt record at byte {position} (data CRC mismatch)")
    yield data
    position = end + FOOTER


def check_record(data: bytes, footer: bytes, name: str) -> bytes:
  """`data` if `footer` is its masked CRC (a record read by range: its data and footer), else ValueError."""
  if len(footer) != FOOTER or struct.unpack("<I", footer)[0] != masked_crc(data):
    raise ValueError(f"{name}: corrupt record (data CRC mismatch)")
  return data
