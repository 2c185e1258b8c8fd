"""Random access into token shards equals reading them in order; grain can shuffle over it."""

import grain
import numpy as np
import pytest

from audiopalm.data.token_source import TokenShardSource, record_offsets
from audiopalm.tokens import shards
from audiopalm.tokens.schema_test import make_info, make_segment


def _dataset(tmp_path, sizes=(3, 0, 5)):
  info = make_info()
  for i, n in enumerate(sizes):
    with shards.ShardWriter(str(tmp_path), i, len(sizes), info) as writer:
      for j in range(n):
        writer.write(make_segment(10 * i + j, frames=10 + 5 * j))
  return tmp_path


def test_random_access_equals_sequential_reading(tmp_path):
  out = _dataset(tmp_path)
  source = TokenShardSource(str(out))
  in_order = [ex for f in sorted(shards.find_shards(str(out)), key=lambda f: f.shard_index)
              for ex in shards.read_shard(f.path)]
  assert len(source) == len(in_order) == 8
  for i in (7, 0, 3, 5, 2):
    got, want = source[i], in_order[i]
    assert got["id"] == want["id"]
    np.testing.assert_array_equal(got["acoustic"], want["acoustic"])
  # Cached offsets are the same and are reused.
  cached = TokenShardSource(str(out), index_dir=str(tmp_path / "index"))
  assert [cached[i]["id"] for i in range(8)] == [ex["id"] for ex in in_order]
  assert len(list((tmp_path / "index").glob("*.offsets.npy"))) == 3
  ids = [ex["id"] for ex in grain.MapDataset.source(source).shuffle(seed=3)]
  assert sorted(ids) == sorted(ex["id"] for ex in in_order) and ids != [ex["id"] for ex in in_order]


def test_incomplete_or_damaged_datasets_are_refused(tmp_path):
  out = _dataset(tmp_path / "a", sizes=(2, 2))
  next(p for p in out.iterdir() if p.name.endswith("-00001-of-00002")).unlink()
  with pytest.raises(ValueError, match="incomplete \\(1 of 2\\)"):
    TokenShardSource(str(out))
  path = next(p for p in out.iterdir() if p.name.endswith("-00000-of-00002"))
  path.write_bytes(path.read_bytes()[:-3])
  with pytest.raises(ValueError, match="runs past the end"):
    record_offsets(str(path))
  with pytest.raises(FileNotFoundError, match="no complete 'train' shards"):
    TokenShardSource(str(tmp_path / "empty"))


def test_index_cache_is_per_file_and_handles_are_bounded(tmp_path):
  a, b = _dataset(tmp_path / "a", sizes=(3, 2)), _dataset(tmp_path / "b", sizes=(4, 1))  # same file names
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
