"""A run's vocabulary from the data's tokenizers, or from a saved spec checked against the data."""

import dataclasses

import pytest

from audiopalm.tokens import synthetic
from audiopalm.vocab.build import VocabConfig, build_vocabulary, check_tokens
from audiopalm.vocab.spec import save_spec

TOKENS = synthetic.tokens_info(synthetic.SyntheticConfig(semantic_vocab=1024, acoustic_vocab=1024, num_codebooks=12))


def test_layout_from_the_data():
  vocab = build_vocabulary(VocabConfig(), TOKENS, acoustic_levels=3, specials=("<delay_pad>",))
  spec = vocab.spec
  assert spec.text.size == 258 and spec.specials == ("<delay_pad>",)
  assert (spec.semantic.offset, spec.semantic.size, spec.semantic.tokenizer) == (259, 1024, TOKENS.semantic.identity)
  assert [(r.offset, r.tokenizer) for r in spec.acoustic] == [(1283 + 1024 * q, TOKENS.acoustic.identity)
                                                              for q in range(3)]
  assert spec.size == 4480  # 1283 + 3 × 1024 = 4355 ids used, padded up to 35 × 128
  assert build_vocabulary(VocabConfig(acoustic_levels=0), TOKENS, acoustic_levels=3).spec.acoustic == ()


def test_a_saved_spec_is_used_and_checked_against_the_data(tmp_path):
  spec = build_vocabulary(VocabConfig(), TOKENS, acoustic_levels=2).spec
  save_spec(spec, str(tmp_path))
  again = build_vocabulary(VocabConfig(spec_path=str(tmp_path)), TOKENS, acoustic_levels=2)
  assert again.spec == spec
  other = dataclasses.replace(TOKENS, semantic=dataclasses.replace(TOKENS.semantic, identity="semantic-other"))
  with pytest.raises(ValueError, match="semantic: the vocabulary holds 1024 codes of 'semantic-synthetic-k1024', "
                     "the dataset has 1024 codes of 'semantic-other'"):
    build_vocabulary(VocabConfig(spec_path=str(tmp_path)), other, acoustic_levels=2)
  with pytest.raises(ValueError, match="has 2 acoustic levels, 3 are needed"):
    check_tokens(spec, TOKENS, 3)
  with pytest.raises(ValueError, match="lacks the special tokens \\['<delay_pad>'\\]"):
    build_vocabulary(VocabConfig(spec_path=str(tmp_path)), TOKENS, acoustic_levels=2, specials=("<delay_pad>",))
  with pytest.raises(ValueError, match="13 acoustic levels asked for"):
    build_vocabulary(VocabConfig(acoustic_levels=13), TOKENS)
