"""The combined speech–text vocabulary as Hugging Face tokenizer files, for fine-tuning with standard tools.

    tok = combined_tokenizer(spec, text)          # a `tokenizers.Tokenizer` whose ids are the spec's ids
    save_tokenizer(spec, text, "export/lm_hf")    # tokenizer.json, tokenizer_config.json, special_tokens_map.json

The text part is the text vocabulary itself: a Hugging Face tokenizer.json as it is, or the project's byte
vocabulary rebuilt exactly (byte-level BPE without merges: ids 2..257 are bytes 0..255, 0 '<pad>', 1 '</s>').
After it come, as added tokens in id order, the spec's special tokens and one token per audio code:
    <|semantic_{code}|>            ids [semantic.offset, +K)
    <|acoustic_{level}_{code}|>    ids [acoustic[level].offset, +K_level)
Audio tokens are ordinary (not "special") added tokens, so decoding keeps them and encoding their text gives their
ids: `tokenizer("[ASR English] <|semantic_17|><|semantic_3|>")` works in transformers. Padding rows of the
embedding past the last code get no token. SentencePiece text vocabularies are refused (convert them to a
tokenizer.json with transformers first).
"""

from __future__ import annotations

import json
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers

from audiopalm.files import storage
from audiopalm.vocab import bytes as byte_vocab
from audiopalm.vocab.combined import LoadedText
from audiopalm.vocab.spec import VocabSpec

PAD_TOKEN, EOS_TOKEN = "<pad>", "</s>"


def audio_token(range_name: str, code: int) -> str:
  """'semantic' → <|semantic_17|>; 'acoustic_2' → <|acoustic_2_17|>."""
  return f"<|{range_name}_{code}|>"


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte → printable character map (what the ByteLevel pre-tokenizer emits)."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[b] = chr(b)
    else:
      chars[b] = chr(256 + extra)
      extra += 1
  return chars


def byte_tokenizer() -> tokenizers.Tokenizer:
  """The project's byte vocabulary (`audiopalm.data.text_source`) as a tokenizers.Tokenizer with the same ids."""
  vocab = {PAD_TOKEN: byte_vocab.PAD, EOS_TOKEN: byte_vocab.EOS}
  vocab.update({char: b + byte_vocab.BYTE_OFFSET for b, char in _bytes_to_unicode().items()})
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([AddedToken(PAD_TOKEN, special=True), AddedToken(EOS_TOKEN, special=True)])
  return tok


def combined_tokenizer(spec: VocabSpec, text: LoadedText) -> tokenizers.Tokenizer:
  """The text tokenizer plus the spec's specials and audio tokens at the spec's ids (checked)."""
  if text.spec.kind == "byte":
    tok = byte_tokenizer()
  elif text.spec.kind == "huggingface":
    tok = tokenizers.Tokenizer.from_str(text.model.to_str())
  else:
    raise ValueError(f"no Hugging Face tokenizer for a {text.spec.kind!r} text vocabulary: convert it to a "
                     "tokenizer.json (transformers' convert_slow_tokenizer) and train with text_kind='huggingface'")
  if tok.get_vocab_size(with_added_tokens=True) != spec.text.size:
    raise ValueError(f"the text tokenizer has {tok.get_vocab_size(with_added_tokens=True)} ids, the spec's text "
                     f"vocabulary {spec.text.size}")
  expected = {token: spec.special_id(token) for token in spec.specials}
  for r in spec.audio_ranges:
    expected.update({audio_token(r.name, code): r.offset + code for code in range(r.size)})
  tok.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False)
                  for t, _ in sorted(expected.items(), key=lambda kv: kv[1])])
  wrong = [(t, i, tok.token_to_id(t)) for t, i in expected.items() if tok.token_to_id(t) != i]
  if wrong:
    raise ValueError(f"added tokens did not land on the spec's ids (token, spec id, tokenizer id): {wrong[:5]}; "
                     "the spec's ranges must follow the text ids without gaps")
  return tok


def save_tokenizer(spec: VocabSpec, text: LoadedText, directory: str, model_max_length: int = 8192) -> list[str]:
  """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `directory`."""
  tok = combined_tokenizer(spec, text)
  storage.makedirs(directory)
  names: dict[str, Any] = {"eos_token": tok.id_to_token(spec.text.eos_id),
                           "pad_token": tok.id_to_token(spec.text.pad_id)}
  if text.spec.kind == "huggingface" and text.spec.path:
    original = storage.join(text.spec.path, "tokenizer_config.json")
    if storage.is_file(original):  # keep bos/unk and the chat template of the original tokenizer
      config = json.loads(storage.read_text(original))
      names.update({k: config[k] for k in ("bos_token", "unk_token", "chat_template", "add_bos_token",
                                             "add_eos_token") if k in config})
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
            "clean_up_tokenization_spaces": False, **names}
  files = {"tokenizer.json": tok.to_str(), "tokenizer_config.json": json.dumps(config, indent=2),
           "special_tokens_map.json": json.dumps({k: v for k, v in names.items() if k.endswith("_token")}, indent=2)}
  for name, content in files.items():
    storage.write_text(storage.join(directory, name), content)
  return sorted(files)
