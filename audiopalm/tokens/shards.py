"""Token shards: TFRecord files of `schema.to_example` examples, named as TFDS names them, written atomically.

    if not is_complete(out, shard_index, num_shards):
      with ShardWriter(out, shard_index, num_shards, info) as writer:   # info: schema.TokensInfo
        for seg in segments:
          writer.write(seg)   # a schema.TokenizedSegment
      stats = writer.stats   # ShardStats: examples, seconds, tokens, bytes (the job aggregates them)
    for ex in read_shard(path): ...   # the parsed examples (schema.parse_example), in order

Files are named as TFDS names them (`naming.DEFAULT_FILENAME_TEMPLATE`),
`{dataset_name}-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}`, so that the output directory, once
`dataset_info.write_dataset_info` has added the metadata, loads with `tfds.builder_from_directory`.

Atomicity: a shard is built in a local staging file (`incomplete.{dataset_name}-{split}.{shard:05d}-of-
{num_shards:05d}.{uuid}` in a local output directory, a name that neither the TFDS template nor a
`{prefix}.tfrecord-*` / `*-of-NNNNN` glob matches; the system's temporary directory for gs://), fsynced, then
committed through `audiopalm.files.storage`: the writer's `before_rename` runs (the job writes the shard's
record there, after checking that it still holds the shard), its record index is written to `index/<shard file name>.offsets.npy`
([records + 1] int64 offsets, the last the file size: what the loader's start reads instead of the shard), then
the shard is put at its final name in one step (a rename with `link` locally, one upload on GCS, exclusive unless
`overwrite`, so two writers of one shard never both commit). An exception (or KeyboardInterrupt) inside the
writer deletes the staging file instead; a killed writer leaves at most a staging file, which the next local
writer of that shard removes. So the final name exists if and only if the shard is complete (`is_complete`).
Shards are framed by `audiopalm.tokens.tfrecord`, byte for byte as `tf.io.TFRecordWriter` frames them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import posixpath
import re
import tempfile
import uuid
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from audiopalm.files import storage
from audiopalm.tokens import tfrecord
from audiopalm.tokens.schema import TokenizedSegment, TokensInfo, parse_example, to_example

FILE_FORMAT = "tfrecord"
DEFAULT_DATASET_NAME = "audio_tokens"
DEFAULT_SPLIT = "train"
INCOMPLETE_PREFIX = "incomplete."
INDEX_DIR = "index"  # beside the shards: <shard file name>.offsets.npy, written with each shard
_DATASET_NAME_RE = re.compile(r"[a-zA-Z]\w*")  # TFDS's dataset-name class: no '-', which separates the split
_SPLIT_RE = re.compile(r"[\w-]*[a-zA-Z0-9][\w-]*")
# `{dataset}-{split}.tfrecord-{shard}-of-{num_shards}`, as tfds.core.naming parses DEFAULT_FILENAME_TEMPLATE.
_SHARD_FILE_RE = re.compile(rf"(?P<dataset>[a-zA-Z]\w*)-(?P<split>[\w-]+)\.{FILE_FORMAT}-"
                            r"(?P<shard_index>\d{5,})-of-(?P<num_shards>\d{5,})")


# ---------------------------------------------------------------------------------------------------------------
# Shard files.


def _check_names(dataset_name: str, split: str) -> None:
  if not _DATASET_NAME_RE.fullmatch(dataset_name):
    raise ValueError(f"dataset_name {dataset_name!r} must match {_DATASET_NAME_RE.pattern} (TFDS names; no '-')")
  if not _SPLIT_RE.fullmatch(split):
    raise ValueError(f"split {split!r} must be letters, digits, '_' or '-'")


def _shard_digits(num_shards: int) -> int:
  return max(5, len(str(num_shards)))  # as tfds.core.naming numbers shards


def shard_filename(shard_index: int, num_shards: int, dataset_name: str = DEFAULT_DATASET_NAME,
                   split: str = DEFAULT_SPLIT) -> str:
  """`{dataset_name}-{split}.tfrecord-{shard_index:05d}-of-{num_shards:05d}` (the TFDS default template)."""
  _check_names(dataset_name, split)
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
  digits = _shard_digits(num_shards)
  return f"{dataset_name}-{split}.{FILE_FORMAT}-{shard_index:0{digits}d}-of-{num_shards:0{digits}d}"


def _temp_prefix(shard_index: int, num_shards: int, dataset_name: str, split: str) -> str:
  """The start of the temporary names of one shard (a uuid follows)."""
  digits = _shard_digits(num_shards)
  return f"{INCOMPLETE_PREFIX}{dataset_name}-{split}.{shard_index:0{digits}d}-of-{num_shards:0{digits}d}."


@dataclasses.dataclass(frozen=True)
class ShardFile:
  """A complete shard file found in a directory (its name parsed)."""

  path: str
  dataset_name: str
  split: str
  shard_index: int
  num_shards: int
  num_bytes: int | None = None  # the file's size, as listed


def parse_shard_filename(name: str) -> tuple[str, str, int, int] | None:
  """(dataset_name, split, shard_index, num_shards) of a final shard file name; None for any other name."""
  m = _SHARD_FILE_RE.fullmatch(os.path.basename(name))
  if m is None:
    return None
  return m["dataset"], m["split"], int(m["shard_index"]), int(m["num_shards"])


def find_shards(output_dir: str) -> list[ShardFile]:
  """Every complete shard file in `output_dir` (any dataset name, split and shard count), sorted."""
  found = []
  for name, num_bytes in storage.list_sizes(output_dir).items():
    parsed = parse_shard_filename(name)
    if parsed is not None:
      found.append(ShardFile(storage.join(output_dir, name), *parsed, num_bytes=num_bytes))
  return sorted(found, key=lambda s: (s.dataset_name, s.split, s.num_shards, s.shard_index))


def is_complete(output_dir: str, shard_index: int, num_shards: int, *, dataset_name: str = DEFAULT_DATASET_NAME,
                split: str = DEFAULT_SPLIT) -> bool:
  """Whether shard `shard_index` of `num_shards` has been written completely (its final name exists)."""
  return storage.is_file(storage.join(output_dir, shard_filename(shard_index, num_shards, dataset_name, split)))


def list_complete_shards(output_dir: str, num_shards: int, *, dataset_name: str = DEFAULT_DATASET_NAME,
                         split: str = DEFAULT_SPLIT) -> list[int]:
  """The indices of the complete shards of `num_shards` (shards of another count are not listed)."""
  return [s.shard_index for s in find_shards(output_dir)
          if (s.dataset_name, s.split, s.num_shards) == (dataset_name, split, num_shards)]


def remove_incomplete(output_dir: str, shard_index: int, num_shards: int, *,
                      dataset_name: str = DEFAULT_DATASET_NAME, split: str = DEFAULT_SPLIT) -> list[str]:
  """Deletes the temporary files an interrupted writer of this shard left; returns their paths."""
  prefix = _temp_prefix(shard_index, num_shards, dataset_name, split)
  stale = [storage.join(output_dir, n) for n in storage.listdir(output_dir) if n.startswith(prefix)]
  for path in stale:
    storage.remove(path)
  return stale


def index_path(shard_path: str) -> str:
  """Where a shard's record index is: `<dir>/index/<shard file name>.offsets.npy`."""
  directory, name = posixpath.split(shard_path)
  return posixpath.join(directory, INDEX_DIR, f"{name}.offsets.npy")


def write_offsets(path: str, offsets: Sequence[int] | np.ndarray) -> None:
  """Writes a record index ([records + 1] int64 offsets, the last the file size) as .npy, atomically."""
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(offsets, np.int64))
  storage.write_bytes(path, buffer.getvalue())


def read_offsets(path: str, num_bytes: int | None = None) -> np.ndarray | None:
  """The record index at `path` (`write_offsets`), or None when there is none or it does not end at `num_bytes`
  (stale: the shard was rewritten)."""
  try:
    offsets = np.load(io.BytesIO(storage.read_bytes(path)))
  except FileNotFoundError:
    return None
  if offsets.ndim != 1 or not len(offsets) or (num_bytes is not None and int(offsets[-1]) != num_bytes):
    return None
  return offsets.astype(np.int64)


def read_index(shard_path: str, num_bytes: int | None = None) -> np.ndarray | None:
  """The record index written with the shard, or None (a shard written before indexes were, or a stale one)."""
  return read_offsets(index_path(shard_path), num_bytes)


@dataclasses.dataclass(frozen=True)
class ShardStats:
  """What one complete shard holds (the job sums these; `dataset_info` records them).

  Attributes:
    split, shard_index, num_shards: which shard.
    filename: the shard's file name (relative to the output directory).
    examples: segments written.
    seconds: total duration of the segments.
    semantic_tokens: Σ T_s.
    acoustic_frames: Σ T_a (acoustic tokens are acoustic_frames × Q).
    acoustic_tokens: Σ T_a · Q.
    transcribed: examples that have a transcript (possibly empty).
    num_bytes: the file's size.
  """

  split: str
  shard_index: int
  num_shards: int
  filename: str
  examples: int = 0
  seconds: float = 0.0
  semantic_tokens: int = 0
  acoustic_frames: int = 0
  acoustic_tokens: int = 0
  transcribed: int = 0
  num_bytes: int = 0

  @property
  def hours(self) -> float:
    return self.seconds / 3600.0

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "ShardStats":
    return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def _counted(stats: ShardStats, duration: float, semantic_tokens: int, acoustic_shape: tuple[int, ...],
             has_transcript: bool) -> ShardStats:
  """stats plus one example."""
  frames, levels = acoustic_shape
  return dataclasses.replace(
      stats, examples=stats.examples + 1,
      seconds=stats.seconds + float(np.float32(duration)),  # as stored: the writer and a re-read sum the same
      semantic_tokens=stats.semantic_tokens + int(semantic_tokens),
      acoustic_frames=stats.acoustic_frames + int(frames), acoustic_tokens=stats.acoustic_tokens + frames * levels,
      transcribed=stats.transcribed + int(has_transcript))


def read_shard(path: str) -> Iterator[dict[str, Any]]:
  """The parsed examples (`parse_example`) of one shard file, in order (one whole-file read; CRCs checked)."""
  for record in tfrecord.records(storage.read_bytes(path), name=path):
    yield parse_example(record)


def compute_shard_stats(path: str) -> ShardStats:
  """The statistics of a complete shard file, by reading it (e.g. for shards a previous run completed)."""
  parsed = parse_shard_filename(path)
  if parsed is None:
    raise ValueError(f"{path} is not a shard file name ({_SHARD_FILE_RE.pattern})")
  _, split, shard_index, num_shards = parsed
  stats = ShardStats(split=split, shard_index=shard_index, num_shards=num_shards, filename=posixpath.basename(path))
  for ex in read_shard(path):
    stats = _counted(stats, ex["duration"], ex["semantic"].size, ex["acoustic"].shape, ex["has_transcript"])
  return dataclasses.replace(stats, num_bytes=storage.size(path))


class ShardExistsError(FileExistsError):
  """The shard was committed by another writer first (its final name exists)."""


class ShardWriter:
  """Writes one shard to a local staging file, then commits it: index, `before_rename`, the shard at its final name.

      with ShardWriter(out, shard_index, num_shards, info) as writer:
        writer.write(tokenized_segment)   # repeatedly
      writer.stats                        # ShardStats, after a successful close

  The staging file is `incomplete.<...>.<uuid>` in the output directory when it is local (the commit is a rename),
  else a local temporary file (the commit is one upload, visible only when complete). Opening removes the staging
  files an earlier, interrupted writer of the same shard left in a local output directory, and refuses to overwrite
  a complete shard unless `overwrite`. The commit itself is exclusive unless `overwrite`: if another writer
  committed the shard meanwhile, close raises ShardExistsError and the other writer's shard stays.
  """

  def __init__(self, output_dir: str, shard_index: int, num_shards: int, info: TokensInfo, *,
               dataset_name: str = DEFAULT_DATASET_NAME, split: str = DEFAULT_SPLIT, overwrite: bool = False,
               before_rename: Callable[[ShardStats], None] | None = None, staging_dir: str | None = None):
    self.before_rename = before_rename  # called with the final stats when the data is safe, before the commit
    self.output_dir = os.fspath(output_dir)
    self.info = info
    self.dataset_name, self.split = dataset_name, split
    self.shard_index, self.num_shards = shard_index, num_shards
    self.overwrite = overwrite
    self.staging_dir = staging_dir  # where a remote shard is staged (None: the system's temporary directory)
    self.filename = shard_filename(shard_index, num_shards, dataset_name, split)
    self.path = storage.join(self.output_dir, self.filename)
    self.temp_path: str | None = None
    self._file: Any = None
    self._offsets: list[int] = [0]
    self._stats = ShardStats(split=split, shard_index=shard_index, num_shards=num_shards, filename=self.filename)
    self._closed = False

  def open(self) -> "ShardWriter":
    if self._file is not None or self._closed:
      raise RuntimeError(f"ShardWriter for {self.path} was already opened")
    if not self.overwrite and storage.is_file(self.path):
      raise ShardExistsError(f"{self.path} is complete already (check is_complete() first, or overwrite=True)")
    if storage.is_remote(self.output_dir):
      fd, self.temp_path = tempfile.mkstemp(prefix=_temp_prefix(self.shard_index, self.num_shards, self.dataset_name,
                                                                self.split), dir=self.staging_dir)
      self._file = os.fdopen(fd, "wb")
    else:
      storage.makedirs(self.output_dir)
      remove_incomplete(self.output_dir, self.shard_index, self.num_shards, dataset_name=self.dataset_name,
                        split=self.split)
      prefix = _temp_prefix(self.shard_index, self.num_shards, self.dataset_name, self.split)
      self.temp_path = storage.join(self.output_dir, prefix + uuid.uuid4().hex)
      self._file = open(self.temp_path, "xb")  # pylint: disable=consider-using-with  # closed by close/abort
    return self

  def __enter__(self) -> "ShardWriter":
    return self.open()

  def write(self, seg: TokenizedSegment) -> None:
    """Appends one segment (validated by `to_example`)."""
    self._append(to_example(seg, self.info))
    self._stats = _counted(self._stats, seg.duration, np.size(seg.semantic), np.shape(seg.acoustic),
                           seg.transcript is not None)

  def write_serialized(self, example: bytes) -> None:
    """Appends an example serialized by `to_example` elsewhere (e.g. in a worker process); parsed for the stats."""
    ex = parse_example(example)
    if (ex["semantic_tokenizer"], ex["acoustic_tokenizer"]) != (self.info.semantic.identity,
                                                                self.info.acoustic.identity):
      raise ValueError(f"example {ex['id']!r} was made by other tokenizers: {ex['semantic_tokenizer']}, "
                       f"{ex['acoustic_tokenizer']}")
    self._append(example)
    self._stats = _counted(self._stats, ex["duration"], ex["semantic"].size, ex["acoustic"].shape,
                           ex["has_transcript"])

  def _append(self, example: bytes) -> None:
    if self._file is None:
      raise RuntimeError("ShardWriter.write outside `with ShardWriter(...)` (or after close)")
    self._file.write(tfrecord.frame(example))
    self._offsets.append(self._offsets[-1] + tfrecord.record_size(len(example)))

  def close(self) -> ShardStats:
    """Completes the shard: flush and fsync the staging file, call `before_rename` (which may refuse by raising),
    write its index, commit the shard at its final name (exclusively unless `overwrite`). Returns its statistics."""
    if self._file is None:
      raise RuntimeError("ShardWriter.close without open")
    try:
      self._file.flush()
      os.fsync(self._file.fileno())
      self._file.close()
      self._file = None
      num_bytes = self._offsets[-1]
      if self.before_rename is not None:  # (it may refuse the commit by raising, e.g. ShardExistsError)
        self.before_rename(dataclasses.replace(self._stats, num_bytes=num_bytes))
      write_offsets(index_path(self.path), self._offsets)
      if not storage.upload(self.temp_path, self.path, exclusive=not self.overwrite):
        raise ShardExistsError(f"{self.path} was committed by another writer first; this copy is discarded")
    except BaseException:
      self.abort()
      raise
    self._closed = True
    self._stats = dataclasses.replace(self._stats, num_bytes=num_bytes)
    return self._stats

  def abort(self) -> None:
    """Discards the shard: closes and deletes the staging file; the final name is not created."""
    if self._file is not None:
      try:
        self._file.close()
      finally:
        self._file = None
    if self.temp_path is not None:
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.temp_path)
    self._closed = True

  def __exit__(self, exc_type, exc, tb) -> bool:
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False

  @property
  def stats(self) -> ShardStats:
    """The statistics so far (final, with num_bytes, after a successful close)."""
    return self._stats
