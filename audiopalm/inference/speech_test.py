"""SpeechTasks with a tiny random decoder: outputs in their modality, batching changes nothing, prompts are the
training formats' prompts."""

import numpy as np
import pytest

from audiopalm.formats.audiopalm_tasks import asr, asr_prompt, tts, tts_prompt
from audiopalm.inference.models import load_model
from audiopalm.inference.speech import SpeechConfig, SpeechTasks
from audiopalm.inference.tiny_models import export_tiny
from audiopalm.main.presets import model_preset


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  return load_model(export_tiny(tmp_path_factory.mktemp("speech") / "main", "speech_text", model_preset("tiny"), seed=3))


def test_asr_prompt_and_batching(model):
  rng = np.random.default_rng(0)
  semantic = [rng.integers(0, 256, n) for n in (30, 12, 45)] + [np.zeros(0, np.int32)]
  example = {"semantic": semantic[0], "transcript": "go left", "language": "English"}
  sequence = next(asr(example, model.vocab, rng))
  # The prompt is the unweighted head of the training sequence.
  prompt = asr_prompt(model.vocab, semantic[0], "English")
  np.testing.assert_array_equal(sequence.tokens[:prompt.size], prompt)
  assert not sequence.weights[:prompt.size].any() and sequence.weights[prompt.size:].all()

  texts = SpeechTasks(model, SpeechConfig(max_text_tokens=12, batch_size=2)).transcribe(semantic)
  assert len(texts) == 4 and all(isinstance(t, str) for t in texts) and texts[3] == ""
  assert texts == SpeechTasks(model, SpeechConfig(max_text_tokens=12, batch_size=3)).transcribe(semantic)


def test_tts_and_continuation_stay_in_the_semantic_range(model):
  speech = SpeechTasks(model, SpeechConfig(max_speech_seconds=1.0, batch_size=4))
  codes = speech.synthesize(["turn right", "push the red box", "stop"])
  assert len(codes) == 3
  for c in codes:
    assert c.dtype == np.int32 and c.size <= 25 and (c.size == 0 or (c.min() >= 0 and c.max() < 256))
  assert sum(c.size for c in codes) > 0
  rng = np.random.default_rng(1)
  more = speech.continue_speech([rng.integers(0, 256, 20), rng.integers(0, 256, 8)], max_seconds=0.4)
  assert [c.size <= 10 for c in more] == [True, True] and sum(c.size for c in more) > 0
  with pytest.raises(ValueError, match="no semantic tokens"):
    speech.continue_speech([np.zeros(0, np.int32)])

  example = {"semantic": rng.integers(0, 256, 9), "transcript": "stop", "language": "English"}
  sequence = next(tts(example, model.vocab, rng))

  prompt = tts_prompt(model.vocab, "stop", "English")
  np.testing.assert_array_equal(sequence.tokens[:prompt.size], prompt)
  assert sequence.tokens[prompt.size] >= model.spec.semantic.offset  # the audio follows the prompt
