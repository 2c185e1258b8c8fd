r"""Entry point: `python -m audiopalm.main.train --gin_file=... --gin.MODEL_DIR=... [--gin.NAME=VALUE ...]`.

Trains (or continues) a decoder as the gin files bind `train`'s arguments. Multi-process runs add
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or set AUDIOPALM_COORDINATOR_ADDRESS /
AUDIOPALM_NUM_PROCESSES / AUDIOPALM_PROCESS_ID; `--distributed_auto` on Cloud TPU and SLURM lets JAX read the
environment).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import gin
import jax

from audiopalm.checkpoints.manager import CheckpointConfig
from audiopalm.checkpoints.source import RUN_CONFIG_FILE
from audiopalm.cli import entry_point
from audiopalm.evaluation.eval_hook import EvalConfig, EvalHook, check_eval_data, eval_input
from audiopalm.files import storage
from audiopalm.main import configurables  # noqa: F401  (the gin configurables train's arguments name)
from audiopalm.model import TransformerConfig, flops_per_token
from audiopalm.sharding.mesh import MeshConfig
from audiopalm.sharding.params import sharding_context
from audiopalm.sharding.rules import ShardingRules
from audiopalm.training import trainer as lm
from audiopalm.training.goodput import Goodput
from audiopalm.training.hooks import ExportHook, MetricsHook
from audiopalm.training.init_from import InitFromConfig
from audiopalm.training.loss_guard import LossGuard, LossGuardConfig
from audiopalm.training.loop import run_loop
from audiopalm.training.metrics import peak_flops_per_device
from audiopalm.training.optimizer import OptimizerConfig
from audiopalm.training.param_groups import ParamGroupsConfig
from audiopalm.training.train_step import TrainStepConfig


def train(*, model_dir: str, model: TransformerConfig, data: lm.InputSpec, optimizer: OptimizerConfig = OptimizerConfig(),
          step: TrainStepConfig = TrainStepConfig(), mesh: MeshConfig = MeshConfig(),
          rules: ShardingRules = ShardingRules(), checkpoint: CheckpointConfig = CheckpointConfig(),
          trainer: lm.TrainerConfig = lm.TrainerConfig(), init_from: InitFromConfig = InitFromConfig(),
          param_groups: ParamGroupsConfig = ParamGroupsConfig(), evaluation: EvalConfig = EvalConfig(),
          loss_guard: LossGuardConfig = LossGuardConfig()) -> dict[str, Any]:
  """Trains (or resumes training of) `model` on `data` up to `trainer.num_steps`.

  A new run starts from random parameters, or from the checkpoint `init_from.path` (continued pretraining, with
  the vocabulary extended to the input's); `param_groups` sets learning-rate multipliers for text rows, audio
  rows and the rest; `loss_guard` rolls the run back on a loss spike or a run of non-finite steps. With
  `evaluation.every` > 0, the held-out perplexity of the training mixture on
  `evaluation.dataset` is written every that many steps and at the last step (`EvalHook`). The resolved arguments
  are saved as `<model_dir>/train_config.json` (and in the export), which evaluation reads.

  Returns {"step": steps taken in total, "finished": whether num_steps was reached (False after a
  preemption or an exhausted input), "model_dir": model_dir}.
  """
  # 1. Validate everything that can be checked before compiling (a multi-stream input sets the model's streams).
  model = lm.fit_model_to_input(model, data)
  device_mesh = lm.validate(model_dir=model_dir, model=model, data=data, step=step, mesh=mesh, rules=rules)
  eval_data = eval_input(evaluation, data)
  check_eval_data(evaluation, eval_data, data)

  # 2. Build the step and the input, then restore the newest checkpoint or initialise.
  run = lm.prepare(model_dir=model_dir, model=model, data=data, optimizer=optimizer, step=step,
                   device_mesh=device_mesh, rules=rules, checkpoint=checkpoint, trainer=trainer, init_from=init_from,
                   param_groups=param_groups)
  config = run_config(model=model, data=data, optimizer=optimizer, step=step, mesh=mesh, rules=rules,
                      checkpoint=checkpoint, trainer=trainer, init_from=init_from, param_groups=param_groups,
                      evaluation=evaluation, loss_guard=loss_guard)
  if jax.process_index() == 0:
    storage.write_text(f"{model_dir}/{RUN_CONFIG_FILE}", json.dumps(config, indent=2))

  # 3. The periodic work, in the order it runs after each step.
  metrics = MetricsHook(model_dir, trainer.log_every, data.global_batch_size * data.seq_len,
                        flops_per_token(model, data.seq_len), device_mesh.size,
                        peak_flops_per_device(override=trainer.peak_flops_per_device))
  hooks = [LossGuard(loss_guard), metrics]
  if trainer.export_params:
    hooks.append(ExportHook(model_dir, trainer.num_steps, model, run.vocab, config))
  hooks.append(EvalHook(model, eval_data, evaluation, device_mesh, rules, model_dir, writer=metrics.writer,
                        on_done=metrics.started))

  # 4. The loop.
  result = run_loop(state=run.state, step_fn=run.step, batches=run.batches(), start=run.start,
                    num_steps=trainer.num_steps, checkpointer=run.checkpointer, data_iter=run.data_iter, hooks=hooks,
                    context=sharding_context(device_mesh, rules), goodput=Goodput(model_dir, run.start, metrics.writer,
                                                                       write_every_s=trainer.goodput_every_s))
  return {"step": result.step, "finished": result.step >= trainer.num_steps, "model_dir": model_dir}


def run_config(**arguments: Any) -> dict[str, Any]:
  """`train`'s arguments as JSON: dataclasses as dicts of their fields with the class's name under "__type__",
  tuples as lists, anything else JSON cannot hold as its repr."""
  def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      return {"__type__": type(value).__name__,
              **{f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, (list, tuple)):
      return [jsonable(v) for v in value]
    if isinstance(value, dict):
      return {str(k): jsonable(v) for k, v in value.items()}
    return value if value is None or isinstance(value, (str, int, float, bool)) else repr(value)
  return {name: jsonable(value) for name, value in arguments.items()}


TRAIN = gin.external_configurable(train, "train")


def main(argv: list[str] | None = None) -> None:
  entry_point.run("python -m audiopalm.main.train", __doc__, TRAIN, "train.model_dir", argv, compilation_cache=True)


if __name__ == "__main__":
  main()
