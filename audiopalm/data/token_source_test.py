"""Random access into token shards equals reading them in order, locally and on a GCS emulator; the start reads the
shards' indexes (not the shards), an example read fetches only its record; grain can shuffle over it."""

import shutil

import grain
import numpy as np
import pytest

from audiopalm.data.token_source import TokenShardSource, record_offsets
from audiopalm.files import storage
from audiopalm.tokens import shards, tfrecord
from audiopalm.tokens.schema_test import make_info, make_segment


def _dataset(out, sizes=(3, 0, 5)):
  info = make_info()
  for i, n in enumerate(sizes):
    with shards.ShardWriter(str(out), i, len(sizes), info) as writer:
      for j in range(n):
        writer.write(make_segment(10 * i + j, frames=10 + 5 * j))
  return out


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path) -> str:
  return str(tmp_path) if request.param == "local" else request.getfixturevalue("gcs_bucket")


def test_random_access_equals_sequential_reading(root):
  out = _dataset(storage.join(root, "tokens"))
  source = TokenShardSource(out)
  in_order = [ex for f in sorted(shards.find_shards(out), key=lambda f: f.shard_index)
              for ex in shards.read_shard(f.path)]
  assert len(source) == len(in_order) == 8
  for i in (7, 0, 3, 5, 2):
    got, want = source[i], in_order[i]
    assert got["id"] == want["id"]
    np.testing.assert_array_equal(got["acoustic"], want["acoustic"])
  ids = [ex["id"] for ex in grain.MapDataset.source(source).shuffle(seed=3)]
  assert sorted(ids) == sorted(ex["id"] for ex in in_order) and ids != [ex["id"] for ex in in_order]


def test_gcs_start_reads_one_index_per_shard_and_an_example_read_only_its_record(gcs_bucket):
  out = _dataset(f"{gcs_bucket}/tokens", sizes=(4, 2, 3, 1, 5))
  before = storage.counts()
  source = TokenShardSource(out)
  start = storage.counts() - before
  assert start.requests <= 1 + 5  # one listing page, one index per shard
  index_bytes = sum(storage.size(shards.index_path(p)) for p in source.paths)
  assert start.bytes_read < index_bytes + 8192  # the indexes and the listing, no shard bytes
  for i in (14, 0, 6):
    shard = int(np.searchsorted(source.starts, i, side="right") - 1)
    j = i - source.starts[shard]
    record = int(source.offsets[shard][j + 1] - source.offsets[shard][j])
    before = storage.counts()
    source[i]
    read = storage.counts() - before
    assert read.requests == 1 and read.bytes_read == record - tfrecord.HEADER  # its data and CRC only


def test_shards_without_an_index_are_indexed_from_their_framing_and_cached(root):
  out = _dataset(storage.join(root, "tokens"))
  want = [TokenShardSource(out)[i]["id"] for i in range(8)]
  for f in shards.find_shards(out):  # as written before shards had indexes
    storage.remove(shards.index_path(f.path))
  assert [TokenShardSource(out)[i]["id"] for i in range(8)] == want
  index_dir = storage.join(root, "cache")
  cached = TokenShardSource(out, index_dir=index_dir)
  assert [cached[i]["id"] for i in range(8)] == want
  assert len([n for n in storage.listdir(index_dir) if n.endswith(".offsets.npy")]) == 3
  before = storage.counts()
  TokenShardSource(out, index_dir=index_dir)  # the cache, not the shards
  assert (storage.counts() - before).bytes_read < 3 * 1024 + 8192


def test_incomplete_or_damaged_datasets_are_refused(tmp_path):
  out = _dataset(tmp_path / "a", sizes=(2, 2))
  next(p for p in out.iterdir() if p.name.endswith("-00001-of-00002")).unlink()
  with pytest.raises(ValueError, match="incomplete \\(1 of 2\\)"):
    TokenShardSource(str(out))
  path = next(p for p in out.iterdir() if p.name.endswith("-00000-of-00002"))
  path.write_bytes(path.read_bytes()[:-3])
  with pytest.raises(ValueError, match="runs past the end"):
    record_offsets(str(path))
  b = _dataset(tmp_path / "b", sizes=(2,))
  victim = next(p for p in b.iterdir() if p.name.endswith("-of-00001"))
  data = bytearray(victim.read_bytes())
  data[40] ^= 0xFF
  victim.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="CRC mismatch"):
    TokenShardSource(str(b))[0]
  with pytest.raises(FileNotFoundError, match="no complete 'train' shards"):
    TokenShardSource(str(tmp_path / "empty"))


def test_index_cache_is_per_file_and_handles_are_bounded(tmp_path):
  a, b = _dataset(tmp_path / "a", sizes=(3, 2)), _dataset(tmp_path / "b", sizes=(4, 1))  # same file names
  for d in (a, b):
    shutil.rmtree(d / "index")
  index = str(tmp_path / "index")
  first = TokenShardSource(str(a), index_dir=index)
  second = TokenShardSource(str(b), index_dir=index)  # must not reuse a's offsets
  assert [second[i]["id"] for i in range(len(second))] == [TokenShardSource(str(b))[i]["id"] for i in range(5)]
  assert len(list((tmp_path / "index").glob("*.offsets.npy"))) == 4 and len(first) == 5
  bounded = TokenShardSource(str(b))
  bounded.MAX_OPEN_FILES = 1
  for i in (0, 4, 1, 4):  # alternating shards: one open file at a time
    assert bounded[i]["id"] == second[i]["id"]
    assert len(bounded._local.handles) == 1  # pylint: disable=protected-access


def test_a_directory_with_two_datasets_needs_a_name(tmp_path):
  info = make_info()
  for name in ("alpha", "beta"):
    with shards.ShardWriter(str(tmp_path), 0, 1, info, dataset_name=name) as writer:
      writer.write(make_segment(1 if name == "alpha" else 2, frames=10))
  with pytest.raises(ValueError, match="several datasets \\['alpha', 'beta'\\]"):
    TokenShardSource(str(tmp_path))
  assert TokenShardSource(str(tmp_path), dataset_name="beta")[0]["id"] == make_segment(2, frames=10).id
