"""Held-out evaluation during training: perplexity on the test split of the training mixture, as a hook.

    eval_data = eval_input(cfg, train_data)                           # the training mixture on the held-out data
    check_eval_data(cfg, eval_data, train_data)                       # before compiling: a usable eval input?
    hook = EvalHook(model_cfg, eval_data, cfg, mesh, rules, model_dir)
    hook(step, state, metrics)                                        # evaluates when step % cfg.every == 0
    hook.finished(result)                                             # the run's last step, unless just evaluated

The eval input is derived from the training input, not written twice: the same components (formats, format
configs, names), each reading `EvalConfig.split` of `EvalConfig.dataset` (None: of its own dataset), with
training-time augmentation off (`audiopalm.formats.base.evaluation_config`). Every evaluation reads the same
`num_batches` batches: a fresh iterator over the eval input in dataset order (shuffle off, endless, so a small
test set wraps around instead of running out). The result of `audiopalm.evaluation.perplexity` goes to
TensorBoard under `eval/` (eval/loss: the overall mean nll, eval/perplexity, eval/<task>/nll,
eval/<task>/perplexity, eval/modality/<name>/perplexity), to the console (one line) and, by process 0, to
`<model_dir>/eval.jsonl` (one JSON object per evaluation: step, seconds, and the result's "tasks", "modalities",
"overall" and "batches").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Callable

import jax
from etils import epath
from jax.sharding import Mesh

from audiopalm.evaluation.perplexity import perplexity
from audiopalm.files import storage
from audiopalm.formats.base import evaluation_config
from audiopalm.model import TransformerConfig
from audiopalm.sharding.rules import ShardingRules
from audiopalm.training.loop import Hook, LoopResult
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
    dataset: the token dataset every component of the mixture reads for evaluation (e.g. the test split
      tokenized with the training data's tokenizers); None: each component's own dataset.
    split: the split read.
  """

  every: int = 0
  num_batches: int = 8
  dataset: str | None = None
  split: str = "test"

  def __post_init__(self):
    if self.every < 0 or self.num_batches < 1:
      raise ValueError(f"EvalConfig: need every >= 0 (0: off) and num_batches >= 1, got every={self.every}, "
                       f"num_batches={self.num_batches}")


def eval_input(cfg: EvalConfig, train_data: Any) -> Any | None:
  """The eval input of a run on `train_data` (a mixture, `SpeechTextConfig`): its components on the held-out data
  with training-time augmentation off, in dataset order, endless; None when evaluation is off or the input is not
  a mixture (`check_eval_data` then says what is wrong)."""
  if not cfg.every or not hasattr(train_data, "components"):
    return None
  components = tuple(dataclasses.replace(c, dataset=cfg.dataset or c.dataset, split=cfg.split,
                                         config=evaluation_config(c.config)) for c in train_data.components)
  return dataclasses.replace(train_data, components=components, shuffle=False, num_epochs=None)


def check_eval_data(cfg: EvalConfig, eval_data: Any, train_data: Any) -> None:
  """Fails (ValueError) when evaluation is on and there is no eval input (`eval_input` gave None), or its tokens
  have another vocabulary than the training input's (other tokenizers). Reads metadata only."""
  if not cfg.every:
    return
  if eval_data is None:
    raise ValueError(f"EvalConfig.every = {cfg.every} but the training input ({type(train_data).__name__}) is not a "
                     "mixture to evaluate on held-out data: train on a SpeechTextConfig or set EvalConfig.every = 0")
  diff = differences(train_data.vocab_spec, eval_data.vocab_spec)
  if diff:
    raise ValueError(f"the eval data's vocabulary (EvalConfig.dataset={cfg.dataset!r}, split {cfg.split!r}) is not "
                     "the training data's (training vs eval): " + "; ".join(diff) + ". Its token ids would mean "
                     "something else: tokenize the eval data with the training data's tokenizers")


class EvalHook(Hook):
  """Every `cfg.every` steps: held-out perplexity of the state's parameters on `data` (see the module docstring).

  Off (does nothing) when `cfg.every` is 0. `writer`: the run's TensorBoard writer (the trainer passes the
  metrics hook's, so a run has one event file); None: a writer of its own under `<model_dir>/tensorboard`.
  `on_done(step)` is called after each evaluation (the trainer restarts the throughput clock with it, so that
  evaluation time does not count as training time).
  """

  category = "evaluation"

  def __init__(self, model_cfg: TransformerConfig, data: Any, cfg: EvalConfig, mesh: Mesh, rules: ShardingRules,
               model_dir: str, writer: MetricsWriter | None = None, on_done: Callable[[int], None] | None = None):
    self.model_cfg, self.cfg, self.mesh, self.rules, self.on_done = model_cfg, cfg, mesh, rules, on_done
    self.data = data  # `eval_input`'s: the same batches every time (dataset order, endless)
    self._own_writer = writer is None and bool(cfg.every)
    self.writer = MetricsWriter(storage.join(model_dir, "tensorboard")) if self._own_writer else writer
    self.jsonl = epath.Path(model_dir) / EVAL_FILE if jax.process_index() == 0 else None
    self.last_step: int | None = None

  def __call__(self, step: int, state: TrainState, metrics: dict[str, jax.Array]) -> None:
    if self.cfg.every and step % self.cfg.every == 0:
      self.evaluate(step, state.params)

  def finished(self, result: LoopResult) -> None:
    """Evaluates the final parameters unless that step was just evaluated, or the run took no step or was
    preempted (its next start evaluates)."""
    if self.cfg.every and result.step > result.start and not result.preempted and result.step != self.last_step:
      self.evaluate(result.step, result.state.params)

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
