"""The loop itself on tiny inputs: abort on non-finite steps, config errors before compiling."""

import dataclasses
import json
import logging
import types

import grain
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from audiopalm.checkpoints.manager import CheckpointConfig
from audiopalm.data.text_source import TextSourceConfig
from audiopalm.main.presets import model_preset
from audiopalm.main.train import train
from audiopalm.training.train_step import TrainStepConfig
from audiopalm.training.trainer import fit_model_to_input, validate_inputs
from audiopalm.sharding.mesh import MeshConfig
from audiopalm.training.loss_guard import LossGuardConfig, LossSpikeError, NonFiniteError
from audiopalm.training.optimizer import OptimizerConfig
from audiopalm.training.trainer import TrainerConfig

TINY = model_preset("tiny", num_layers=1, d_model=64, d_ff=128, head_dim=16)


@dataclasses.dataclass(frozen=True)
class ConstantSource:
  """`num_batches` batches of one repeated row with loss weights `weight` (NaN: every step non-finite)."""
  weight: float = 1.0
  num_batches: int = 1000
  global_batch_size: int = 8
  seq_len: int = 16

  def make_iterator(self, row_start, row_stop):
    n, t = row_stop - row_start, self.seq_len
    row = {"inputs": np.ones((t,), np.int32), "targets": np.ones((t,), np.int32),
           "positions": np.arange(t, dtype=np.int32), "segment_ids": np.ones((t,), np.int32),
           "weights": np.full((t,), self.weight, np.float32)}
    return iter(grain.MapDataset.source([row] * (n * self.num_batches)).batch(n).to_iter_dataset())


def test_consecutive_nonfinite_steps_abort(tmp_path):
  with pytest.raises(NonFiniteError, match="3 consecutive steps"):
    train(model_dir=str(tmp_path), model=TINY, data=ConstantSource(weight=np.nan), mesh=MeshConfig(ici={"data": -1}),
          checkpoint=CheckpointConfig(save_interval_steps=100), trainer=TrainerConfig(num_steps=20, log_every=1),
          loss_guard=LossGuardConfig(max_consecutive_nonfinite=3))
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(logged) <= 4 and logged[-1]["skipped_steps"] >= 3


def test_batch_that_cannot_be_sharded_fails_before_compiling(tmp_path):
  text = tmp_path / "t.txt"
  text.write_text("hello world\n\nanother paragraph\n")
  data = TextSourceConfig(paths=(str(text),), seq_len=16, global_batch_size=6)
  with pytest.raises(ValueError, match=r"global_batch_size 6 must be divisible by the batch shards \(data x fsdp = 8\)"):
    train(model_dir=str(tmp_path / "m"), model=TINY, data=data, mesh=MeshConfig(ici={"data": 4, "fsdp": -1}),
          trainer=TrainerConfig(num_steps=1))


def test_exhausted_input_saves_and_stops(tmp_path):
  result = train(model_dir=str(tmp_path), model=TINY, data=ConstantSource(num_batches=3),
                 mesh=MeshConfig(ici={"data": -1}), checkpoint=CheckpointConfig(save_interval_steps=100),
                 trainer=TrainerConfig(num_steps=10, log_every=1))
  assert result["step"] == 3 and not result["finished"]
  assert (tmp_path / "checkpoints" / "3").exists()


def test_model_vocabulary_must_cover_the_input(tmp_path):
  text = tmp_path / "t.txt"
  text.write_text("hello world\n")
  data = TextSourceConfig(paths=str(text), seq_len=16, global_batch_size=8)
  with pytest.raises(ValueError, match="vocab_size is 256"):
    train(model_dir=str(tmp_path / "m"), model=TINY.replace(vocab_size=256), data=data,
          mesh=MeshConfig(ici={"data": -1}), trainer=TrainerConfig(num_steps=1))


def test_vocab_spec_is_saved_and_a_different_vocabulary_is_refused_on_resume(tmp_path):
  from audiopalm.data.mixture import MixtureComponent  # pylint: disable=import-outside-toplevel
  from audiopalm.data.speech_text_source import SpeechTextConfig  # pylint: disable=import-outside-toplevel
  from audiopalm.tokens import synthetic  # pylint: disable=import-outside-toplevel
  from audiopalm.vocab.spec import load_spec  # pylint: disable=import-outside-toplevel

  def data(name, semantic_vocab):
    synthetic.write_synthetic_dataset(str(tmp_path / name), synthetic.SyntheticConfig(
        examples=16, num_shards=1, min_seconds=0.5, max_seconds=1.0, semantic_vocab=semantic_vocab))
    return SpeechTextConfig(components=(MixtureComponent("asr", str(tmp_path / name)),), seq_len=64,
                            global_batch_size=8, read_threads=0, packing_bins=4)

  first = data("a", 64)
  run = dict(model_dir=str(tmp_path / "m"), model=TINY, mesh=MeshConfig(ici={"data": -1}),
             checkpoint=CheckpointConfig(save_interval_steps=100))
  # A run that stopped before any checkpoint (here: its stage sequences cannot fit a row of 64) binds nothing.
  stage = SpeechTextConfig(components=(MixtureComponent("coarse_acoustic", str(tmp_path / "a")),), seq_len=64,
                           global_batch_size=8)
  with pytest.raises(ValueError, match="longer than the row length 64"):
    train(data=stage, trainer=TrainerConfig(num_steps=2), **{**run, "model": TINY.replace(vocab_size=12800)})
  train(data=first, trainer=TrainerConfig(num_steps=2, log_every=1), **run)
  assert load_spec(str(tmp_path / "m")) == first.vocab_spec == load_spec(str(tmp_path / "m" / "export"))
  with pytest.raises(ValueError, match="the checkpoint's vocabulary and the training data's disagree: semantic: "
                     "ids \\[258, 322\\) of semantic-synthetic-k64 vs ids \\[258, 290\\) of semantic-synthetic-k32"):
    train(data=data("b", 32), trainer=TrainerConfig(num_steps=4, log_every=1), **run)
  assert train(data=first, trainer=TrainerConfig(num_steps=3, log_every=1), **run)["step"] == 3  # same data resumes


@dataclasses.dataclass(frozen=True)
class PoisonedSource:
  """Batches of one repeated token (easy: the loss falls fast), except the batches at positions `poisoned`, whose
  targets are random tokens (a loss spike). Its state is grain's (one process)."""
  poisoned: tuple[int, ...] = ()
  global_batch_size: int = 8
  seq_len: int = 16

  def make_iterator(self, row_start, row_stop):
    n, t = row_stop - row_start, self.seq_len
    rng = np.random.default_rng(0)

    def batch(b):
      targets = rng.integers(2, 250, (n, t)) if b in self.poisoned else np.full((n, t), 7)
      return {"inputs": np.ones((n, t), np.int32), "targets": targets.astype(np.int32),
              "positions": np.tile(np.arange(t, dtype=np.int32), (n, 1)), "segment_ids": np.ones((n, t), np.int32),
              "weights": np.ones((n, t), np.float32)}
    return iter(grain.MapDataset.range(1000).map(batch).to_iter_dataset())


SPIKES = LossGuardConfig(spike_multiple=3.0, window=4, skip_batches=2, max_rewinds=2)


def _spike_run(tmp_path, data, num_steps):
  return train(model_dir=str(tmp_path), model=TINY, data=data, mesh=MeshConfig(ici={"data": -1}),
               optimizer=OptimizerConfig(name="adamw", peak_lr=1e-2, schedule="constant", warmup_steps=1),
               checkpoint=CheckpointConfig(save_interval_steps=4, max_to_keep=None),
               trainer=TrainerConfig(num_steps=num_steps, log_every=1), loss_guard=SPIKES)


def test_a_loss_spike_rolls_back_to_the_checkpoint_before_it_and_skips_the_bad_batches(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  result = _spike_run(tmp_path, PoisonedSource(poisoned=(13,)), 20)  # batch 13 is step 14's
  assert result["finished"]
  assert "Rewind: the loss of step 14" in caplog.text
  assert "Rolling back to step 12 and skipping 2 batches" in caplog.text
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  steps = [r["step"] for r in logged]
  # Steps 1-15 ran (15 found step 14's spike), then 13-20 again from checkpoint 12; the checkpoints after 12 were
  # dropped when the run was rolled back.
  assert steps == list(range(1, 15)) + list(range(13, 21)), steps
  assert logged[-1]["rewinds"] == 1 and max(r["loss"] for r in logged[-8:]) < logged[13]["loss"] / 3
  loop = json.loads((tmp_path / "checkpoints" / "20" / "loop" / "metadata").read_text())
  assert loop["rewinds"] == [{"bad_step": 14, "found_at": 15, "to": 12, "skipped_batches": 2,
                              "reason": loop["rewinds"][0]["reason"]}]
  # Checkpoint 12 was written again at the rollback, with the rewind and the input's new position in it.
  assert json.loads((tmp_path / "checkpoints" / "12" / "loop" / "metadata").read_text()) == loop
  summary = json.loads((tmp_path / "goodput" / "summary.json").read_text())
  assert summary["redone_steps"] == 3 and 0 < summary["goodput"] < 1  # steps 13-15 were taken twice


def test_past_the_rewind_cap_a_spiking_run_ends_naming_it(tmp_path):
  with pytest.raises(LossSpikeError, match="no rewind is left \\(2 of at most 2 taken\\)"):
    _spike_run(tmp_path, PoisonedSource(poisoned=tuple(range(9, 1000))), 40)
  # The checkpoints written after the first bad step (before it was judged) are gone: the newest one left is good,
  # and it counts the rewinds taken.
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved[-1] == 8, saved
  assert len(json.loads((tmp_path / "checkpoints" / "8" / "loop" / "metadata").read_text())["rewinds"]) == 2


def test_a_checkpoint_of_another_model_is_refused_naming_what_differs(tmp_path):
  text = tmp_path / "t.txt"
  text.write_text("hello world\n\nanother paragraph\n")
  run = dict(model_dir=str(tmp_path / "m"), data=TextSourceConfig(paths=(str(text),), seq_len=16, global_batch_size=8),
             mesh=MeshConfig(ici={"data": -1}))
  train(model=TINY, trainer=TrainerConfig(num_steps=1), **run)
  with pytest.raises(ValueError, match=r"checkpoint 1 in .* does not fit this run's state \(6 differences: "
                     r"params/layers/mlp/wi: shape \(1, 64, 2, 128\) saved, \(1, 64, 2, 256\) now"):
    train(model=TINY.replace(d_ff=256), trainer=TrainerConfig(num_steps=2), **run)


def test_a_multi_stream_input_sets_the_models_streams_and_a_mismatch_is_refused():
  """The AudioLM stages' 'streams' layout: the trainer gives the model its input's stream ranges; a model
  configured with other streams fails before anything compiles, naming both."""
  tiny = model_preset("tiny")
  streams = types.SimpleNamespace(stream_vocab=((300, 340), (340, 380)))
  assert fit_model_to_input(tiny, streams).stream_vocab == ((300, 340), (340, 380))
  assert fit_model_to_input(tiny, types.SimpleNamespace()) is tiny  # inputs without streams: unchanged
  with pytest.raises(ValueError, match=r"stream_vocab is \[\(300, 340\), \(340, 380\)\] but the input has 1 token"):
    fit_model_to_input(tiny.replace(stream_vocab=((300, 340), (340, 380))), types.SimpleNamespace(stream_vocab=()))
  with pytest.raises(ValueError, match="must not overlap"):
    tiny.replace(stream_vocab=((300, 340), (330, 380)))


def test_input_noise_on_a_stream_the_model_does_not_have_fails_before_compiling():
  model = model_preset("tiny").replace(stream_vocab=((300, 340), (340, 380)))
  sharding = NamedSharding(jax.make_mesh((1,), ("data",)), PartitionSpec("data"))
  validate_inputs(8, 32, None, model, sharding, TrainStepConfig(input_noise=0.5, input_noise_streams=(1,)))
  with pytest.raises(ValueError, match=r"input_noise_streams \[1, 2\]: the model has 2 token streams"):
    validate_inputs(8, 32, None, model, sharding, TrainStepConfig(input_noise=0.5, input_noise_streams=(1, 2)))
