"""Forward/backward on a 2x2x2 data x fsdp x tensor mesh of 8 simulated CPU devices."""

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer
from audiopalm.sharding import axes
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.params import sharding_context
from audiopalm.sharding.rules import ShardingRules, batch_sharding
from audiopalm.training.optimizer import OptimizerConfig, make_optimizer, make_schedule
from audiopalm.training.train_state import init_train_state
from audiopalm.training.train_step import TrainStepConfig, make_train_step

# Loss and gradient norm on 8 devices vs 1 device: same math, different reduction order.
SHARDED_VS_SINGLE_RTOL = 1e-5

CFG = model_preset("tiny", num_kv_heads=2)  # GQA, so kv heads could be sharded by other rules
RULES = ShardingRules()


def _batch(batch=8, length=32):
  rng = np.random.default_rng(1)
  targets = rng.integers(2, 258, (batch, length)).astype(np.int32)
  inputs = np.concatenate([np.ones((batch, 1), np.int32), targets[:, :-1]], axis=1)
  positions = np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length))
  return {"inputs": inputs, "targets": targets, "positions": np.array(positions),
          "segment_ids": np.ones((batch, length), np.int32), "weights": np.ones((batch, length), np.float32)}


def _run(mesh_cfg, devices, steps=2):
  mesh = make_mesh(mesh_cfg, devices)
  model = Transformer(CFG)
  opt_cfg = OptimizerConfig(name="adamw", peak_lr=1e-3, warmup_steps=0, schedule="constant")
  tx = make_optimizer(opt_cfg)
  state = init_train_state(model, tx, mesh, RULES, seed=0)
  input_sharding = batch_sharding(mesh, RULES)
  step = jax.jit(make_train_step(model, tx, TrainStepConfig(), make_schedule(opt_cfg)))
  batch = {k: jax.device_put(v, input_sharding) for k, v in _batch().items()}
  losses = []
  with sharding_context(mesh, RULES):
    for _ in range(steps):
      state, metrics = step(state, batch)
      losses.append((float(metrics["loss"]), float(metrics["grad_norm"])))
  return state, losses


def test_params_are_sharded_as_the_rules_say():
  state, _ = _run(MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2}), jax.devices(), steps=1)
  p = state.params
  expect = {
      ("embed", "table"): P("tensor", "fsdp"),  # vocab -> tensor, embed -> fsdp
      ("layers", "attn", "q"): P(None, "fsdp", "tensor", None),  # [layers, embed, heads, head_dim]
      ("layers", "attn", "o"): P(None, "tensor", None, "fsdp"),
      ("layers", "mlp", "wi"): P(None, "fsdp", None, "tensor"),  # [layers, embed, 2, mlp]
      ("layers", "mlp", "wo"): P(None, "tensor", "fsdp"),
  }
  for path, spec in expect.items():
    leaf = p
    for k in path:
      leaf = leaf[k]
    assert _padded(leaf.sharding.spec, leaf.ndim) == _padded(spec, leaf.ndim), path
    shard_shape = leaf.addressable_shards[0].data.shape
    assert shard_shape == leaf.sharding.shard_shape(leaf.shape)
  # The embedding really is split over 4 devices (2 tensor x 2 fsdp).
  assert p["embed"]["table"].addressable_shards[0].data.shape == (CFG.vocab_size // 2, CFG.d_model // 2)
  # AdamW moments follow their parameter's sharding.
  mu = state.opt_state[1][0].mu  # chain(clip, adamw) -> adamw -> scale_by_adam
  assert _padded(mu["layers"]["mlp"]["wi"].sharding.spec, 4) == (None, "fsdp", None, "tensor")


def _padded(spec, ndim):
  return tuple(spec) + (None,) * (ndim - len(spec))


def test_loss_on_8_devices_equals_1_device():
  _, sharded = _run(MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2}), jax.devices())
  _, single = _run(MeshConfig(ici={"data": 1, "fsdp": 1, "tensor": 1}), jax.devices()[:1])
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=SHARDED_VS_SINGLE_RTOL)
  assert sharded[1][0] < sharded[0][0]  # the first step trained


def test_every_parameter_has_logical_names():
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  from audiopalm.model.params import abstract_params  # pylint: disable=import-outside-toplevel
  boxed = abstract_params(Transformer(model_preset("palm_8b")))
  specs = jax.tree.leaves(nn.get_partition_spec(boxed), is_leaf=lambda x: isinstance(x, P))
  for spec in specs:
    assert len(spec) > 0 and all(name is None or name in axes.ALL_AXES for name in spec)
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
