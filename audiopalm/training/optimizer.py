"""Optimizers (Adafactor as in PaLM, AdamW) and learning-rate schedules, via optax."""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer, schedule and clipping.

  The defaults are PaLM's recipe: Adafactor without factorisation with
  parameter scaling, beta1 0.9, beta2 = 1 - step^-0.8, lr 1e-2 held for 10k
  steps then decayed as 1/sqrt(step), global-norm clipping at 1.0.

  Attributes:
    name: "adafactor" or "adamw".
    peak_lr: learning rate after warmup.
    schedule: "rsqrt" (peak * sqrt(warmup / step) after warmup), "cosine"
      (to `end_lr_fraction * peak_lr` at `decay_steps`) or "constant".
    warmup_steps: steps of the warmup phase.
    warmup: "linear" ramp from 0, or "constant" (PaLM holds the peak lr).
    decay_steps: end of the cosine decay (required for "cosine").
    end_lr_fraction: final lr of the cosine decay, as a fraction of peak_lr.
    clip_grad_norm: global-norm clipping threshold; None disables it.
    weight_decay: decoupled weight decay rate (multiplied by the lr).
    b1: momentum / first-moment decay (Adafactor: None disables momentum).
    b2: AdamW second-moment decay.
    adafactor_decay_rate: Adafactor's beta2 = 1 - step^-decay_rate.
    adafactor_factored: factor the second moment (PaLM: False).
    eps: AdamW epsilon.
  """

  name: Literal["adafactor", "adamw"] = "adafactor"
  peak_lr: float = 1e-2
  schedule: Literal["rsqrt", "cosine", "constant"] = "rsqrt"
  warmup_steps: int = 10_000
  warmup: Literal["linear", "constant"] = "constant"
  decay_steps: int | None = None
  end_lr_fraction: float = 0.1
  clip_grad_norm: float | None = 1.0
  weight_decay: float = 0.0
  b1: float | None = 0.9
  b2: float = 0.95
  adafactor_decay_rate: float = 0.8
  adafactor_factored: bool = False
  eps: float = 1e-8

  def __post_init__(self):
    if self.name not in ("adafactor", "adamw"):
      raise ValueError(f"OptimizerConfig.name={self.name!r}, allowed: ['adafactor', 'adamw']")
    if self.schedule not in ("rsqrt", "cosine", "constant"):
      raise ValueError(f"OptimizerConfig.schedule={self.schedule!r}, allowed: ['rsqrt', 'cosine', 'constant']")
    if self.warmup not in ("linear", "constant"):
      raise ValueError(f"OptimizerConfig.warmup={self.warmup!r}, allowed: ['linear', 'constant']")
    if self.schedule == "cosine" and (self.decay_steps is None or self.decay_steps <= self.warmup_steps):
      raise ValueError("OptimizerConfig: schedule='cosine' needs decay_steps > warmup_steps, got "
                       f"decay_steps={self.decay_steps}, warmup_steps={self.warmup_steps}")
    if self.warmup_steps < 0 or self.peak_lr <= 0:
      raise ValueError(f"OptimizerConfig: need warmup_steps >= 0 and peak_lr > 0, got {self.warmup_steps}, "
                       f"{self.peak_lr}")


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  """Learning rate as a function of the optimizer step."""
  w = cfg.warmup_steps
  if cfg.warmup == "linear" and w > 0:
    warmup = optax.linear_schedule(0.0, cfg.peak_lr, w)
  else:
    warmup = optax.constant_schedule(cfg.peak_lr)
  if cfg.schedule == "constant":
    after = optax.constant_schedule(cfg.peak_lr)
  elif cfg.schedule == "rsqrt":
    def after(step):  # step counts from the end of warmup
      return cfg.peak_lr * jnp.sqrt(max(w, 1) / jnp.maximum(step + w, max(w, 1)).astype(jnp.float32))
  else:
    after = optax.cosine_decay_schedule(cfg.peak_lr, cfg.decay_steps - w, alpha=cfg.end_lr_fraction)
  return optax.join_schedules([warmup, after], [w])


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """Gradient clipping followed by the chosen optimizer, with the schedule injected."""
  schedule = make_schedule(cfg)
  if cfg.name == "adafactor":
    opt = optax.adafactor(learning_rate=schedule, factored=cfg.adafactor_factored,
                          decay_rate=cfg.adafactor_decay_rate, multiply_by_parameter_scale=True,
                          clipping_threshold=None, momentum=cfg.b1,
                          weight_decay_rate=cfg.weight_decay or None)
  else:
    opt = optax.adamw(learning_rate=schedule, b1=cfg.b1 if cfg.b1 is not None else 0.9, b2=cfg.b2,
                      eps=cfg.eps, weight_decay=cfg.weight_decay)
  if cfg.clip_grad_norm is not None:
    opt = optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), opt)
  return opt
