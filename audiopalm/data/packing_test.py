"""Packing (best fit decreasing over windows; grain's packers): exact rows, isolated segments, no token lost,
efficiency, exact resume."""

import grain
import numpy as np
import pytest

from audiopalm.data import packing
from audiopalm.data.iterator import BATCH_KEYS
from audiopalm.formats.base import TokenSequence


def _seq(tokens, weights=None):
  tokens = np.asarray(tokens, np.int32)
  return TokenSequence(tokens, np.ones(len(tokens), np.float32) if weights is None else np.asarray(weights, np.float32))


def _rows(seqs, length, num_bins=8, algorithm="first_fit", bos_id=1, pad_id=0, window=4096):
  ds = grain.MapDataset.source([packing.sequence_features(s) for s in seqs]).to_iter_dataset()
  packed = packing.pack(ds, length=length, num_bins=num_bins, pad_id=pad_id, algorithm=algorithm, window=window)
  return [packing.to_batch({k: v[None] for k, v in row.items()}, bos_id, pad_id) for row in packed]


def test_golden_rows_first_fit():
  rows = _rows([_seq([10, 11, 12], [0, 1, 1]), _seq([20, 21, 22, 23]), _seq([30, 31]), _seq([40])], length=6,
               num_bins=2, algorithm="first_fit")
  # [10 11 12] opens row A; [20..23] does not fit A → row B; [30 31] and then [40] go to the first row with room: A.
  assert len(rows) == 2
  a, b = sorted(rows, key=lambda r: int(r["targets"][0, 0]))
  np.testing.assert_array_equal(a["targets"][0], [10, 11, 12, 30, 31, 40])
  np.testing.assert_array_equal(a["inputs"][0], [1, 10, 11, 1, 30, 1])
  np.testing.assert_array_equal(a["positions"][0], [0, 1, 2, 0, 1, 0])
  np.testing.assert_array_equal(a["segment_ids"][0], [1, 1, 1, 2, 2, 3])
  np.testing.assert_array_equal(a["weights"][0], [0, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(b["targets"][0], [20, 21, 22, 23, 0, 0])
  np.testing.assert_array_equal(b["inputs"][0], [1, 20, 21, 22, 0, 0])
  np.testing.assert_array_equal(b["positions"][0], [0, 1, 2, 3, 0, 0])
  np.testing.assert_array_equal(b["segment_ids"][0], [1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(b["weights"][0], [1, 1, 1, 1, 0, 0])
  assert all(tuple(r) == BATCH_KEYS for r in rows)
  assert all(r[k].dtype == (np.float32 if k == "weights" else np.int32) for r in rows for k in BATCH_KEYS)


def test_golden_rows_best_fit():
  rows = _rows([_seq([10, 11, 12], [0, 1, 1]), _seq([20, 21, 22, 23]), _seq([30, 31]), _seq([40])], length=6,
               num_bins=2, algorithm="best_fit")
  # [30 31] goes to the row it leaves least room in: B (2 free) rather than A (3 free); [40] then fits only A.
  a, b = sorted(rows, key=lambda r: int(r["targets"][0, 0]))
  np.testing.assert_array_equal(a["targets"][0], [10, 11, 12, 40, 0, 0])
  np.testing.assert_array_equal(a["inputs"][0], [1, 10, 11, 1, 0, 0])
  np.testing.assert_array_equal(a["segment_ids"][0], [1, 1, 1, 2, 0, 0])
  np.testing.assert_array_equal(a["weights"][0], [0, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(b["targets"][0], [20, 21, 22, 23, 30, 31])
  np.testing.assert_array_equal(b["inputs"][0], [1, 20, 21, 22, 1, 30])
  np.testing.assert_array_equal(b["positions"][0], [0, 1, 2, 3, 0, 1])
  np.testing.assert_array_equal(b["segment_ids"][0], [1, 1, 1, 1, 2, 2])


def test_golden_rows_best_fit_decreasing():
  rows = _rows([_seq([10, 11]), _seq([20, 21, 22, 23]), _seq([30, 31, 32], [0, 1, 1]), _seq([40]), _seq([50, 51]),
                _seq([60])], length=6, algorithm="best_fit_decreasing", window=4)
  # Window 1 = the first four, longest first: [20..23] opens A (2 left); [30 31 32] opens B (3 left); [10 11]
  # fits A exactly (best fit); [40] → B. Window 2: [50 51] opens C, [60] joins it. Window rows come out in a
  # seeded random order, window by window.
  by_first = {int(r["targets"][0, 0]): r for r in rows}
  assert len(rows) == 3 and {int(r["targets"][0, 0]) for r in rows[:2]} == {20, 30}
  np.testing.assert_array_equal(by_first[20]["targets"][0], [20, 21, 22, 23, 10, 11])
  np.testing.assert_array_equal(by_first[20]["inputs"][0], [1, 20, 21, 22, 1, 10])
  np.testing.assert_array_equal(by_first[20]["positions"][0], [0, 1, 2, 3, 0, 1])
  np.testing.assert_array_equal(by_first[20]["segment_ids"][0], [1, 1, 1, 1, 2, 2])
  np.testing.assert_array_equal(by_first[30]["targets"][0], [30, 31, 32, 40, 0, 0])
  np.testing.assert_array_equal(by_first[30]["weights"][0], [0, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(by_first[30]["segment_ids"][0], [1, 1, 1, 2, 0, 0])
  np.testing.assert_array_equal(by_first[50]["targets"][0], [50, 51, 60, 0, 0, 0])


def test_golden_rows_multi_stream():
  """[L, S] sequences (the stages' 'streams' layout) pack like [L] ones, every stream shifted alike; a segment
  starts with BOS in stream 0 and padding in the others."""
  first = TokenSequence(np.array([[10, 0], [11, 15], [12, 16]], np.int32), np.array([[0, 0], [1, 0], [1, 1]], np.float32))
  second = TokenSequence(np.array([[20, 25], [21, 26]], np.int32), np.ones((2, 2), np.float32))
  (row,) = _rows([first, second], length=6, algorithm="best_fit_decreasing")
  np.testing.assert_array_equal(row["targets"][0], [[10, 0], [11, 15], [12, 16], [20, 25], [21, 26], [0, 0]])
  np.testing.assert_array_equal(row["inputs"][0], [[1, 0], [10, 0], [11, 15], [1, 0], [20, 25], [0, 0]])
  np.testing.assert_array_equal(row["weights"][0], [[0, 0], [1, 0], [1, 1], [1, 1], [1, 1], [0, 0]])
  np.testing.assert_array_equal(row["positions"][0], [0, 1, 2, 0, 1, 0])
  np.testing.assert_array_equal(row["segment_ids"][0], [1, 1, 1, 2, 2, 0])


def test_best_fit_decreasing_assignment():
  assert packing.best_fit_decreasing([4, 2, 3, 1], 6) == [[0, 1], [2, 3]]
  assert packing.best_fit_decreasing([], 6) == []
  with pytest.raises(ValueError, match="a sequence of 7 tokens cannot be packed into rows of 6"):
    packing.best_fit_decreasing([7], 6)


@pytest.mark.parametrize("algorithm,settings,goal", [("best_fit_decreasing", {"window": 2000}, 0.995),
                                                     ("best_fit", {"num_bins": 128}, 0.98)])
def test_every_token_kept_segments_isolated_and_efficient(algorithm, settings, goal):
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 300, size=6000)
  seqs = [_seq(rng.integers(2, 1000, size=n), np.full(n, rng.uniform(0.1, 1), np.float32)) for n in lengths]
  rows = _rows(seqs, length=1024, algorithm=algorithm, **settings)
  found = []
  for row in rows:
    seg, pos, tgt, inp = row["segment_ids"][0], row["positions"][0], row["targets"][0], row["inputs"][0]
    for s in range(1, seg.max() + 1):
      idx = np.flatnonzero(seg == s)
      assert (np.diff(idx) == 1).all()  # contiguous
      np.testing.assert_array_equal(pos[idx], np.arange(len(idx)))  # positions restart: nothing seen before
      np.testing.assert_array_equal(inp[idx], np.concatenate([[1], tgt[idx][:-1]]))  # shifted within the segment
      found.append((tuple(tgt[idx]), float(row["weights"][0][idx][0])))
    assert (row["weights"][0][seg == 0] == 0).all()
  assert sorted(found) == sorted((tuple(s.tokens), float(s.weights[0])) for s in seqs)  # every token, once
  full = rows[:-200]  # the data ran out in the last window / group of rows
  efficiency = sum(int((r["segment_ids"] > 0).sum()) for r in full) / (1024 * len(full))
  assert efficiency >= goal, efficiency


@pytest.mark.parametrize("algorithm", packing.ALGORITHMS)
def test_restored_packer_continues_exactly(algorithm):
  rng = np.random.default_rng(1)
  feats = [packing.sequence_features(_seq(rng.integers(2, 50, size=rng.integers(1, 40)))) for _ in range(500)]
  packed = packing.pack(grain.MapDataset.source(feats).to_iter_dataset(), length=64, algorithm=algorithm,
                        num_bins=8, window=30, seed=3)
  it = iter(packed)
  for _ in range(13):  # mid-way through a group / window of rows
    next(it)
  state = it.get_state()
  expected = list(it)  # to the end: several windows, then exhaustion
  restored = iter(packed)
  restored.set_state(state)
  got = list(restored)
  assert len(got) == len(expected) > 20
  for g, want in zip(got, expected):
    assert all(np.array_equal(g[k], want[k]) for k in want)


def test_fits_and_bad_settings():
  assert packing.fits(_seq([1, 2]), 2) and not packing.fits(_seq([1, 2, 3]), 2) and not packing.fits(_seq([]), 2)
  ds = grain.MapDataset.source([]).to_iter_dataset()
  with pytest.raises(ValueError, match="packing algorithm 'greedy'"):
    packing.pack(ds, length=8, num_bins=2, algorithm="greedy")
  with pytest.raises(ValueError, match="length >= 2, window >= 1 and num_bins >= 1"):
    packing.pack(ds, length=8, num_bins=0)
  assert list(packing.pack(ds, length=8)) == []  # nothing in, nothing out
