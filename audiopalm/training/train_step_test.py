import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.params import sharding_context
from audiopalm.sharding.rules import ShardingRules
from audiopalm.training.optimizer import OptimizerConfig, make_optimizer, make_schedule
from audiopalm.training.train_state import init_train_state
from audiopalm.training.train_step import TrainStepConfig, make_gradient_fn, make_train_step

# Accumulated (or chunked) vs one-shot: the same sums in a different order. Gradient elements are compared
# with rtol plus an atol of ACCUM_RTOL x the largest |gradient| (elements near 0 have no relative scale).
ACCUM_RTOL = 1e-5

CFG = model_preset("tiny")
OPT = OptimizerConfig(name="adamw", peak_lr=1e-3, warmup_steps=0, schedule="constant")


def _batch(batch=8, length=16, seed=0):
  rng = np.random.default_rng(seed)
  targets = rng.integers(2, 258, (batch, length)).astype(np.int32)
  weights = (rng.random((batch, length)) > 0.3).astype(np.float32)  # uneven weights per microbatch
  return {"inputs": np.roll(targets, 1, axis=1), "targets": targets,
          "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length)).copy(),
          "segment_ids": np.ones((batch, length), np.int32), "weights": weights}


def _setup(accum):
  mesh = make_mesh(MeshConfig(ici={"data": 1, "fsdp": 1, "tensor": 1}), jax.devices()[:1])
  model, tx, rules = Transformer(CFG), make_optimizer(OPT), ShardingRules()
  state = init_train_state(model, tx, mesh, rules, seed=0)
  step = jax.jit(make_train_step(model, tx, TrainStepConfig(grad_accum_steps=accum), make_schedule(OPT)))
  return mesh, rules, state, step


def test_grad_accumulation_equals_full_batch():
  """4 microbatches give the loss sums and the mean gradient of the whole batch."""
  mesh, rules, state, _ = _setup(1)
  model = Transformer(CFG)
  results = []
  for accum in (1, 4):
    grads_fn = jax.jit(make_gradient_fn(model, TrainStepConfig(grad_accum_steps=accum)))
    with sharding_context(mesh, rules):
      results.append(jax.device_get(grads_fn(state.params, _batch())))
  (g1, s1), (g4, s4) = results
  for key in ("ce", "z_loss", "weights"):
    np.testing.assert_allclose(s4[key], s1[key], rtol=ACCUM_RTOL)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4)):
    np.testing.assert_allclose(b, a, rtol=ACCUM_RTOL, atol=ACCUM_RTOL * np.abs(a).max())


def test_nonfinite_step_is_skipped_and_counted():
  mesh, rules, state, step = _setup(1)
  bad = _batch()
  bad["weights"][0, 0] = np.nan
  before = jax.tree.map(np.asarray, state.params)
  with sharding_context(mesh, rules):
    state, metrics = step(state, bad)
    assert int(metrics["skipped"]) == 1
    assert int(state.nonfinite_total) == 1 and int(state.nonfinite_consecutive) == 1 and int(state.step) == 1
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
      np.testing.assert_array_equal(a, np.asarray(b))
    state, _ = step(state, bad)
    assert int(state.nonfinite_consecutive) == 2
    state, metrics = step(state, _batch())
  assert int(metrics["skipped"]) == 0
  assert int(state.nonfinite_total) == 2 and int(state.nonfinite_consecutive) == 0 and int(state.step) == 3
  assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(before),
                                                                  jax.tree.leaves(state.params)))


@pytest.mark.parametrize("accum", [1, 2])
def test_dropout_is_keyed_by_the_state(accum):
  """With dropout the loss is a pure function of the state (its rng): the same state and batch give the same
  step, a state with another rng a different one, and the loss differs from the dropout-free step's."""
  mesh, rules, state, _ = _setup(1)
  opt = make_optimizer(OPT)
  step = lambda rate: jax.jit(make_train_step(Transformer(CFG.replace(dropout_rate=rate)), opt,  # noqa: E731
                                              TrainStepConfig(grad_accum_steps=accum), make_schedule(OPT)))
  other = state.replace(rng=jax.random.key_data(jax.random.key(123)))
  with sharding_context(mesh, rules):
    dropped, plain = step(0.2), step(0.0)
    losses = [float(dropped(s, _batch())[1]["loss"]) for s in (state, state, other)]
    clean = float(plain(state, _batch())[1]["loss"])
    clean_other_rng = float(plain(other, _batch())[1]["loss"])
  assert losses[0] == losses[1] and losses[0] != losses[2]
  assert clean == clean_other_rng and abs(losses[0] - clean) > 1e-3


def test_bad_accumulation_config():
  with pytest.raises(ValueError, match="grad_accum_steps"):
    TrainStepConfig(grad_accum_steps=0)


def test_init_inside_a_sharding_context():
  """`init_train_state` works whether or not the caller already set the mesh and rules."""
  mesh = make_mesh(MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2}))
  with sharding_context(mesh, ShardingRules()):
    state = init_train_state(Transformer(CFG), make_optimizer(OPT), mesh, ShardingRules(), seed=0)
  assert int(state.step) == 0



def test_chunked_loss_equals_full_loss_and_saves_memory():
  """loss_chunk_size gives the same sums and gradients, with less temporary memory when the
  vocabulary is large (the full logits are never materialised)."""
  cfg = model_preset("tiny", vocab_size=8192)
  mesh = make_mesh(MeshConfig(ici={"data": 1, "fsdp": 1, "tensor": 1}), jax.devices()[:1])
  model, rules = Transformer(cfg), ShardingRules()
  state = init_train_state(model, make_optimizer(OPT), mesh, rules, seed=0)
  batch = _batch(batch=4, length=64)
  results, temp_bytes = [], []
  for chunk in (None, 16):
    grads_fn = jax.jit(make_gradient_fn(model, TrainStepConfig(loss_chunk_size=chunk)))
    with sharding_context(mesh, rules):
      results.append(jax.device_get(grads_fn(state.params, batch)))
      temp_bytes.append(grads_fn.lower(state.params, batch).compile().memory_analysis().temp_size_in_bytes)
  (g_full, s_full), (g_chunk, s_chunk) = results
  for key in ("ce", "z_loss", "weights"):
    np.testing.assert_allclose(s_chunk[key], s_full[key], rtol=ACCUM_RTOL)
  for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_chunk)):
    np.testing.assert_allclose(b, a, rtol=ACCUM_RTOL, atol=ACCUM_RTOL * np.abs(a).max())
  assert temp_bytes[1] < 0.7 * temp_bytes[0], temp_bytes


def test_noisy_inputs_replace_only_the_listed_streams_in_range_at_the_rate():
  from audiopalm.training.train_step import noisy_inputs
  vocab = ((10, 20), (20, 30), (30, 40))
  rng = np.random.default_rng(0)
  inputs = np.stack([rng.integers(10, 20, (4, 500)), rng.integers(20, 30, (4, 500)), rng.integers(30, 40, (4, 500))],
                    axis=-1)
  inputs[:, :50, 1] = 0  # pad: outside every range, never replaced
  out = np.asarray(noisy_inputs(jnp.asarray(inputs), jax.random.key(3), 0.5, (1,), vocab))
  np.testing.assert_array_equal(out[..., [0, 2]], inputs[..., [0, 2]])
  np.testing.assert_array_equal(out[:, :50, 1], 0)
  changed = out[:, 50:, 1] != inputs[:, 50:, 1]
  assert ((out[:, 50:, 1] >= 20) & (out[:, 50:, 1] < 30)).all()
  assert 0.4 < changed.mean() < 0.5  # replaced with probability 0.5, a tenth of the draws hit the same id
  again = np.asarray(noisy_inputs(jnp.asarray(inputs), jax.random.key(3), 0.5, (1,), vocab))
  np.testing.assert_array_equal(out, again)
  with pytest.raises(ValueError, match="input_noise"):
    TrainStepConfig(input_noise=0.3)
  with pytest.raises(ValueError, match="input_noise"):
    TrainStepConfig(input_noise=1.5, input_noise_streams=(1,))
