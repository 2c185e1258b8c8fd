"""Cross-entropy with z-loss and per-token loss weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def stream_targets(targets: jax.Array, start: int, end: int) -> tuple[jax.Array, jax.Array]:
  """One stream's targets as indices into its head, the logits [start, end) (clipped into range), and a bool mask
  of the targets that fall inside it (the others are never scored)."""
  return jnp.clip(targets - start, 0, end - start - 1), (targets >= start) & (targets < end)


def cross_entropy_with_z_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array, z_loss: float,
                              stream_vocab: tuple[tuple[int, int], ...] = ()) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Summed (not averaged) losses, so that microbatches add up exactly.

  Args:
    logits: [batch, length, vocab] float32.
    targets: [batch, length] int; [batch, length, streams] with `stream_vocab`.
    weights: the shape of targets, float; 0 where a token is not trained.
    z_loss: coefficient of log(Z)^2 (PaLM: 1e-4).
    stream_vocab: multi-stream targets (`TransformerConfig.stream_vocab`): stream s is a softmax over the logits
      [start_s, end_s) only, its own output head; each stream's loss and z-loss count like a token's.

  Returns:
    (sum of weighted cross-entropy, sum of weighted z-loss, sum of weights), float32 scalars.
  """
  if stream_vocab:
    if targets.shape[-1:] != (len(stream_vocab),) or targets.ndim != logits.ndim:
      raise ValueError(f"{len(stream_vocab)} streams need targets [batch, length, {len(stream_vocab)}], got "
                       f"{targets.shape}")
    sums = []
    for s, (start, end) in enumerate(stream_vocab):
      local, inside = stream_targets(targets[..., s], start, end)
      sums.append(cross_entropy_with_z_loss(logits[..., start:end], local, jnp.where(inside, weights[..., s], 0.0),
                                            z_loss))
    return tuple(sum(parts[1:], parts[0]) for parts in zip(*sums))  # type: ignore[return-value]
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)  # [batch, length]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  weights = weights.astype(jnp.float32)
  trained = weights != 0  # masked, not multiplied: inf/NaN at an untrained position must not leak
  ce = jnp.sum(jnp.where(trained, (log_z - target_logit) * weights, 0.0))
  zl = jnp.sum(jnp.where(trained, z_loss * jnp.square(log_z) * weights, 0.0))
  return ce, zl, jnp.sum(weights)
