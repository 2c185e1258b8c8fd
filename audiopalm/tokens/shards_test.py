"""Tests of shard file names and of the atomic shard writer."""

import os

import pytest
import tensorflow as tf

from audiopalm.data.token_source import record_offsets
from audiopalm.files import storage
from audiopalm.tokens import schema, shards, tfrecord
from audiopalm.tokens.schema_test import assert_same, make_info, make_segment


def test_shard_names_follow_the_tfds_template(tmp_path):
  from tensorflow_datasets.core import naming  # pylint: disable=import-outside-toplevel

  template = naming.ShardedFileTemplate(data_dir=tmp_path, dataset_name="libri_tokens", split="train",
                                        filetype_suffix="tfrecord")
  for index, count in ((0, 1), (3, 10), (99999, 100000), (7, 123456)):
    name = shards.shard_filename(index, count, "libri_tokens", "train")
    assert name == template.sharded_filepath(shard_index=index, num_shards=count).name
    assert shards.parse_shard_filename(name) == ("libri_tokens", "train", index, count)
    info = template.parse_filename_info(name)
    assert (info.shard_index, info.num_shards) == (index, count)
    temp = shards._temp_prefix(index, count, "libri_tokens", "train") + "0123abcd"  # pylint: disable=protected-access
    assert template.parse_filename_info(temp) is None and shards.parse_shard_filename(temp) is None
    assert not temp.startswith(name.split(".tfrecord")[0]) and not temp.endswith(name[-12:])
  for bad in (dict(dataset_name="has-dash"), dict(dataset_name="9lives"), dict(split="a.b"), dict(split="")):
    with pytest.raises(ValueError):
      shards.shard_filename(0, 1, **{"dataset_name": "ok", "split": "train", **bad})
  with pytest.raises(ValueError, match="shard_index"):
    shards.shard_filename(2, 2)


def write_shard(out, index, count, segs, info, **kwargs) -> shards.ShardStats:
  with shards.ShardWriter(str(out), index, count, info, **kwargs) as writer:
    for seg in segs:
      writer.write(seg)
  return writer.stats


def test_writer_writes_a_complete_shard_and_its_stats(tmp_path):
  info = make_info()
  segs = [make_segment(i, 10 * i, transcript=None if i == 1 else "t") for i in range(4)]
  assert not shards.is_complete(str(tmp_path), 1, 3)
  stats = write_shard(tmp_path / "out", 1, 3, segs, info)
  out = str(tmp_path / "out")
  assert sorted(os.listdir(out)) == ["audio_tokens-train.tfrecord-00001-of-00003", "index"]
  offsets = shards.read_index(os.path.join(out, stats.filename))
  assert offsets.tolist() == record_offsets(os.path.join(out, stats.filename)).tolist()
  assert shards.is_complete(out, 1, 3) and not shards.is_complete(out, 0, 3)
  assert shards.list_complete_shards(out, 3) == [1] and shards.list_complete_shards(out, 4) == []
  assert stats == shards.ShardStats(split="train", shard_index=1, num_shards=3,
                                    filename="audio_tokens-train.tfrecord-00001-of-00003", examples=4,
                                    seconds=pytest.approx(1.2), semantic_tokens=30, acoustic_frames=60,
                                    acoustic_tokens=480, transcribed=3,
                                    num_bytes=os.path.getsize(os.path.join(out, stats.filename)))
  recomputed = shards.compute_shard_stats(os.path.join(out, stats.filename))
  assert recomputed == stats
  for seg, parsed in zip(segs, shards.read_shard(os.path.join(out, stats.filename)), strict=True):
    assert_same(parsed, seg, info)
  [found] = shards.find_shards(out)
  assert (found.dataset_name, found.split, found.shard_index, found.num_shards) == ("audio_tokens", "train", 1, 3)

  with pytest.raises(FileExistsError):
    write_shard(out, 1, 3, segs, info)
  stats = write_shard(out, 1, 3, segs[:1], info, overwrite=True)
  assert stats.examples == 1 and shards.compute_shard_stats(os.path.join(out, stats.filename)).examples == 1
  assert len(os.listdir(out)) == 2 and len(shards.read_index(os.path.join(out, stats.filename))) == 2


def test_write_serialized_counts_like_write(tmp_path):
  info = make_info(num_codebooks=2)
  segs = [make_segment(i, 7 * i + 1, num_codebooks=2, transcript=None if i else "") for i in range(3)]
  by_segment = write_shard(tmp_path / "a", 0, 1, segs, info)
  with shards.ShardWriter(str(tmp_path / "b"), 0, 1, info) as writer:
    for seg in segs:
      writer.write_serialized(schema.to_example(seg, info))
  assert writer.stats == by_segment
  with pytest.raises(ValueError, match="other tokenizers"):
    with shards.ShardWriter(str(tmp_path / "c"), 0, 1, make_info(num_codebooks=1)) as writer:
      writer.write_serialized(schema.to_example(segs[0], info))


def test_empty_shard_is_complete(tmp_path):
  stats = write_shard(tmp_path, 0, 1, [], make_info(), dataset_name="x", split="dev")
  assert stats.examples == 0 and shards.is_complete(str(tmp_path), 0, 1, dataset_name="x", split="dev")


def test_writer_that_raises_leaves_no_complete_looking_shard(tmp_path):
  info = make_info()
  with pytest.raises(RuntimeError, match="boom"):
    with shards.ShardWriter(str(tmp_path), 0, 2, info) as writer:
      writer.write(make_segment(0, 20))
      assert len(os.listdir(tmp_path)) == 1 and os.listdir(tmp_path)[0].startswith("incomplete.")
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []
  assert not shards.is_complete(str(tmp_path), 0, 2) and shards.find_shards(str(tmp_path)) == []

  with pytest.raises(ValueError, match="codebooks"):  # a bad segment midway aborts the shard too
    write_shard(tmp_path, 0, 2, [make_segment(0, 20), make_segment(1, 5, num_codebooks=4)], info)
  assert os.listdir(tmp_path) == []


def test_a_killed_writer_leaves_only_a_temp_that_the_next_writer_removes(tmp_path):
  info = make_info()
  killed = shards.ShardWriter(str(tmp_path), 0, 2, info).open()  # never closed: as if the process died
  killed.write(make_segment(0, 20))
  killed._file.flush()  # pylint: disable=protected-access
  other = write_shard(tmp_path, 1, 2, [make_segment(1, 4)], info)  # another shard's writer leaves it alone
  assert os.path.exists(killed.temp_path) and not shards.is_complete(str(tmp_path), 0, 2)
  assert shards.list_complete_shards(str(tmp_path), 2) == [1]

  stats = write_shard(tmp_path, 0, 2, [make_segment(2, 8)], info)
  assert not os.path.exists(killed.temp_path)
  assert sorted(os.listdir(tmp_path)) == sorted([stats.filename, other.filename, "index"])


def test_writer_on_gcs(gcs_bucket):
  """On the GCS emulator: nothing is written remotely before the commit, which is one exclusive upload."""
  out = f"{gcs_bucket}/tokens"
  info = make_info()
  stats = write_shard(out, 0, 2, [make_segment(0, 10)], info)
  with pytest.raises(RuntimeError, match="boom"):
    with shards.ShardWriter(out, 1, 2, info) as writer:
      writer.write(make_segment(1, 10))
      assert storage.listdir(out) == [stats.filename, "index"]
      raise RuntimeError("boom")
  assert not os.path.exists(writer.temp_path)
  assert storage.listdir(out) == [stats.filename, "index"]
  assert shards.list_complete_shards(out, 2) == [0] and shards.compute_shard_stats(f"{out}/{stats.filename}") == stats
  assert shards.read_index(f"{out}/{stats.filename}").tolist() == [0, stats.num_bytes]


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_two_writers_of_one_shard_commit_once(where, tmp_path, request):
  out = str(tmp_path) if where == "local" else request.getfixturevalue("gcs_bucket") + "/tokens"
  info = make_info()
  first = shards.ShardWriter(out, 0, 1, info).open()
  first.write(make_segment(1, 10))
  write_shard(out, 0, 1, [make_segment(2, 10)], info)  # committed meanwhile (e.g. its lease was taken over)
  # Locally the second writer removed the first one's staging file; on GCS the exclusive upload is refused.
  with pytest.raises(shards.ShardExistsError if where == "gcs" else FileNotFoundError):
    first.close()
  [found] = shards.find_shards(out)
  assert [ex["id"] for ex in shards.read_shard(found.path)] == [make_segment(2, 10).id]
  assert not [n for n in storage.listdir(out) if n.startswith("incomplete.")] and not os.path.exists(first.temp_path)


def test_framing_is_tensorflows(tmp_path):
  """Our records are byte for byte tf.io.TFRecordWriter's, and TFRecordDataset reads our shards."""
  records = [b"", b"x", os.urandom(1000)]
  path = str(tmp_path / "tf.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    for r in records:
      writer.write(r)
  with open(path, "rb") as f:
    assert f.read() == b"".join(tfrecord.frame(r) for r in records)
  stats = write_shard(tmp_path / "ours", 0, 1, [make_segment(i, 5) for i in range(3)], make_info())
  ours = [bytes(r) for r in tf.data.TFRecordDataset(str(tmp_path / "ours" / stats.filename)).as_numpy_iterator()]
  assert [schema.parse_example(r)["id"] for r in ours] == [make_segment(i, 5).id for i in range(3)]


def test_failed_commit_removes_the_staging_file(tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise PermissionError("no rename today")

  monkeypatch.setattr(os, "link", fail)
  with pytest.raises(PermissionError):
    write_shard(tmp_path, 0, 1, [make_segment(0, 4)], make_info())
  assert os.listdir(tmp_path) == ["index"] and not shards.find_shards(str(tmp_path))
