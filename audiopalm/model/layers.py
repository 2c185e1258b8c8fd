"""Building blocks of the decoder: normalisation, RoPE, gated MLP, embedding.

Every parameter carries logical axis names (`audiopalm.sharding.axes`); no
layer has a bias (PaLM; Qwen2's q/k/v biases live in `attention`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiopalm.model.config import TransformerConfig
from audiopalm.sharding import axes
from audiopalm.sharding.rules import constrain


def dtype_of(name: str) -> jnp.dtype:
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]


def kernel_init(fan_in_axes: tuple[int, ...] = (0,)) -> nn.initializers.Initializer:
  """PaLM: kernels ~ N(0, 1/fan_in) (truncated normal), fan-in = product of `fan_in_axes` only.

  Every other axis is an output axis (flax's `variance_scaling` would count axes that are
  neither `in_axis` nor `out_axis` as extra fan-in, shrinking e.g. a [embed, heads, head_dim]
  query kernel by 1/sqrt(heads)).
  """
  def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    out_axes = tuple(i for i in range(len(shape)) if i not in fan_in_axes)
    return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=fan_in_axes,
                                            out_axis=out_axes)(key, shape, dtype)
  return init


def cap_logits(logits: jax.Array, cap: float) -> jax.Array:
  """Soft-capping (Gemma 2): cap * tanh(logits / cap), smooth and bounded by +-cap."""
  return cap * jnp.tanh(logits / cap)


class Norm(nn.Module):
  """LayerNorm without bias (PaLM) or RMSNorm (Llama/Gemma) over the last axis, computed in float32.

  dim: the normalised width: d_model (default), or head_dim for the per-head query/key norms (`qk_norm`).
  """

  cfg: TransformerConfig
  dim: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [..., dim] -> same
    cfg = self.cfg
    init = nn.initializers.zeros if cfg.norm_scale_plus_one else nn.initializers.ones
    dim, axis = (cfg.d_model, axes.NORM) if self.dim is None else (self.dim, axes.HEAD_DIM)
    scale = self.param("scale", nn.with_logical_partitioning(init, (axis,)), (dim,), dtype_of(cfg.param_dtype))
    x32 = x.astype(jnp.float32)
    if cfg.norm == "layernorm":
      x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + cfg.norm_eps)
    scale = scale.astype(jnp.float32)
    if cfg.norm_scale_plus_one:
      scale = 1.0 + scale
    return (y * scale).astype(dtype_of(cfg.dtype))


def rope_inv_freq(head_dim: int, max_wavelength: float,
                  scaling: tuple[float, float, float, float] | None = None, linear_factor: float = 1.0) -> jax.Array:
  """[head_dim / 2] RoPE inverse frequencies; `scaling` = Llama 3's (factor, low_freq_factor, high_freq_factor,
  original_max_position_embeddings): long wavelengths are divided by `factor`, short ones kept, the band between
  interpolated smoothly (as `transformers`' 'llama3' rope type); `linear_factor` divides every frequency
  (transformers' 'linear' rope type)."""
  fraction = 2.0 * jnp.arange(head_dim // 2, dtype=jnp.float32) / head_dim
  inv_freq = 1.0 / (max_wavelength ** fraction)
  if linear_factor != 1.0:
    inv_freq = inv_freq / linear_factor
  if scaling is None:
    return inv_freq
  factor, low, high, original = scaling
  wavelen = 2.0 * jnp.pi / inv_freq
  scaled = jnp.where(wavelen > original / low, inv_freq / factor, inv_freq)
  smooth = (original / wavelen - low) / (high - low)
  smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= original / high) & (wavelen <= original / low)
  return jnp.where(medium, smoothed, scaled)


def layer_inv_freq(cfg: TransformerConfig, is_local: jax.Array | bool) -> jax.Array:
  """[head_dim / 2] RoPE inverse frequencies of a layer: the global ones (rope_max_wavelength, rope_scaling,
  rope_linear_factor), or a local layer's own plain ones when `rope_local_max_wavelength` is set. `is_local` may
  be traced (the layer flag scanned with the layers)."""
  inv_global = rope_inv_freq(cfg.head_dim, cfg.rope_max_wavelength, cfg.rope_scaling, cfg.rope_linear_factor)
  if cfg.rope_local_max_wavelength is None:
    return inv_global
  return jnp.where(is_local, rope_inv_freq(cfg.head_dim, cfg.rope_local_max_wavelength), inv_global)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotary position embedding, rotate-half convention (as in HF Llama/Gemma).

  Args:
    x: [batch, length, heads, head_dim]
    positions: [batch, length] int, per-segment positions.
    inv_freq: [head_dim / 2] inverse frequencies (`rope_inv_freq`, `layer_inv_freq`).
  """
  angles = positions.astype(jnp.float32)[:, :, None, None] * inv_freq  # [batch, length, 1, head_dim / 2]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class GatedMLP(nn.Module):
  """SwiGLU (PaLM/Llama) or GeGLU (Gemma): down(act(gate(x)) * up(x))."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [batch, length, embed] -> same
    cfg = self.cfg
    dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    wi = self.param("wi", nn.with_logical_partitioning(kernel_init((0,)), (axes.EMBED, None, axes.MLP)),
                    (cfg.d_model, 2, cfg.d_ff), pdt)  # [embed, gate|up, mlp]
    wo = self.param("wo", nn.with_logical_partitioning(kernel_init((0,)), (axes.MLP, axes.EMBED)),
                    (cfg.d_ff, cfg.d_model), pdt)
    h = jnp.einsum("BTD,DKF->BTKF", x.astype(dt), wi.astype(dt))  # [batch, length, 2, mlp]
    gate, up = h[:, :, 0], h[:, :, 1]
    act = jax.nn.silu(gate) if cfg.activation == "swiglu" else jax.nn.gelu(gate, approximate=True)
    h = constrain(act * up, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP))
    return jnp.einsum("BTF,FD->BTD", h, wo.astype(dt))


class Embedding(nn.Module):
  """Token embedding; also the tied output layer (`attend`)."""

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    # PaLM: embeddings ~ N(0, 1).
    self.table = self.param("table", nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                                  (axes.VOCAB, axes.EMBED)),
                            (cfg.vocab_size, cfg.d_model), dtype_of(cfg.param_dtype))

  def __call__(self, tokens: jax.Array) -> jax.Array:  # [batch, length] int -> [batch, length, embed]
    cfg = self.cfg
    # Gather from a table whose embed dim is whole (FSDP all-gathers it, as for any weight), so the
    # lookup is partitioned along the batch of `tokens`; an embed-sharded gather output cannot be
    # resharded to batch-sharded activations without replicating it.
    table = constrain(self.table.astype(dtype_of(cfg.dtype)), (axes.VOCAB, None))
    x = jnp.take(table, tokens, axis=0)
    if cfg.embed_scale_by_sqrt_dim:
      x = x * jnp.asarray(cfg.d_model ** 0.5, dtype_of(cfg.dtype))
    return x

  def attend(self, x: jax.Array) -> jax.Array:  # [batch, length, embed] -> [batch, length, vocab]
    dt = dtype_of(self.cfg.dtype)
    return jnp.einsum("BTD,VD->BTV", x.astype(dt), self.table.astype(dt))
