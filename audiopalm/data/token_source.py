"""Random access to the examples of a token dataset (`audiopalm.tokens` TFRecord shards), for grain.

    source = TokenShardSource("runs/tokens_demo")     # a grain RandomAccessDataSource
    len(source), source[i]                             # parsed example dicts (`audiopalm.tokens.schema.parse_example`)

TFRecord files have no index, but their framing makes one cheap: each record is an 8-byte little-endian length,
a 4-byte length CRC, the data, and a 4-byte data CRC, so reading the headers gives every record's offset.
The index (one int64 offset per example) is built when the source is made, reading 12 bytes per record, and
can be cached as .npy files (`index_dir`, keyed by each file's path and size) for large datasets. Example i is then one seek and one read, which
lets grain shuffle globally, split the examples between hosts and checkpoint its position as an index.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import struct
import threading
from typing import Any

import numpy as np
import tensorflow as tf

from audiopalm.files.atomic import write_bytes_atomic
from audiopalm.tokens import schema
from audiopalm.tokens import shards as shards_lib

_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data


def record_offsets(path: str) -> np.ndarray:
  """[records] int64 byte offsets of the records of one TFRecord file (headers only are read)."""
  offsets = []
  size = tf.io.gfile.stat(path).length
  with tf.io.gfile.GFile(path, "rb") as f:
    position = 0
    while position < size:
      header = f.read(_HEADER)
      if len(header) < _HEADER:
        raise ValueError(f"{path}: truncated record header at byte {position}")
      (length,) = struct.unpack("<Q", header[:8])
      offsets.append(position)
      position += _HEADER + length + _FOOTER
      if position < size:
        f.seek(position)
    if position != size:
      raise ValueError(f"{path}: the last record runs past the end of the file ({position} > {size})")
  return np.asarray(offsets, np.int64)


class TokenShardSource:
  """Every example of the complete shards of one split of a token dataset, by global index.

  `dataset_name` picks the shards of one dataset when a directory holds several (default: the only one).
  At most `MAX_OPEN_FILES` shard files stay open per reading thread (least recently used ones are closed).
  """

  MAX_OPEN_FILES = 16

  def __init__(self, directory: str, split: str = shards_lib.DEFAULT_SPLIT, index_dir: str | None = None,
               dataset_name: str | None = None):
    self.directory = os.fspath(directory)
    found = [f for f in shards_lib.find_shards(self.directory) if f.split == split]
    names = sorted({f.dataset_name for f in found})
    if dataset_name is None and len(names) > 1:
      raise ValueError(f"{self.directory} holds the shards of several datasets {names}: name one (dataset_name)")
    files = sorted((f for f in found if dataset_name in (None, f.dataset_name)), key=lambda f: f.shard_index)
    if not files:
      raise FileNotFoundError(f"no complete '{split}' shards{f' of {dataset_name!r}' if dataset_name else ''} in "
                              f"{self.directory}")
    counts = {f.num_shards for f in files}
    if len(counts) != 1 or len(files) != counts.pop():
      raise ValueError(f"{self.directory}: the '{split}' shards are incomplete ({len(files)} of "
                       f"{files[0].num_shards}): finish the tokenization job first")
    self.paths = [f.path for f in files]
    sizes = [int(tf.io.gfile.stat(p).length) for p in self.paths]
    self.offsets = [self._offsets(p, n, index_dir) for p, n in zip(self.paths, sizes)]
    # Record i's data is bytes [offsets[i] + 12, ends[i]) of its file (ends: the next record's offset - 4).
    self.ends = [np.append(o[1:], n) - _FOOTER for o, n in zip(self.offsets, sizes)]
    self.starts = np.cumsum([0] + [len(o) for o in self.offsets])  # global index of each shard's first example
    self._local = threading.local()  # open files per thread (grain reads from several threads)

  @staticmethod
  def _offsets(path: str, size: int, index_dir: str | None) -> np.ndarray:
    """The file's record offsets, from the cache in `index_dir` when it has them for this path and size."""
    if index_dir is None:
      return record_offsets(path)
    key = hashlib.sha256(f"{path}\0{size}".encode()).hexdigest()[:16]
    cache = os.path.join(index_dir, f"{os.path.basename(path)}.{key}.offsets.npy")
    if tf.io.gfile.exists(cache):
      with tf.io.gfile.GFile(cache, "rb") as f:
        return np.load(f)
    offsets = record_offsets(path)
    buffer = io.BytesIO()
    np.save(buffer, offsets)
    write_bytes_atomic(cache, buffer.getvalue())  # hosts sharing index_dir never share a temporary file
    return offsets

  def __len__(self) -> int:
    return int(self.starts[-1])

  def read(self, index: int) -> bytes:
    """The serialized example `index` (0 ≤ index < len)."""
    if not 0 <= index < len(self):
      raise IndexError(f"example {index} of {len(self)}")
    shard = int(np.searchsorted(self.starts, index, side="right") - 1)
    handles = self._local.__dict__.setdefault("handles", collections.OrderedDict())
    if shard in handles:
      handles.move_to_end(shard)
    else:
      if len(handles) >= self.MAX_OPEN_FILES:
        handles.popitem(last=False)[1].close()
      path = self.paths[shard]  # local files through Python's own I/O (far less overhead per read than GFile)
      handles[shard] = open(path, "rb") if "://" not in path else tf.io.gfile.GFile(path, "rb")  # noqa: SIM115
    f = handles[shard]
    i = index - self.starts[shard]
    start = int(self.offsets[shard][i]) + _HEADER
    f.seek(start)
    return f.read(int(self.ends[shard][i]) - start)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return schema.parse_example(self.read(int(index)))

  def __repr__(self) -> str:
    return f"TokenShardSource({self.directory!r}, {len(self.paths)} shards, {len(self)} examples)"
