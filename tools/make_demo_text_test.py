"""Tests of the demo text corpus tool and of the bundled file it made."""

import pathlib

from data_pipeline.synthetic import grammar
from tools import make_demo_text

BUNDLED = pathlib.Path(__file__).resolve().parents[1] / "audiopalm" / "data" / "assets" / "demo_text.txt"


def test_bundled_file_is_the_tool_output(tmp_path):
  """The bundled file is what the default command writes, byte for byte."""
  out = tmp_path / "demo_text.txt"
  make_demo_text.main([f"--output={out}"])
  assert out.read_bytes() == BUNDLED.read_bytes()


def test_sentences_use_the_grammar_and_never_a_test_sentence():
  held_out = grammar.held_out_pairs(0)
  plural = {(c, grammar.PLURALS[o]) for c, o in held_out}
  vocabulary = {w.upper() for w in grammar.vocabulary()}
  test = make_demo_text.held_out_sentences(0, 1000)
  assert len(test) > 500  # the grammar has room: test sentences are mostly distinct
  sentences = make_demo_text.generate(0, 3000, 1000)
  assert not set(sentences) & test
  with_held_out = 0
  for s in sentences:
    words = s.split()
    assert s == s.upper() and set(words) <= vocabulary, s
    bigrams = set(zip(words, words[1:]))
    with_held_out += bool({(a.lower(), b.lower()) for a, b in bigrams} & (held_out | plural))
  assert 0.3 < with_held_out / len(sentences) < 0.7  # the text knows the pairs the speech train split lacks
  # A smaller run is a prefix of a larger one.
  assert make_demo_text.generate(0, 100, 1000) == sentences[:100]
