"""The codec's run: checked before compiling, built, restored or initialised (k-means on the first batch).

    run = prepare(model_dir=..., codec=..., data=..., ...)
    run_loop(state=run.state, step_fn=run.step, batches=run.batches(), ..., hooks=[CodecMetricsHook(...), ...])

Library code (no gin): the entry point `audiopalm.main.train_codec` binds the arguments from gin files and hands
the loop (`audiopalm.training.loop`, the language model's too) its hooks. The run uses the same stack as the
language model: a device mesh (the batch of crops is sharded over its data and fsdp axes, the small codec and
discriminators are replicated), orbax checkpoints of (train state, data iterator) with exact resume, SIGTERM
handling, TensorBoard/console/JSONL metrics. At the end the codec (encoder/decoder + codebooks + config) is
exported to `<model_dir>/export` (`CodecExportHook`), loadable by `audiopalm.codec.checkpoint.load_codec` and so
nameable by path in the tokenization job.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Iterator

import jax
import numpy as np
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec

from audiopalm.checkpoints.manager import CheckpointConfig, Checkpointer
from audiopalm.codec import checkpoint as codec_checkpoint
from audiopalm.codec.audio_crops import AudioCropsConfig
from audiopalm.codec.config import CodecConfig
from audiopalm.codec.discriminators import DiscriminatorConfig, MultiDiscriminator
from audiopalm.codec.gan_step import (CodecLossConfig, CodecOptimizerConfig, CodecTrainState, GanModel, init_state,
                                      kmeans_init_codebooks, make_train_step)
from audiopalm.data.iterator import host_row_range, to_global_batch
from audiopalm.files import storage
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules, batch_sharding
from audiopalm.training.loop import Hook, LoopResult
from audiopalm.training.metrics import MetricsWriter

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CodecTrainerConfig:
  """Loop options.

  Attributes:
    num_steps: train until the state's step reaches this.
    log_every: metrics period in steps.
    seed: initialisation seed.
    export: write the codec to `<model_dir>/export` at the end.
  """

  num_steps: int = 1000
  log_every: int = 10
  seed: int = 0
  export: bool = True

  def __post_init__(self):
    if self.num_steps < 0 or self.log_every < 1:
      raise ValueError(f"CodecTrainerConfig: need num_steps >= 0 and log_every >= 1, got {self.num_steps}, "
                       f"{self.log_every}")


def validate(codec: CodecConfig, data: AudioCropsConfig, discriminator: DiscriminatorConfig, losses: CodecLossConfig,
             batch_shards: int) -> None:
  """Fails before compiling if the data, the codec and the losses do not fit together."""
  problems = []
  if data.sample_rate != codec.sample_rate:
    problems.append(f"the data's sample_rate {data.sample_rate} differs from the codec's {codec.sample_rate}")
  crop = data.crop_samples
  if crop % codec.hop_length:
    problems.append(f"crop of {crop} samples is not a multiple of the codec hop {codec.hop_length}: set "
                    f"AudioCropsConfig.crop_seconds to a multiple of {codec.hop_length / codec.sample_rate} s")
  longest = max(losses.mel_windows + discriminator.stft_windows)
  if crop <= longest:
    problems.append(f"crop of {crop} samples is not longer than the longest STFT window ({longest}) of the mel "
                    "loss / STFT discriminators: use longer crops or smaller windows")
  if data.global_batch_size % batch_shards:
    problems.append(f"global_batch_size {data.global_batch_size} is not divisible by the {batch_shards} batch shards")
  if problems:
    raise ValueError("cannot train this codec: " + "; ".join(problems))


@dataclasses.dataclass(eq=False)
class CodecRun:
  """A codec run ready for the loop: both step functions, the input, the checkpointer and the first state."""

  model: GanModel
  steps: dict[bool, Any]  # adversarial? → the jitted step
  adversarial_start_step: int
  rows: NamedSharding  # the batch of crops, over the mesh's batch axes
  data: AudioCropsConfig
  data_iter: Any
  checkpointer: Checkpointer
  state: CodecTrainState
  start: int  # steps the state has taken
  first_batch: Any | None  # a new codec's first batch (its codebooks were fitted on it), trained on first

  def step(self, step: int, state: CodecTrainState, batch: Any) -> tuple[CodecTrainState, dict[str, jax.Array]]:
    """The loop's step function: reconstruction-only before `adversarial_start_step`, then adversarial."""
    return self.steps[step >= self.adversarial_start_step](state, batch)

  def batches(self) -> Iterator[Any]:
    """Global batches of this process's crops (a new codec's first batch first), one read per step."""
    if self.first_batch is not None:
      batch, self.first_batch = self.first_batch, None
      yield batch
    for local in self.data_iter:
      yield to_global_batch(local, self.rows, self.data.global_batch_size)


def prepare(*, model_dir: str, codec: CodecConfig, data: AudioCropsConfig, discriminator: DiscriminatorConfig,
            losses: CodecLossConfig, optimizer: CodecOptimizerConfig, mesh: MeshConfig, checkpoint: CheckpointConfig,
            trainer: CodecTrainerConfig) -> CodecRun:
  """Validates before compiling, builds the networks, optimizers, steps and input, then restores the newest
  complete checkpoint, or initialises (codebooks: k-means of the first batch)."""
  # 1. Validate everything that can be checked before compiling.
  if not str(model_dir):
    raise ValueError("model_dir is empty: set MODEL_DIR (--gin.MODEL_DIR=...)")
  device_mesh = make_mesh(mesh)
  rows = NamedSharding(device_mesh, PartitionSpec(batch_sharding(device_mesh, ShardingRules()).spec[0]))
  batch_shards = int(np.prod([device_mesh.shape[a] for a in _axes(rows.spec[0])]))
  validate(codec, data, discriminator, losses, batch_shards)
  storage.makedirs(model_dir)
  if jax.process_index() == 0:
    storage.write_text(storage.join(model_dir, "codec_config.json"), codec_checkpoint.config_to_json(codec))
  log.info("Codec %.1f Hz × %d levels (%.2f kbps); mesh %s on %d devices", codec.frame_rate, codec.num_quantizers,
           codec.bitrate() / 1000, dict(device_mesh.shape), device_mesh.size)

  # 2. Build the networks, optimizers, step functions and input.
  model = GanModel(codec=codec, discriminator=MultiDiscriminator(discriminator), losses=losses,
                   generator_tx=optimizer.make(optimizer.learning_rate),
                   discriminator_tx=optimizer.make(optimizer.discriminator_learning_rate))
  replicated = NamedSharding(device_mesh, PartitionSpec())
  abstract = jax.eval_shape(lambda: init_state(model, jax.random.key(trainer.seed), data.crop_samples))
  shardings = jax.tree.map(lambda _: replicated, abstract)
  row_start, row_stop = host_row_range(rows, data.global_batch_size, data.crop_samples)
  data_iter = data.make_iterator(row_start, row_stop)
  steps = {adv: jax.jit(make_train_step(model, adversarial=adv), in_shardings=(shardings, rows),
                        out_shardings=(shardings, None), donate_argnums=0) for adv in (False, True)}

  # 3. Resume from the newest complete checkpoint, or initialise (codebooks: k-means of the first batch).
  checkpointer = Checkpointer(model_dir, checkpoint)
  state = checkpointer.restore(abstract, shardings, data_iter)
  first_batch = None
  if state is None:
    state = jax.jit(lambda: init_state(model, jax.random.key(trainer.seed), data.crop_samples),
                    out_shardings=shardings)()
    first_batch = to_global_batch(next(data_iter), rows, data.global_batch_size)
    state = jax.jit(lambda s, b: kmeans_init_codebooks(model, s, b), out_shardings=shardings)(state, first_batch)
    log.info("Initialised a new codec (%s); codebooks from k-means of the first batch", model_dir)
  return CodecRun(model, steps, losses.adversarial_start_step, rows, data, data_iter, checkpointer, state,
                  int(jax.device_get(state.step)), first_batch)


def _axes(spec_entry) -> tuple[str, ...]:
  if spec_entry is None:
    return ()
  return (spec_entry,) if isinstance(spec_entry, str) else tuple(spec_entry)


class CodecExportHook(Hook):
  """Once the run has reached `num_steps`: the codec (`export_codec`) to `<model_dir>/export`; kept as it is when
  this invocation took no step and the export exists."""

  def __init__(self, model_dir: str, num_steps: int, codec: CodecConfig):
    self.path = storage.join(model_dir, "export")
    self.num_steps, self.codec = num_steps, codec

  def finished(self, result: LoopResult) -> None:
    if result.step < self.num_steps:
      return
    if result.step > result.start or not storage.isdir(storage.join(self.path, codec_checkpoint.VARIABLES_DIR)):
      export_codec(result.state, self.codec, self.path)


def export_codec(state: CodecTrainState, codec: CodecConfig, path: str) -> None:
  """Writes the codec (config + encoder/decoder + codebooks), replacing an older export only once complete."""
  target, staging = epath.Path(path), epath.Path(path + ".tmp")
  if jax.process_index() == 0 and staging.exists():
    staging.rmtree()
  codec_checkpoint.save_codec(str(staging), codec, {"params": state.generator, "codebooks": state.codebooks})
  if jax.process_index() == 0:
    if target.exists():
      target.rmtree()
    staging.rename(target)
  log.info("Exported the codec to %s", target)


class CodecMetricsHook(Hook):
  """Every `every` steps: losses, gradient norms, reconstruction metrics (SI-SNR, mel distance), codebook
  perplexity / usage / replaced codes per level, and audio seconds per second, to TensorBoard, the console and
  `<model_dir>/metrics.jsonl`. The console shows level means; TensorBoard and the JSONL have every level."""

  def __init__(self, model_dir: str, every: int, audio_seconds_per_step: float):
    self.every = every
    self.audio_seconds_per_step = audio_seconds_per_step
    self.writer = MetricsWriter(storage.join(model_dir, "tensorboard"))
    self.jsonl = epath.Path(model_dir) / "metrics.jsonl" if jax.process_index() == 0 else None
    self._last: tuple[float, int] | None = None

  def started(self, step: int) -> None:
    self._last = (time.perf_counter(), step)

  def __call__(self, step: int, state: CodecTrainState, metrics: dict[str, jax.Array]) -> None:
    if step % self.every:
      return
    values = jax.device_get(metrics)
    scalars: dict[str, float] = {}
    per_level: dict[str, float] = {}
    for name, value in values.items():
      value = np.asarray(value)
      if value.ndim:
        scalars[name] = float(value.mean())
        per_level.update({f"{name}/level_{q}": float(v) for q, v in enumerate(value)})
      else:
        scalars[name] = float(value)
    now = time.perf_counter()
    if self._last is not None and step > self._last[1]:
      step_time = (now - self._last[0]) / (step - self._last[1])
      scalars.update(step_time_s=step_time, audio_seconds_per_s=self.audio_seconds_per_step / step_time)
    self._last = (now, step)
    self.writer.write(step, scalars, tensorboard_only=per_level)
    if self.jsonl is not None:
      with self.jsonl.open("a") as f:
        f.write(json.dumps({"step": step, **scalars, **per_level}) + "\n")

  def close(self) -> None:
    self.writer.close()
