"""Per-group learning rates for continued pretraining: text rows, audio rows, and the rest of the model.

    scales = lr_scales(ParamGroupsConfig(text_rows_lr_scale=0.0), boxed_abstract_params, text_rows=258)
    tx = make_optimizer(opt_cfg, lr_scales=scales)

A pretrained text model's embedding rows for text tokens are trained; the audio rows a vocabulary extension adds
are new. Each group's updates (after the optimizer and weight decay) are multiplied by its scale, so a scale of
0 freezes the group exactly (`freeze_text_rows`). The vocabulary axis of the embedding table and of the untied
output layer is split at `text_rows` (the text vocabulary's size, from the run's vocabulary spec): rows below are
"text rows", the specials, audio ranges and padding after them are "audio rows". Gradient clipping still sees
the whole gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from audiopalm.vocab.extend import vocab_axes


@dataclasses.dataclass(frozen=True)
class ParamGroupsConfig:
  """Learning-rate multipliers per parameter group.

  Attributes:
    text_rows_lr_scale: embedding / output rows of the text vocabulary.
    audio_rows_lr_scale: the rows after them (specials, audio tokens, padding).
    other_lr_scale: every other parameter (attention, MLP, norms).
    freeze_text_rows: keep the text rows exactly as they are (same as text_rows_lr_scale = 0).
  """

  text_rows_lr_scale: float = 1.0
  audio_rows_lr_scale: float = 1.0
  other_lr_scale: float = 1.0
  freeze_text_rows: bool = False

  def __post_init__(self):
    for name in ("text_rows_lr_scale", "audio_rows_lr_scale", "other_lr_scale"):
      if getattr(self, name) < 0:
        raise ValueError(f"ParamGroupsConfig.{name} must be >= 0, got {getattr(self, name)}")
    if self.freeze_text_rows and self.text_rows_lr_scale not in (0.0, 1.0):
      raise ValueError(f"ParamGroupsConfig: freeze_text_rows=True contradicts text_rows_lr_scale="
                       f"{self.text_rows_lr_scale}; set one of them")

  @property
  def text_scale(self) -> float:
    return 0.0 if self.freeze_text_rows else self.text_rows_lr_scale

  @property
  def is_default(self) -> bool:
    return (self.text_scale, self.audio_rows_lr_scale, self.other_lr_scale) == (1.0, 1.0, 1.0)


def lr_scales(cfg: ParamGroupsConfig, boxed_abstract: Any, text_rows: int | None) -> Any | None:
  """Per parameter: a scalar multiplier, or for vocabulary-axis parameters an array broadcasting along that axis
  ([vocab, 1] for the embedding, [1, vocab] for the output layer). None when every scale is 1."""
  if cfg.is_default:
    return None
  if text_rows is None and (cfg.text_scale, cfg.audio_rows_lr_scale) != (1.0, 1.0):
    raise ValueError("ParamGroupsConfig: text/audio row scales need a vocabulary spec (which rows are text); "
                     "this input has none")

  def scale(leaf, axis):
    if axis is None:
      return np.float32(cfg.other_lr_scale)
    if text_rows is None:  # no spec: text and audio scales are both 1 (checked above)
      return np.float32(1.0)
    shape = [1] * leaf.value.ndim
    shape[axis] = leaf.value.shape[axis]
    rows = np.arange(shape[axis]) < text_rows
    return np.where(rows, cfg.text_scale, cfg.audio_rows_lr_scale).astype(np.float32).reshape(shape)
  return jax.tree.map(scale, boxed_abstract, vocab_axes(boxed_abstract),
                      is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def scale_by_groups(scales: Any) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its scale from `lr_scales`."""
  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state
  return optax.GradientTransformation(optax.init_empty_state, update_fn)
