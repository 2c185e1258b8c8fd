"""Error rates on pairs worked out by hand."""

import pytest

from audiopalm.evaluation.wer import error_rates, normalize


def test_normalisation_ignores_case_punctuation_and_spacing():
  assert normalize("  Hello,   World! Don't  ") == "hello world dont"
  assert normalize("ﬁne Café") == "fine café"  # NFKC folds the ligature
  assert error_rates(["Hello, World!"], ["hello world"]).wer == 0.0


def test_known_pairs():
  # "the cat sat" vs "the cat sit down": 1 substitution (sat→sit) + 1 insertion (down) over 3 words.
  r = error_rates(["The cat sat."], ["the cat sit down"])
  assert (r.substitutions, r.deletions, r.insertions, r.hits) == (1, 0, 1, 2)
  assert r.wer == pytest.approx(2 / 3)
  # Characters: "the cat sat" (11) vs "the cat sit down": a→i, then " down" inserted (5) = 6 edits.
  assert r.cer == pytest.approx(6 / 11) and r.reference_chars == 11
  # A deleted word.
  assert error_rates(["a b c d"], ["a c d"]).deletions == 1


def test_rates_are_corpus_level():
  # Utterance 1: 1 error / 1 word; utterance 2: 0 errors / 9 words → 1/10, not the mean of 1.0 and 0.0.
  r = error_rates(["yes", "one two three four five six seven eight nine"],
                  ["no", "one two three four five six seven eight nine"])
  assert r.wer == pytest.approx(0.1) and r.reference_words == 10 and r.utterances == 2


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
    error_rates(["a", "b"], ["a"])
  with pytest.raises(ValueError, match=r"references \[1\] are empty"):
    error_rates(["a", " ?! "], ["a", "b"])
  with pytest.raises(ValueError, match="no utterances"):
    error_rates([], [])
