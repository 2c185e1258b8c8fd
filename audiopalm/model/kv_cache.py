"""The key/value cache of autoregressive decoding: fixed-shape buffers plus each row's filled length.

One cache serves every decode step, so a single compiled step runs them all. `Transformer.decode(tokens,
cache, num_new)` writes the keys/values of the T new tokens of row b at cache indices
`lengths[b] .. lengths[b] + T - 1`, gives them those indices as RoPE positions, lets a query at index p attend
to the cache indices j <= p of its row, and advances `lengths[b]` by `num_new[b]` (default T).

Invariant (what makes right-padded prompts safe): entries at indices >= `lengths[b]` are stale — a right-padded
prefill writes its padding there, and `num_new[b]` (the real prompt length) does not count it. They are never
read: the next call writes its own tokens at `lengths[b]..` before attending, and its queries see only indices
up to their own. The padding's own outputs (logits at padded positions) are meaningless and must be ignored.
Callers keep `lengths + T <= max_len`; writes past the end are dropped.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from audiopalm.model.config import DType, TransformerConfig
from audiopalm.model.layers import dtype_of
from audiopalm.sharding import axes

# [layers, batch, max_len, kv_heads, head_dim]: batch and kv heads shard like activations.
KV_AXES = (None, axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_KV_HEADS, None)
LENGTHS_AXES = (axes.ACT_BATCH,)


class KVCache(flax.struct.PyTreeNode):
  """Per-layer key/value buffers, stacked over layers (the layout of `nn.scan`; unscanned models index it).

  Attributes:
    key: [layers, batch, max_len, kv_heads, head_dim] RoPE-rotated keys.
    value: [layers, batch, max_len, kv_heads, head_dim].
    lengths: [batch] int32, tokens already in each row (entries at indices >= lengths are stale).
  """

  key: jax.Array
  value: jax.Array
  lengths: jax.Array

  @property
  def max_len(self) -> int:
    return self.key.shape[2]


def init_cache(cfg: TransformerConfig, batch: int, max_len: int, dtype: DType | None = None) -> KVCache:
  """An empty cache for `batch` rows of up to `max_len` tokens; `dtype` defaults to the compute dtype."""
  if batch < 1 or max_len < 1:
    raise ValueError(f"init_cache: batch ({batch}) and max_len ({max_len}) must be positive")
  shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
  dt = dtype_of(dtype or cfg.dtype)
  return KVCache(key=jnp.zeros(shape, dt), value=jnp.zeros(shape, dt), lengths=jnp.zeros((batch,), jnp.int32))


def cache_logical_axes() -> KVCache:
  """The cache's logical axis names (a KVCache of PartitionSpecs), for `audiopalm.sharding.rules`."""
  return KVCache(key=PartitionSpec(*KV_AXES), value=PartitionSpec(*KV_AXES), lengths=PartitionSpec(*LENGTHS_AXES))
