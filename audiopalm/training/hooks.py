"""Periodic work that hangs off the training loop: metrics logging and checkpointing (held-out evaluation:
`eval_hook.py`).

A hook is called after every step with the step number (steps taken so far),
the state and that step's metrics (device arrays, not yet fetched); it decides
itself whether it has work to do, so the loop stays one readable function.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import jax
from etils import epath

from audiopalm.training.checkpointing import Checkpointer
from audiopalm.training.metrics import MetricsWriter, mfu
from audiopalm.training.train_state import TrainState


class Hook(Protocol):

  def __call__(self, step: int, state: TrainState, metrics: dict[str, jax.Array]) -> None: ...


class MetricsHook:
  """Every `every` steps: loss, grad norm, lr, tokens/s, step time and MFU to TensorBoard,
  the console and `<model_dir>/metrics.jsonl` (one JSON object per logged step)."""

  def __init__(self, model_dir: str, every: int, tokens_per_step: int, flops_per_token: float, num_devices: int,
               peak_flops_per_device: float | None):
    self.every = every
    self.tokens_per_step = tokens_per_step
    self.flops_per_token = flops_per_token
    self.num_devices = num_devices
    self.peak = peak_flops_per_device
    self.writer = MetricsWriter(str(epath.Path(model_dir) / "tensorboard"))
    self.jsonl = epath.Path(model_dir) / "metrics.jsonl" if jax.process_index() == 0 else None
    self._last_time: float | None = None
    self._last_step: int | None = None

  def start(self, step: int) -> None:
    """Marks the point from which throughput is measured (after the first, compiling step)."""
    self._last_time, self._last_step = time.perf_counter(), step

  def __call__(self, step: int, state: TrainState, metrics: dict[str, jax.Array]) -> None:
    if step % self.every:
      return
    values = {k: v.item() for k, v in jax.device_get(metrics).items()}
    scalars = {"loss": values["loss"], "z_loss": values["z_loss"], "grad_norm": values["grad_norm"],
               "lr": values["lr"], "nonpad_fraction": values["nonpad_fraction"],
               "skipped_steps": int(jax.device_get(state.nonfinite_total))}
    now = time.perf_counter()
    if self._last_time is not None and step > self._last_step:
      step_time = (now - self._last_time) / (step - self._last_step)
      tokens_per_s = self.tokens_per_step / step_time
      scalars.update(step_time_s=step_time, tokens_per_s=tokens_per_s)
      if self.peak:  # unknown on CPU: pass TrainerConfig.peak_flops_per_device to get MFU
        scalars["mfu"] = mfu(tokens_per_s, self.flops_per_token, self.num_devices, self.peak)
    self._last_time, self._last_step = time.perf_counter(), step
    self.writer.write(step, scalars)
    if self.jsonl is not None:
      with self.jsonl.open("a") as f:
        f.write(json.dumps({"step": step, **scalars}) + "\n")

  def close(self) -> None:
    self.writer.close()


class CheckpointHook:
  """Saves (asynchronously) whenever the checkpoint manager's interval says so."""

  def __init__(self, checkpointer: Checkpointer, data_iter: Any):
    self.checkpointer = checkpointer
    self.data_iter = data_iter

  def __call__(self, step: int, state: TrainState, metrics: dict[str, jax.Array]) -> None:
    self.checkpointer.save(step, state, self.data_iter)
