"""The independent recognizer: its bigram model is a proper distribution, it hears the bundled recordings, and a
transcript depends on nothing but its own audio."""

import math
import pathlib

import numpy as np
import pytest

from audiopalm.audio.io import load_audio, resample
from audiopalm.evaluation.recognizer import Recognizer, bigram_arpa
from audiopalm.evaluation.wer import error_rates

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEST = ROOT / "audiopalm" / "data" / "assets" / "demo_speech" / "test"
DEMO_TEXT = ROOT / "audiopalm" / "data" / "assets" / "demo_text.txt"


def _parse(arpa: str):
  """(log10 unigram prob, log10 backoff) by word and log10 bigram prob by pair, from ARPA text."""
  section, uni, bo, bi = None, {}, {}, {}
  for line in arpa.splitlines():
    if line.startswith("\\"):
      section = line
      continue
    parts = line.split()
    if section == "\\1-grams:" and parts:
      uni[parts[1]] = float(parts[0])
      bo[parts[1]] = float(parts[2]) if len(parts) > 2 else 0.0
    elif section == "\\2-grams:" and parts:
      bi[(parts[1], parts[2])] = float(parts[0])
  return uni, bo, bi


def test_bigram_model_sums_to_one_in_every_context():
  sentences = [s.split() for s in ("put the red ball up", "put the box down", "move the red box", "turn left")]
  uni, bo, bi = _parse(bigram_arpa(sentences, discount=0.5))
  words = [w for w in uni if w != "<s>"]
  assert math.isclose(sum(10 ** uni[w] for w in words), 1.0, rel_tol=1e-5)
  for v in ["<s>", *[w for w in words if w != "</s>"]]:
    total = sum(10 ** bi[(v, w)] if (v, w) in bi else 10 ** (bo[v] + uni[w]) for w in words)
    assert math.isclose(total, 1.0, rel_tol=1e-5), v
  # Seen pairs keep most of their mass: p(the | put) = (2 - 0.5) / 2 + λ p(the).
  assert 10 ** bi[("put", "the")] > 0.75
  with pytest.raises(ValueError, match="discount"):
    bigram_arpa(sentences, discount=1.0)


@pytest.fixture(scope="module")
def recordings():
  refs = {}
  for trans in sorted(TEST.rglob("*.trans.txt")):
    for line in trans.read_text().splitlines():
      key, text = line.split(" ", 1)
      refs[key] = text
  files = sorted(TEST.rglob("*.flac"))[:8]
  return [refs[f.stem] for f in files], [load_audio(f, 16000) for f in files]


def test_it_hears_the_bundled_recordings_and_each_transcript_is_independent_of_the_others(recordings):
  refs, waves = recordings
  judge = Recognizer.from_text_file(str(DEMO_TEXT))
  assert judge.describe()["vocabulary"] == 63 and judge.describe()["unknown_words"] == []
  heard = judge.transcribe(waves, 16000)
  assert error_rates(refs, heard).wer < 0.5  # all 40 held-out recordings: 0.317 (docs/benchmarks.md)
  assert judge.transcribe(waves[::-1], 16000)[::-1] == heard  # no state carried from one utterance to the next
  # Any rate: the same audio at 22.05 kHz is resampled to the model's 16 kHz.
  assert judge.transcribe_one(resample(waves[0], 16000, 22050), 22050) == heard[0]
  noise = np.random.default_rng(0).normal(0, 0.05, 32000).astype(np.float32)
  assert error_rates(refs[:1], [judge.transcribe_one(noise, 16000)]).wer >= 0.8  # noise is not speech
  assert judge.transcribe([np.zeros(0, np.float32), np.zeros(800, np.float32)], 16000) == ["", ""]  # nothing said


def test_words_outside_the_dictionary_are_reported_and_left_out():
  judge = Recognizer(["put the zorblax up", "put the ball up"])
  described = judge.describe()
  assert described["unknown_words"] == ["zorblax"] and described["vocabulary"] == 4
  with pytest.raises(ValueError, match="no word"):
    Recognizer(["zorblax qwxv"])
