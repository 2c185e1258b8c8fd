"""The language model's run: checked before compiling, its step program, its state restored or initialised.

    device_mesh = validate(model_dir=..., model=..., data=..., step=..., mesh=..., rules=...)
    run = prepare(model_dir=..., model=..., data=..., ..., device_mesh=device_mesh, rules=rules)
    run_loop(state=run.state, step_fn=run.step, batches=run.batches(), ..., hooks=[...])   # audiopalm.training.loop

The entry point `audiopalm.main.train` composes these with the hooks it wants. `step_program` is the one place the
train step is jitted: the trainer, `tools.aot_compile` and `tools.benchmark_train` all compile what it returns.

Library code (no gin): the entry point binds the arguments from gin files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Iterator, Protocol

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from audiopalm.checkpoints.manager import CheckpointConfig, Checkpointer
from audiopalm.data.iterator import BATCH_KEYS, Batch, InputIterator, host_row_range, to_global_batch
from audiopalm.files import storage
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.model.params import abstract_params
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.params import sharding_context
from audiopalm.sharding.rules import ShardingRules, batch_sharding
from audiopalm.training.init_from import PROVENANCE_FILE, InitFromConfig, initial_state, provenance
from audiopalm.training.optimizer import OptimizerConfig, make_optimizer, make_schedule
from audiopalm.training.param_groups import ParamGroupsConfig, lr_scales
from audiopalm.training.train_state import TrainState, init_train_state, state_shardings
from audiopalm.training.train_step import TrainStepConfig, make_train_step
from audiopalm.vocab.spec import SPEC_FILE, VocabSpec, check_compatible, load_spec, save_spec

log = logging.getLogger(__name__)


class InputSpec(Protocol):
  """What the trainer needs from a data source (e.g. `TextSourceConfig`, `SpeechTextConfig`)."""

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
    peak_flops_per_device: override of the per-device peak used for MFU.
    export_params: write a params-only export to `<model_dir>/export` at the end.
    goodput_every_s: seconds between updates of this invocation's goodput record (`audiopalm.training.goodput`;
      also updated at every checkpoint): a killed process's steps after its last update are not counted as
      redone by the restart.
  """

  num_steps: int = 1000
  log_every: int = 10
  seed: int = 0
  peak_flops_per_device: float | None = None
  export_params: bool = True
  goodput_every_s: float = 10.0

  def __post_init__(self):
    if self.num_steps < 0 or self.log_every < 1 or not self.goodput_every_s > 0:
      raise ValueError(f"TrainerConfig: need num_steps >= 0, log_every >= 1 and goodput_every_s > 0, got "
                       f"{self.num_steps}, {self.log_every}, {self.goodput_every_s}")


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
  outside = [s for s in step_cfg.input_noise_streams if s >= len(model.stream_vocab)]
  if outside:
    raise ValueError(f"TrainStepConfig.input_noise_streams {list(step_cfg.input_noise_streams)}: the model has "
                     f"{len(model.stream_vocab)} token streams (TransformerConfig.stream_vocab), so not {outside}")
  if vocab_size is not None and vocab_size > model.vocab_size:
    raise ValueError(f"The input's token ids go up to {vocab_size - 1} but the model's vocab_size is "
                     f"{model.vocab_size}; set TransformerConfig.vocab_size >= {vocab_size}")


def fit_model_to_input(model: TransformerConfig, data: InputSpec) -> TransformerConfig:
  """The model as its input lays tokens out: a multi-stream input (`data.stream_vocab`, the AudioLM stages'
  'streams' layout) gives the model its `stream_vocab` (one output head per stream); a model configured with
  other streams than its input's is refused (ValueError naming both)."""
  wanted = tuple(getattr(data, "stream_vocab", ()) or ())
  if model.stream_vocab == wanted:
    return model
  if model.stream_vocab:
    raise ValueError(f"TransformerConfig.stream_vocab is {list(model.stream_vocab)} but the input has "
                     f"{len(wanted) or 1} token stream(s){' ' + str(list(wanted)) if wanted else ''}: the stage's "
                     "layout does not match the model (drop TransformerConfig.stream_vocab: the trainer sets it)")
  return model.replace(stream_vocab=wanted)


def _check_vocab_spec(data: InputSpec, model_dir: str, has_checkpoint: bool) -> VocabSpec | None:
  """The input's vocabulary spec (None for inputs without one). With a checkpoint to resume from, a spec that
  differs from the one saved with it is refused: every token id must keep the meaning it was trained with.
  Without one, the spec is (re)written to `<model_dir>/vocab_spec.json` (atomically, by process 0)."""
  spec = getattr(data, "vocab_spec", None)
  saved = storage.join(model_dir, SPEC_FILE)
  if has_checkpoint and storage.is_file(saved):
    if spec is None:
      raise ValueError(f"{saved} exists but the input has no vocabulary spec: this run was trained on other data")
    check_compatible(load_spec(saved), spec, "the training data")
  elif spec is not None and jax.process_index() == 0:
    save_spec(spec, model_dir)
  return spec


STREAM_KEYS = ("inputs", "targets", "weights")  # [batch, length, streams] for a multi-stream model


@dataclasses.dataclass(frozen=True, eq=False)
class StepProgram:
  """The jitted train step of a run and the layout it is compiled for.

  `step_fn(state, batch) -> (state, metrics)` takes and returns the state in `shardings` (donated) and the batch
  (`BATCH_KEYS`, [global batch, seq_len]) in `input_sharding`; `lower` traces it for abstract inputs.
  """

  net: Transformer
  tx: optax.GradientTransformation
  mesh: Mesh
  rules: ShardingRules
  abstract: TrainState
  shardings: TrainState
  input_sharding: NamedSharding
  step_fn: Any

  def abstract_inputs(self, global_batch_size: int, seq_len: int) -> tuple[TrainState, Batch]:
    """ShapeDtypeStructs (with shardings) of the state and of a batch."""
    streams = self.net.cfg.token_streams  # inputs, targets and weights carry one token per stream
    shape = lambda k: (global_batch_size, seq_len) + ((streams,) if streams > 1 and k in STREAM_KEYS else ())  # noqa: E731
    batch = {k: jax.ShapeDtypeStruct(shape(k), jnp.float32 if k == "weights" else jnp.int32,
                                     sharding=self.input_sharding) for k in BATCH_KEYS}
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), self.abstract,
                         self.shardings)
    return state, batch

  def lower(self, global_batch_size: int, seq_len: int) -> jax.stages.Lowered:
    """The step traced and lowered for this mesh (the model's logical constraints resolved on it)."""
    with sharding_context(self.mesh, self.rules):
      return self.step_fn.lower(*self.abstract_inputs(global_batch_size, seq_len))


def step_program(*, model: TransformerConfig, optimizer: OptimizerConfig, step: TrainStepConfig,
                 param_groups: ParamGroupsConfig, vocab_spec: VocabSpec | None, mesh: Mesh,
                 rules: ShardingRules) -> StepProgram:
  """The train step of `model` with this optimizer (and per-group learning-rates: `vocab_spec` says which rows
  are text), jitted with the state's and the batch's shardings on `mesh` and the state donated."""
  net = Transformer(model)
  text_rows = vocab_spec.text.size if vocab_spec else None
  tx = make_optimizer(optimizer, lr_scales(param_groups, abstract_params(net), text_rows))
  abstract, shardings = state_shardings(net, tx, mesh, rules)
  input_sharding = batch_sharding(mesh, rules)
  step_fn = jax.jit(make_train_step(net, tx, step, make_schedule(optimizer)),
                    in_shardings=(shardings, input_sharding), out_shardings=(shardings, None), donate_argnums=0)
  return StepProgram(net, tx, mesh, rules, abstract, shardings, input_sharding, step_fn)


def validate(*, model_dir: str, model: TransformerConfig, data: InputSpec, step: TrainStepConfig, mesh: MeshConfig,
             rules: ShardingRules) -> Mesh:
  """Everything that can be checked before compiling (ValueError naming the problem); returns the device mesh."""
  if not str(model_dir):
    raise ValueError("model_dir is empty: set MODEL_DIR (--gin.MODEL_DIR=...)")
  device_mesh = make_mesh(mesh)
  rules.validate(device_mesh.axis_names)
  validate_inputs(data.global_batch_size, data.seq_len, getattr(data, "vocab_size", None), model,
                  batch_sharding(device_mesh, rules), step)
  if fit_model_to_input(model, data) != model:
    raise ValueError(f"the input has {len(data.stream_vocab)} token streams; the model has none (set its "
                     "stream_vocab with fit_model_to_input)")
  return device_mesh


@dataclasses.dataclass(eq=False)
class Run:
  """A run ready for the loop: its step program, input, checkpointer and first state (restored or new)."""

  program: StepProgram
  data: InputSpec
  data_iter: InputIterator
  checkpointer: Checkpointer
  state: TrainState
  start: int  # steps the state has taken
  vocab: VocabSpec | None  # the input's vocabulary spec (saved with the checkpoints)

  def step(self, step: int, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    """The loop's step function (the step number does not change the language model's step)."""
    del step
    return self.program.step_fn(state, batch)

  def batches(self) -> Iterator[Batch]:
    """Global batches of this process's rows of the input, one read per step."""
    for local in self.data_iter:
      yield to_global_batch({k: local[k] for k in BATCH_KEYS}, self.program.input_sharding,
                            self.data.global_batch_size)


def prepare(*, model_dir: str, model: TransformerConfig, data: InputSpec, optimizer: OptimizerConfig,
            step: TrainStepConfig, device_mesh: Mesh, rules: ShardingRules, checkpoint: CheckpointConfig,
            trainer: TrainerConfig, init_from: InitFromConfig, param_groups: ParamGroupsConfig) -> Run:
  """Builds the step and the input, then restores the newest complete checkpoint, or initialises: from
  `init_from.path` (continued pretraining, the vocabulary extended to the input's) or at random."""
  storage.makedirs(model_dir)
  if jax.process_index() == 0:
    storage.write_text(storage.join(model_dir, "model_config.json"), json.dumps(dataclasses.asdict(model), indent=2))
  log.info("Mesh %s on %d devices (%d processes)", dict(device_mesh.shape), device_mesh.size, jax.process_count())

  program = step_program(model=model, optimizer=optimizer, step=step, param_groups=param_groups,
                         vocab_spec=getattr(data, "vocab_spec", None), mesh=device_mesh, rules=rules)
  row_start, row_stop = host_row_range(program.input_sharding, data.global_batch_size, data.seq_len)
  data_iter = data.make_iterator(row_start, row_stop)

  checkpointer = Checkpointer(model_dir, checkpoint)
  vocab = _check_vocab_spec(data, model_dir, checkpointer.latest_step() is not None)
  with sharding_context(device_mesh, rules):
    state = checkpointer.restore(program.abstract, program.shardings, data_iter)
  if state is None and init_from.path is not None:
    state = initial_state(init_from, model, program.tx, device_mesh, rules, vocab, trainer.seed)
    if jax.process_index() == 0:
      # Over the file of a run that stopped before its first checkpoint.
      storage.write_text(storage.join(model_dir, PROVENANCE_FILE), json.dumps(provenance(init_from), indent=2))
  elif state is None:
    state = init_train_state(program.net, program.tx, device_mesh, rules, trainer.seed)
    log.info("Initialised a new model (%s)", model_dir)
  return Run(program, data, data_iter, checkpointer, state, int(jax.device_get(state.step)), vocab)
