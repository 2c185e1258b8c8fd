"""Held-out evaluation during training: perplexity on an eval input every `EvalConfig.every` steps, as a hook.

    check_eval_data(cfg, eval_data, train_data, batch_sharding)       # before compiling: a usable eval input?
    hook = EvalHook(model_cfg, eval_data, cfg, mesh, rules, model_dir)
    hook(step, state, metrics)                                        # evaluates when step % cfg.every == 0
    hook.finish(step, state)                                          # the run's last step, unless just evaluated

Every evaluation reads the same `num_batches` batches: a fresh iterator over the eval input in dataset order
(shuffle off, endless, so a small test set wraps around instead of running out). The result of
`audiopalm.evaluation.perplexity` goes to TensorBoard under `eval/` (eval/loss: the overall mean nll,
eval/perplexity, eval/<task>/nll, eval/<task>/perplexity, eval/modality/<name>/perplexity), to the console (one
line) and, by process 0, to `<model_dir>/eval.jsonl` (one JSON object per evaluation: step, seconds, and the
result's "tasks", "modalities", "overall" and "batches").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from typing import Any, Callable

import jax
from etils import epath
from jax.sharding import Mesh, NamedSharding

from audiopalm.evaluation.perplexity import perplexity
from audiopalm.model import TransformerConfig
from audiopalm.sharding.rules import ShardingRules
from audiopalm.training.metrics import MetricsWriter
from audiopalm.training.train_state import TrainState
from audiopalm.vocab.spec import differences

log = logging.getLogger(__name__)

EVAL_FILE = "eval.jsonl"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Periodic held-out evaluation of a training run.

  Attributes:
    every: evaluate every this many steps, and at the run's last step (0: never).
    num_batches: global batches of the eval input per evaluation (the same ones every time).
  """

  every: int = 0
  num_batches: int = 8

  def __post_init__(self):
    if self.every < 0 or self.num_batches < 1:
      raise ValueError(f"EvalConfig: need every >= 0 (0: off) and num_batches >= 1, got every={self.every}, "
                       f"num_batches={self.num_batches}")


def check_eval_data(cfg: EvalConfig, eval_data: Any, train_data: Any, sharding: NamedSharding) -> None:
  """Fails (ValueError) when evaluation is on and `eval_data` is missing, has another vocabulary than
  `train_data` or a global batch that the batch `sharding` cannot lay out. Reads metadata only."""
  if not cfg.every:
    return
  if eval_data is None:
    raise ValueError(f"EvalConfig.every = {cfg.every} but there is no eval data: set train.eval_data (e.g. add "
                     "--gin_file=gin_configs/mixtures/audiopalm_eval.gin) or EvalConfig.every = 0")
  eval_spec, train_spec = getattr(eval_data, "vocab_spec", None), getattr(train_data, "vocab_spec", None)
  if eval_spec is None or train_spec is None:
    raise ValueError("held-out perplexity needs a vocabulary spec on both the training data and eval_data "
                     f"(a SpeechTextConfig); got {type(train_data).__name__} and {type(eval_data).__name__}")
  diff = differences(train_spec, eval_spec)
  if diff:
    raise ValueError("eval_data's vocabulary is not the training data's (training vs eval): " + "; ".join(diff)
                     + ". Its token ids would mean something else: tokenize the eval data with the training data's "
                     "tokenizers and give both the same VocabConfig")
  spec = sharding.spec[0] if len(sharding.spec) else None
  names = (spec,) if isinstance(spec, str) else (spec or ())
  shards = math.prod(sharding.mesh.shape[name] for name in names)
  if eval_data.global_batch_size % shards:
    raise ValueError(f"eval_data's global_batch_size {eval_data.global_batch_size} must be divisible by the batch "
                     f"shards ({' x '.join(names) or '1'} = {shards})")


class EvalHook:
  """Every `cfg.every` steps: held-out perplexity of the state's parameters on `data` (see the module docstring).

  Off (does nothing) when `cfg.every` is 0. `writer`: the run's TensorBoard writer (the trainer passes the
  metrics hook's, so a run has one event file); None: a writer of its own under `<model_dir>/tensorboard`.
  `on_done(step)` is called after each evaluation (the trainer restarts the throughput clock with it, so that
  evaluation time does not count as training time).
  """

  def __init__(self, model_cfg: TransformerConfig, data: Any, cfg: EvalConfig, mesh: Mesh, rules: ShardingRules,
               model_dir: str, writer: MetricsWriter | None = None, on_done: Callable[[int], None] | None = None):
    self.model_cfg, self.cfg, self.mesh, self.rules, self.on_done = model_cfg, cfg, mesh, rules, on_done
    # The same batches every time: dataset order, and endless (perplexity reads a fixed number of batches).
    self.data = dataclasses.replace(data, shuffle=False, num_epochs=None) if cfg.every else None
    self._own_writer = writer is None and bool(cfg.every)
    self.writer = MetricsWriter(str(epath.Path(model_dir) / "tensorboard")) if self._own_writer else writer
    self.jsonl = epath.Path(model_dir) / EVAL_FILE if jax.process_index() == 0 else None
    self.last_step: int | None = None

  def __call__(self, step: int, state: TrainState, metrics: dict[str, jax.Array]) -> None:
    if self.cfg.every and step % self.cfg.every == 0:
      self.evaluate(step, state.params)

  def finish(self, step: int, state: TrainState) -> None:
    """Evaluates the final parameters (step `step`) unless that step was just evaluated."""
    if self.cfg.every and step != self.last_step:
      self.evaluate(step, state.params)

  def evaluate(self, step: int, params: Any) -> dict[str, Any]:
    """Runs the evaluation (every process) and writes its result (see the module docstring)."""
    start = time.perf_counter()
    result = perplexity(params, self.model_cfg, self.data, self.cfg.num_batches, self.mesh, self.rules)
    seconds = time.perf_counter() - start
    self.last_step = step
    overall = result["overall"]
    shown = {"eval/loss": overall["nll"], "eval/perplexity": overall["perplexity"]}
    detail = {}
    for name, task in result["tasks"].items():
      if task["tokens"]:
        shown[f"eval/{name}/perplexity"] = task["perplexity"]
        detail[f"eval/{name}/nll"] = task["nll"]
    for name, modality in result["modalities"].items():
      detail[f"eval/modality/{name}/perplexity"] = modality["perplexity"]
    shown["eval/seconds"] = seconds
    self.writer.write(step, shown, tensorboard_only=detail)
    if self.jsonl is not None:
      with self.jsonl.open("a") as f:
        f.write(json.dumps({"step": step, "seconds": seconds, **result}) + "\n")
    if self.on_done is not None:
      self.on_done(step)
    return result

  def close(self) -> None:
    if self._own_writer:
      self.writer.close()
