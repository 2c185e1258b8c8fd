import numpy as np
import pytest

from audiopalm.data.text_source import TextSourceConfig, make_text_iterator, pack_documents
from audiopalm.vocab.bytes import EOS, decode, encode


def test_packing_invariants():
  docs = [encode("abc"), encode("hello world"), encode("xy")]
  rows = pack_documents(docs, 8)
  seg, pos, inp, tgt, w = (rows[k] for k in ("segment_ids", "positions", "inputs", "targets", "weights"))
  assert seg.shape == (3, 8)
  # Every non-padding token is trained; each segment starts at position 0 with input EOS (BOS).
  np.testing.assert_array_equal(w, seg > 0)
  starts = (pos == 0) & (seg > 0)
  assert (inp[starts] == EOS).all()
  # Within a segment, inputs are the targets shifted right by one.
  same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
  np.testing.assert_array_equal(inp[:, 1:][same], tgt[:, :-1][same])
  # The concatenated targets are the documents with EOS after each.
  stream = tgt[w > 0]
  assert decode(stream) == "abchello worldxy" and (stream == EOS).sum() == 3


def _config(tmp_path, batch=8):
  path = tmp_path / "text.txt"
  path.write_text("\n\n".join(f"paragraph number {i} " * (i % 5 + 1) for i in range(60)))
  return TextSourceConfig(paths=(str(path),), seq_len=32, global_batch_size=batch, seed=3)


def test_host_slices_concatenate_to_the_global_batch(tmp_path):
  cfg = _config(tmp_path)
  whole = make_text_iterator(cfg, 0, 8)
  halves = [make_text_iterator(cfg, 0, 4), make_text_iterator(cfg, 4, 8)]
  for _ in range(5):
    g = next(whole)
    parts = [next(h) for h in halves]
    for key in g:
      np.testing.assert_array_equal(g[key], np.concatenate([p[key] for p in parts]))


def test_state_restores_the_same_batches(tmp_path):
  cfg = _config(tmp_path)
  it = make_text_iterator(cfg, 0, 8)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it)["targets"] for _ in range(4)]
  fresh = make_text_iterator(cfg, 0, 8)
  fresh.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(fresh)["targets"], e)


def test_epochs_are_reshuffled(tmp_path):
  cfg = _config(tmp_path, batch=1)
  it = make_text_iterator(cfg, 0, 1)
  rows = [next(it)["targets"][0].tobytes() for _ in range(200)]
  n = len(set(rows))
  assert rows[:n] != rows[n:2 * n]  # the second epoch comes in another order


def test_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    make_text_iterator(TextSourceConfig(paths=(str(tmp_path / "nope.txt"),)), 0, 1)


def test_the_state_is_the_global_rows_consumed_whatever_the_process_split(tmp_path, caplog):
  cfg = _config(tmp_path)
  halves = [make_text_iterator(cfg, 0, 4), make_text_iterator(cfg, 4, 8)]
  for _ in range(3):
    for h in halves:
      next(h)
  state = halves[0].get_state()
  assert state == halves[1].get_state() and state["rows"] == 24  # one global position, alike on both processes
  whole = make_text_iterator(cfg, 0, 8)
  following = [next(whole) for _ in range(5)][3:]  # global batches 3 and 4: rows 24-39
  resumed = make_text_iterator(cfg, 0, 8)
  resumed.set_state(state)  # 2 processes → 1
  np.testing.assert_array_equal(next(resumed)["targets"], following[0]["targets"])
  # A global batch of 16 continues at row 24: its first batch is rows 24-39.
  bigger = make_text_iterator(_config(tmp_path, batch=16), 0, 16)
  bigger.set_state(state)
  assert "global batch size changed (8 then, 16 now)" in caplog.text
  np.testing.assert_array_equal(next(bigger)["targets"], np.concatenate([f["targets"] for f in following]))
  other = TextSourceConfig(paths=cfg.paths, seq_len=16, global_batch_size=8)
  with pytest.raises(ValueError, match="belongs to another input .*seq_len: 32 then, 16 now"):
    make_text_iterator(other, 0, 8).set_state(state)
