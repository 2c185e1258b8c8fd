import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.training.optimizer import OptimizerConfig, make_optimizer, make_schedule


def test_palm_schedule():
  """PaLM: 1e-2 for 10k steps, then 1/sqrt(step)."""
  s = make_schedule(OptimizerConfig())
  np.testing.assert_allclose([float(s(i)) for i in (0, 9_999, 10_000, 40_000)], [1e-2, 1e-2, 1e-2, 5e-3], rtol=1e-6)


def test_linear_warmup_then_cosine():
  s = make_schedule(OptimizerConfig(schedule="cosine", warmup="linear", warmup_steps=10, decay_steps=110,
                                    peak_lr=1.0, end_lr_fraction=0.1))
  np.testing.assert_allclose([float(s(i)) for i in (0, 5, 10, 60, 110, 500)], [0, 0.5, 1.0, 0.55, 0.1, 0.1],
                             atol=1e-6)


@pytest.mark.parametrize("name", ["adafactor", "adamw"])
@pytest.mark.parametrize("schedule_kind, power", [("lr", 1), ("lr_squared", 2)])
def test_weight_decay_follows_the_schedule(name, schedule_kind, power):
  """With zero gradients the update is exactly -weight_decay * lr^power * params."""
  cfg = OptimizerConfig(name=name, peak_lr=1e-2, schedule="constant", warmup_steps=0, weight_decay=0.5,
                        weight_decay_schedule=schedule_kind)
  tx = make_optimizer(cfg)
  params = {"w": jnp.full((4, 4), 2.0)}
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(np.asarray(updates["w"]), -0.5 * 1e-2**power * 2.0, rtol=1e-6)


def test_adafactor_scanned_layers_update_like_separate_layers():
  """Parameter scaling uses each layer's RMS, whether layers are stacked (nn.scan) or separate."""
  tx = make_optimizer(OptimizerConfig(warmup_steps=0, schedule="constant"))
  rng = np.random.default_rng(0)
  w = np.stack([rng.normal(size=(8, 8)) * 10, rng.normal(size=(8, 8)) * 0.1]).astype(np.float32)
  g = rng.normal(size=w.shape).astype(np.float32)
  stacked = {"layers": {"w": jnp.asarray(w)}}
  separate = {"layer_0": {"w": jnp.asarray(w[0])}, "layer_1": {"w": jnp.asarray(w[1])}}
  u_stacked, _ = tx.update({"layers": {"w": jnp.asarray(g)}}, tx.init(stacked), stacked)
  u_sep, _ = tx.update({"layer_0": {"w": jnp.asarray(g[0])}, "layer_1": {"w": jnp.asarray(g[1])}},
                       tx.init(separate), separate)
  for i in range(2):
    np.testing.assert_allclose(np.asarray(u_stacked["layers"]["w"][i]), np.asarray(u_sep[f"layer_{i}"]["w"]),
                               rtol=1e-5)
