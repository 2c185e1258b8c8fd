"""The dataset-level files of a token dataset: metadata.json, stats.json, and the TFDS metadata.

    stats = [writer.stats for each shard]   # shards.ShardStats, or shards.compute_shard_stats(path) on resume
    write_dataset_info(out, tokens=info, shards=stats, rejects={"too_short": 3, ...})
    meta = read_metadata(out)               # DatasetMetadata: tokenizers, shards, totals
    tfds.builder_from_directory(out).as_dataset(split="train")

Files written into the output directory, each through a temporary name and a rename:

    metadata.json       format version, dataset name, the example encoding, the tokenizers (kind, path,
                        identity, config, vocab size, codebooks, frame rate, sample rate), totals, per-split
                        totals and the shard list with per-shard counts. TFDS reads this same file as
                        `builder.info.metadata` (`tfds.core.MetadataDict` is stored as metadata.json).
    stats.json          totals in hours and tokens (overall and per split), rejects per reason, and whatever
                        else the job adds (`extra`).
    features.json,      written by `tfds.folder_dataset.write_metadata` (TFDS's own classes): the features
    dataset_info.json   (`tfds_features`) and, per split, the shard lengths, so that
                        `tfds.builder_from_directory(out)` reads the shards as they are.

Write them last, once every shard of every split is complete: `write_dataset_info` checks that each split
has shards 0..N-1 of one count N, and that each file exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence


from audiopalm.files import storage
from audiopalm.tokens import shards as shards_lib
from audiopalm.tokens.schema import TokensInfo
from audiopalm.tokens.shards import ShardStats

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
STATS_FILE = "stats.json"
TFDS_VERSION = "1.0.0"
ENCODING = {
    "example": "tf.train.Example, one per segment (audiopalm/tokens/schema.py)",
    "tokens": "int64 lists of raw codes in [0, vocab_size): no vocabulary offsets, valid frames only",
    "semantic": "[T_s]",
    "acoustic": "[T_a * Q] frame-major (t0q0 t0q1 ...); acoustic_shape = [T_a, Q]",
}


@dataclasses.dataclass(frozen=True)
class Totals:
  """Sums of the ShardStats counters over shards."""

  examples: int = 0
  seconds: float = 0.0
  semantic_tokens: int = 0
  acoustic_frames: int = 0
  acoustic_tokens: int = 0
  transcribed: int = 0
  num_bytes: int = 0
  num_shards: int = 0

  @property
  def hours(self) -> float:
    return self.seconds / 3600.0

  @classmethod
  def of(cls, shards: Sequence[ShardStats]) -> "Totals":
    counters = [f.name for f in dataclasses.fields(cls) if f.name != "num_shards"]  # ShardStats' counters
    return cls(**{name: sum(getattr(s, name) for s in shards) for name in counters}, num_shards=len(shards))

  def to_json(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "hours": self.hours}


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
  """What metadata.json holds.

  Attributes:
    dataset_name: the shard files' dataset name (TFDS's).
    tokens: the semantic and acoustic tokenizers.
    shards: every shard of every split, sorted by (split, shard_index).
    description: free text.
    format_version: of this metadata and the example encoding.
  """

  dataset_name: str
  tokens: TokensInfo
  shards: tuple[ShardStats, ...]
  description: str = ""
  format_version: int = FORMAT_VERSION

  @property
  def splits(self) -> list[str]:
    return sorted({s.split for s in self.shards})

  def split_shards(self, split: str) -> list[ShardStats]:
    return [s for s in self.shards if s.split == split]

  @property
  def totals(self) -> Totals:
    return Totals.of(self.shards)

  def to_json(self) -> dict[str, Any]:
    return {
        "format_version": self.format_version,
        "dataset_name": self.dataset_name,
        "description": self.description,
        "file_format": shards_lib.FILE_FORMAT,
        "encoding": ENCODING,
        "tokenizers": self.tokens.to_json(),
        "totals": self.totals.to_json(),
        "splits": {split: Totals.of(self.split_shards(split)).to_json() for split in self.splits},
        "shards": [s.to_json() for s in self.shards],
    }

  @classmethod
  def from_json(cls, data: Mapping[str, Any], source: str = "<json>") -> "DatasetMetadata":
    if data.get("format_version") != FORMAT_VERSION:
      raise ValueError(f"{source}: unsupported token dataset format {data.get('format_version')!r} (this code "
                       f"reads version {FORMAT_VERSION})")
    return cls(dataset_name=data["dataset_name"], tokens=TokensInfo.from_json(data["tokenizers"]),
               shards=tuple(ShardStats.from_json(s) for s in data["shards"]),
               description=data.get("description", ""), format_version=data["format_version"])


def _read_json(path: str) -> Any:
  return json.loads(storage.read_text(path))


def check_shards(output_dir: str, shards: Sequence[ShardStats], dataset_name: str) -> list[ShardStats]:
  """The shards sorted by (split, index), after checking each split is complete: 0..N-1 of one N, all on disk."""
  by_split: dict[str, list[ShardStats]] = {}
  for s in shards:
    by_split.setdefault(s.split, []).append(s)
  if not by_split:
    raise ValueError("no shards: a dataset needs at least one (possibly empty) shard")
  ordered = []
  present = storage.list_sizes(output_dir)  # one listing, not a request per shard
  for split, items in sorted(by_split.items()):
    items.sort(key=lambda s: s.shard_index)
    counts = {s.num_shards for s in items}
    indices = [s.shard_index for s in items]
    if len(counts) != 1 or indices != list(range(items[0].num_shards)):
      raise ValueError(f"split {split!r}: shards {indices} of {sorted(counts)} — need each of 0..N-1 exactly once")
    for s in items:
      expected = shards_lib.shard_filename(s.shard_index, s.num_shards, dataset_name, split)
      if s.filename != expected:
        raise ValueError(f"shard {s.filename!r} is not named {expected!r} (dataset_name {dataset_name!r})")
      if s.filename not in present:
        raise FileNotFoundError(f"shard {s.filename} is not complete in {output_dir}")
    ordered.extend(items)
  return ordered


def write_dataset_info(output_dir: str, *, tokens: TokensInfo, shards: Sequence[ShardStats],
                       rejects: Mapping[str, int] | None = None,
                       dataset_name: str = shards_lib.DEFAULT_DATASET_NAME, description: str = "",
                       extra_stats: Mapping[str, Any] | None = None, tfds_metadata: bool = True) -> DatasetMetadata:
  """Writes metadata.json, stats.json and (if `tfds_metadata`) the TFDS files; returns the metadata.

  Args:
    output_dir: the directory holding the shards (local or gs://).
    tokens: the tokenizers.
    shards: the statistics of every shard (`ShardWriter.stats`, or `compute_shard_stats`).
    rejects: rejected utterances per reason (e.g. `data_pipeline.records.Reject.code` → count), as the job
      counted them.
    dataset_name: the name in the shard file names.
    description: free text, also TFDS's description.
    extra_stats: more JSON-serialisable entries for stats.json (input counts, timings, ...).
    tfds_metadata: also write features.json + dataset_info.json for `tfds.builder_from_directory`.
  """
  output_dir = os.fspath(output_dir)
  meta = DatasetMetadata(dataset_name=dataset_name, tokens=tokens,
                         shards=tuple(check_shards(output_dir, shards, dataset_name)), description=description)
  rejects = {str(k): int(v) for k, v in sorted((rejects or {}).items())}
  stats = {
      "format_version": FORMAT_VERSION,
      "dataset_name": dataset_name,
      "totals": meta.totals.to_json(),
      "splits": {split: Totals.of(meta.split_shards(split)).to_json() for split in meta.splits},
      "rejects": {"total": sum(rejects.values()), "by_reason": rejects},
      **dict(extra_stats or {}),
  }
  storage.write_text(storage.join(output_dir, METADATA_FILE), json.dumps(meta.to_json(), indent=2) + "\n")
  storage.write_text(storage.join(output_dir, STATS_FILE), json.dumps(stats, indent=2) + "\n")
  if tfds_metadata:
    write_tfds_metadata(output_dir, meta)
  return meta


def read_metadata(output_dir: str) -> DatasetMetadata:
  path = storage.join(output_dir, METADATA_FILE)
  return DatasetMetadata.from_json(_read_json(path), path)


def read_stats(output_dir: str) -> dict[str, Any]:
  return _read_json(storage.join(output_dir, STATS_FILE))


# ---------------------------------------------------------------------------------------------------------------
# TFDS (imported only here: reading metadata.json needs no tensorflow_datasets).


def tfds_features(num_codebooks: int) -> Any:
  """The `tfds.features.FeaturesDict` of the examples, matching `schema.to_example` feature by feature.

  Tokens decode to int32: semantic [T_s], acoustic [T_a, Q] (the int64 list is parsed as a sequence of
  Q-vectors). Text decodes to tf.string; has_transcript to bool.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  text = tfds.features.Text
  scalar = tfds.features.Scalar
  return tfds.features.FeaturesDict({
      "id": text(doc="segment id"),
      "utterance_id": text(doc="the utterance the segment was cut from"),
      "segment_index": scalar(np.int64, doc="position among the utterance's segments"),
      "source": text(doc="source audio: path, or archive#member"),
      "start": scalar(np.float32, doc="offset in the source audio, seconds"),
      "duration": scalar(np.float32, doc="seconds"),
      "transcript": text(doc="transcript ('' when has_transcript is false)"),
      "has_transcript": scalar(np.bool_, doc="false: no transcript (not an empty one)"),
      "language": text(doc="AudioPaLM language name, '' if unknown"),
      "speaker": text(doc="speaker id, '' if unknown"),
      "semantic": tfds.features.Tensor(shape=(None,), dtype=np.int32, doc="semantic codes [T_s]"),
      "acoustic": tfds.features.Tensor(shape=(None, num_codebooks), dtype=np.int32, doc="acoustic codes [T_a, Q]"),
      "acoustic_shape": tfds.features.Tensor(shape=(2,), dtype=np.int64, doc="[T_a, Q]"),
      "semantic_frame_rate": scalar(np.float32, doc="Hz"),
      "acoustic_frame_rate": scalar(np.float32, doc="Hz"),
      "semantic_tokenizer": text(doc="semantic tokenizer identity"),
      "acoustic_tokenizer": text(doc="acoustic tokenizer identity"),
      "alignments": tfds.features.Tensor(shape=(None,), dtype=np.float32,
                                         doc="(start, end) seconds of each transcript word [2W]; empty: unknown"),
  })


def write_tfds_metadata(output_dir: str, meta: DatasetMetadata) -> None:
  """features.json + dataset_info.json (TFDS's `write_metadata`) with the shard lengths of every split.

  Our metadata.json is left as it is (DatasetInfo gets no `metadata`, so TFDS writes none) and TFDS reads it
  back as `builder.info.metadata`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core import naming  # pylint: disable=import-outside-toplevel

  template = naming.ShardedFileTemplate(data_dir=output_dir, template=naming.DEFAULT_FILENAME_TEMPLATE,
                                        dataset_name=meta.dataset_name, filetype_suffix=shards_lib.FILE_FORMAT)
  split_infos = [
      tfds.core.SplitInfo(name=split, shard_lengths=[s.examples for s in meta.split_shards(split)],
                          num_bytes=sum(s.num_bytes for s in meta.split_shards(split)),
                          filename_template=template.replace(split=split))
      for split in meta.splits
  ]
  description = meta.description or (
      f"{meta.dataset_name}: semantic tokens ({meta.tokens.semantic.identity}) and acoustic tokens "
      f"({meta.tokens.acoustic.identity}); see metadata.json")
  tfds.folder_dataset.write_metadata(data_dir=output_dir, features=tfds_features(meta.tokens.acoustic.num_codebooks),
                                     split_infos=split_infos, version=TFDS_VERSION, filename_template=template,
                                     check_data=False, description=description)
