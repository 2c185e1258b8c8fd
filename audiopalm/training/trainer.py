"""The training loop. `train(...)` reads top to bottom: validate, build, restore or init, loop.

Library code (no gin): the entry point `audiopalm.train` binds these arguments
from gin files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
from typing import Any, Protocol

import jax
import numpy as np
from etils import epath
from jax.sharding import NamedSharding

from audiopalm.data.iterator import InputIterator, host_row_range, to_global_batch
from audiopalm.files.atomic import write_text_atomic
from audiopalm.model import Transformer, TransformerConfig, flops_per_token
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules, batch_sharding
from audiopalm.training.checkpointing import CheckpointConfig, Checkpointer, export_params
from audiopalm.training.eval_hook import EvalConfig, EvalHook, check_eval_data
from audiopalm.training.hooks import CheckpointHook, Hook, MetricsHook
from audiopalm.training.init_from import PROVENANCE_FILE, InitFromConfig, initial_state, provenance
from audiopalm.training.metrics import peak_flops_per_device
from audiopalm.training.optimizer import OptimizerConfig, make_optimizer, make_schedule
from audiopalm.training.param_groups import ParamGroupsConfig, lr_scales
from audiopalm.training.train_state import abstract_params, init_train_state, sharding_context, state_shardings
from audiopalm.training.train_step import BATCH_KEYS, TrainStepConfig, make_train_step
from audiopalm.vocab.spec import SPEC_FILE, VocabSpec, check_compatible, load_spec, save_spec

log = logging.getLogger(__name__)


class InputSpec(Protocol):
  """What the trainer needs from a data source (e.g. `TextSourceConfig`)."""

  global_batch_size: int
  seq_len: int

  def make_iterator(self, row_start: int, row_stop: int) -> InputIterator: ...


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """Loop options.

  Attributes:
    num_steps: train until the state's step reaches this.
    log_every: metrics period in steps.
    seed: parameter-initialisation seed.
    max_consecutive_nonfinite: abort after this many skipped (non-finite) steps in a row.
    peak_flops_per_device: override of the per-device peak used for MFU.
    export_params: write a params-only export to `<model_dir>/export` at the end.
  """

  num_steps: int = 1000
  log_every: int = 10
  seed: int = 0
  max_consecutive_nonfinite: int = 10
  peak_flops_per_device: float | None = None
  export_params: bool = True

  def __post_init__(self):
    if self.num_steps < 0 or self.log_every < 1 or self.max_consecutive_nonfinite < 1:
      raise ValueError(f"TrainerConfig: need num_steps >= 0, log_every >= 1 and max_consecutive_nonfinite >= 1, "
                       f"got {self.num_steps}, {self.log_every}, {self.max_consecutive_nonfinite}")


class NonFiniteError(RuntimeError):
  """Raised when too many consecutive steps had a non-finite loss or gradient."""


class Preemption:
  """SIGTERM sets a flag (single process); multi-process runs use JAX's preemption sync point."""

  def __init__(self, checkpointer: Checkpointer):
    self.checkpointer = checkpointer
    self.flag = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self.flag.set())

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self.checkpointer.reached_preemption(step)
    return self.flag.is_set()

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def validate_inputs(global_batch_size: int, seq_len: int, vocab_size: int | None, model: TransformerConfig,
                    sharding: NamedSharding, step_cfg: TrainStepConfig) -> None:
  """Fails before any compilation if the global batch cannot be laid out or the model's vocabulary does not cover
  the input's token ids (`vocab_size`: the input's, None when it does not say)."""
  spec = sharding.spec[0] if len(sharding.spec) else None
  names = (spec,) if isinstance(spec, str) else (spec or ())
  shards = 1
  for name in names:
    shards *= sharding.mesh.shape[name]
  b = global_batch_size
  if b % (shards * step_cfg.grad_accum_steps):
    raise ValueError(f"global_batch_size {b} must be divisible by the batch shards ({' x '.join(names) or '1'} = "
                     f"{shards}) x grad_accum_steps ({step_cfg.grad_accum_steps}) = "
                     f"{shards * step_cfg.grad_accum_steps}")
  chunk = step_cfg.loss_chunk_size
  if chunk is not None and seq_len % chunk:
    raise ValueError(f"TrainStepConfig.loss_chunk_size {chunk} must divide the sequence length {seq_len}")
  if vocab_size is not None and vocab_size > model.vocab_size:
    raise ValueError(f"The input's token ids go up to {vocab_size - 1} but the model's vocab_size is "
                     f"{model.vocab_size}; set TransformerConfig.vocab_size >= {vocab_size}")


def _check_vocab_spec(data: InputSpec, model_path: epath.Path, has_checkpoint: bool) -> VocabSpec | None:
  """The input's vocabulary spec (None for inputs without one). With a checkpoint to resume from, a spec that
  differs from the one saved with it is refused: every token id must keep the meaning it was trained with.
  Without one, the spec is (re)written to `<model_dir>/vocab_spec.json` (atomically, by process 0)."""
  spec = getattr(data, "vocab_spec", None)
  saved = model_path / SPEC_FILE
  if has_checkpoint and saved.exists():
    if spec is None:
      raise ValueError(f"{saved} exists but the input has no vocabulary spec: this run was trained on other data")
    check_compatible(load_spec(str(saved)), spec, "the training data")
  elif spec is not None and jax.process_index() == 0:
    save_spec(spec, str(model_path))
  return spec


def train(*, model_dir: str, model: TransformerConfig, data: InputSpec, optimizer: OptimizerConfig = OptimizerConfig(),
          step: TrainStepConfig = TrainStepConfig(), mesh: MeshConfig = MeshConfig(),
          rules: ShardingRules = ShardingRules(), checkpoint: CheckpointConfig = CheckpointConfig(),
          trainer: TrainerConfig = TrainerConfig(), init_from: InitFromConfig = InitFromConfig(),
          param_groups: ParamGroupsConfig = ParamGroupsConfig(), evaluation: EvalConfig = EvalConfig(),
          eval_data: InputSpec | None = None) -> dict[str, Any]:
  """Trains (or resumes training of) `model` on `data` up to `trainer.num_steps`.

  A new run starts from random parameters, or from the checkpoint `init_from.path` (continued pretraining, with
  the vocabulary extended to the input's); `param_groups` sets learning-rate multipliers for text rows, audio
  rows and the rest. With `evaluation.every` > 0, the held-out perplexity on `eval_data` (a `SpeechTextConfig`
  with the training data's vocabulary) is written every that many steps and at the last step (`EvalHook`).

  Returns {"step": steps taken in total, "finished": whether num_steps was reached (False after a
  preemption or an exhausted input), "model_dir": model_dir}.
  """
  # 1. Validate everything that can be checked before compiling.
  if not str(model_dir):
    raise ValueError("model_dir is empty: set MODEL_DIR (--gin.MODEL_DIR=...)")
  device_mesh = make_mesh(mesh)
  rules.validate(device_mesh.axis_names)
  input_sharding = batch_sharding(device_mesh, rules)
  validate_inputs(data.global_batch_size, data.seq_len, getattr(data, "vocab_size", None), model,
                  input_sharding, step)
  check_eval_data(evaluation, eval_data, data, input_sharding)
  model_path = epath.Path(model_dir)
  model_path.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (model_path / "model_config.json").write_text(json.dumps(dataclasses.asdict(model), indent=2))
  log.info("Mesh %s on %d devices (%d processes)", dict(device_mesh.shape), device_mesh.size, jax.process_count())

  # 2. Build the model, optimizer, step function and input.
  net = Transformer(model)
  spec = getattr(data, "vocab_spec", None)
  tx = make_optimizer(optimizer, lr_scales(param_groups, abstract_params(net), spec.text.size if spec else None))
  abstract, shardings = state_shardings(net, tx, device_mesh, rules)
  row_start, row_stop = host_row_range(input_sharding, data.global_batch_size, data.seq_len)
  data_iter = data.make_iterator(row_start, row_stop)
  step_fn = jax.jit(make_train_step(net, tx, step, make_schedule(optimizer)),
                    in_shardings=(shardings, input_sharding), out_shardings=(shardings, None), donate_argnums=0)

  # 3. Resume from the newest complete checkpoint, or initialise.
  checkpointer = Checkpointer(model_dir, checkpoint)
  vocab = _check_vocab_spec(data, model_path, checkpointer.latest_step() is not None)
  with sharding_context(device_mesh, rules):
    state = checkpointer.restore(abstract, shardings, data_iter)
  if state is None and init_from.path is not None:
    state = initial_state(init_from, model, tx, device_mesh, rules, vocab, trainer.seed)
    if jax.process_index() == 0:
      # Over the file of a run that stopped before its first checkpoint.
      write_text_atomic(model_path / PROVENANCE_FILE, json.dumps(provenance(init_from), indent=2))
  elif state is None:
    state = init_train_state(net, tx, device_mesh, rules, trainer.seed)
    log.info("Initialised a new model (%s)", model_dir)
  current = start = int(jax.device_get(state.step))

  metrics_hook = MetricsHook(model_dir, trainer.log_every, data.global_batch_size * data.seq_len,
                             flops_per_token(model, data.seq_len), device_mesh.size,
                             peak_flops_per_device(override=trainer.peak_flops_per_device))
  eval_hook = EvalHook(model, eval_data, evaluation, device_mesh, rules, model_dir, writer=metrics_hook.writer,
                       on_done=metrics_hook.start)
  hooks: list[Hook] = [metrics_hook, CheckpointHook(checkpointer, data_iter), eval_hook]
  preemption = Preemption(checkpointer)

  # 4. The loop.
  previous_metrics, preempted = None, False
  try:
    with sharding_context(device_mesh, rules):
      while current < trainer.num_steps:
        try:
          local = next(data_iter)
        except StopIteration:
          log.warning("The input is exhausted after %d steps; saving and stopping", current)
          break
        batch = to_global_batch({k: local[k] for k in BATCH_KEYS}, input_sharding, data.global_batch_size)
        state, metrics = step_fn(state, batch)
        current += 1
        if previous_metrics is not None:  # read one step late so the device queue stays full
          _check_finite(previous_metrics, trainer.max_consecutive_nonfinite, current - 1)
        else:
          jax.block_until_ready(state.step)
          metrics_hook.start(current)
        previous_metrics = metrics
        if preemption.reached(current):  # before the hooks: an evaluation would delay the save
          log.warning("Preemption notice: saving step %d and exiting", current)
          preempted = True
          break
        for hook in hooks:
          hook(current, state, metrics)
      if previous_metrics is not None:
        _check_finite(previous_metrics, trainer.max_consecutive_nonfinite, current)
    checkpointer.save(current, state, data_iter, force=True)
    checkpointer.wait()
    exported = (model_path / "export" / "model_config.json").exists()
    if trainer.export_params and current >= trainer.num_steps and (current > start or not exported):
      export_params(state.params, model, str(model_path / "export"), vocab)
    if current > start and not preempted:
      eval_hook.finish(current, state)  # the final parameters, unless that step was just evaluated
  finally:
    preemption.restore()
    metrics_hook.close()
    checkpointer.close()
  return {"step": current, "finished": current >= trainer.num_steps, "model_dir": model_dir}


def _check_finite(metrics: dict[str, jax.Array], limit: int, step: int) -> None:
  consecutive = int(np.asarray(jax.device_get(metrics["nonfinite_consecutive"])))
  if consecutive >= limit:
    raise NonFiniteError(f"{consecutive} consecutive steps up to step {step} had a non-finite loss or gradient "
                         f"(limit max_consecutive_nonfinite={limit}); the last good checkpoint is kept. "
                         "Lower the learning rate or restart from an earlier checkpoint with other data.")
