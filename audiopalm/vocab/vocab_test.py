"""Vocabulary layout, JSON round trip, compatibility checks, and the three text vocabulary kinds."""

import json

import numpy as np
import pytest

from audiopalm.vocab.combined import CombinedVocabulary, Span, load_text_vocab
from audiopalm.vocab.spec import check_compatible, load_spec, make_spec, save_spec

SEM, AC = "semantic-mfcc-1234", "codec-abcd-16khz-q8"


def _vocab(**kwargs):
  text = load_text_vocab("byte")
  spec = make_spec(text.spec, semantic=(256, SEM), acoustic=[(256, AC)] * 3, specials=("<sep>",), **kwargs)
  return CombinedVocabulary(spec, text)


def test_layout_and_padding():
  vocab = _vocab(pad_to_multiple=128)
  spec = vocab.spec
  assert spec.text.size == 258 and spec.special_id("<sep>") == 258
  assert (spec.semantic.offset, spec.semantic.end) == (259, 515)
  assert [(r.offset, r.end) for r in spec.acoustic] == [(515, 771), (771, 1027), (1027, 1283)]
  assert spec.used == 1283 and spec.size == 1408 and spec.size % 128 == 0


def test_mixed_sequence_round_trip():
  vocab = _vocab()
  codes = np.array([[3, 4, 5], [255, 0, 7]])
  ids = np.concatenate([vocab.encode_text("[ASR English] "), vocab.semantic([1, 1, 200]),
                        [vocab.spec.special_id("<sep>")], vocab.acoustic(codes).reshape(-1), vocab.encode_text("hi")])
  assert vocab.decode(ids) == [Span("text", "[ASR English] "), Span("semantic", [1, 1, 200]), Span("special", "<sep>"),
                               Span("acoustic_0", [3]), Span("acoustic_1", [4]), Span("acoustic_2", [5]),
                               Span("acoustic_0", [255]), Span("acoustic_1", [0]), Span("acoustic_2", [7]),
                               Span("text", "hi")]
  np.testing.assert_array_equal(vocab.acoustic(codes[:, 1:], levels=[1, 2]) - vocab.spec.acoustic[1].offset,
                                codes[:, 1:] + [0, 256])
  with pytest.raises(ValueError, match=r"semantic codes must be in \[0, 256\)"):
    vocab.semantic([256])
  with pytest.raises(ValueError, match="no range for acoustic levels \\[5\\]"):
    vocab.acoustic(codes[:, :1], levels=[5])
  assert vocab.decode([vocab.spec.size - 1]) == [Span("padding", [vocab.spec.size - 1])]


def test_spec_round_trip_and_compatibility(tmp_path):
  spec = _vocab().spec
  save_spec(spec, str(tmp_path))
  assert load_spec(str(tmp_path)) == spec
  check_compatible(spec, load_spec(str(tmp_path)))
  other = make_spec(spec.text, semantic=(256, "semantic-other"), acoustic=[(256, AC)] * 3, specials=("<sep>",))
  with pytest.raises(ValueError, match="semantic: ids \\[259, 515\\) of semantic-mfcc-1234 vs ids \\[259, 515\\) of "
                                       "semantic-other"):
    check_compatible(spec, other)
  fewer = make_spec(spec.text, semantic=(256, SEM), acoustic=[(256, AC)] * 2, specials=("<sep>",))
  with pytest.raises(ValueError, match="acoustic_2: ids \\[1027, 1283\\) of .* vs absent"):
    check_compatible(spec, fewer)
  data = json.loads((tmp_path / "vocab_spec.json").read_text())
  data["format_version"] = 99
  (tmp_path / "vocab_spec.json").write_text(json.dumps(data))
  with pytest.raises(ValueError, match="format 99 is not supported"):
    load_spec(str(tmp_path))


def test_sentencepiece_and_huggingface_text(tmp_path):
  import sentencepiece  # pylint: disable=import-outside-toplevel
  import tokenizers  # pylint: disable=import-outside-toplevel
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(["turn right seven times", "push six blue boxes back", "please put the small block"]
                              * 20))
  sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spm"), vocab_size=30,
                                           pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
  spm = load_text_vocab("sentencepiece", str(tmp_path / "spm.model"))
  assert (spm.spec.size, spm.spec.pad_id, spm.spec.eos_id) == (30, 0, 1)
  vocab = CombinedVocabulary(make_spec(spm.spec, semantic=(16, SEM)), spm)
  ids = np.concatenate([vocab.encode_text("push six"), vocab.semantic([0, 15])])
  assert vocab.decode(ids) == [Span("text", "push six"), Span("semantic", [0, 15])]

  hf = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<pad>": 0, "</s>": 1, "[unk]": 2, "push": 3, "six": 4},
                                                        unk_token="[unk]"))
  hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  hf.decoder = tokenizers.decoders.WordPiece()
  (tmp_path / "hf").mkdir()
  hf.save(str(tmp_path / "hf" / "tokenizer.json"))
  (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "pad_token": "<pad>"}))
  text = load_text_vocab("huggingface", str(tmp_path / "hf"))
  assert (text.spec.size, text.spec.pad_id, text.spec.eos_id) == (5, 0, 1)
  np.testing.assert_array_equal(text.encode("push six"), [3, 4])
  with pytest.raises(ValueError, match="is not the spec's"):
    CombinedVocabulary(vocab.spec, text)


def test_save_spec_replaces_an_older_file(tmp_path):
  """A run rewritten before its first checkpoint saves its spec again over the old one."""
  text = load_text_vocab("byte")
  first, second = make_spec(text.spec, semantic=(16, "a")), make_spec(text.spec, semantic=(32, "b"))
  save_spec(first, str(tmp_path))
  save_spec(second, str(tmp_path))
  assert load_spec(str(tmp_path)) == second
  assert [p.name for p in tmp_path.iterdir()] == ["vocab_spec.json"]
