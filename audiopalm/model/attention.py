"""Causal self-attention: multi-query (PaLM), grouped-query or multi-head, with RoPE.

Packed sequences: a token attends only to earlier tokens of its own segment
(same `segment_ids`, nonzero); positions restart at every segment.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiopalm.model.config import TransformerConfig
from audiopalm.model.layers import apply_rope, dtype_of, kernel_init
from audiopalm.sharding import axes
from audiopalm.sharding.rules import constrain

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_mask(segment_ids: jax.Array) -> jax.Array:
  """[batch, length] segment ids (0 = padding) -> [batch, 1, 1, q_len, kv_len] bool."""
  length = segment_ids.shape[1]
  causal = jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  real = (segment_ids != 0)[:, :, None]
  return (causal[None] & same & real)[:, None, None]


class Attention(nn.Module):
  """Self-attention with `num_kv_heads` key/value heads shared by groups of query heads."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """x: [batch, length, embed]; positions, segment_ids: [batch, length] -> [batch, length, embed]."""
    cfg = self.cfg
    dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    g = n // k
    wq = self.param("q", nn.with_logical_partitioning(kernel_init((0,)), (axes.EMBED, axes.HEADS, axes.HEAD_DIM)),
                    (cfg.d_model, n, h), pdt)
    wkv = self.param("kv", nn.with_logical_partitioning(
        kernel_init((0,)), (axes.EMBED, None, axes.KV_HEADS, axes.HEAD_DIM)), (cfg.d_model, 2, k, h), pdt)
    wo = self.param("o", nn.with_logical_partitioning(
        kernel_init((0, 1)), (axes.HEADS, axes.HEAD_DIM, axes.EMBED)), (n, h, cfg.d_model), pdt)

    x = x.astype(dt)
    q = jnp.einsum("BTD,DNH->BTNH", x, wq.astype(dt))  # [batch, length, heads, head_dim]
    kv = jnp.einsum("BSD,DCKH->BSCKH", x, wkv.astype(dt))  # [batch, length, 2, kv_heads, head_dim]
    key, value = kv[:, :, 0], kv[:, :, 1]
    q = constrain(q, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, None))
    q = apply_rope(q, positions, cfg.rope_max_wavelength, cfg.rope_scaling)
    key = apply_rope(key, positions, cfg.rope_max_wavelength, cfg.rope_scaling)
    scale = cfg.query_scale if cfg.query_scale is not None else h ** -0.5
    q = q * jnp.asarray(scale, dt)

    b, t = x.shape[:2]
    mask = attention_mask(segment_ids)  # [batch, 1, 1, length, length]
    if cfg.attention in ("xla", "cudnn"):
      # [batch, length, heads, head_dim]; kv heads are shared by groups of query heads (GQA/MQA).
      out = jax.nn.dot_product_attention(q, key, value, mask=mask[:, :, 0], scale=1.0,
                                         implementation=cfg.attention)
    else:
      q = q.reshape(b, t, k, g, h)  # [batch, length, kv_heads, group, head_dim]
      logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, key, preferred_element_type=jnp.float32)
      logits = jnp.where(mask, logits, _MASK_VALUE)
      probs = jax.nn.softmax(logits, axis=-1).astype(dt)  # [batch, kv_heads, group, length, length]
      out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, value).reshape(b, t, n, h)
    out = constrain(out, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, None))
    return jnp.einsum("BTNH,NHD->BTD", out, wo.astype(dt))
