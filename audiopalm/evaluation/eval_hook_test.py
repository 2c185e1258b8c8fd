"""Held-out evaluation from the trainer: its input derived from the training mixture, when it runs, what it writes,
and config errors before training."""

import dataclasses
import json
import os

import gin
import pytest
import tensorflow as tf

from audiopalm.checkpoints.export import load_exported_params
from audiopalm.checkpoints.manager import CheckpointConfig
from audiopalm.cli.gin_flags import parse_gin, query
from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.data.text_source import TextSourceConfig
from audiopalm.evaluation.eval_hook import EVAL_FILE, EvalConfig, eval_input
from audiopalm.evaluation.perplexity import perplexity
from audiopalm.formats.audiopalm_tasks import AsrConfig
from audiopalm.main import configurables  # noqa: F401  (registers the gin configurables)
from audiopalm.main.train import train
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules
from audiopalm.tokens import dataset_info, shards, synthetic
from audiopalm.training.trainer import TrainerConfig
from audiopalm.training.trainer_test import TINY

SIZES = dict(examples=24, num_shards=2, min_seconds=0.5, max_seconds=1.5, semantic_vocab=64, acoustic_vocab=32,
             num_codebooks=2, words_per_second=2.0)
MESH = MeshConfig(ici={"data": -1})


def _test_split(out: str, cfg: synthetic.SyntheticConfig) -> str:
  """A synthetic token dataset written as split 'test' (like `gin_configs/tokenize/demo_test.gin`'s output)."""
  os.makedirs(out, exist_ok=True)
  info = synthetic.tokens_info(cfg)
  with shards.ShardWriter(out, 0, 1, info, split="test") as writer:
    for i in range(cfg.examples):
      writer.write(synthetic.segment(cfg, i))
  dataset_info.write_dataset_info(out, tokens=info, shards=[writer.stats], description="synthetic test split")
  return out


def _mixture(dataset: str, split: str, **kwargs) -> SpeechTextConfig:
  comps = tuple(MixtureComponent(name, dataset, rate=0.5, split=split) for name in ("asr", "tts"))
  return SpeechTextConfig(components=comps, seq_len=128, global_batch_size=8, read_threads=0, packing_window=32,
                          log_every=0, **kwargs)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """(training input, held-out dataset with the same tokenizers, held-out dataset with another semantic
  tokenizer): the two datasets hold split 'test'."""
  root = tmp_path_factory.mktemp("eval_data")
  synthetic.write_synthetic_dataset(str(root / "train"), synthetic.SyntheticConfig(**SIZES))
  held_out = _test_split(str(root / "test"), synthetic.SyntheticConfig(**SIZES, seed=1))
  other = _test_split(str(root / "other"), synthetic.SyntheticConfig(**{**SIZES, "semantic_vocab": 32}, seed=1))
  return _mixture(str(root / "train"), "train"), held_out, other


def _run(model_dir, data, **kwargs):
  model = TINY.replace(vocab_size=data.vocab_spec.size)
  return train(model_dir=str(model_dir), model=model, data=data, mesh=MESH,
               checkpoint=CheckpointConfig(save_interval_steps=100), **kwargs)


def _tensorboard_scalars(model_dir) -> dict[str, dict[int, float]]:
  out: dict[str, dict[int, float]] = {}
  for path in (model_dir / "tensorboard").glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        out.setdefault(value.tag, {})[event.step] = value.simple_value
  return out


def test_evaluates_every_n_steps_and_at_the_last_step(tmp_path, inputs):
  data, held_out, _ = inputs
  evaluation = EvalConfig(every=2, num_batches=2, dataset=held_out)
  _run(tmp_path, data, trainer=TrainerConfig(num_steps=5, log_every=1), evaluation=evaluation)
  logged = [json.loads(line) for line in (tmp_path / EVAL_FILE).read_text().splitlines()]
  assert [e["step"] for e in logged] == [2, 4, 5]

  # The last entry is the perplexity of the final (exported) parameters on the same batches.
  model = TINY.replace(vocab_size=data.vocab_spec.size)
  params = load_exported_params(str(tmp_path / "export"))
  expected = perplexity(params, model, _mixture(held_out, "test", shuffle=False), 2, make_mesh(MESH), ShardingRules())
  last = logged[-1]
  assert last["batches"] == 2 and set(last["tasks"]) == {"asr", "tts"}
  assert set(last["modalities"]) == {"text", "semantic"}
  for group, name in [("overall", None), ("tasks", "asr"), ("tasks", "tts"), ("modalities", "text"),
                      ("modalities", "semantic")]:
    got, want = (last[group], expected[group]) if name is None else (last[group][name], expected[group][name])
    assert got["tokens"] == want["tokens"] > 0
    assert got["nll"] == pytest.approx(want["nll"], rel=1e-6)
    assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-6)
  assert logged[0]["overall"]["nll"] != last["overall"]["nll"]  # the parameters changed in between

  scalars = _tensorboard_scalars(tmp_path)
  assert sorted(scalars["eval/loss"]) == [2, 4, 5]
  assert scalars["eval/loss"][5] == pytest.approx(last["overall"]["nll"], rel=1e-6)
  assert scalars["eval/perplexity"][5] == pytest.approx(last["overall"]["perplexity"], rel=1e-6)
  for tag in ("eval/asr/perplexity", "eval/asr/nll", "eval/tts/perplexity", "eval/tts/nll",
              "eval/modality/text/perplexity", "eval/modality/semantic/perplexity"):
    assert sorted(scalars[tag]) == [2, 4, 5], tag
  assert scalars["eval/tts/nll"][4] == pytest.approx(logged[1]["tasks"]["tts"]["nll"], rel=1e-6)
  assert sorted(scalars["loss"]) == [1, 2, 3, 4, 5]  # the training metrics share the run's event file
  # Evaluation time is not training time: the throughput window after an evaluation starts when it ends.
  metrics = {e["step"]: e for e in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())}
  assert metrics[3]["step_time_s"] < logged[0]["seconds"]

  # Resuming a finished run takes no step and evaluates nothing more; continuing evaluates on the same schedule.
  _run(tmp_path, data, trainer=TrainerConfig(num_steps=5, log_every=1), evaluation=evaluation)
  assert len((tmp_path / EVAL_FILE).read_text().splitlines()) == 3
  _run(tmp_path, data, trainer=TrainerConfig(num_steps=6, log_every=1), evaluation=evaluation)
  assert [json.loads(line)["step"] for line in (tmp_path / EVAL_FILE).read_text().splitlines()] == [2, 4, 5, 6]


def test_off_writes_nothing(tmp_path, inputs):
  data, held_out, _ = inputs
  _run(tmp_path, data, trainer=TrainerConfig(num_steps=2, log_every=1), evaluation=EvalConfig(every=0, dataset=held_out))
  assert not (tmp_path / EVAL_FILE).exists()
  scalars = _tensorboard_scalars(tmp_path)
  assert "loss" in scalars and not [tag for tag in scalars if tag.startswith("eval/")]


def test_the_eval_input_is_the_training_mixture_on_the_held_out_data(inputs):
  """Same components, format configs, shares, rows and vocabulary; the held-out dataset and split, in dataset
  order, endless, and training-time augmentation off."""
  data, held_out, _ = inputs
  noisy = dataclasses.replace(data, components=(
      MixtureComponent("asr", data.components[0].dataset, rate=0.7, config=AsrConfig(semantic_noise=0.2)),
      MixtureComponent("tts", data.components[1].dataset, rate=0.3)))
  got = eval_input(EvalConfig(every=2, dataset=held_out), noisy)
  assert got == dataclasses.replace(noisy, shuffle=False, num_epochs=None, components=(
      MixtureComponent("asr", held_out, rate=0.7, split="test", config=AsrConfig(semantic_noise=0.0)),
      MixtureComponent("tts", held_out, rate=0.3, split="test")))
  # Without a dataset each component reads the split of its own dataset.
  assert {(c.dataset, c.split) for c in eval_input(EvalConfig(every=2, split="dev"), data).components} == {
      (data.components[0].dataset, "dev")}
  assert eval_input(EvalConfig(every=0, dataset=held_out), data) is None


def test_eval_of_an_input_that_is_not_a_mixture_fails_before_training(tmp_path):
  text = tmp_path / "text.txt"
  text.write_text("a few words\n\nand more words\n")
  data = TextSourceConfig(paths=(str(text),), seq_len=16, global_batch_size=8)
  with pytest.raises(ValueError, match=r"EvalConfig.every = 2 but the training input \(TextSourceConfig\) is not a "
                     r"mixture"):
    train(model_dir=str(tmp_path / "m"), model=TINY, data=data, mesh=MESH, trainer=TrainerConfig(num_steps=2),
          evaluation=EvalConfig(every=2))
  assert not (tmp_path / "m").exists()


def test_eval_data_with_another_vocabulary_fails_before_training(tmp_path, inputs):
  data, _, other = inputs
  with pytest.raises(ValueError, match=r"the eval data's vocabulary \(EvalConfig.dataset='.*other', split 'test'\) is "
                     r"not the training data's \(training vs eval\): semantic: ids \[258, 322\) of "
                     r"semantic-synthetic-k64 vs ids \[258, 290\) of semantic-synthetic-k32"):
    _run(tmp_path / "m", data, trainer=TrainerConfig(num_steps=2), evaluation=EvalConfig(every=2, dataset=other))
  assert not (tmp_path / "m").exists()


def test_bad_config():
  with pytest.raises(ValueError, match="every >= 0"):
    EvalConfig(every=-1)
  with pytest.raises(ValueError, match="num_batches >= 1"):
    EvalConfig(num_batches=0)


def test_eval_gin_file_evaluates_the_training_mixture_on_the_test_split():
  """mixtures/audiopalm_eval.gin, given after an experiment, names the held-out data; the mixture is the run's."""
  gin.clear_config()
  try:
    parse_gin(["experiments/speech_text_from_text_demo.gin", "mixtures/audiopalm_eval.gin"],
              ["MODEL_DIR = 'm'", "INIT_DIR = 'i'", "EVAL_TOKENS_DIR = 'runs/tokens_demo_test'"])
    data, evaluation = query("train.data"), query("train.evaluation")
  finally:
    gin.clear_config()
  assert evaluation == EvalConfig(every=50, dataset="runs/tokens_demo_test", split="test")
  held_out = eval_input(evaluation, data)
  assert [(c.name, c.format, c.rate) for c in held_out.components] == [(c.name, c.format, c.rate)
                                                                         for c in data.components]
  assert {(c.dataset, c.split) for c in held_out.components} == {("runs/tokens_demo_test", "test")}
  demo_asr = next(c.config for c in data.components if c.format == "asr")
  assert demo_asr.semantic_noise > 0  # the demo mixture's ASR input noise: training only
  assert next(c.config for c in held_out.components if c.format == "asr") == dataclasses.replace(
      demo_asr, semantic_noise=0.0)
  assert not held_out.shuffle and (held_out.seq_len, held_out.global_batch_size) == (256, 16)
