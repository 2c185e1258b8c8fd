"""One optimisation step: gradient accumulation, z-loss, non-finite skipping.

Losses are summed over tokens and divided by the summed loss weights of the
whole global batch, so K microbatches give exactly the gradient of one big
batch (up to float rounding).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from audiopalm.data.iterator import Batch
from audiopalm.model import Transformer, cross_entropy_with_z_loss
from audiopalm.sharding import axes
from audiopalm.sharding.rules import constrain
from audiopalm.training.train_state import TrainState

_DROPOUT_STREAM = 1  # fold_in of the state's rng that keys dropout
_INPUT_NOISE_STREAM = 2  # ... and the one that keys `input_noise`


@dataclasses.dataclass(frozen=True)
class TrainStepConfig:
  """Loss and step options.

  Attributes:
    z_loss: coefficient of the log(Z)^2 auxiliary loss (PaLM: 1e-4).
    grad_accum_steps: microbatches per step; the global batch must divide evenly.
    loss_chunk_size: if set, the output layer and loss run on chunks of this many positions at a
      time, recomputed in the backward pass, so the [batch, length, vocab] float32 logits are never
      materialised whole (large vocabularies). Must divide the sequence length.
    input_noise, input_noise_streams: a multi-stream model's training-time augmentation against exposure bias:
      each input token of the listed streams that holds an id of its stream's range is replaced, with
      probability `input_noise`, by an id of that range drawn uniformly. The targets stay the data's, so the
      model learns to predict the next frame from a history that is partly wrong, as its own samples are when it
      generates; at 1.0 those streams carry no history at all (the demo's AudioLM coarse stage, which otherwise
      continues its own codes instead of following the semantic tokens). Keyed by the state's rng: a resumed run
      draws the same. `noisy_inputs` does it.
  """

  z_loss: float = 1e-4
  grad_accum_steps: int = 1
  loss_chunk_size: int | None = None
  input_noise: float = 0.0
  input_noise_streams: tuple[int, ...] = ()

  def __post_init__(self):
    if self.grad_accum_steps < 1:
      raise ValueError(f"TrainStepConfig.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
    if self.loss_chunk_size is not None and self.loss_chunk_size < 1:
      raise ValueError(f"TrainStepConfig.loss_chunk_size must be >= 1 or None, got {self.loss_chunk_size}")
    if not 0.0 <= self.input_noise <= 1.0 or (self.input_noise > 0) != bool(self.input_noise_streams):
      raise ValueError(f"TrainStepConfig.input_noise must be in [0, 1] and given with input_noise_streams (and those "
                       f"only with it), got {self.input_noise} and {self.input_noise_streams}")
    if any(s < 0 for s in self.input_noise_streams):
      raise ValueError("TrainStepConfig.input_noise_streams must be stream indices >= 0, got "
                       f"{self.input_noise_streams}")


def noisy_inputs(inputs: jax.Array, rng: jax.Array, rate: float, streams: tuple[int, ...],
                 stream_vocab: tuple[tuple[int, int], ...]) -> jax.Array:
  """inputs [batch, length, S] -> the same with each token of `streams` that lies in its stream's range
  [start, end) replaced, with probability `rate`, by an id of that range drawn uniformly (`TrainStepConfig`)."""
  for s in streams:
    start, end = stream_vocab[s]
    flip_key, draw_key = jax.random.split(jax.random.fold_in(rng, s))
    column = inputs[..., s]  # [batch, length]
    flip = jax.random.bernoulli(flip_key, rate, column.shape) & (column >= start) & (column < end)
    drawn = jax.random.randint(draw_key, column.shape, start, end, dtype=column.dtype)
    inputs = inputs.at[..., s].set(jnp.where(flip, drawn, column))
  return inputs


def _split_microbatches(batch: Batch, k: int) -> Batch:
  """[batch, length] -> [k, batch / k, length], microbatch i = rows i, i + k, ... (every device
  keeps an equal share of each microbatch)."""
  def split(x):
    b = x.shape[0]
    if b % k:
      raise ValueError(f"global batch {b} is not divisible by grad_accum_steps {k}")
    x = x.reshape(b // k, k, *x.shape[1:]).swapaxes(0, 1)
    return constrain(x, (None, axes.ACT_BATCH, axes.ACT_LENGTH))
  return {key: split(v) for key, v in batch.items()}


def _chunked_loss(model: Transformer, variables: Any, hidden: jax.Array, targets: jax.Array, weights: jax.Array,
                  cfg: TrainStepConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Summed losses of `cross_entropy_with_z_loss`, projecting `loss_chunk_size` positions at a time.

  hidden: [batch, length, embed]; targets, weights: [batch, length].
  """
  b, t, d = hidden.shape
  c = cfg.loss_chunk_size
  if t % c:
    raise ValueError(f"TrainStepConfig.loss_chunk_size {c} does not divide the sequence length {t}")
  chunks = lambda x: x.reshape(b, t // c, c, *x.shape[2:]).swapaxes(0, 1)  # [chunks, batch, c, ...]
  h = constrain(chunks(hidden), (None, axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED))

  @jax.checkpoint  # the backward pass recomputes one chunk's logits instead of storing them all
  def chunk_sums(h_c, t_c, w_c):
    logits = model.apply(variables, h_c, method=Transformer.project)  # [batch, c, vocab]
    return cross_entropy_with_z_loss(logits, t_c, w_c, cfg.z_loss, model.cfg.stream_vocab)

  def body(carry, xs):
    return tuple(a + s for a, s in zip(carry, chunk_sums(*xs))), None

  zero = jnp.float32(0)
  (ce, zl, w), _ = jax.lax.scan(body, (zero, zero, zero), (h, chunks(targets), chunks(weights)))
  return ce, zl, w


def make_gradient_fn(model: Transformer, cfg: TrainStepConfig) -> Callable[..., tuple[Any, dict]]:
  """Returns `grads_fn(params, batch, rng=None) -> (grads, sums)`: mean gradient over the batch's loss weights
  (accumulated over `cfg.grad_accum_steps` microbatches) and the summed ce / z-loss / weights. `rng` (a key) drives
  the model's dropout, one stream per microbatch; None = no dropout."""

  def sums(params: Any, mb: Batch, rng: jax.Array | None):
    variables = {"params": params}
    rngs = {"dropout": rng} if rng is not None else {}
    if cfg.loss_chunk_size is None:
      logits = model.apply(variables, mb["inputs"], mb["positions"], mb["segment_ids"], rngs=rngs)
      ce, zl, w = cross_entropy_with_z_loss(logits, mb["targets"], mb["weights"], cfg.z_loss, model.cfg.stream_vocab)
    else:
      hidden = model.apply(variables, mb["inputs"], mb["positions"], mb["segment_ids"], method=Transformer.hidden,
                           rngs=rngs)
      ce, zl, w = _chunked_loss(model, variables, hidden, mb["targets"], mb["weights"], cfg)
    return ce + zl, (ce, zl, w)

  grad_fn = jax.value_and_grad(sums, has_aux=True)

  def grads_fn(params: Any, batch: Batch, rng: jax.Array | None = None) -> tuple[Any, dict]:
    if cfg.grad_accum_steps == 1:
      (_, (ce, zl, w)), grads = grad_fn(params, batch, rng)
    else:
      def body(carry, xs):
        g_acc, ce_acc, zl_acc, w_acc = carry
        mb, i = xs
        (_, (ce, zl, w)), g = grad_fn(params, mb, None if rng is None else jax.random.fold_in(rng, i))
        return (jax.tree.map(jnp.add, g_acc, g), ce_acc + ce, zl_acc + zl, w_acc + w), None
      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
      init = (zeros, jnp.float32(0), jnp.float32(0), jnp.float32(0))
      microbatches = (_split_microbatches(batch, cfg.grad_accum_steps), jnp.arange(cfg.grad_accum_steps))
      (grads, ce, zl, w), _ = jax.lax.scan(body, init, microbatches)
    denom = jnp.maximum(w, 1.0)
    grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grads, params)
    return grads, {"ce": ce, "z_loss": zl, "weights": w}

  return grads_fn


def optimizer_count(opt_state: Any, default: jax.Array) -> jax.Array:
  """The optimizer's own step count (applied steps; carried over with an imported optimizer state), read from
  the first `count` field of its state; `default` for a state without one."""
  counts = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
  return counts[0][1] if counts else default


def make_train_step(model: Transformer, tx: optax.GradientTransformation, cfg: TrainStepConfig,
                    schedule: optax.Schedule) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """Returns `train_step(state, batch) -> (state, metrics)`; jit it with the state's shardings."""
  grads_fn = make_gradient_fn(model, cfg)

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    params = state.params
    # Dropout's key: a stream of the state's rng (advanced every step, so a resumed run drops the same units).
    dropout_rng = (jax.random.fold_in(jax.random.wrap_key_data(state.rng), _DROPOUT_STREAM)
                   if model.cfg.dropout_rate > 0 else None)
    if cfg.input_noise > 0:
      noise_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), _INPUT_NOISE_STREAM)
      batch = {**batch, "inputs": noisy_inputs(batch["inputs"], noise_rng, cfg.input_noise, cfg.input_noise_streams,
                                               model.cfg.stream_vocab)}
    grads, sums = grads_fn(params, batch, dropout_rng)
    denom = jnp.maximum(sums["weights"], 1.0)
    loss, zl = sums["ce"] / denom, sums["z_loss"] / denom
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(zl)

    updates, new_opt_state = tx.update(grads, state.opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    skipped = (~finite).astype(jnp.int32)
    opt_steps = optimizer_count(state.opt_state, state.step - state.nonfinite_total)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(new_params, params),
        opt_state=keep(new_opt_state, state.opt_state),
        rng=jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)),
        nonfinite_total=state.nonfinite_total + skipped,
        nonfinite_consecutive=jnp.where(finite, 0, state.nonfinite_consecutive + 1),
    )
    metrics = {
        "loss": loss,
        "z_loss": zl,
        "grad_norm": grad_norm,
        "lr": schedule(opt_steps),
        "tokens": sums["weights"],
        "nonpad_fraction": jnp.mean((batch["segment_ids"] > 0).astype(jnp.float32)),  # packing efficiency
        "skipped": skipped,
        "nonfinite_consecutive": new_state.nonfinite_consecutive,
    }
    return new_state, metrics

  return train_step
