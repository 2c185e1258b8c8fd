"""seqio Tasks read the token shards and give the grain loader's formats' sequences, split into inputs/targets."""

import numpy as np
import pytest
import seqio

from audiopalm.data import seqio_tasks
from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.data.token_source import TokenShardSource
from audiopalm.formats.audiopalm_tasks import AsrConfig
from audiopalm.formats.base import get_format
from audiopalm.tokens import synthetic


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  out = tmp_path_factory.mktemp("seqio")
  synthetic.write_synthetic_dataset(str(out), synthetic.SyntheticConfig(
      examples=12, num_shards=2, min_seconds=1.0, max_seconds=3.0, semantic_vocab=64, acoustic_vocab=32,
      num_codebooks=4))
  return str(out)


def test_tasks_give_the_formats_sequences(dataset):
  cfg = SpeechTextConfig(components=(MixtureComponent("asr", dataset, rate=3.0),
                                     MixtureComponent("tts", dataset, rate=1.0)))
  names = seqio_tasks.register(cfg, prefix="test_synth", replace=True)
  assert names == ["test_synth_asr", "test_synth_tts"]
  source = TokenShardSource(dataset)
  for name, fmt in zip(names, ("asr", "tts")):
    task = seqio.get_mixture_or_task(name)
    got = list(task.get_dataset(sequence_length=None, split="train", shuffle=False).as_numpy_iterator())
    assert len(got) == len(source) == 12
    for i, ex in enumerate(got):  # unshuffled: the shards' order, as the grain source numbers them
      (want,) = get_format(fmt)(source[i], cfg.vocab, np.random.default_rng(0))
      prompt = int(np.argmax(want.weights > 0))
      np.testing.assert_array_equal(ex["inputs"], want.tokens[:prompt])
      np.testing.assert_array_equal(ex["targets"], want.tokens[prompt:])
      assert ex["targets"][-1] == cfg.vocab.spec.text.eos_id
  mix = seqio.get_mixture_or_task("test_synth")
  assert sorted((t.name, r) for t, r in zip(mix.tasks, [mix.get_rate(t) for t in mix.tasks])) == [
      ("test_synth_asr", 3.0), ("test_synth_tts", 1.0)]
  batch = next(mix.get_dataset(sequence_length={"inputs": 256, "targets": 256}, split="train", seed=1)
               .as_numpy_iterator())
  assert batch["inputs"].dtype == np.int32 and batch["targets"].max() < cfg.vocab_size


def test_weights_t5x_cannot_express_are_refused(dataset):
  cfg = SpeechTextConfig(components=(MixtureComponent("asr", dataset, config=AsrConfig(prompt_weight=0.1)),))
  with pytest.raises(ValueError, match="prompt_weight 0.1 .* cannot be expressed as T5X inputs/targets"):
    seqio_tasks.register(cfg, prefix="test_bad", replace=True)
