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
    # Gemma 2/3-style: every switch of today's checkpoints at once (the families' parity is audiopalm/hf's tests)
    "gemma3_all_switches": TINY.replace(
        block="sequential", norm="rmsnorm", norm_scale_plus_one=True, activation="geglu", embed_scale_by_sqrt_dim=True,
        logits_scale_by_inv_sqrt_dim=False, num_kv_heads=2, attn_logit_softcap=5.0, final_logit_softcap=3.0,
        sliding_window=4, layer_pattern="LG", rope_local_max_wavelength=1e4, rope_linear_factor=8.0, post_norms=True,
        qk_norm=True, qkv_bias=True),
}
FULL_SIZE = {  # published parameter counts (embeddings included)
    "gemma2_9b": 9_241_705_984, "gemma3_4b": 3_880_263_168,
    "qwen2_5_7b": 7_615_616_512, "qwen3_8b": 8_190_735_360, "llama3_1_8b": 8_030_261_248,
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


@pytest.mark.parametrize("name", ["palm_1b", "palm_8b", *FULL_SIZE])
def test_full_size_presets_eval_shape(name):
  """Full-size presets initialise abstractly (no allocation) with the expected (published) parameter count."""
  cfg = model_preset(name)
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  abstract = jax.eval_shape(lambda: nn.unbox(Transformer(cfg).init(jax.random.key(0), tokens, tokens, tokens)))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract)) == param_count(cfg)
  if name in FULL_SIZE:
    assert param_count(cfg) == FULL_SIZE[name]
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


def test_flops_per_token_counts_a_local_layers_window():
  cfg = model_preset("palm_8b")
  local = cfg.replace(sliding_window=512, layer_pattern="LG")
  assert flops_per_token(cfg, 2048) - flops_per_token(local, 2048) == 12 * 16 * 16 * 256 * (2048 - 512)


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


def _window_inputs(length=24):
  tokens, _, _ = _inputs(batch=1, length=length)
  segments = jnp.asarray([[1] * 9 + [2] * 11 + [0] * (length - 20)], jnp.int32)
  positions = jnp.asarray([list(range(9)) + list(range(11)) + [0] * (length - 20)], jnp.int32)
  return tokens, positions, segments


def test_local_layers_see_exactly_their_window():
  """With one local layer of window W, the logit at index p depends on tokens p-W+1..p of its segment only (a
  global layer sees them all): changing token j moves logits p >= j exactly while p - j < W."""
  cfg = TINY.replace(num_layers=1, sliding_window=4, layer_pattern="L", block="sequential")
  tokens, positions, segments = _window_inputs()
  variables = _init(cfg, tokens, positions, segments)
  a = np.asarray(Transformer(cfg).apply(variables, tokens, positions, segments))[0]
  b = np.asarray(Transformer(cfg).apply(variables, tokens.at[0, 10].set(3), positions, segments))[0]
  moved = np.abs(a - b).max(axis=-1) > 1e-6
  assert moved.tolist() == [10 <= p < 14 for p in range(24)][:20] + moved[20:].tolist()
  full = Transformer(cfg.replace(sliding_window=None, layer_pattern="G"))
  c = np.asarray(full.apply(variables, tokens, positions, segments))[0]
  d = np.asarray(full.apply(variables, tokens.at[0, 10].set(3), positions, segments))[0]
  assert (np.abs(c - d).max(axis=-1)[10:20] > 1e-6).all()  # to the end of segment 2


def test_scanned_flags_equal_unscanned_layers():
  """The per-layer kind and RoPE base carried as scanned data compute what per-layer Python flags do."""
  cfg = VARIANTS["gemma3_all_switches"]
  inputs = _window_inputs()
  variables = _init(cfg, *inputs)["params"]
  unscanned = {f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], variables["layers"]) for i in range(cfg.num_layers)}
  unscanned.update({k: v for k, v in variables.items() if k != "layers"})
  a = Transformer(cfg).apply({"params": variables}, *inputs)
  b = Transformer(cfg.replace(scan_layers=False)).apply({"params": unscanned}, *inputs)
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)  # float32, differently fused


def test_soft_caps_bound_the_logits():
  cfg = VARIANTS["gemma3_all_switches"]
  inputs = _inputs()
  logits = np.asarray(Transformer(cfg).apply(_init(cfg, *inputs), *inputs))
  assert np.abs(logits).max() <= 3.0 and np.abs(logits).max() > 2.9  # tanh saturates to 3.0 in float32


def test_xla_attention_honours_windows_and_caps():
  """attention='xla' computes the einsum path's function with local layers, soft-caps, biases and q/k norms
  (padding rows aside); 'cudnn' refuses the attention soft-cap before anything compiles."""
  cfg = VARIANTS["gemma3_all_switches"]
  inputs = _window_inputs()
  variables = _init(cfg, *inputs)
  a = Transformer(cfg).apply(variables, *inputs)
  b = Transformer(cfg.replace(attention="xla")).apply(variables, *inputs)
  np.testing.assert_allclose(np.asarray(b)[:, :20], np.asarray(a)[:, :20], rtol=1e-5, atol=1e-5)
  no_cap = cfg.replace(attn_logit_softcap=None)
  a = Transformer(no_cap).apply(variables, *inputs)
  b = Transformer(no_cap.replace(attention="xla")).apply(variables, *inputs)  # jax.nn.dot_product_attention
  np.testing.assert_allclose(np.asarray(b)[:, :20], np.asarray(a)[:, :20], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="cudnn.*soft-capping"):
    cfg.replace(attention="cudnn", dtype="bfloat16")


@pytest.mark.parametrize("change,message", [
    (dict(sliding_window=4), "a sliding_window needs local layers"),
    (dict(layer_pattern="LX", sliding_window=4), "layer_pattern must be a non-empty string of 'G'"),
    (dict(layer_pattern="L"), "local layers .'L'. need a sliding_window"),
    (dict(rope_local_max_wavelength=1e4), "needs local layers"),
    (dict(rope_linear_factor=2.0, rope_scaling=(8.0, 1.0, 4.0, 64.0)), "cannot be combined"),
    (dict(post_norms=True), "post_norms needs block='sequential'"),
    (dict(final_logit_softcap=0.0), "final_logit_softcap must be positive"),
])
def test_invalid_switches_fail_naming_the_field(change, message):
  with pytest.raises(ValueError, match=message):
    TINY.replace(**change)


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
