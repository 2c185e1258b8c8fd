"""Hooks of the language model's training: metrics and the export (the loss guard: `audiopalm.training.loss_guard`).

The loop (`audiopalm.training.loop`) calls each hook after every step with the step number (steps taken so far),
the state and that step's metrics (device arrays, not yet fetched); a hook decides itself whether it has work to
do. The entry point (`audiopalm.main.train`) picks the hooks; held-out evaluation is
`audiopalm.evaluation.eval_hook.EvalHook`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jax
import numpy as np
from etils import epath

from audiopalm.checkpoints.export import export_params
from audiopalm.files import storage
from audiopalm.model import TransformerConfig
from audiopalm.training.loop import Hook, LoopResult
from audiopalm.training.metrics import MetricsWriter, mfu
from audiopalm.training.train_state import TrainState
from audiopalm.vocab.spec import VocabSpec


class MetricsHook(Hook):
  """Every `every` steps: loss, grad norm, lr, tokens/s, step time and MFU to TensorBoard,
  the console and `<model_dir>/metrics.jsonl` (one JSON object per logged step)."""

  def __init__(self, model_dir: str, every: int, tokens_per_step: int, flops_per_token: float, num_devices: int,
               peak_flops_per_device: float | None):
    self.every = every
    self.tokens_per_step = tokens_per_step
    self.flops_per_token = flops_per_token
    self.num_devices = num_devices
    self.peak = peak_flops_per_device
    self.writer = MetricsWriter(storage.join(model_dir, "tensorboard"))
    self.jsonl = epath.Path(model_dir) / "metrics.jsonl" if jax.process_index() == 0 else None
    self._last_time: float | None = None
    self._last_step: int | None = None

  def started(self, step: int) -> None:
    """Marks the point from which throughput is measured (after the first, compiling step; after evaluations)."""
    self._last_time, self._last_step = time.perf_counter(), step

  def rewound(self, step: int) -> None:
    self.started(step)

  def __call__(self, step: int, state: TrainState, metrics: dict[str, jax.Array]) -> None:
    if step % self.every:
      return
    values = {k: np.asarray(v).item() for k, v in jax.device_get(metrics).items()}
    scalars = {"loss": values["loss"], "z_loss": values["z_loss"], "grad_norm": values["grad_norm"],
               "lr": values["lr"], "nonpad_fraction": values["nonpad_fraction"],
               "skipped_steps": int(jax.device_get(state.nonfinite_total)), "rewinds": int(values.get("rewinds", 0))}
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


class ExportHook(Hook):
  """Once the run has reached `num_steps`: a params-only export (`audiopalm.checkpoints.export`) of the final
  parameters to `<model_dir>/export`, with the model config, vocabulary spec and the run's config; kept as it is
  when this invocation took no step and the export exists."""

  def __init__(self, model_dir: str, num_steps: int, model: TransformerConfig, vocab: VocabSpec | None,
               run_config: dict[str, Any] | None = None):
    self.directory = storage.join(model_dir, "export")
    self.num_steps, self.model, self.vocab, self.run_config = num_steps, model, vocab, run_config

  def finished(self, result: LoopResult) -> None:
    exported = storage.is_file(storage.join(self.directory, "model_config.json"))
    if result.step >= self.num_steps and (result.step > result.start or not exported):
      export_params(result.state.params, self.model, self.directory, self.vocab, self.run_config)
