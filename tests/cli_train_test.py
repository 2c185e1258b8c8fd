"""Experiments from the command line: training, exact resume after SIGKILL (text and speech-text inputs: the
loader's state comes back with the checkpoint), SIGTERM, and a SIGKILL during an asynchronous checkpoint save."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from audiopalm.checkpoints.export import load_exported_params
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.model.params import abstract_params
from audiopalm.sharding.params import unbox
from audiopalm.vocab.spec import load_spec

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS, SAVE_EVERY = 30, 10
pytestmark = pytest.mark.slow


# Experiment → (gin flags, loss ratio the first 30 steps must reach: mean of steps 28-30 / mean of steps 1-3).
EXPERIMENTS = {"tiny": (["--gin_file=gin_configs/experiments/tiny.gin"], 0.6),
               "speech_text": (["--gin_file=gin_configs/experiments/speech_text_demo.gin"], 0.8)}


def _command(model_dir, experiment, *extra):
  return [sys.executable, "-m", "audiopalm.main.train", *experiment, f"--gin.MODEL_DIR={model_dir}",
          f"--gin.TRAIN_STEPS={STEPS}", "--gin.TrainerConfig.log_every=1",
          f"--gin.CheckpointConfig.save_interval_steps={SAVE_EVERY}", *extra]


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user would run it
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", **extra)
  return env


def _run(model_dir, log, experiment, **env):
  with open(log, "ab") as out:
    return subprocess.run(_command(model_dir, experiment), cwd=ROOT, env=_env(**env), stdout=out,
                          stderr=subprocess.STDOUT, timeout=600, check=False).returncode


def _start(model_dir, log, experiment):
  out = open(log, "ab")  # pylint: disable=consider-using-with
  return subprocess.Popen(_command(model_dir, experiment), cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)


def _losses(model_dir):
  """Per step, the loss logged last (a resumed run re-logs the steps after its checkpoint)."""
  path = pathlib.Path(model_dir) / "metrics.jsonl"
  if not path.exists():
    return {}
  out = {}
  for line in path.read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      out[record["step"]] = record["loss"]
  return out


def _wait_for_step(proc, model_dir, step, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if max(_losses(model_dir), default=0) >= step:
      return
    if proc.poll() is not None:
      raise AssertionError(f"training exited with {proc.returncode} before step {step}")
    time.sleep(0.05)
  raise AssertionError(f"step {step} not reached in {timeout} s")


def _complete_checkpoints(model_dir):
  root = pathlib.Path(model_dir) / "checkpoints"
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


@pytest.fixture(scope="module")
def flags(request):
  """Experiment name → its command-line flags (the speech-text one reads the demo corpus's tokens, its text task
  their transcripts)."""
  def get(name):
    tokens = request.getfixturevalue("demo_tokens") if name == "speech_text" else None
    extra = [f"--gin.TOKENS_DIR={tokens}", f"--gin.TEXT_DIR={tokens}"] if tokens else []  # text_lm: transcripts
    return EXPERIMENTS[name][0] + extra
  return get


@pytest.fixture(scope="module")
def references(tmp_path_factory, flags):
  """Experiment name → an uninterrupted run: (model_dir, the loss sequence every other run must reproduce)."""
  done = {}

  def get(name):
    if name not in done:
      model_dir = tmp_path_factory.mktemp(f"reference_{name}")
      rc = _run(model_dir, model_dir / "log.txt", flags(name))
      assert rc == 0, (model_dir / "log.txt").read_text()[-3000:]
      done[name] = model_dir, _losses(model_dir)
    return done[name]
  return get


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_trains_and_loss_falls(references, name):
  model_dir, losses = references(name)
  assert sorted(losses) == list(range(1, STEPS + 1))
  first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (28, 29, 30)) / 3
  assert last < EXPERIMENTS[name][1] * first, (first, last)
  for artefact in ("config.gin", "operative_config.gin", "model_config.json", "export/model_config.json"):
    assert (model_dir / artefact).exists(), artefact
  assert "TransformerConfig.d_model = 128" in (model_dir / "operative_config.gin").read_text()
  assert list((model_dir / "tensorboard").glob("events.out.tfevents.*"))
  assert _complete_checkpoints(model_dir)[-1] == STEPS
  # The params-only export loads back as the model's parameter tree.
  config = json.loads((model_dir / "export" / "model_config.json").read_text())
  model = Transformer(TransformerConfig(**config))
  params = load_exported_params(str(model_dir / "export"), unbox(abstract_params(model)))
  assert jax.tree.structure(params) == jax.tree.structure(unbox(abstract_params(model)))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  # Every run keeps its vocabulary next to the checkpoints and in the export (text runs: the byte vocabulary, so
  # continued pretraining can extend it; speech-text runs: text + semantic units).
  spec = load_spec(str(model_dir))
  assert load_spec(str(model_dir / "export")) == spec
  assert (spec.semantic is not None) == (name == "speech_text") and spec.text.kind == "byte"


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_sigkill_then_restart_reproduces_the_loss_sequence(references, flags, name, tmp_path):
  _, expected = references(name)
  proc = _start(tmp_path, tmp_path / "log.txt", flags(name))
  _wait_for_step(proc, tmp_path, 15)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert max(_complete_checkpoints(tmp_path)) in (10, 20)
  assert _run(tmp_path, tmp_path / "log2.txt", flags(name), JAX_DEBUG_LOG_MODULES="jax._src.compiler") == 0, (
      tmp_path / "log2.txt").read_text()[-3000:]
  log = (tmp_path / "log2.txt").read_text()
  assert "Restored checkpoint" in log
  assert _losses(tmp_path) == expected  # bit-exact, every step: same parameters and the same following batches
  # The restart loaded its train step from the run's persistent compilation cache instead of compiling it.
  assert "Persistent compilation cache hit for 'jit_train_step'" in log, log[-3000:]
  assert "Time to the first step" in log


def test_sigterm_saves_a_checkpoint_and_exits(flags, tmp_path):
  proc = _start(tmp_path, tmp_path / "log.txt", flags("tiny"))
  _wait_for_step(proc, tmp_path, 12)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, (tmp_path / "log.txt").read_text()[-3000:]
  logged = max(_losses(tmp_path))
  saved = max(_complete_checkpoints(tmp_path))
  assert saved >= logged >= 12 and saved < STEPS  # the step it stopped at, not just the last periodic save
  assert "Preemption notice" in (tmp_path / "log.txt").read_text()


def test_sigkill_during_async_save_keeps_previous_checkpoint(references, flags, tmp_path):
  _, expected = references("tiny")
  rc = _run(tmp_path, tmp_path / "log.txt", flags("tiny"), AUDIOPALM_FAULT_KILL_DURING_SAVE_STEP="20")
  assert rc == -signal.SIGKILL, (tmp_path / "log.txt").read_text()[-3000:]
  complete = _complete_checkpoints(tmp_path)
  assert 20 not in complete and max(complete) == 10, complete  # step 20 never became a complete checkpoint
  assert any(p.name.startswith("20") for p in (tmp_path / "checkpoints").iterdir())  # it was being written
  assert _run(tmp_path, tmp_path / "log.txt", flags("tiny")) == 0, (tmp_path / "log.txt").read_text()[-3000:]
  assert "Restored checkpoint of step 10" in (tmp_path / "log.txt").read_text()
  assert _losses(tmp_path) == expected
