"""Random access to the examples of a token dataset (`audiopalm.tokens` TFRecord shards), local or on gs://.

    source = TokenShardSource("gs://bucket/tokens")    # a grain RandomAccessDataSource
    len(source), source[i]                             # parsed example dicts (`audiopalm.tokens.schema.parse_example`)

Start: one listing of the directory (sizes included), then each shard's record index (`index/<shard>.offsets.npy`,
written with the shard by `audiopalm.tokens.shards.ShardWriter`), read in parallel: one small request per shard,
never the shard itself. A shard written before indexes were (or whose index does not match its size) is indexed
by reading its framing: locally the headers only (memory-mapped), remotely the whole file in one request; with
`index_dir` set, such indexes are cached there as .npy files (keyed by the shard's path and size), so that this
happens once.

Example i is then one ranged read of exactly its record's data and CRC (no read-ahead: a random read fetches what
it needs), which lets grain shuffle globally, split the examples between hosts and checkpoint its position as an
index. Local shards stay open (at most `MAX_OPEN_FILES` per reading thread); remote ones are read through
`audiopalm.files.storage.read_range`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import logging
import mmap
import os
import posixpath
import threading
from typing import Any

import numpy as np

from audiopalm.files import storage
from audiopalm.tokens import schema
from audiopalm.tokens import shards as shards_lib
from audiopalm.tokens import tfrecord

log = logging.getLogger(__name__)

_INDEX_THREADS = 32  # index files read at once at start (small objects: latency-bound)


def record_offsets(path: str) -> np.ndarray:
  """[records + 1] int64: the record offsets of one TFRecord file, then its size, from its framing (local files:
  the headers only, through a memory map; remote ones: the whole file, in one request)."""
  if storage.is_remote(path):
    return tfrecord.record_offsets(storage.read_bytes(path), name=path)
  with open(path.removeprefix("file://"), "rb") as f:
    if os.fstat(f.fileno()).st_size == 0:
      return np.zeros([1], np.int64)
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
      return tfrecord.record_offsets(buffer, name=path)


class TokenShardSource:
  """Every example of the complete shards of one split of a token dataset, by global index.

  `dataset_name` picks the shards of one dataset when a directory holds several (default: the only one).
  """

  MAX_OPEN_FILES = 16

  def __init__(self, directory: str, split: str = shards_lib.DEFAULT_SPLIT, index_dir: str | None = None,
               dataset_name: str | None = None):
    self.directory = os.fspath(directory)
    io_start = storage.counts()
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
    self.remote = storage.is_remote(self.directory)
    with concurrent.futures.ThreadPoolExecutor(min(_INDEX_THREADS, len(files))) as pool:
      offsets = list(pool.map(lambda f: self._offsets(f.path, f.num_bytes, index_dir), files))
    # Record i's data is bytes [offsets[i] + HEADER, offsets[i + 1] - FOOTER) of its file.
    self.offsets = offsets
    self.starts = np.cumsum([0] + [len(o) - 1 for o in offsets])  # global index of each shard's first example
    self._local = threading.local()  # open files per thread (grain reads from several threads)
    self.start_io = storage.counts() - io_start  # what the start read (this process's storage traffic meanwhile)
    log.info("%s: %d shards, %d examples; the start made %d storage requests, read %.1f kB", self.directory,
             len(self.paths), len(self), self.start_io.requests, self.start_io.bytes_read / 1e3)

  @staticmethod
  def _offsets(path: str, size: int, index_dir: str | None) -> np.ndarray:
    """The shard's record offsets (and size): its own index, else the cache in `index_dir`, else its framing."""
    offsets = shards_lib.read_index(path, size)
    if offsets is not None:
      return offsets
    if index_dir is None:
      return record_offsets(path)
    key = hashlib.sha256(f"{path}\0{size}".encode()).hexdigest()[:16]
    cache = storage.join(index_dir, f"{posixpath.basename(path)}.{key}.offsets.npy")
    offsets = shards_lib.read_offsets(cache, size)
    if offsets is None:
      offsets = record_offsets(path)
      shards_lib.write_offsets(cache, offsets)  # hosts sharing index_dir never share a temporary file
    return offsets

  def __len__(self) -> int:
    return int(self.starts[-1])

  def read(self, index: int) -> bytes:
    """The serialized example `index` (0 ≤ index < len), its CRC checked: one read of its record."""
    if not 0 <= index < len(self):
      raise IndexError(f"example {index} of {len(self)}")
    shard = int(np.searchsorted(self.starts, index, side="right") - 1)
    i = index - self.starts[shard]
    start = int(self.offsets[shard][i]) + tfrecord.HEADER
    length = int(self.offsets[shard][i + 1]) - start  # data + footer
    if self.remote:
      record = storage.read_range(self.paths[shard], start, length)
    else:
      handles = self._local.__dict__.setdefault("handles", collections.OrderedDict())
      if shard in handles:
        handles.move_to_end(shard)
      else:
        if len(handles) >= self.MAX_OPEN_FILES:
          handles.popitem(last=False)[1].close()
        handles[shard] = open(self.paths[shard].removeprefix("file://"), "rb")  # pylint: disable=consider-using-with
      f = handles[shard]
      f.seek(start)
      record = f.read(length)
    if len(record) != length:
      raise ValueError(f"{self.paths[shard]}: truncated record {i} ({len(record)} of {length} bytes)")
    return tfrecord.check_record(record[:-tfrecord.FOOTER], record[-tfrecord.FOOTER:], f"{self.paths[shard]}#{i}")

  def __getitem__(self, index: int) -> dict[str, Any]:
    return schema.parse_example(self.read(int(index)))

  def __repr__(self) -> str:
    return f"TokenShardSource({self.directory!r}, {len(self.paths)} shards, {len(self)} examples)"
