"""Token shards: one `tf.train.Example` per tokenized segment, in TFRecord files written atomically.

    info = TokensInfo(semantic=TokenizerSpec.from_tokenizer(sem, sem_path),
                      acoustic=TokenizerSpec.from_tokenizer(codec, codec_path))
    if not is_complete(out, shard_index, num_shards):
      with ShardWriter(out, shard_index, num_shards, info) as writer:
        for seg in segments:
          writer.write(TokenizedSegment.from_segment(seg, semantic=..., acoustic=...))
      stats = writer.stats   # ShardStats: examples, seconds, tokens, bytes (the job aggregates them)

Files are named as TFDS names them (`naming.DEFAULT_FILENAME_TEMPLATE`),
`{dataset_name}-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}`, so that the output directory, once
`dataset_info.write_dataset_info` has added the metadata, loads with `tfds.builder_from_directory`.

Atomicity: a shard is written to `incomplete.{dataset_name}-{split}.{shard:05d}-of-{num_shards:05d}.{uuid}`
(a name that neither the TFDS template nor a `{prefix}.tfrecord-*` / `*-of-NNNNN` glob matches), closed,
fsynced (local paths), then renamed to its final name; an exception (or KeyboardInterrupt) inside the writer
deletes the temporary file instead. On gs:// a rename is a copy then a delete: the final object appears only
once the copy is complete, and a crash between the two leaves only a temporary file, which the next writer of
that shard removes. So the final name exists if and only if the shard is complete (`is_complete`).

Example features (one `tf.train.Example` per segment; `feature_spec()` parses them with `tf.io`):

    id, utterance_id, source, transcript, language, speaker   bytes (UTF-8); "" for an unknown language/speaker
    has_transcript                                             int64 0/1 (a missing transcript vs an empty one)
    segment_index                                              int64
    start, duration                                            float (float32: < 1 ms error below 4.6 h)
    semantic                                                   int64 list [T_s]
    acoustic                                                   int64 list [T_a · Q], frame-major (t0q0 t0q1 ...)
    acoustic_shape                                             int64 [2] = (T_a, Q)
    semantic_frame_rate, acoustic_frame_rate                   float, Hz
    semantic_tokenizer, acoustic_tokenizer                     bytes: the tokenizers' identities

Tokens are raw codes in [0, vocab_size) (no vocabulary offsets, no interleaving: layouts are applied at load
time) and only the valid frames (never PAD_TOKEN). Integer lists are packed varints: 1 byte for a code below
128, 2 below 16384, which measured 42 + 600 = 642 B per second of audio for the demo tokenizers (25 Hz
semantic, 50 Hz x 8 codebooks of 256) against 57 + 814 = 871 B/s as raw little-endian uint16 bytes (40 bundled
test utterances, 76 s). For codebooks of 1024 varints take about 1.9 B per code, still no more than uint16,
and int64 lists are what `tf.io` and TFDS (`tfds.features.Tensor`, no encoding) read natively.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import uuid
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import tensorflow as tf

from data_pipeline import records

FILE_FORMAT = "tfrecord"
DEFAULT_DATASET_NAME = "audio_tokens"
DEFAULT_SPLIT = "train"
INCOMPLETE_PREFIX = "incomplete."
_DATASET_NAME_RE = re.compile(r"[a-zA-Z]\w*")  # TFDS's dataset-name class: no '-', which separates the split
_SPLIT_RE = re.compile(r"[\w-]*[a-zA-Z0-9][\w-]*")
# `{dataset}-{split}.tfrecord-{shard}-of-{num_shards}`, as tfds.core.naming parses DEFAULT_FILENAME_TEMPLATE.
_SHARD_FILE_RE = re.compile(rf"(?P<dataset>[a-zA-Z]\w*)-(?P<split>[\w-]+)\.{FILE_FORMAT}-"
                            r"(?P<shard_index>\d{5,})-of-(?P<num_shards>\d{5,})")


# ---------------------------------------------------------------------------------------------------------------
# What the tokens are: the tokenizers, per dataset.


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
  """One tokenizer as the dataset records it (everything a loader needs to interpret the codes).

  Attributes:
    kind: the registry name ('semantic', 'codec', ...), as `load_tokenizer` takes it.
    path: where it was loaded from (local or gs://).
    identity: its `identity` (weights and settings); stored in every example too.
    vocab_size: codes of each codebook are in [0, vocab_size).
    num_codebooks: codes per frame (1 for semantic tokens; Q, the RVQ levels kept, for the codec).
    frame_rate: token frames per second.
    sample_rate: the rate (Hz) the tokenizer's input was resampled to.
    config: JSON-serialisable settings for the record (the codec config and levels, the k-means spec, ...).
  """

  kind: str
  path: str
  identity: str
  vocab_size: int
  num_codebooks: int
  frame_rate: float
  sample_rate: int
  config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.vocab_size < 1 or self.num_codebooks < 1 or not self.frame_rate > 0 or self.sample_rate < 1:
      raise ValueError(f"bad tokenizer spec {self.identity!r}: vocab_size {self.vocab_size}, num_codebooks "
                       f"{self.num_codebooks}, frame_rate {self.frame_rate}, sample_rate {self.sample_rate}")
    # As JSON gives it back (tuples become lists), so that a spec equals its round trip; fails if not JSON.
    object.__setattr__(self, "config", json.loads(json.dumps(dict(self.config))))

  @classmethod
  def from_tokenizer(cls, tokenizer: Any, path: str, config: Mapping[str, Any] | None = None) -> "TokenizerSpec":
    """The spec of a loaded `AudioTokenizer`; `config` defaults to what the tokenizer exposes (see `_config`)."""
    return cls(kind=str(tokenizer.kind), path=str(path), identity=str(tokenizer.identity),
               vocab_size=int(tokenizer.vocab_size), num_codebooks=int(tokenizer.num_codebooks),
               frame_rate=float(tokenizer.frame_rate), sample_rate=int(tokenizer.sample_rate),
               config=dict(_config(tokenizer) if config is None else config))

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "TokenizerSpec":
    return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def _config(tokenizer: Any) -> dict[str, Any]:
  """Best-effort settings of the built-in tokenizers: the codec's config and levels, the semantic spec."""
  codec = getattr(tokenizer, "codec", None)
  if codec is not None and dataclasses.is_dataclass(getattr(codec, "config", None)):
    return {"codec": dataclasses.asdict(codec.config), "num_levels": int(tokenizer.num_codebooks)}
  spec = getattr(tokenizer, "spec", None)
  if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
    return {"spec": dataclasses.asdict(spec)}
  return {}


@dataclasses.dataclass(frozen=True)
class TokensInfo:
  """The two tokenizers of a dataset: semantic (one codebook) and acoustic (Q codebooks)."""

  semantic: TokenizerSpec
  acoustic: TokenizerSpec

  def __post_init__(self):
    if self.semantic.num_codebooks != 1:
      raise ValueError(f"the semantic tokenizer must have one codebook, {self.semantic.identity!r} has "
                       f"{self.semantic.num_codebooks}")

  def to_json(self) -> dict[str, Any]:
    return {"semantic": self.semantic.to_json(), "acoustic": self.acoustic.to_json()}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "TokensInfo":
    return cls(semantic=TokenizerSpec.from_json(data["semantic"]), acoustic=TokenizerSpec.from_json(data["acoustic"]))


# ---------------------------------------------------------------------------------------------------------------
# One segment ↔ one tf.train.Example.


@dataclasses.dataclass(frozen=True, eq=False)  # (arrays: compare fields, not segments)
class TokenizedSegment:
  """A segment's metadata and tokens, as one example of a shard.

  Attributes:
    id: the segment id (`records.Segment.id`), unique in the dataset.
    utterance_id: the utterance it comes from.
    segment_index: its position among the utterance's segments.
    source: the audio it was cut from (`str(records.AudioRef)`: a path, or `archive#member`).
    start: offset in the source audio, seconds.
    duration: seconds.
    transcript: None: no transcript; "" is an empty one.
    language: AudioPaLM's language name ("English"), None if unknown.
    speaker: speaker id, None if unknown.
    semantic: [T_s] integer codes in [0, vocab_size), valid frames only.
    acoustic: [T_a, Q] integer codes in [0, vocab_size), valid frames only.
  """

  id: str
  utterance_id: str
  segment_index: int
  source: str
  start: float
  duration: float
  transcript: str | None
  language: str | None
  speaker: str | None
  semantic: np.ndarray  # [T_s]
  acoustic: np.ndarray  # [T_a, Q]

  @classmethod
  def from_segment(cls, segment: records.Segment, semantic: Any, acoustic: Any) -> "TokenizedSegment":
    """A segment with its tokens (semantic [T_s] or [T_s, 1], acoustic [T_a, Q], already cut to their lengths).

    The utterance's transcript goes with the segment only when the segment is the whole utterance
    (`segment.single`): a piece of a cut utterance has no transcript of its own (None).
    """
    semantic = np.asarray(semantic)
    if semantic.ndim == 2 and semantic.shape[1] == 1:
      semantic = semantic[:, 0]
    utt = segment.utterance
    return cls(id=segment.id, utterance_id=utt.id, segment_index=segment.index, source=str(utt.audio),
               start=float(segment.start), duration=float(segment.duration),
               transcript=utt.transcript if segment.single else None, language=utt.language,
               speaker=utt.speaker, semantic=semantic, acoustic=np.asarray(acoustic))


def _bytes(*values: str) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))


def _ints(values: Any) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(*values: float) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _check_codes(name: str, codes: np.ndarray, ndim: int, spec: TokenizerSpec) -> np.ndarray:
  """Integer codes of `ndim` dims, all in [0, spec.vocab_size), as int64."""
  if codes.ndim != ndim:
    raise ValueError(f"{name} tokens must have {ndim} dims, got shape {codes.shape}")
  if codes.size and not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f"{name} tokens must be integers, got {codes.dtype}")
  codes = codes.astype(np.int64)
  if codes.size and (codes.min() < 0 or codes.max() >= spec.vocab_size):
    raise ValueError(f"{name} tokens must be in [0, {spec.vocab_size}) for {spec.identity!r}, got "
                     f"[{codes.min()}, {codes.max()}] (padding −1 included? keep only the valid frames)")
  return codes


def to_example(seg: TokenizedSegment, info: TokensInfo) -> bytes:
  """The serialized `tf.train.Example` of a segment (see the module docstring for the features)."""
  semantic = _check_codes("semantic", np.asarray(seg.semantic), 1, info.semantic)  # [T_s]
  acoustic = _check_codes("acoustic", np.asarray(seg.acoustic), 2, info.acoustic)  # [T_a, Q]
  if acoustic.shape[1] != info.acoustic.num_codebooks:
    raise ValueError(f"acoustic tokens of {seg.id!r} have {acoustic.shape[1]} codebooks, the acoustic tokenizer "
                     f"{info.acoustic.identity!r} has {info.acoustic.num_codebooks}")
  if not (math.isfinite(seg.start) and math.isfinite(seg.duration) and seg.start >= 0 and seg.duration >= 0):
    raise ValueError(f"segment {seg.id!r}: start {seg.start} and duration {seg.duration} must be finite and >= 0")
  feature = {
      "id": _bytes(seg.id),
      "utterance_id": _bytes(seg.utterance_id),
      "segment_index": _ints([int(seg.segment_index)]),
      "source": _bytes(seg.source),
      "start": _floats(seg.start),
      "duration": _floats(seg.duration),
      "transcript": _bytes(seg.transcript or ""),
      "has_transcript": _ints([int(seg.transcript is not None)]),
      "language": _bytes(seg.language or ""),
      "speaker": _bytes(seg.speaker or ""),
      "semantic": _ints(semantic.tolist()),
      "acoustic": _ints(acoustic.reshape(-1).tolist()),  # [T_a · Q], frame-major
      "acoustic_shape": _ints(list(acoustic.shape)),
      "semantic_frame_rate": _floats(info.semantic.frame_rate),
      "acoustic_frame_rate": _floats(info.acoustic.frame_rate),
      "semantic_tokenizer": _bytes(info.semantic.identity),
      "acoustic_tokenizer": _bytes(info.acoustic.identity),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


_TEXT = ("id", "utterance_id", "source", "transcript", "language", "speaker", "semantic_tokenizer",
         "acoustic_tokenizer")
_FLOAT = ("start", "duration", "semantic_frame_rate", "acoustic_frame_rate")
_SCALAR_INT = ("segment_index", "has_transcript")


def parse_example(serialized: bytes) -> dict[str, Any]:
  """A serialized example → {name: value} (pure protobuf; no TF ops).

  Strings are `str` (transcript None when the example has none; language and speaker None when ""),
  floats `float`, segment_index `int`, has_transcript `bool`, semantic int32 [T_s], acoustic int32 [T_a, Q].
  """
  feature = tf.train.Example.FromString(serialized).features.feature
  missing = [k for k in FEATURE_NAMES if k not in feature]
  if missing:
    raise ValueError(f"not a token example: features {missing} are missing")
  raw: dict[str, Any] = {k: feature[k].bytes_list.value[0] for k in _TEXT}
  raw.update({k: feature[k].float_list.value[0] for k in _FLOAT})
  raw.update({k: feature[k].int64_list.value[0] for k in _SCALAR_INT})
  raw.update({k: feature[k].int64_list.value for k in ("semantic", "acoustic", "acoustic_shape")})
  return example_from_features(raw)


FEATURE_NAMES = (*_TEXT, *_FLOAT, *_SCALAR_INT, "semantic", "acoustic", "acoustic_shape")


def example_from_features(raw: dict[str, Any]) -> dict[str, Any]:
  """Feature values as parsed (strings as UTF-8 bytes, scalars, int lists; by `FEATURE_NAMES`) → the example
  dict `parse_example` returns. Shared with readers that parse with TF (e.g. `audiopalm.data.seqio_tasks`)."""
  out: dict[str, Any] = {k: bytes(raw[k]).decode("utf-8") for k in _TEXT}
  out.update({k: float(raw[k]) for k in _FLOAT})
  out["segment_index"] = int(raw["segment_index"])
  out["has_transcript"] = bool(raw["has_transcript"])
  if not out["has_transcript"]:
    out["transcript"] = None
  out["language"] = out["language"] or None
  out["speaker"] = out["speaker"] or None
  out["semantic"] = np.asarray(raw["semantic"], np.int32)  # [T_s]
  shape = tuple(int(n) for n in raw["acoustic_shape"])
  out["acoustic"] = np.asarray(raw["acoustic"], np.int32).reshape(shape)  # [T_a, Q]
  return out


def parse_segment(serialized: bytes) -> TokenizedSegment:
  """A serialized example → the TokenizedSegment it was made from (start/duration rounded to float32)."""
  ex = parse_example(serialized)
  return TokenizedSegment(**{f.name: ex[f.name] for f in dataclasses.fields(TokenizedSegment)})


def feature_spec(num_codebooks: int | None = None) -> dict[str, Any]:
  """The `tf.io.parse_single_example` / `parse_example` spec of the features.

  semantic parses to int64 [T_s]. acoustic parses to int64 [T_a, Q] when `num_codebooks` (Q) is given, else to
  the flat [T_a · Q] (reshape with `acoustic_shape`, as `parse_tf` does).
  """
  spec: dict[str, Any] = {k: tf.io.FixedLenFeature([], tf.string) for k in _TEXT}
  spec.update({k: tf.io.FixedLenFeature([], tf.float32) for k in _FLOAT})
  spec.update({k: tf.io.FixedLenFeature([], tf.int64) for k in _SCALAR_INT})
  spec["semantic"] = tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True)
  acoustic_dims = [] if num_codebooks is None else [num_codebooks]
  spec["acoustic"] = tf.io.FixedLenSequenceFeature(acoustic_dims, tf.int64, allow_missing=True)
  spec["acoustic_shape"] = tf.io.FixedLenFeature([2], tf.int64)
  return spec


def parse_tf(serialized: tf.Tensor, num_codebooks: int | None = None) -> dict[str, tf.Tensor]:
  """One serialized example (a scalar string tensor, e.g. in `tf.data` map) → tensors; tokens int32.

  semantic [T_s], acoustic [T_a, Q] (static Q when `num_codebooks` is given).
  """
  ex = tf.io.parse_single_example(serialized, feature_spec(num_codebooks))
  ex["semantic"] = tf.cast(ex["semantic"], tf.int32)
  acoustic = tf.cast(ex["acoustic"], tf.int32)
  ex["acoustic"] = acoustic if num_codebooks is not None else tf.reshape(acoustic, ex["acoustic_shape"])
  return ex


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


def parse_shard_filename(name: str) -> tuple[str, str, int, int] | None:
  """(dataset_name, split, shard_index, num_shards) of a final shard file name; None for any other name."""
  m = _SHARD_FILE_RE.fullmatch(os.path.basename(name))
  if m is None:
    return None
  return m["dataset"], m["split"], int(m["shard_index"]), int(m["num_shards"])


def find_shards(output_dir: str) -> list[ShardFile]:
  """Every complete shard file in `output_dir` (any dataset name, split and shard count), sorted."""
  if not tf.io.gfile.isdir(output_dir):
    return []
  found = []
  for name in tf.io.gfile.listdir(output_dir):
    parsed = parse_shard_filename(name.rstrip("/"))
    if parsed is not None:
      found.append(ShardFile(os.path.join(output_dir, name.rstrip("/")), *parsed))
  return sorted(found, key=lambda s: (s.dataset_name, s.split, s.num_shards, s.shard_index))


def is_complete(output_dir: str, shard_index: int, num_shards: int, *, dataset_name: str = DEFAULT_DATASET_NAME,
                split: str = DEFAULT_SPLIT) -> bool:
  """Whether shard `shard_index` of `num_shards` has been written completely (its final name exists)."""
  return tf.io.gfile.exists(os.path.join(output_dir, shard_filename(shard_index, num_shards, dataset_name, split)))


def list_complete_shards(output_dir: str, num_shards: int, *, dataset_name: str = DEFAULT_DATASET_NAME,
                         split: str = DEFAULT_SPLIT) -> list[int]:
  """The indices of the complete shards of `num_shards` (shards of another count are not listed)."""
  return [s.shard_index for s in find_shards(output_dir)
          if (s.dataset_name, s.split, s.num_shards) == (dataset_name, split, num_shards)]


def remove_incomplete(output_dir: str, shard_index: int, num_shards: int, *,
                      dataset_name: str = DEFAULT_DATASET_NAME, split: str = DEFAULT_SPLIT) -> list[str]:
  """Deletes the temporary files an interrupted writer of this shard left; returns their paths."""
  if not tf.io.gfile.isdir(output_dir):
    return []
  prefix = _temp_prefix(shard_index, num_shards, dataset_name, split)
  stale = [os.path.join(output_dir, n) for n in tf.io.gfile.listdir(output_dir) if n.startswith(prefix)]
  for path in stale:
    _remove_quietly(path)
  return stale


def _remove_quietly(path: str) -> None:
  try:
    tf.io.gfile.remove(path)
  except tf.errors.NotFoundError:
    pass


def _is_local(path: str) -> bool:
  return "://" not in path


def _fsync(path: str, directory: bool = False) -> None:
  """Flush a local file's (or directory's) data to disk; remote files are durable once closed."""
  if not _is_local(path):
    return
  fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


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
  """The parsed examples (`parse_example`) of one shard file, in order."""
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    yield parse_example(record)


def compute_shard_stats(path: str) -> ShardStats:
  """The statistics of a complete shard file, by reading it (e.g. for shards a previous run completed)."""
  parsed = parse_shard_filename(path)
  if parsed is None:
    raise ValueError(f"{path} is not a shard file name ({_SHARD_FILE_RE.pattern})")
  _, split, shard_index, num_shards = parsed
  stats = ShardStats(split=split, shard_index=shard_index, num_shards=num_shards, filename=os.path.basename(path))
  for ex in read_shard(path):
    stats = _counted(stats, ex["duration"], ex["semantic"].size, ex["acoustic"].shape, ex["has_transcript"])
  return dataclasses.replace(stats, num_bytes=int(tf.io.gfile.stat(path).length))


class ShardWriter:
  """Writes one shard through a temporary file, renamed to the final name only when closed without error.

      with ShardWriter(out, shard_index, num_shards, info) as writer:
        writer.write(tokenized_segment)   # repeatedly
      writer.stats                        # ShardStats, after a successful close

  Opening removes the temporary files an earlier, interrupted writer of the same shard left, and refuses to
  overwrite a complete shard unless `overwrite`. (If two writers of one shard run at once, e.g. a preempted
  worker still alive, the later one deletes the earlier one's temporary file; the earlier one then fails.)
  """

  def __init__(self, output_dir: str, shard_index: int, num_shards: int, info: TokensInfo, *,
               dataset_name: str = DEFAULT_DATASET_NAME, split: str = DEFAULT_SPLIT, overwrite: bool = False,
               before_rename: Callable[[ShardStats], None] | None = None):
    self.before_rename = before_rename  # called with the final stats when the data is safe, before the rename
    self.output_dir = os.fspath(output_dir)
    self.info = info
    self.dataset_name, self.split = dataset_name, split
    self.shard_index, self.num_shards = shard_index, num_shards
    self.overwrite = overwrite
    self.filename = shard_filename(shard_index, num_shards, dataset_name, split)
    self.path = os.path.join(self.output_dir, self.filename)
    self.temp_path: str | None = None
    self._writer: tf.io.TFRecordWriter | None = None
    self._stats = ShardStats(split=split, shard_index=shard_index, num_shards=num_shards, filename=self.filename)
    self._closed = False

  def open(self) -> "ShardWriter":
    if self._writer is not None or self._closed:
      raise RuntimeError(f"ShardWriter for {self.path} was already opened")
    if not self.overwrite and tf.io.gfile.exists(self.path):
      raise FileExistsError(f"{self.path} is complete already (check is_complete() first, or overwrite=True)")
    tf.io.gfile.makedirs(self.output_dir)
    remove_incomplete(self.output_dir, self.shard_index, self.num_shards, dataset_name=self.dataset_name,
                      split=self.split)
    prefix = _temp_prefix(self.shard_index, self.num_shards, self.dataset_name, self.split)
    self.temp_path = os.path.join(self.output_dir, prefix + uuid.uuid4().hex)
    self._writer = tf.io.TFRecordWriter(self.temp_path)
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
    if self._writer is None:
      raise RuntimeError("ShardWriter.write outside `with ShardWriter(...)` (or after close)")
    self._writer.write(example)

  def close(self) -> ShardStats:
    """Completes the shard: close, fsync, rename to the final name. Returns its statistics."""
    if self._writer is None:
      raise RuntimeError("ShardWriter.close without open")
    try:
      self._writer.close()
      self._writer = None
      _fsync(self.temp_path)
      num_bytes = int(tf.io.gfile.stat(self.temp_path).length)
      if self.before_rename is not None:
        self.before_rename(dataclasses.replace(self._stats, num_bytes=num_bytes))
      tf.io.gfile.rename(self.temp_path, self.path, overwrite=self.overwrite)
      _fsync(self.output_dir, directory=True)
    except BaseException:
      self.abort()
      raise
    self._closed = True
    self._stats = dataclasses.replace(self._stats, num_bytes=num_bytes)
    return self._stats

  def abort(self) -> None:
    """Discards the shard: closes and deletes the temporary file; the final name is not created."""
    if self._writer is not None:
      try:
        self._writer.close()
      finally:
        self._writer = None
    if self.temp_path is not None:
      _remove_quietly(self.temp_path)
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
