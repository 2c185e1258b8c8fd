"""Cross-entropy with z-loss and per-token loss weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy_with_z_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                              z_loss: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Summed (not averaged) losses, so that microbatches add up exactly.

  Args:
    logits: [batch, length, vocab] float32.
    targets: [batch, length] int.
    weights: [batch, length] float; 0 where a token is not trained.
    z_loss: coefficient of log(Z)^2 (PaLM: 1e-4).

  Returns:
    (sum of weighted cross-entropy, sum of weighted z-loss, sum of weights), float32 scalars.
  """
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)  # [batch, length]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  weights = weights.astype(jnp.float32)
  trained = weights != 0  # masked, not multiplied: inf/NaN at an untrained position must not leak
  ce = jnp.sum(jnp.where(trained, (log_z - target_logit) * weights, 0.0))
  zl = jnp.sum(jnp.where(trained, z_loss * jnp.square(log_z) * weights, 0.0))
  return ce, zl, jnp.sum(weights)
