"""Causal self-attention: multi-query (PaLM), grouped-query or multi-head, with RoPE.

Packed sequences: a token attends only to earlier tokens of its own segment
(same `segment_ids`, nonzero); positions restart at every segment.

Local layers (`cfg.sliding_window` W, `cfg.layer_pattern`): a query at index p also needs the key's index
j > p - W, so it sees at most the W latest tokens, itself included (transformers' sliding window). Within a
packed segment indices and positions advance together, so the index-based window is the positional one. The
window is part of the boolean mask handed to every implementation, and the layer's flag may be traced (scanned
with the layers), so local and global layers share one compiled block.

Options of today's checkpoints: q/k/v biases (Qwen2), RMSNorm of each query and key head before RoPE (Qwen3,
Gemma 3), attention-logit soft-capping c * tanh(logits / c) before the mask (Gemma 2: einsum arithmetic, which
attention='xla' then uses too; 'cudnn' refuses it in the config).

Decoding (`Attention.decode`) appends the new tokens' keys/values to a per-layer cache and attends over it with
the same einsum math (see `audiopalm.model.kv_cache` for the cache's layout and invariant).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiopalm.model.config import TransformerConfig
from audiopalm.model.layers import Norm, apply_rope, cap_logits, dtype_of, kernel_init, layer_inv_freq
from audiopalm.sharding import axes
from audiopalm.sharding.rules import constrain

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)

LayerKV = tuple[jax.Array, jax.Array]  # one layer's (key, value) buffers, each [batch, max_len, kv_heads, head_dim]


def _window(q_index: jax.Array, kv_index: jax.Array, window: int | None,
            is_local: jax.Array | bool) -> jax.Array | bool:
  """[..., q_len, kv_len] bool: key index inside the query's window (j > p - window), or True for a global layer;
  q_index [..., q_len], kv_index [kv_len]."""
  if window is None:
    return True
  inside = kv_index[None, :] > q_index[..., :, None] - window
  return inside | jnp.logical_not(is_local)


def attention_mask(segment_ids: jax.Array, window: int | None = None,
                   is_local: jax.Array | bool = False) -> jax.Array:
  """[batch, length] segment ids (0 = padding) -> [batch, 1, 1, q_len, kv_len] bool; a local layer (`is_local`,
  possibly traced) also needs the key within `window` tokens of the query."""
  length = segment_ids.shape[1]
  index = jnp.arange(length)
  causal = (index[None, :] <= index[:, None]) & _window(index, index, window, is_local)  # [q_len, kv_len]
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  real = (segment_ids != 0)[:, :, None]
  return (causal[None] & same & real)[:, None, None]


def cache_mask(positions: jax.Array, max_len: int, window: int | None = None,
               is_local: jax.Array | bool = False) -> jax.Array:
  """[batch, length] cache indices of the queries -> [batch, 1, 1, q_len, max_len] bool: index j <= query's (and,
  in a local layer, j > query's - window)."""
  index = jnp.arange(max_len)
  mask = (index[None, None, :] <= positions[:, :, None]) & _window(positions, index, window, is_local)
  return mask[:, None, None]


def write_cache(buffer: jax.Array, new: jax.Array, positions: jax.Array) -> jax.Array:
  """Writes new[b, t] at buffer[b, positions[b, t]] (indices past the end are dropped).

  buffer: [batch, max_len, kv_heads, head_dim]; new: [batch, length, kv_heads, head_dim]; positions: [batch, length].
  """
  rows = jnp.arange(buffer.shape[0])[:, None]  # [batch, 1]
  return buffer.at[rows, positions].set(new.astype(buffer.dtype), mode="drop", unique_indices=True)


class Attention(nn.Module):
  """Self-attention with `num_kv_heads` key/value heads shared by groups of query heads."""

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    pdt = dtype_of(cfg.param_dtype)
    n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.wq = self.param("q", nn.with_logical_partitioning(kernel_init((0,)), (axes.EMBED, axes.HEADS, axes.HEAD_DIM)),
                         (cfg.d_model, n, h), pdt)
    self.wkv = self.param("kv", nn.with_logical_partitioning(
        kernel_init((0,)), (axes.EMBED, None, axes.KV_HEADS, axes.HEAD_DIM)), (cfg.d_model, 2, k, h), pdt)
    self.wo = self.param("o", nn.with_logical_partitioning(
        kernel_init((0, 1)), (axes.HEADS, axes.HEAD_DIM, axes.EMBED)), (n, h, cfg.d_model), pdt)
    if cfg.qkv_bias:
      self.q_bias = self.param("q_bias", nn.with_logical_partitioning(nn.initializers.zeros, (axes.HEADS, axes.HEAD_DIM)),
                               (n, h), pdt)
      self.kv_bias = self.param("kv_bias", nn.with_logical_partitioning(
          nn.initializers.zeros, (None, axes.KV_HEADS, axes.HEAD_DIM)), (2, k, h), pdt)
    if cfg.qk_norm:
      self.q_norm = Norm(cfg, dim=h)
      self.k_norm = Norm(cfg, dim=h)

  def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array,
               is_local: jax.Array | bool = False) -> jax.Array:
    """x: [batch, length, embed]; positions, segment_ids: [batch, length]; is_local: this layer is local (a bool
    or a traced scalar) -> [batch, length, embed]."""
    q, key, value = self._qkv(x, positions, is_local)
    mask = attention_mask(segment_ids, self.cfg.sliding_window, is_local)  # [batch, 1, 1, length, length]
    return self._output(self._attend(q, key, value, mask, self.cfg.attention))

  def decode(self, x: jax.Array, positions: jax.Array, kv: LayerKV,
             is_local: jax.Array | bool = False) -> tuple[jax.Array, LayerKV]:
    """Attention of new tokens over the cache, after writing their keys/values into it.

    x: [batch, length, embed] new tokens; positions: [batch, length] their cache indices (= RoPE positions);
    kv: this layer's cache buffers (a local layer keeps every entry and masks those before its window). Returns
    ([batch, length, embed], updated buffers). Always the einsum path: `jax.nn.dot_product_attention`
    (attention='xla'/'cudnn') is for training-shaped (square, segment) masks.
    """
    q, key, value = self._qkv(x, positions, is_local)
    cache_key, cache_value = write_cache(kv[0], key, positions), write_cache(kv[1], value, positions)
    dt = dtype_of(self.cfg.dtype)
    mask = cache_mask(positions, cache_key.shape[1], self.cfg.sliding_window, is_local)  # [batch, 1, 1, length, max_len]
    out = self._attend(q, cache_key.astype(dt), cache_value.astype(dt), mask, "einsum")
    return self._output(out), (cache_key, cache_value)

  def _qkv(self, x: jax.Array, positions: jax.Array,
           is_local: jax.Array | bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Scaled, rotated queries [batch, length, heads, head_dim]; rotated keys and values [batch, length, kv_heads,
    head_dim]. Order: projection (+ bias), per-head norm, RoPE (the layer's frequencies), query scale."""
    cfg = self.cfg
    dt = dtype_of(cfg.dtype)
    x = x.astype(dt)
    q = jnp.einsum("BTD,DNH->BTNH", x, self.wq.astype(dt))  # [batch, length, heads, head_dim]
    kv = jnp.einsum("BSD,DCKH->BSCKH", x, self.wkv.astype(dt))  # [batch, length, 2, kv_heads, head_dim]
    if cfg.qkv_bias:
      q, kv = q + self.q_bias.astype(dt), kv + self.kv_bias.astype(dt)
    key, value = kv[:, :, 0], kv[:, :, 1]
    if cfg.qk_norm:
      q, key = self.q_norm(q), self.k_norm(key)
    q = constrain(q, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, None))
    inv_freq = layer_inv_freq(cfg, is_local)  # [head_dim / 2]
    q, key = apply_rope(q, positions, inv_freq), apply_rope(key, positions, inv_freq)
    scale = cfg.query_scale if cfg.query_scale is not None else cfg.head_dim ** -0.5
    return q * jnp.asarray(scale, dt), key, value

  def _attend(self, q: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array, implementation: str) -> jax.Array:
    """q: [batch, length, heads, head_dim]; key, value: [batch, kv_len, kv_heads, head_dim];
    mask: [batch, 1, 1, length, kv_len] -> [batch, length, heads, head_dim]."""
    cfg = self.cfg
    b, t, n, h = q.shape
    k, g = cfg.num_kv_heads, n // cfg.num_kv_heads
    if implementation in ("xla", "cudnn") and cfg.attn_logit_softcap is None:
      # Kv heads are shared by groups of query heads (GQA/MQA).
      return jax.nn.dot_product_attention(q, key, value, mask=mask[:, :, 0], scale=1.0, implementation=implementation)
    q = q.reshape(b, t, k, g, h)  # [batch, length, kv_heads, group, head_dim]
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, key, preferred_element_type=jnp.float32)
    if cfg.attn_logit_softcap is not None:
      logits = cap_logits(logits, cfg.attn_logit_softcap)
    logits = jnp.where(mask, logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype_of(cfg.dtype))  # [batch, kv_heads, group, length, kv_len]
    return jnp.einsum("BKGTS,BSKH->BTKGH", probs, value).reshape(b, t, n, h)

  def _output(self, out: jax.Array) -> jax.Array:
    """[batch, length, heads, head_dim] -> [batch, length, embed]."""
    dt = dtype_of(self.cfg.dtype)
    out = constrain(out, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, None))
    return jnp.einsum("BTNH,NHD->BTD", out, self.wo.astype(dt))
