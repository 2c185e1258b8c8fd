"""The decoder-only Transformer: blocks, layer stacking (scan + remat), logits."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiopalm.model.attention import Attention
from audiopalm.model.config import TransformerConfig
from audiopalm.model.layers import Embedding, GatedMLP, Norm, dtype_of, kernel_init
from audiopalm.sharding import axes
from audiopalm.sharding.rules import constrain

_ACT = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED)


class Block(nn.Module):
  """One Transformer layer: parallel (PaLM) or sequential (Llama/Gemma) attention + MLP."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array):
    """x: [batch, length, embed] -> (same, None); the tuple is the `nn.scan` carry/output."""
    cfg = self.cfg
    x = constrain(x, _ACT)
    if cfg.block == "parallel":
      h = Norm(cfg, name="norm")(x)
      x = x + Attention(cfg, name="attn")(h, positions, segment_ids) + GatedMLP(cfg, name="mlp")(h)
    else:
      x = x + Attention(cfg, name="attn")(Norm(cfg, name="attn_norm")(x), positions, segment_ids)
      x = x + GatedMLP(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x))
    return constrain(x, _ACT), None


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
  """

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    self.embed = Embedding(cfg)
    block = Block
    if cfg.remat != "none":
      block = nn.remat(block, policy=_remat_policy(cfg.remat), prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: axes.LAYERS})
      self.layers = stack(cfg)
    else:
      self.blocks = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
    self.final_norm = Norm(cfg)
    if not cfg.tie_embeddings:
      self.unembed = self.param("unembed", nn.with_logical_partitioning(kernel_init((0,)), (axes.EMBED, axes.VOCAB)),
                                (cfg.d_model, cfg.vocab_size), dtype_of(cfg.param_dtype))

  def __call__(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """tokens, positions, segment_ids: [batch, length] int32 -> logits [batch, length, vocab] float32."""
    return self.project(self.hidden(tokens, positions, segment_ids))

  def hidden(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """Final normalised hidden states [batch, length, embed]."""
    x = constrain(self.embed(tokens), _ACT)  # [batch, length, embed]
    if self.cfg.scan_layers:
      x, _ = self.layers(x, positions, segment_ids)
    else:
      for block in self.blocks:
        x, _ = block(x, positions, segment_ids)
    return self.final_norm(x)

  def project(self, x: jax.Array) -> jax.Array:
    """Hidden states [batch, length, embed] -> logits [batch, length, vocab] (float32)."""
    cfg = self.cfg
    if cfg.tie_embeddings:
      logits = self.embed.attend(x)
      if cfg.logits_scale_by_inv_sqrt_dim:
        logits = logits * jnp.asarray(cfg.d_model ** -0.5, logits.dtype)
    else:
      logits = jnp.einsum("BTD,DV->BTV", x, self.unembed.astype(dtype_of(cfg.dtype)))
    logits = constrain(logits, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_VOCAB))
    return logits.astype(jnp.float32)
