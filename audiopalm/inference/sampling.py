"""Choosing the next token from logits: greedy, temperature, top-k, top-p, and modality constraints.

`sample` applies, in order: the allowed-token mask (constrained decoding), then greedy argmax when
`temperature == 0`, else temperature, top-k, top-p (the order of Hugging Face's `generate`) and a categorical
draw. Filtered tokens get logit -inf, so they are never drawn.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from audiopalm.vocab.spec import VocabSpec

TEXT = "text"


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How the next token is chosen.

  Attributes:
    temperature: 0 = greedy (argmax; top_k / top_p ignored); otherwise logits are divided by it.
    top_k: keep only the k most likely tokens (ties broken towards the lower id); None = all.
    top_p: keep the smallest set of most likely tokens whose probability sums to at least top_p (nucleus
      sampling; the most likely token is always kept); None = all.
  """

  temperature: float = 0.0
  top_k: int | None = None
  top_p: float | None = None

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"SamplingConfig.temperature must be >= 0 (0 = greedy), got {self.temperature}")
    if self.top_k is not None and self.top_k < 1:
      raise ValueError(f"SamplingConfig.top_k must be >= 1 or None, got {self.top_k}")
    if self.top_p is not None and not 0 < self.top_p <= 1:
      raise ValueError(f"SamplingConfig.top_p must be in (0, 1] or None, got {self.top_p}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


def _keep_sorted(logits: jax.Array, keep_sorted: jax.Array, order: jax.Array) -> jax.Array:
  """Keeps the tokens at `order[b, i]` for which `keep_sorted[b, i]` holds; the others get -inf."""
  rows = jnp.arange(logits.shape[0])[:, None]  # [batch, 1]
  keep = jnp.zeros(logits.shape, jnp.bool_).at[rows, order].set(keep_sorted)  # [batch, vocab]
  return jnp.where(keep, logits, -jnp.inf)


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
  """[batch, vocab] -> same, all but exactly the k largest logits of each row set to -inf (ties: lower id)."""
  if k >= logits.shape[-1]:
    return logits
  _, order = jax.lax.top_k(logits, k)  # [batch, k]
  return _keep_sorted(logits, jnp.ones(order.shape, jnp.bool_), order)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
  """[batch, vocab] -> same, keeping per row the most likely tokens until their probability reaches p.

  A token is kept when the probability of the tokens ranked before it is < p, so the most likely one always
  is. Filtered (-inf) logits stay filtered.
  """
  order = jnp.argsort(-logits, axis=-1, stable=True)  # [batch, vocab], most likely first
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # [batch, vocab] mass ranked before each token
  return _keep_sorted(logits, before < p, order)


def sample(logits: jax.Array, rng: jax.Array, cfg: SamplingConfig, allowed: jax.Array | None = None) -> jax.Array:
  """logits [batch, vocab] -> tokens [batch] int32; `allowed`: [vocab] or per row [batch, vocab] bool, the only
  tokens that may be chosen."""
  logits = logits.astype(jnp.float32)
  if allowed is not None:
    logits = jnp.where(allowed if allowed.ndim == 2 else allowed[None, :], logits, -jnp.inf)
  if cfg.greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / cfg.temperature
  if cfg.top_k is not None:
    logits = top_k_filter(logits, cfg.top_k)
  if cfg.top_p is not None and cfg.top_p < 1:
    logits = top_p_filter(logits, cfg.top_p)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def allowed_mask(spec: VocabSpec, modality: str, *, stop_tokens: Sequence[int] = (), specials: Sequence[str] = (),
                 vocab_size: int | None = None) -> np.ndarray:
  """[vocab] bool: the tokens of one modality, for decoding constrained to it.

  Args:
    spec: the combined vocabulary's layout.
    modality: 'text' (every text id except the text vocabulary's padding id; its EOS is a text id, so it is
      allowed) or the name of an audio range ('semantic', 'acoustic_<level>').
    stop_tokens: ids allowed whatever the modality (so decoding can stop).
    specials: names of special tokens of the combined vocabulary to allow (e.g. '<sep>').
    vocab_size: the model's vocabulary (>= spec.size); default spec.size. Padding rows are never allowed.
  """
  size = spec.size if vocab_size is None else vocab_size
  if size < spec.size:
    raise ValueError(f"allowed_mask: vocab_size {size} is smaller than the vocabulary spec's {spec.size}")
  mask = np.zeros(size, np.bool_)
  ranges = {r.name: r for r in spec.audio_ranges}
  if modality == TEXT:
    mask[:spec.text.size] = True
    mask[spec.text.pad_id] = False
  elif modality in ranges:
    mask[ranges[modality].offset:ranges[modality].end] = True
  else:
    raise ValueError(f"allowed_mask: unknown modality {modality!r}; choose one of {[TEXT, *ranges]}")
  for name in specials:
    mask[spec.special_id(name)] = True
  for token in stop_tokens:
    if not 0 <= token < size:
      raise ValueError(f"allowed_mask: stop token {token} is outside the vocabulary of {size}")
    mask[token] = True
  return mask
