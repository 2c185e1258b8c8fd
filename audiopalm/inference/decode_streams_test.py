"""Multi-stream models: the training loss and KV-cache decoding equal naive loops over positions and streams."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.inference.decode_streams import generate_streams
from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer
from audiopalm.training.train_step import TrainStepConfig, make_gradient_fn

RANGES = ((300, 340), (340, 380), (380, 420))  # three streams, each its own head
CFG = model_preset("tiny").replace(stream_vocab=RANGES)


@functools.cache
def _params(cfg=CFG, seed=0):
  tokens = jnp.zeros((1, 8, cfg.token_streams), jnp.int32)
  positions = jnp.zeros((1, 8), jnp.int32)
  params = nn.unbox(Transformer(cfg).init(jax.random.key(seed), tokens, positions, positions + 1))["params"]
  return jax.tree_util.tree_map_with_path(lambda path, x: x * 10 if path[-1].key in ("o", "wo") else x, params)


def test_the_input_of_a_position_is_the_sum_of_its_streams_embeddings():
  """The hidden states equal a one-stream model's whose table rows 0 and 1 hold the two positions' sums."""
  params = _params()
  tokens = jnp.asarray([[[300, 345, 411], [7, 0, 0]]])
  positions, segments = jnp.asarray([[0, 1]]), jnp.ones((1, 2), jnp.int32)
  table = params["embed"]["table"]
  x = Transformer(CFG).apply({"params": params}, tokens, positions, segments, method=Transformer.hidden)
  alt = {**params, "embed": {"table": table.at[0].set(table[tokens[0, 0]].sum(0)).at[1].set(table[tokens[0, 1]].sum(0))}}
  y = Transformer(CFG.replace(stream_vocab=())).apply({"params": alt}, jnp.asarray([[0, 1]]), positions, segments,
                                                      method=Transformer.hidden)
  np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [None, 2])
def test_training_loss_equals_a_naive_loop(chunk):
  rng = np.random.default_rng(0)
  b, t = 2, 6
  targets = np.stack([rng.integers(lo, hi, (b, t)) for lo, hi in RANGES], axis=-1).astype(np.int32)
  inputs = np.roll(targets, 1, axis=1)
  weights = rng.integers(0, 2, (b, t, 3)).astype(np.float32)
  batch = {"inputs": inputs, "targets": targets, "weights": weights, "positions": np.tile(np.arange(t), (b, 1)),
           "segment_ids": np.ones((b, t), np.int32)}
  params = _params()
  _, sums = make_gradient_fn(Transformer(CFG), TrainStepConfig(z_loss=0.0, loss_chunk_size=chunk))(
      params, {k: jnp.asarray(v) for k, v in batch.items()})
  logits = np.asarray(Transformer(CFG).apply({"params": params}, inputs, batch["positions"], batch["segment_ids"]),
                      np.float64)
  ref = 0.0
  for i in range(b):
    for j in range(t):
      for s, (lo, hi) in enumerate(RANGES):
        z = logits[i, j, lo:hi]
        ref += weights[i, j, s] * (np.log(np.exp(z - z.max()).sum()) + z.max() - logits[i, j, targets[i, j, s]])
  np.testing.assert_allclose(float(sums["ce"]), ref, rtol=1e-5)
  assert float(sums["weights"]) == weights.sum()


def _naive(params, prompt, forced, mask, new):
  """Full forward over the whole sequence for every new position; greedy per stream within its range."""
  rows = [list(r) for r in prompt]
  for i in range(new):
    tokens = jnp.asarray([rows])
    n = len(rows)
    logits = Transformer(CFG).apply({"params": params}, tokens, jnp.arange(n)[None], jnp.ones((1, n), jnp.int32))
    last = np.asarray(logits[0, -1])
    row = [int(np.argmax(last[lo:hi])) + lo for lo, hi in RANGES]
    if i < len(forced):
      row = [int(forced[i][s]) if mask[i][s] else row[s] for s in range(3)]
    rows.append(row)
  return np.asarray(rows[len(prompt):])


def test_cached_decoding_equals_a_naive_loop_with_forced_cells():
  params = _params()
  rng = np.random.default_rng(3)
  prompts = [np.stack([rng.integers(lo, hi, p) for lo, hi in RANGES], -1) for p in (4, 7)]
  new = 6
  forced, masks = [], []
  for _ in prompts:  # a delay-like pattern: stream s empty (forced to 0) on the first s new rows, one known cell
    mask = np.zeros((new, 3), bool)
    value = np.zeros((new, 3), np.int32)
    for s in range(3):
      mask[:s, s] = True
    mask[3, 1], value[3, 1] = True, 355
    forced.append(value)
    masks.append(mask)
  out = generate_streams(params, CFG, prompts, list(zip(forced, masks)), new, pad_prompts_to=4)
  for prompt, value, mask, got in zip(prompts, forced, masks, out):
    np.testing.assert_array_equal(got, _naive(params, prompt, value, mask, new))
    assert got[3, 1] == 355 and got[0, 1] == 0 and got[1, 2] == 0
    assert all(((got[~mask[:, s], s] >= lo) & (got[~mask[:, s], s] < hi)).all() for s, (lo, hi) in enumerate(RANGES))


def test_bad_shapes_are_refused():
  with pytest.raises(ValueError, match=r"\[P >= 1, 3\]"):
    generate_streams(_params(), CFG, [np.zeros((2, 2), np.int32)], [(np.zeros((1, 2)), np.zeros((1, 2), bool))], 3)
  with pytest.raises(ValueError, match="one token stream"):
    generate_streams(_params(), CFG.replace(stream_vocab=()), [np.zeros((2, 3))], [], 3)
