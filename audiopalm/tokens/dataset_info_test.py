"""Tests of the dataset-level files: metadata.json / stats.json round trips, and loading with TFDS."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from audiopalm.files import storage
from audiopalm.tokens import dataset_info, shards
from audiopalm.tokens.schema_test import make_info, make_segment


def write_dataset(out: str, num_codebooks: int, layout: dict[str, list[int]], dataset_name: str = "demo_tokens"):
  """Shards of `layout[split][i]` segments each; returns (info, {split: [segments]}, [ShardStats])."""
  info = make_info(num_codebooks)
  written, stats = {}, []
  seed = 0
  for split, counts in layout.items():
    written[split] = []
    for index, count in enumerate(counts):
      segs = []
      for _ in range(count):
        seed += 1
        segs.append(make_segment(seed, seed % 5 * 3, num_codebooks, transcript=None if seed % 3 == 0 else f"t{seed}"))
      with shards.ShardWriter(out, index, len(counts), info, dataset_name=dataset_name, split=split) as writer:
        for seg in segs:
          writer.write(seg)
      stats.append(writer.stats)
      written[split].extend(segs)
  return info, written, stats


def test_metadata_and_stats_round_trip(tmp_path):
  out = str(tmp_path)
  info, written, stats = write_dataset(out, 8, {"train": [3, 0, 2], "test": [1]})
  rejects = {"too_short": 2, "unreadable": 1}
  meta = dataset_info.write_dataset_info(out, tokens=info, shards=stats[::-1], rejects=rejects,
                                         dataset_name="demo_tokens", description="unit test",
                                         extra_stats={"input_utterances": 9})
  back = dataset_info.read_metadata(out)
  assert back == meta
  assert back.tokens == info and back.splits == ["test", "train"] and back.description == "unit test"
  assert [(s.split, s.shard_index) for s in back.shards] == [("test", 0), ("train", 0), ("train", 1), ("train", 2)]
  assert back.totals.examples == 6 and back.totals.num_shards == 4
  assert back.totals.seconds == pytest.approx(sum(s.duration for segs in written.values() for s in segs), rel=1e-6)

  raw = json.loads((tmp_path / "metadata.json").read_text())
  assert raw["format_version"] == dataset_info.FORMAT_VERSION
  assert raw["tokenizers"]["acoustic"]["num_codebooks"] == 8 and raw["tokenizers"]["semantic"]["vocab_size"] == 512
  assert raw["splits"]["train"]["examples"] == 5 and len(raw["shards"]) == 4
  assert raw["shards"][1]["filename"] == "demo_tokens-train.tfrecord-00000-of-00003"

  stats_json = dataset_info.read_stats(out)
  assert stats_json["rejects"] == {"total": 3, "by_reason": {"too_short": 2, "unreadable": 1}}
  assert stats_json["totals"]["examples"] == 6 and stats_json["input_utterances"] == 9
  assert stats_json["totals"]["hours"] == pytest.approx(back.totals.seconds / 3600)
  assert stats_json["totals"]["acoustic_tokens"] == 8 * stats_json["totals"]["acoustic_frames"]
  assert not [n for n in os.listdir(out) if "incomplete" in n]


def test_metadata_on_gcs(gcs_bucket):
  """On the GCS emulator, TFDS's files included (TFDS writes through etils.epath, which goes through gcsfs)."""
  out = f"{gcs_bucket}/tokens"
  info, _, stats = write_dataset(out, 2, {"train": [1, 2]})
  meta = dataset_info.write_dataset_info(out, tokens=info, shards=stats, rejects={}, dataset_name="demo_tokens")
  assert dataset_info.read_metadata(out) == meta and meta.totals.examples == 3
  assert {"dataset_info.json", "features.json"} <= set(storage.listdir(out))
  assert dataset_info.read_stats(out)["rejects"] == {"total": 0, "by_reason": {}}


def test_version_mismatch_is_refused(tmp_path):
  info, _, stats = write_dataset(str(tmp_path), 1, {"train": [1]})
  dataset_info.write_dataset_info(str(tmp_path), tokens=info, shards=stats, dataset_name="demo_tokens",
                                  tfds_metadata=False)
  data = json.loads((tmp_path / "metadata.json").read_text())
  data["format_version"] = 99
  (tmp_path / "metadata.json").write_text(json.dumps(data))
  with pytest.raises(ValueError, match="unsupported token dataset format 99"):
    dataset_info.read_metadata(str(tmp_path))


def test_incomplete_splits_are_refused(tmp_path):
  out = str(tmp_path)
  info, _, stats = write_dataset(out, 2, {"train": [1, 1, 1]})
  with pytest.raises(ValueError, match=r"shards \[0, 2\]"):
    dataset_info.write_dataset_info(out, tokens=info, shards=[stats[0], stats[2]], dataset_name="demo_tokens")
  with pytest.raises(ValueError, match="not named"):
    dataset_info.write_dataset_info(out, tokens=info, shards=stats, dataset_name="other")
  os.remove(os.path.join(out, stats[1].filename))
  with pytest.raises(FileNotFoundError, match="00001-of-00003"):
    dataset_info.write_dataset_info(out, tokens=info, shards=stats, dataset_name="demo_tokens")
  assert not os.path.exists(os.path.join(out, dataset_info.METADATA_FILE))


@pytest.mark.parametrize("num_codebooks", [1, 8])
def test_tfds_builder_from_directory_yields_the_written_examples(tmp_path, num_codebooks):
  out = str(tmp_path / "tokens")
  info, written, stats = write_dataset(out, num_codebooks, {"train": [2, 0, 3], "test": [2]})
  meta = dataset_info.write_dataset_info(out, tokens=info, shards=stats, rejects={"silent": 1},
                                         dataset_name="demo_tokens")

  builder = tfds.builder_from_directory(out)
  assert builder.info.name == "demo_tokens"
  assert builder.info.splits["train"].num_examples == 5 and builder.info.splits["train"].num_shards == 3
  assert builder.info.splits["train"].shard_lengths == [2, 0, 3]
  assert builder.info.splits["test"].num_examples == 2
  assert builder.info.metadata["tokenizers"] == meta.to_json()["tokenizers"]  # TFDS reads our metadata.json
  assert builder.info.features["acoustic"].shape == (None, num_codebooks)
  for split in ("train", "test"):
    examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    assert len(examples) == len(written[split])
    for ex, seg in zip(examples, written[split]):
      assert ex["id"].decode() == seg.id and ex["transcript"].decode() == (seg.transcript or "")
      assert ex["has_transcript"] == (seg.transcript is not None)
      assert ex["semantic"].dtype == np.int32 and ex["acoustic"].dtype == np.int32
      np.testing.assert_array_equal(ex["semantic"], seg.semantic)
      np.testing.assert_array_equal(ex["acoustic"], seg.acoustic)
      assert ex["acoustic"].shape == (len(seg.acoustic), num_codebooks)
      assert ex["duration"] == pytest.approx(seg.duration, abs=1e-6)
      assert ex["acoustic_tokenizer"].decode() == info.acoustic.identity
