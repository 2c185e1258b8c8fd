"""What a token dataset holds: its tokenizers (`TokensInfo`) and one `tf.train.Example` per tokenized segment.

    info = TokensInfo(semantic=TokenizerSpec.from_tokenizer(sem, sem_path),
                      acoustic=TokenizerSpec.from_tokenizer(codec, codec_path))
    serialized = to_example(TokenizedSegment(id=..., semantic=..., acoustic=..., ...), info)
    parse_example(serialized)   # {name: value}: pure protobuf, no TF ops; parse_segment gives the TokenizedSegment
    parse_tf(tensor)            # the same in a tf.data map (`feature_spec()` for tf.io and seqio readers)

The shard files that hold these examples are `audiopalm.tokens.shards`; the dataset-level files (metadata.json,
stats.json, TFDS) are `audiopalm.tokens.dataset_info`.

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
    alignments                                                 float list [2W]: (start, end) seconds of each
                                                               whitespace-separated word of the transcript
                                                               (`audiopalm.semantic.unit_aligner`); empty when
                                                               unknown (optional: older shards lack it)

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
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

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
    id: the segment id (`data_pipeline.records.Segment.id` in the tokenization job), unique in the dataset.
    utterance_id: the utterance it comes from.
    segment_index: its position among the utterance's segments.
    source: the audio it was cut from (`str(data_pipeline.records.AudioRef)`: a path, or `archive#member`).
    start: offset in the source audio, seconds.
    duration: seconds.
    transcript: None: no transcript; "" is an empty one.
    language: AudioPaLM's language name ("English"), None if unknown.
    speaker: speaker id, None if unknown.
    semantic: [T_s] integer codes in [0, vocab_size), valid frames only.
    acoustic: [T_a, Q] integer codes in [0, vocab_size), valid frames only.
    alignments: [W, 2] (start, end) seconds of each whitespace-separated word of the transcript, or None (unknown).
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
  alignments: np.ndarray | None = None  # [W, 2] seconds


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


def _check_alignments(seg: TokenizedSegment) -> np.ndarray:
  """The segment's word times as [W, 2] float64 ([0, 2] when unknown): one (start <= end) pair of finite seconds
  per word of its transcript."""
  if seg.alignments is None:
    return np.zeros((0, 2))
  times = np.asarray(seg.alignments, np.float64)
  words = len((seg.transcript or "").split())
  if times.shape != (words, 2) or not np.isfinite(times).all() or (times[:, 1] < times[:, 0]).any():
    raise ValueError(f"segment {seg.id!r}: alignments must be one finite (start <= end) pair per word of the "
                     f"transcript ({words} words), got shape {times.shape}")
  return times


def to_example(seg: TokenizedSegment, info: TokensInfo) -> bytes:
  """The serialized `tf.train.Example` of a segment (see the module docstring for the features)."""
  semantic = _check_codes("semantic", np.asarray(seg.semantic), 1, info.semantic)  # [T_s]
  acoustic = _check_codes("acoustic", np.asarray(seg.acoustic), 2, info.acoustic)  # [T_a, Q]
  if acoustic.shape[1] != info.acoustic.num_codebooks:
    raise ValueError(f"acoustic tokens of {seg.id!r} have {acoustic.shape[1]} codebooks, the acoustic tokenizer "
                     f"{info.acoustic.identity!r} has {info.acoustic.num_codebooks}")
  if not (math.isfinite(seg.start) and math.isfinite(seg.duration) and seg.start >= 0 and seg.duration >= 0):
    raise ValueError(f"segment {seg.id!r}: start {seg.start} and duration {seg.duration} must be finite and >= 0")
  alignments = _check_alignments(seg)
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
      "alignments": _floats(*alignments.reshape(-1).tolist()),  # [2W], (start, end) per word
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
  missing = [k for k in FEATURE_NAMES if k not in feature and k not in _OPTIONAL]
  if missing:
    raise ValueError(f"not a token example: features {missing} are missing")
  raw: dict[str, Any] = {k: feature[k].bytes_list.value[0] for k in _TEXT}
  raw.update({k: feature[k].float_list.value[0] for k in _FLOAT})
  raw.update({k: feature[k].int64_list.value[0] for k in _SCALAR_INT})
  raw.update({k: feature[k].int64_list.value for k in ("semantic", "acoustic", "acoustic_shape")})
  raw["alignments"] = feature["alignments"].float_list.value if "alignments" in feature else []
  return example_from_features(raw)


_OPTIONAL = ("alignments",)  # absent from shards written before it existed: parsed as empty
FEATURE_NAMES = (*_TEXT, *_FLOAT, *_SCALAR_INT, "semantic", "acoustic", "acoustic_shape", *_OPTIONAL)


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
  times = np.asarray(raw.get("alignments", ()), np.float32)
  out["alignments"] = times.reshape(-1, 2) if times.size else None  # [W, 2] seconds
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
  spec["alignments"] = tf.io.FixedLenSequenceFeature([], tf.float32, allow_missing=True)
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
