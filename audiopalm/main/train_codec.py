r"""Entry point: `python -m audiopalm.main.train_codec --gin_file=... --gin.MODEL_DIR=... [--gin.NAME=VALUE ...]`.

Trains a SoundStream-style codec (see `gin_configs/experiments/codec_demo.gin`) and exports it to
`<MODEL_DIR>/export`, which `audiopalm.codec.checkpoint.load_codec` (and the tokenization job) read.
Multi-process runs add `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`, as
`audiopalm.main.train`.
"""

from __future__ import annotations

from typing import Any

import gin

from audiopalm.checkpoints.manager import CheckpointConfig
from audiopalm.cli import entry_point
from audiopalm.codec import trainer as codec_trainer
from audiopalm.codec.audio_crops import AudioCropsConfig
from audiopalm.codec.config import CodecConfig
from audiopalm.codec.discriminators import DiscriminatorConfig
from audiopalm.codec.gan_step import CodecLossConfig, CodecOptimizerConfig
from audiopalm.main import configurables  # noqa: F401  (the gin configurables train_codec's arguments name)
from audiopalm.sharding.mesh import MeshConfig
from audiopalm.training.goodput import Goodput
from audiopalm.training.loop import run_loop


def train_codec(*, model_dir: str, codec: CodecConfig, data: AudioCropsConfig,
                discriminator: DiscriminatorConfig = DiscriminatorConfig(), losses: CodecLossConfig = CodecLossConfig(),
                optimizer: CodecOptimizerConfig = CodecOptimizerConfig(), mesh: MeshConfig = MeshConfig(),
                checkpoint: CheckpointConfig = CheckpointConfig(),
                trainer: codec_trainer.CodecTrainerConfig = codec_trainer.CodecTrainerConfig()) -> dict[str, Any]:
  """Trains (or resumes training of) a codec on audio crops up to `trainer.num_steps`.

  Returns {"step", "finished", "model_dir", "export"} (export: the codec's path, or None).
  """
  # 1-3. Validate, build, then restore the newest checkpoint or initialise.
  run = codec_trainer.prepare(model_dir=model_dir, codec=codec, data=data, discriminator=discriminator,
                              losses=losses, optimizer=optimizer, mesh=mesh, checkpoint=checkpoint, trainer=trainer)
  # 4. The periodic work, in the order it runs after each step.
  metrics = codec_trainer.CodecMetricsHook(model_dir, trainer.log_every,
                                           data.global_batch_size * data.crop_samples / data.sample_rate)
  hooks = [metrics]
  export = codec_trainer.CodecExportHook(model_dir, trainer.num_steps, codec) if trainer.export else None
  if export is not None:
    hooks.append(export)
  # 5. The loop.
  result = run_loop(state=run.state, step_fn=run.step, batches=run.batches(), start=run.start,
                    num_steps=trainer.num_steps, checkpointer=run.checkpointer, data_iter=run.data_iter, hooks=hooks,
                    goodput=Goodput(model_dir, run.start, metrics.writer))
  finished = result.step >= trainer.num_steps
  return {"step": result.step, "finished": finished, "model_dir": model_dir,
          "export": export.path if export is not None and finished else None}


TRAIN_CODEC = gin.external_configurable(train_codec, "train_codec")


def main(argv: list[str] | None = None) -> None:
  entry_point.run("python -m audiopalm.main.train_codec", __doc__, TRAIN_CODEC, "train_codec.model_dir", argv,
                  compilation_cache=True)


if __name__ == "__main__":
  main()
