"""Cached decoding computes what the training forward computes: prefill + chunk + single steps == full forward."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer, init_cache

LOGIT_TOL = 1e-5  # max |cached - full| relative to the peak |logit| (float32)

TINY = model_preset("tiny")
LLAMA = TINY.replace(block="sequential", norm="rmsnorm", tie_embeddings=False, num_kv_heads=2,
                     logits_scale_by_inv_sqrt_dim=False)
CONFIGS = {
    "palm": TINY,
    "llama_gqa": LLAMA,
    "palm_unscanned_remat": TINY.replace(scan_layers=False, remat="full"),
    "llama_unscanned_xla": LLAMA.replace(scan_layers=False, attention="xla"),  # decode falls back to einsum
}
LENGTH, PREFILL, CHUNK, MAX_LEN = 12, 5, 2, 16
PROMPT_LENGTHS = np.array([5, 3], np.int32)  # row 1 is right-padded in the prefill


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_decoding_equals_full_forward(name):
  cfg = CONFIGS[name]
  seq = jnp.asarray(np.random.default_rng(0).integers(2, cfg.vocab_size, (2, LENGTH)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(LENGTH, dtype=jnp.int32), seq.shape)
  model = Transformer(cfg)
  variables = nn.unbox(model.init(jax.random.key(0), seq, positions, jnp.ones_like(seq)))
  full = np.asarray(model.apply(variables, seq, positions, jnp.ones_like(seq)))  # [batch, length, vocab]
  decode = jax.jit(lambda tokens, cache, num_new: model.apply(variables, tokens, cache, num_new,
                                                              method=Transformer.decode))

  rows = np.arange(2)[:, None]
  prefill = np.asarray(seq[:, :PREFILL]).copy()
  prefill[1, PROMPT_LENGTHS[1]:] = 1  # padding: written to the cache, then overwritten before it is visible
  logits, cache = decode(jnp.asarray(prefill), init_cache(cfg, 2, MAX_LEN), jnp.asarray(PROMPT_LENGTHS))
  got = {(b, p): logits[b, p] for b in range(2) for p in range(PROMPT_LENGTHS[b])}

  def feed(width: int):
    nonlocal cache
    index = np.asarray(cache.lengths)[:, None] + np.arange(width)  # [batch, width] cache indices
    tokens = np.asarray(seq)[rows, np.minimum(index, LENGTH - 1)]  # row 0 runs past the end: those are ignored
    logits, cache = decode(jnp.asarray(tokens), cache, jnp.full((2,), width, jnp.int32))
    got.update({(b, p): logits[b, t] for b in range(2) for t, p in enumerate(index[b]) if p < LENGTH})

  feed(CHUNK)
  for _ in range(LENGTH - CHUNK - PROMPT_LENGTHS.min()):  # until the shorter row reaches LENGTH
    feed(1)
  np.testing.assert_array_equal(np.asarray(cache.lengths), [LENGTH + 2, LENGTH])
  cached = np.stack([np.stack([got[b, p] for p in range(LENGTH)]) for b in range(2)])
  error, peak = float(np.abs(cached - full).max()), float(np.abs(full).max())
  assert error <= LOGIT_TOL * peak, f"max |cached - full| = {error:.3g}, peak |logit| = {peak:.3g}"


def test_logits_at_projects_one_token_per_row():
  cfg = TINY
  tokens = jnp.asarray(np.random.default_rng(1).integers(2, cfg.vocab_size, (2, 6)), jnp.int32)
  model = Transformer(cfg)
  variables = nn.unbox(model.init(jax.random.key(0), tokens, tokens, jnp.ones_like(tokens)))
  lengths = jnp.asarray([6, 2], jnp.int32)

  @jax.jit
  def both(tokens, lengths):
    every, cache = model.apply(variables, tokens, init_cache(cfg, 2, 8), lengths, method=Transformer.decode)
    last, _ = model.apply(variables, tokens, init_cache(cfg, 2, 8), lengths, lengths - 1, method=Transformer.decode)
    return every, last, cache.lengths

  every, last, cache_lengths = both(tokens, lengths)
  assert last.shape == (2, 1, cfg.vocab_size)
  np.testing.assert_allclose(np.asarray(last[:, 0]), np.asarray(every)[[0, 1], [5, 1]], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(cache_lengths), [6, 2])


def test_init_cache_layout():
  cfg = LLAMA.replace(num_layers=3)
  cache = init_cache(cfg, batch=4, max_len=32, dtype="bfloat16")
  assert cache.key.shape == cache.value.shape == (3, 4, 32, 2, cfg.head_dim) and cache.max_len == 32
  assert cache.key.dtype == jnp.bfloat16 and cache.lengths.dtype == jnp.int32
  with pytest.raises(ValueError, match="max_len"):
    init_cache(cfg, batch=4, max_len=0)
