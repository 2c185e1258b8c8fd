"""Reading units as characters: best-path transcripts, forced word times, and which tokenizers can be read."""

import pathlib

import numpy as np
import pytest

from audiopalm.semantic.tokenizer import load_semantic_tokenizer
from audiopalm.semantic.unit_aligner import UnitAligner

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALPHABET = " ABC"  # outputs: 0 blank, 1 ' ', 2 'A', 3 'B', 4 'C'


def _aligner(rate: float = 25.0) -> UnitAligner:
  """Unit u says output u (units 0..4), sharply; unit 5 is unsure between blank and 'A'."""
  probs = np.full((6, 5), 0.01)
  probs[np.arange(5), np.arange(5)] = 0.96
  probs[5] = [0.45, 0.01, 0.52, 0.01, 0.01]
  return UnitAligner(np.log(probs / probs.sum(-1, keepdims=True)), ALPHABET, rate)


def test_transcribe_reads_the_best_path():
  assert _aligner().transcribe([2, 2, 0, 2, 3, 1, 1, 0, 4, 0]) == "AAB C"
  assert _aligner().transcribe([5, 0, 3]) == "AB"
  assert _aligner().transcribe([]) == ""
  with pytest.raises(ValueError, match=r"units must be in \[0, 6\)"):
    _aligner().transcribe([6])


def test_word_times_follow_the_forced_path():
  # "AB CA": frames 0-1 A, 2 blank, 3-4 B, 5 space, 6 blank, 7 C, 8 A, 9 blank -> AB = frames 0..4, CA = 7..8.
  units = [2, 2, 0, 3, 3, 1, 0, 4, 2, 0]
  np.testing.assert_allclose(_aligner(rate=10.0).word_times(units, "AB CA"), [[0.0, 0.5], [0.7, 0.9]])
  # The transcript decides, not the best path: unit 5 leans to 'A' but is placed where the text needs a blank.
  np.testing.assert_allclose(_aligner(rate=10.0).word_times([2, 5, 2], "AA"), [[0.0, 0.3]])
  # Spaces between words may be absent from the units (a blank stands for them) and leading silence is no word.
  np.testing.assert_allclose(_aligner(rate=10.0).word_times([0, 0, 3, 0, 4], " B  C "), [[0.2, 0.3], [0.4, 0.5]])


def test_what_cannot_be_aligned_is_none():
  aligner = _aligner()
  assert aligner.word_times([2, 3], "AB CA") is None  # fewer frames than characters
  assert aligner.word_times([2, 2], "AA") is None  # a repeated character needs a blank between
  assert aligner.word_times([2, 0, 3], "AD") is None  # 'D' is not in the alphabet
  assert aligner.word_times([2, 0, 3], "  ") is None  # no words
  with pytest.raises(ValueError, match="blank"):
    UnitAligner(np.zeros((4, 3)), ALPHABET, 25.0)


def test_only_a_ctc_encoders_final_layer_units_can_be_read():
  mfcc = load_semantic_tokenizer(str(ROOT / "audiopalm/data/assets/demo_semantic"))
  with pytest.raises(ValueError, match="not a CTC-trained one"):
    UnitAligner.from_tokenizer(mfcc)
  with pytest.raises(ValueError, match="not an encoder's k-means"):
    UnitAligner.from_tokenizer(object())
