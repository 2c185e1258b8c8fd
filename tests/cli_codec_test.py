"""End-to-end smoke run of the codec: train it from the command line on the bundled speech, resynthesize a file."""

import os
import pathlib
import subprocess
import sys

import pytest
import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEECH = ROOT / "audiopalm" / "data" / "assets" / "demo_speech"


@pytest.mark.slow
def test_train_codec_cli_then_resynthesize(tmp_path):
  model_dir = tmp_path / "codec"
  relative = os.path.relpath(model_dir, ROOT)  # as users write it (orbax itself needs absolute paths)
  train = [sys.executable, "-m", "audiopalm.main.train_codec", "--gin_file=gin_configs/experiments/codec_demo.gin",
           f"--gin.MODEL_DIR={relative}", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8",
           "--gin.CodecLossConfig.adversarial_start_step=1", "--gin.CodecTrainerConfig.log_every=1"]
  out = subprocess.run(train, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "step 2 " in out.stderr and "discriminator_loss" in out.stderr  # the GAN step ran
  for name in ("config.gin", "operative_config.gin", "metrics.jsonl", "export/codec_config.json"):
    assert (model_dir / name).exists(), name

  source = sorted((SPEECH / "test").rglob("*.flac"))[0]
  resynth = [sys.executable, "-m", "tools.resynthesize", f"--codec={relative}/export", f"--input={source}",
             f"--output={tmp_path / 'out.wav'}"]
  out = subprocess.run(resynth, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "SI-SNR" in out.stdout and "kbps" in out.stdout
  info, original = sf.info(str(tmp_path / "out.wav")), sf.info(str(source))
  assert info.samplerate == 16000 and info.frames == original.frames
