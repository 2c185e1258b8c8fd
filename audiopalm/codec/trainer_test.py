"""The codec GAN trainer on 8 simulated devices: its loss falls, it resumes exactly, its export loads."""

import json

import jax
import numpy as np
import pytest

from audiopalm.audio.io import write_audio
from audiopalm.checkpoints.manager import CheckpointConfig
from audiopalm.codec import checkpoint as codec_checkpoint
from audiopalm.codec.audio_crops import AudioCropsConfig
from audiopalm.codec.discriminators import DiscriminatorConfig
from audiopalm.codec.gan_step import CodecLossConfig, CodecOptimizerConfig
from audiopalm.codec.trainer import CodecTrainerConfig
from audiopalm.main.presets import codec_preset
from audiopalm.main.train_codec import train_codec
from audiopalm.sharding.mesh import MeshConfig

SR = 16000


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
  """Harmonic tones with vibrato: structured audio a tiny codec can learn quickly."""
  root = tmp_path_factory.mktemp("audio")
  rng = np.random.default_rng(0)
  for i in range(12):
    t = np.arange(int(SR * rng.uniform(0.5, 1.0))) / SR
    f0 = rng.uniform(100, 300) * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2
    write_audio(str(root / f"tone_{i}.flac"), wave.astype(np.float32), SR)
  return str(root)


def _run(model_dir, audio_dir, steps, save_every=10):
  return train_codec(
      model_dir=str(model_dir), codec=codec_preset("tiny"),
      data=AudioCropsConfig(paths=(audio_dir,), sample_rate=SR, crop_seconds=0.1, global_batch_size=8),
      discriminator=DiscriminatorConfig(waveform_scales=(1, 2), waveform_channels=4, waveform_max_channels=16,
                                        stft_windows=(256, 128), stft_channels=4),
      losses=CodecLossConfig(mel_windows=(64, 128, 256, 512), adversarial_start_step=20),
      optimizer=CodecOptimizerConfig(learning_rate=3e-3, discriminator_learning_rate=1e-3),
      mesh=MeshConfig(ici={"data": -1, "fsdp": 1, "tensor": 1}),
      checkpoint=CheckpointConfig(save_interval_steps=save_every, async_save=False),
      trainer=CodecTrainerConfig(num_steps=steps, log_every=1))


def _metrics(model_dir):
  return {m["step"]: m for m in map(json.loads, (model_dir / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_codec_trainer_learns_resumes_exactly_and_exports(tmp_path, audio_dir):
  assert jax.device_count() == 8
  straight = tmp_path / "straight"
  result = _run(straight, audio_dir, 30)
  assert result["finished"] and result["step"] == 30
  m = _metrics(straight)
  first = np.mean([m[s]["reconstruction"] for s in range(1, 6)])
  last = np.mean([m[s]["reconstruction"] for s in range(16, 21)])
  assert last < 0.7 * first, (first, last)
  assert "discriminator_loss" in m[21] and "discriminator_loss" not in m[20]  # the GAN starts at step 20
  assert len([k for k in m[30] if k.startswith("codebook_perplexity/level_")]) == 4

  resumed = tmp_path / "resumed"
  assert _run(resumed, audio_dir, 20)["step"] == 20
  assert _run(resumed, audio_dir, 30)["step"] == 30  # resumes from step 20
  again = _metrics(resumed)
  for step in range(21, 31):
    for key in ("generator_loss", "discriminator_loss", "commitment", "codebook_perplexity"):
      assert again[step][key] == m[step][key], (step, key)

  codec = codec_checkpoint.load_codec(result["export"])
  assert codec.config == codec_preset("tiny")
  wave = np.sin(np.arange(SR // 4) * 0.05).astype(np.float32)[None]
  codes, code_lengths = codec.encode(wave)
  assert codes.shape == (1, SR // 4 // 8, 4) and int(code_lengths[0]) == SR // 4 // 8


def test_mismatched_data_and_codec_fail_before_compiling(tmp_path, audio_dir):
  with pytest.raises(ValueError, match="sample_rate 24000 differs"):
    train_codec(model_dir=str(tmp_path), codec=codec_preset("tiny"),
                data=AudioCropsConfig(paths=(audio_dir,), sample_rate=24000, global_batch_size=8))
  with pytest.raises(ValueError, match="not a multiple of the codec hop"):
    train_codec(model_dir=str(tmp_path), codec=codec_preset("tiny"),
                data=AudioCropsConfig(paths=(audio_dir,), sample_rate=SR, crop_seconds=0.1003, global_batch_size=8))
  with pytest.raises(ValueError, match="longest STFT window"):
    train_codec(model_dir=str(tmp_path), codec=codec_preset("tiny"),
                data=AudioCropsConfig(paths=(audio_dir,), sample_rate=SR, crop_seconds=0.1, global_batch_size=8))
