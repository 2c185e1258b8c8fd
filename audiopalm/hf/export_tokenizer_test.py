"""Tokenizer export: transformers loads it, text ids equal the stack's, audio tokens land on the spec's ids."""

import json

import pytest

pytest.importorskip("transformers")
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402

from audiopalm.hf.export_tokenizer import _bytes_to_unicode, audio_token, save_tokenizer  # noqa: E402
from audiopalm.vocab import bytes as byte_vocab  # noqa: E402
from audiopalm.vocab.combined import CombinedVocabulary, load_text_vocab  # noqa: E402
from audiopalm.vocab.spec import make_spec  # noqa: E402

TEXT = "Héllo wörld, 1 2 3 — ok."


def test_byte_map_is_gpt2s():
  assert _bytes_to_unicode() == bytes_to_unicode()


def test_byte_vocabulary_with_audio_tokens(tmp_path):
  text = load_text_vocab("byte")
  spec = make_spec(text.spec, semantic=(16, "sem"), acoustic=[(8, "codec")] * 2, specials=("<delay_pad>",))
  save_tokenizer(spec, text, str(tmp_path))
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert tok.encode(TEXT, add_special_tokens=False) == byte_vocab.encode(TEXT).tolist()
  assert tok.eos_token_id == 1 and tok.pad_token_id == 0
  vocab = CombinedVocabulary(spec, text)
  ids = tok.encode(f"[ASR English]{audio_token('semantic', 3)}{audio_token('acoustic_1', 7)}<delay_pad>",
                   add_special_tokens=False)
  assert ids[-3:] == [spec.semantic.offset + 3, spec.acoustic[1].offset + 7, spec.special_id("<delay_pad>")]
  assert ids[:-3] == byte_vocab.encode("[ASR English]").tolist()
  assert tok.decode(ids) == "[ASR English]<|semantic_3|><|acoustic_1_7|><delay_pad>"
  assert len(tok) == spec.used and vocab.spec.used == spec.used


def test_huggingface_vocabulary_keeps_its_ids(tmp_path):
  source = tmp_path / "src"
  source.mkdir()
  model = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0, "<eos>": 1, "hello": 2, "world": 3},
                                                           unk_token="<unk>"))
  model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  model.save(str(source / "tokenizer.json"))
  (source / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>", "unk_token": "<unk>"}))
  text = load_text_vocab("huggingface", str(source))
  spec = make_spec(text.spec, semantic=(5, "sem"))
  save_tokenizer(spec, text, str(tmp_path / "out"))
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
  assert tok.encode("hello world <|semantic_4|>", add_special_tokens=False) == [2, 3, 4 + 4]
  assert tok.unk_token == "<unk>" and tok.eos_token_id == 1


def test_sentencepiece_is_refused(tmp_path):
  text = load_text_vocab("byte")
  spm = text.spec.__class__("sentencepiece", 258, "x", 0, 1, "m.model")
  with pytest.raises(ValueError, match="no Hugging Face tokenizer for a 'sentencepiece'"):
    save_tokenizer(make_spec(spm), text.__class__(spm, None), str(tmp_path))
