"""Unit tests of the decoder at tiny sizes, and shape checks of the full-size presets."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer, flops_per_token, param_count

TINY = model_preset("tiny")
VARIANTS = {
    "palm": TINY,
    "llama": TINY.replace(block="sequential", norm="rmsnorm", tie_embeddings=False, num_kv_heads=2,
                          logits_scale_by_inv_sqrt_dim=False),
    "gemma": TINY.replace(block="sequential", norm="rmsnorm", norm_scale_plus_one=True, activation="geglu",
                          embed_scale_by_sqrt_dim=True, logits_scale_by_inv_sqrt_dim=False, query_scale=0.1),
    "mha_unscanned_remat": TINY.replace(num_kv_heads=4, scan_layers=False, remat="full"),
}


def _inputs(batch=2, length=16, seed=0):
  rng = np.random.default_rng(seed)
  tokens = jnp.asarray(rng.integers(2, 258, (batch, length)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
  return tokens, positions, jnp.ones((batch, length), jnp.int32)


def _init(cfg, *inputs):
  return nn.unbox(Transformer(cfg).init(jax.random.key(0), *inputs))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_param_count_matches_initialised_model(name):
  cfg = VARIANTS[name]
  variables = _init(cfg, *_inputs())
  assert sum(x.size for x in jax.tree.leaves(variables)) == param_count(cfg)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_logits_shape_and_finite(name):
  cfg = VARIANTS[name]
  inputs = _inputs()
  logits = Transformer(cfg).apply(_init(cfg, *inputs), *inputs)
  assert logits.shape == (2, 16, cfg.vocab_size) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


def test_causal_future_tokens_do_not_change_past_logits():
  tokens, positions, segments = _inputs()
  variables = _init(TINY, tokens, positions, segments)
  changed = tokens.at[:, 10:].set(7)
  a = Transformer(TINY).apply(variables, tokens, positions, segments)
  b = Transformer(TINY).apply(variables, changed, positions, segments)
  np.testing.assert_array_equal(np.asarray(a[:, :10]), np.asarray(b[:, :10]))
  assert not np.allclose(np.asarray(a[:, 10:]), np.asarray(b[:, 10:]))


@pytest.mark.parametrize("name", ["palm", "llama"])
def test_packed_segments_are_isolated(name):
  """Changing the tokens of one packed segment leaves the logits of the others unchanged."""
  cfg = VARIANTS[name]
  tokens, _, _ = _inputs(batch=1, length=24)
  segments = jnp.asarray([[1] * 8 + [2] * 10 + [3] * 4 + [0] * 2], jnp.int32)
  positions = jnp.asarray([list(range(8)) + list(range(10)) + list(range(4)) + [0, 0]], jnp.int32)
  variables = _init(cfg, tokens, positions, segments)
  changed = tokens.at[:, 8:18].set((tokens[:, 8:18] + 5) % 250 + 2)  # segment 2 only
  a = np.asarray(Transformer(cfg).apply(variables, tokens, positions, segments))
  b = np.asarray(Transformer(cfg).apply(variables, changed, positions, segments))
  np.testing.assert_array_equal(a[:, :8], b[:, :8])
  np.testing.assert_array_equal(a[:, 18:22], b[:, 18:22])
  assert not np.allclose(a[:, 8:18], b[:, 8:18])


def test_packed_segment_equals_segment_alone():
  """A segment packed after another gives the same logits as that segment alone at position 0."""
  tokens, _, _ = _inputs(batch=1, length=16)
  segments = jnp.asarray([[1] * 6 + [2] * 10], jnp.int32)
  positions = jnp.asarray([list(range(6)) + list(range(10))], jnp.int32)
  variables = _init(TINY, tokens, positions, segments)
  packed = Transformer(TINY).apply(variables, tokens, positions, segments)[:, 6:]
  alone_tokens = tokens[:, 6:]
  alone = Transformer(TINY).apply(variables, alone_tokens, positions[:, 6:], jnp.ones_like(alone_tokens))
  np.testing.assert_allclose(np.asarray(packed), np.asarray(alone), rtol=1e-5, atol=1e-5)


def test_scan_and_unrolled_layers_agree():
  """The same weights give the same logits stacked with nn.scan or as separate layers."""
  inputs = _inputs()
  scanned = _init(TINY, *inputs)
  unrolled_cfg = TINY.replace(scan_layers=False)
  layers = scanned["params"]["layers"]
  params = {k: v for k, v in scanned["params"].items() if k != "layers"}
  for i in range(TINY.num_layers):
    params[f"layer_{i}"] = jax.tree.map(lambda x, i=i: x[i], layers)
  a = Transformer(TINY).apply(scanned, *inputs)
  b = Transformer(unrolled_cfg).apply({"params": params}, *inputs)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  cfg = TINY.replace(dtype="bfloat16")
  inputs = _inputs()
  variables = _init(cfg, *inputs)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  logits = Transformer(cfg).apply(variables, *inputs)
  ref = Transformer(TINY).apply(variables, *inputs)
  assert logits.dtype == jnp.float32
  assert np.abs(np.asarray(logits) - np.asarray(ref)).max() < 0.1  # bf16 rounding, not a different function


def test_invalid_config_fails_naming_the_field():
  with pytest.raises(ValueError, match="num_kv_heads"):
    TINY.replace(num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match="activation"):
    TINY.replace(activation="relu")


@pytest.mark.parametrize("name", ["palm_1b", "palm_8b"])
def test_full_size_presets_eval_shape(name):
  """Full-size presets initialise abstractly (no allocation) with the expected parameter count."""
  cfg = model_preset(name)
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  abstract = jax.eval_shape(lambda: nn.unbox(Transformer(cfg).init(jax.random.key(0), tokens, tokens, tokens)))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract)) == param_count(cfg)
  if name == "palm_8b":
    assert abs(param_count(cfg) - 8.63e9) < 0.01e9  # PaLM paper: 8.63B
    assert abstract["params"]["layers"]["attn"]["q"].shape == (32, 4096, 16, 256)
    assert abstract["params"]["layers"]["attn"]["kv"].shape == (32, 4096, 2, 1, 256)  # multi-query
    assert abstract["params"]["layers"]["mlp"]["wi"].shape == (32, 4096, 2, 16384)


def test_flops_per_token_palm_8b():
  """6N over non-embedding params + output layer, plus attention: ~55 GFLOPs/token at 2048."""
  cfg = model_preset("palm_8b")
  n = param_count(cfg, include_embedding=False) + cfg.vocab_size * cfg.d_model
  assert flops_per_token(cfg, 2048) == 6 * n + 12 * 32 * 16 * 256 * 2048


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_dot_product_attention_matches_einsum(kv_heads):
  """`jax.nn.dot_product_attention` (XLA implementation; "cudnn" needs a GPU) computes the same
  function as the einsum path, padding rows (fully masked) included."""
  cfg = TINY.replace(num_kv_heads=kv_heads)
  tokens, _, _ = _inputs(batch=1, length=24)
  segments = jnp.asarray([[1] * 8 + [2] * 12 + [0] * 4], jnp.int32)
  positions = jnp.asarray([list(range(8)) + list(range(12)) + [0] * 4], jnp.int32)
  variables = _init(cfg, tokens, positions, segments)
  a = Transformer(cfg).apply(variables, tokens, positions, segments)
  b = Transformer(cfg.replace(attention="xla")).apply(variables, tokens, positions, segments)
  assert np.isfinite(np.asarray(b)).all()
  np.testing.assert_allclose(np.asarray(b)[:, :20], np.asarray(a)[:, :20], rtol=1e-5, atol=1e-5)


def test_kernel_init_std_is_one_over_sqrt_fan_in():
  """PaLM init: every kernel ~ N(0, 1/fan_in) where fan_in is the contracted input width only."""
  cfg = model_preset("tiny", d_model=256, d_ff=1024, num_heads=8, num_kv_heads=2, head_dim=32, tie_embeddings=False)
  p = _init(cfg, *_inputs())["params"]
  fan_in = {"q": cfg.d_model, "kv": cfg.d_model, "o": cfg.num_heads * cfg.head_dim,
            "wi": cfg.d_model, "wo": cfg.d_ff}
  kernels = {**{k: p["layers"]["attn"][k] for k in ("q", "kv", "o")}, **{k: p["layers"]["mlp"][k] for k in ("wi", "wo")}}
  for name, w in kernels.items():
    np.testing.assert_allclose(float(np.std(w)) * fan_in[name] ** 0.5, 1.0, rtol=0.05, err_msg=name)
  np.testing.assert_allclose(float(np.std(p["unembed"])) * cfg.d_model ** 0.5, 1.0, rtol=0.05)
  np.testing.assert_allclose(float(np.std(p["embed"]["table"])), 1.0, rtol=0.05)  # embeddings ~ N(0, 1)


@pytest.mark.parametrize("name", ["palm", "llama"])
def test_dropout_only_with_a_dropout_rng(name):
  """Without a 'dropout' rng (evaluation, decoding) the model is exactly the dropout-free model; with one, the
  outputs change and depend on the key only; a rate of 0 ignores the rng."""
  cfg = VARIANTS[name]
  inputs = _inputs()
  variables = _init(cfg, *inputs)
  dropped = Transformer(cfg.replace(dropout_rate=0.3))
  plain = np.asarray(Transformer(cfg).apply(variables, *inputs))
  np.testing.assert_array_equal(np.asarray(dropped.apply(variables, *inputs)), plain)
  np.testing.assert_array_equal(
      np.asarray(Transformer(cfg).apply(variables, *inputs, rngs={"dropout": jax.random.key(1)})), plain)
  a = np.asarray(dropped.apply(variables, *inputs, rngs={"dropout": jax.random.key(1)}))
  b = np.asarray(dropped.apply(variables, *inputs, rngs={"dropout": jax.random.key(1)}))
  c = np.asarray(dropped.apply(variables, *inputs, rngs={"dropout": jax.random.key(2)}))
  np.testing.assert_array_equal(a, b)
  assert np.isfinite(a).all()
  assert np.abs(a - plain).max() > 1e-2 and np.abs(a - c).max() > 1e-2
  with pytest.raises(ValueError, match="dropout_rate"):
    cfg.replace(dropout_rate=1.0)
