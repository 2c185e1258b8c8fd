"""The loop itself on tiny inputs: abort on non-finite steps, config errors before compiling."""

import dataclasses
import json

import grain
import numpy as np
import pytest

from audiopalm.checkpoints.manager import CheckpointConfig
from audiopalm.data.text_source import TextSourceConfig
from audiopalm.main.presets import model_preset
from audiopalm.main.train import train
from audiopalm.sharding.mesh import MeshConfig
from audiopalm.training.hooks import NonFiniteError
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
          checkpoint=CheckpointConfig(save_interval_steps=100),
          trainer=TrainerConfig(num_steps=20, log_every=1, max_consecutive_nonfinite=3))
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
