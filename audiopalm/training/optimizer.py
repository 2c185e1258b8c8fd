"""Optimizers (Adafactor as in PaLM, AdamW) and learning-rate schedules, via optax."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from audiopalm.training.param_groups import scale_by_groups


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer, schedule and clipping.

  The defaults are PaLM's recipe: Adafactor without factorisation with
  parameter scaling (per layer), beta1 0.9, beta2 = 1 - step^-0.8, lr 1e-2 held
  for 10k steps then decayed as 1/sqrt(step), global-norm clipping at 1.0.
  Weight decay is off by default; PaLM's is `weight_decay=1.0,
  weight_decay_schedule="lr_squared"` (set in gin_configs/runs/pretrain_text.gin).

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
    weight_decay: decoupled weight decay: each step, params -= weight_decay * lr(t) * params
      (or * lr(t)^2 with `weight_decay_schedule="lr_squared"`, PaLM's "lr^2" decay with 1.0).
    weight_decay_schedule: "lr" or "lr_squared": what the decay rate is multiplied by.
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
  weight_decay_schedule: Literal["lr", "lr_squared"] = "lr"
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
    if self.weight_decay_schedule not in ("lr", "lr_squared"):
      raise ValueError(f"OptimizerConfig.weight_decay_schedule={self.weight_decay_schedule!r}, "
                       "allowed: ['lr', 'lr_squared']")
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


def scale_by_param_rms_per_layer(stacked_key: str = "layers", min_scale: float = 1e-3
                                 ) -> optax.GradientTransformation:
  """Adafactor's parameter scaling (update * max(RMS(param), min_scale)), with the RMS taken per
  layer for parameters stacked by `nn.scan` under `stacked_key` (leading axis = layer), so a
  scanned model trains exactly as the same model with separate layers."""

  def update_fn(updates, state, params):
    if params is None:
      raise ValueError("scale_by_param_rms_per_layer needs params")

    def scale(path, u, p):
      stacked = p.ndim > 1 and any(getattr(k, "key", None) == stacked_key for k in path)
      axes = tuple(range(1, p.ndim)) if stacked else None
      rms = jnp.sqrt(jnp.mean(jnp.square(p.astype(jnp.float32)), axis=axes, keepdims=stacked))
      return u * jnp.maximum(rms, min_scale).astype(u.dtype)
    return jax.tree_util.tree_map_with_path(scale, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def make_optimizer(cfg: OptimizerConfig, lr_scales: Any | None = None) -> optax.GradientTransformation:
  """Clipping, then the optimizer with the schedule, then decoupled weight decay, then the per-group learning-rate
  multipliers `lr_scales` (from `param_groups.lr_scales`; None = all 1)."""
  schedule = make_schedule(cfg)
  if cfg.name == "adafactor":  # optax.adafactor's chain, with per-layer parameter scaling
    opt = optax.chain(
        optax.scale_by_factored_rms(factored=cfg.adafactor_factored, decay_rate=cfg.adafactor_decay_rate),
        optax.scale_by_learning_rate(schedule, flip_sign=False),
        scale_by_param_rms_per_layer(),
        optax.ema(cfg.b1, debias=False) if cfg.b1 is not None else optax.identity(),
        optax.scale(-1.0),
    )
  else:
    opt = optax.adamw(learning_rate=schedule, b1=cfg.b1 if cfg.b1 is not None else 0.9, b2=cfg.b2,
                      eps=cfg.eps, weight_decay=0.0)
  parts = [opt]
  if cfg.clip_grad_norm is not None:
    parts.insert(0, optax.clip_by_global_norm(cfg.clip_grad_norm))
  if cfg.weight_decay:
    power = 2 if cfg.weight_decay_schedule == "lr_squared" else 1
    parts.append(optax.add_decayed_weights(lambda count: -cfg.weight_decay * schedule(count) ** power))
  # Always last and stateless, so the optimizer state has one structure with or without groups (an imported
  # optimizer state restores into a run with other learning-rate groups).
  parts.append(scale_by_groups(lr_scales) if lr_scales is not None else optax.identity())
  return optax.chain(*parts)
