"""The decoder-only Transformer: blocks, layer stacking (scan + remat), logits, and cached decoding."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiopalm.model.attention import Attention, LayerKV
from audiopalm.model.config import TransformerConfig
from audiopalm.model.kv_cache import KVCache
from audiopalm.model.layers import Embedding, GatedMLP, Norm, cap_logits, dtype_of, kernel_init
from audiopalm.sharding import axes
from audiopalm.sharding.rules import constrain

_ACT = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED)


def _dropout(module: nn.Module, rate: float, x: jax.Array) -> jax.Array:
  """Dropout of `x` when `rate` > 0 and `module` was applied with a 'dropout' rng (training); else `x`."""
  if rate == 0.0 or not module.has_rng("dropout"):
    return x
  keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
  return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


class Block(nn.Module):
  """One Transformer layer: parallel (PaLM) or sequential (Llama/Gemma) attention + MLP."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None,
               kv: LayerKV | None = None, is_local: jax.Array | bool = False) -> tuple[jax.Array, LayerKV | None]:
    """x: [batch, length, embed] -> (same, updated `kv`); the tuple is the `nn.scan` carry/output.

    Training: `kv` None, attention masked by `segment_ids`. Decoding: `kv` is this layer's cache, `positions`
    the new tokens' cache indices, `segment_ids` unused (see `Attention.decode`). `is_local`: this layer's kind
    (scanned with the layers: a traced bool). Each residual branch goes through dropout (`cfg.dropout_rate`) when
    a 'dropout' rng is given; with `post_norms` it is normalised before that (Gemma 2/3's sandwich).
    """
    cfg = self.cfg
    attn = Attention(cfg, name="attn")

    def attend(h: jax.Array) -> tuple[jax.Array, LayerKV | None]:
      if kv is None:
        return attn(h, positions, segment_ids, is_local), None
      return attn.decode(h, positions, kv, is_local)

    def branch(out: jax.Array, post_norm: str) -> jax.Array:
      return _dropout(self, cfg.dropout_rate, Norm(cfg, name=post_norm)(out) if cfg.post_norms else out)

    x = constrain(x, _ACT)
    if cfg.block == "parallel":
      h = Norm(cfg, name="norm")(x)
      a, new_kv = attend(h)
      x = x + _dropout(self, cfg.dropout_rate, a) + _dropout(self, cfg.dropout_rate, GatedMLP(cfg, name="mlp")(h))
    else:
      a, new_kv = attend(Norm(cfg, name="attn_norm")(x))
      x = x + branch(a, "attn_post_norm")
      x = x + branch(GatedMLP(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x)), "mlp_post_norm")
    return constrain(x, _ACT), new_kv


def _remat_policy(name: str):
  return {
      "full": jax.checkpoint_policies.nothing_saveable,
      "dots": jax.checkpoint_policies.checkpoint_dots,
      "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
  }[name]


class Transformer(nn.Module):
  """Decoder-only language model.

  `__call__(tokens, positions, segment_ids) -> logits [batch, length, vocab]` (float32), which is
  `project(hidden(tokens, positions, segment_ids))`; the two halves are separate methods so the
  loss can project chunks of the sequence at a time (`model.apply(..., method=Transformer.project)`).
  `decode(tokens, cache, num_new) -> (logits, cache)` runs new tokens against a `KVCache` (autoregressive
  decoding; same parameters, same math).
  """

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    self.embed = Embedding(cfg)
    block = Block
    if cfg.remat != "none":
      block = nn.remat(block, policy=_remat_policy(cfg.remat), prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast, nn.broadcast, 0, 0), length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: axes.LAYERS})
      self.layers = stack(cfg)
    else:
      self.blocks = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
    self.final_norm = Norm(cfg)
    if not cfg.tie_embeddings:
      self.unembed = self.param("unembed", nn.with_logical_partitioning(kernel_init((0,)), (axes.EMBED, axes.VOCAB)),
                                (cfg.d_model, cfg.vocab_size), dtype_of(cfg.param_dtype))

  def __call__(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """tokens, positions, segment_ids: [batch, length] int32 (tokens [batch, length, streams] with
    `stream_vocab`) -> logits [batch, length, vocab] float32 (each stream reads its own range of them)."""
    return self.project(self.hidden(tokens, positions, segment_ids))

  def hidden(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """Final normalised hidden states [batch, length, embed]."""
    x, _ = self._stack(tokens, positions, segment_ids, None)
    return x

  def decode(self, tokens: jax.Array, cache: KVCache, num_new: jax.Array | None = None,
             logits_at: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
    """Runs new tokens against the cache (see `audiopalm.model.kv_cache` for the layout and invariant).

    Args:
      tokens: [batch, length] int32, the new tokens of each row, written at cache indices
        `cache.lengths[b] ..` and rotated with those indices as positions.
      cache: the KVCache (fixed shapes: one compiled step serves every decode step).
      num_new: [batch] int32, how many of the new tokens are real (a right-padded prefill); None = all.
      logits_at: [batch] int32, project only this new token of each row (e.g. a prefill's last real one), so
        a long prompt never materialises [batch, length, vocab] logits; None = every new token.
    Returns:
      (logits [batch, length or 1, vocab] float32, the cache holding these tokens, lengths + num_new).
    """
    positions = cache.lengths[:, None] + jnp.arange(tokens.shape[1], dtype=jnp.int32)  # [batch, length]
    x, (key, value) = self._stack(tokens, positions, None, (cache.key, cache.value))
    if logits_at is not None:
      x = jnp.take_along_axis(x, logits_at[:, None, None], axis=1)  # [batch, 1, embed]
    added = tokens.shape[1] if num_new is None else num_new
    return self.project(x), KVCache(key=key, value=value, lengths=cache.lengths + added)

  def _stack(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array | None,
             kv: LayerKV | None) -> tuple[jax.Array, LayerKV | None]:
    """Embedding, layers, final norm -> ([batch, length, embed], updated `kv`).

    kv: None (training) or every layer's (key, value) buffers, stacked [layers, batch, max_len, kv_heads, head_dim].
    """
    if self.cfg.stream_vocab:  # tokens [batch, length, streams]: the sum of the streams' embeddings
      if tokens.ndim != 3 or tokens.shape[-1] != self.cfg.token_streams:
        raise ValueError(f"a model of {self.cfg.token_streams} streams takes tokens [batch, length, "
                         f"{self.cfg.token_streams}], got {tokens.shape}")
      embedded = jnp.sum(self.embed(tokens), axis=2)  # [batch, length, streams, embed] -> [batch, length, embed]
    else:
      embedded = self.embed(tokens)
    x = constrain(_dropout(self, self.cfg.dropout_rate, embedded), _ACT)  # [batch, length, embed]
    is_local = self.cfg.layer_is_local()
    if self.cfg.scan_layers:
      x, kv = self.layers(x, positions, segment_ids, kv, jnp.asarray(is_local))  # the flags scan with the layers
    else:
      new = []
      for i, block in enumerate(self.blocks):
        x, layer_kv = block(x, positions, segment_ids, None if kv is None else (kv[0][i], kv[1][i]), is_local[i])
        new.append(layer_kv)
      kv = None if kv is None else tuple(jnp.stack(buffers) for buffers in zip(*new))
    return self.final_norm(x), kv

  def project(self, x: jax.Array) -> jax.Array:
    """Hidden states [batch, length, embed] -> logits [batch, length, vocab] (float32; soft-capped with
    `final_logit_softcap`)."""
    cfg = self.cfg
    if cfg.tie_embeddings:
      logits = self.embed.attend(x)
      if cfg.logits_scale_by_inv_sqrt_dim:
        logits = logits * jnp.asarray(cfg.d_model ** -0.5, logits.dtype)
    else:
      logits = jnp.einsum("BTD,DV->BTV", x, self.unembed.astype(dtype_of(cfg.dtype)))
    logits = constrain(logits, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_VOCAB)).astype(jnp.float32)
    if cfg.final_logit_softcap is not None:  # Gemma 2: c * tanh(logits / c)
      logits = cap_logits(logits, cfg.final_logit_softcap)
    return logits
