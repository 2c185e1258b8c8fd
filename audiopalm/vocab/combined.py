"""The combined vocabulary at work: text ↔ ids, audio codes → ids, and a mixed sequence back into spans.

    text = load_text_vocab("sentencepiece", "spm.model")        # or ("byte", None), ("huggingface", dir)
    vocab = CombinedVocabulary(make_spec(text.spec, semantic=(1024, sem.identity),
                                         acoustic=[(1024, ac.identity)] * 3), text)
    ids = np.concatenate([vocab.encode_text("[ASR English] "), vocab.semantic(codes)])
    vocab.decode(ids)   # [Span('text', '[ASR English] '), Span('semantic', [codes...])]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Sequence

import numpy as np

from audiopalm.files import storage
from audiopalm.vocab import bytes as byte_vocab
from audiopalm.vocab.spec import TextVocab, VocabSpec


@dataclasses.dataclass
class LoadedText:
  """A text vocabulary with its encoder/decoder."""

  spec: TextVocab
  model: Any = None

  def encode(self, text: str) -> np.ndarray:
    if self.spec.kind == "byte":
      return byte_vocab.encode(text)
    if self.spec.kind == "sentencepiece":
      return np.asarray(self.model.encode(text), np.int32)
    return np.asarray(self.model.encode(text, add_special_tokens=False).ids, np.int32)

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    if self.spec.kind == "byte":
      return byte_vocab.decode(ids)
    if self.spec.kind == "sentencepiece":
      return self.model.decode(ids)
    return self.model.decode(ids, skip_special_tokens=False)


def _file_hash(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()[:16]


def load_text_vocab(kind: str, path: str | None = None) -> LoadedText:
  """'byte' (no path), 'sentencepiece' (a .model file) or 'huggingface' (a directory with tokenizer.json, and
  tokenizer_config.json naming the pad/eos tokens if it has them)."""
  if kind == "byte":
    return LoadedText(TextVocab("byte", byte_vocab.VOCAB_SIZE, "byte", byte_vocab.PAD, byte_vocab.EOS))
  if path is None:
    raise ValueError(f"a {kind!r} text vocabulary needs a path")
  if kind == "sentencepiece":
    import sentencepiece  # pylint: disable=import-outside-toplevel
    data = storage.read_bytes(path)
    model = sentencepiece.SentencePieceProcessor(model_proto=data)
    pad = model.pad_id() if model.pad_id() >= 0 else 0
    return LoadedText(TextVocab("sentencepiece", model.get_piece_size(), _file_hash(data), pad, model.eos_id(),
                                str(path)), model)
  if kind == "huggingface":
    import tokenizers  # pylint: disable=import-outside-toplevel
    data = storage.read_bytes(storage.join(path, "tokenizer.json"))
    model = tokenizers.Tokenizer.from_str(data.decode())
    config_file = storage.join(path, "tokenizer_config.json")
    config = json.loads(storage.read_text(config_file)) if storage.is_file(config_file) else {}
    token_id = lambda name, default: (model.token_to_id(_token_text(config.get(name))) if config.get(name)  # noqa: E731
                                      else default)
    eos = token_id("eos_token", None)
    if eos is None:
      raise ValueError(f"{path}: no eos_token in tokenizer_config.json (needed to end text spans)")
    pad = token_id("pad_token", eos)
    return LoadedText(TextVocab("huggingface", model.get_vocab_size(with_added_tokens=True), _file_hash(data), pad,
                                eos, str(path)), model)
  raise ValueError(f"unknown text vocabulary kind {kind!r}")


def _token_text(token: Any) -> str:
  return token["content"] if isinstance(token, dict) else str(token)


@dataclasses.dataclass(frozen=True)
class Span:
  """A run of one kind of token in a mixed sequence: 'text' (value: str), 'special' (the token), 'semantic'
  (codes), 'acoustic_<q>' (codes of level q), or 'padding' (ids past the used range: never produced)."""

  kind: str
  value: Any


class CombinedVocabulary:
  """Maps between the combined ids of a VocabSpec and text / audio codes."""

  def __init__(self, spec: VocabSpec, text: LoadedText):
    if text.spec != spec.text:
      raise ValueError(f"the text vocabulary {text.spec.kind}:{text.spec.identity} is not the spec's "
                       f"{spec.text.kind}:{spec.text.identity}")
    self.spec, self.text = spec, text
    self._levels = {r.level: r for r in spec.acoustic}

  def encode_text(self, text: str) -> np.ndarray:
    return self.text.encode(text)

  def semantic(self, codes: Any) -> np.ndarray:
    """Semantic codes [T] → ids [T]."""
    if self.spec.semantic is None:
      raise ValueError("this vocabulary has no semantic range")
    return self._shift(np.asarray(codes), self.spec.semantic.offset, self.spec.semantic.size, "semantic")

  def acoustic(self, codes: Any, levels: Sequence[int] | None = None) -> np.ndarray:
    """Acoustic codes [T, L] of `levels` (default 0..L-1) → ids [T, L], each level in its own range."""
    codes = np.asarray(codes)
    levels = range(codes.shape[1]) if levels is None else levels
    if len(levels) != codes.shape[1]:
      raise ValueError(f"{codes.shape[1]} columns of codes for levels {list(levels)}")
    missing = [q for q in levels if q not in self._levels]
    if missing:
      raise ValueError(f"this vocabulary has no range for acoustic levels {missing} (it has {sorted(self._levels)})")
    return np.stack([self._shift(codes[:, i], self._levels[q].offset, self._levels[q].size, f"acoustic level {q}")
                     for i, q in enumerate(levels)], axis=1) if len(levels) else codes.astype(np.int32)

  @staticmethod
  def _shift(codes: np.ndarray, offset: int, size: int, what: str) -> np.ndarray:
    if codes.size and (codes.min() < 0 or codes.max() >= size):
      raise ValueError(f"{what} codes must be in [0, {size}), got [{codes.min()}, {codes.max()}]")
    return (codes.astype(np.int32) + offset).astype(np.int32)

  def kind_of(self, token_id: int) -> str:
    if token_id < self.spec.text.size:
      return "text"
    if token_id < self.spec.text.size + len(self.spec.specials):
      return "special"
    for r in self.spec.audio_ranges:
      if r.offset <= token_id < r.end:
        return r.name
    return "padding"

  def decode(self, ids: Sequence[int]) -> list[Span]:
    """A mixed sequence → its runs: text decoded to a string, audio ids back to their codes."""
    spans: list[Span] = []
    run: list[int] = []
    kind = None
    for token in [int(i) for i in ids] + [None]:
      k = None if token is None else self.kind_of(token)
      if run and (k != kind or kind == "special"):
        spans.append(self._span(kind, run))
        run = []
      if token is not None:
        run.append(token)
        kind = k
    return spans

  def _span(self, kind: str, run: list[int]) -> Span:
    if kind == "text":
      return Span("text", self.text.decode(run))
    if kind == "special":
      return Span("special", self.spec.specials[run[0] - self.spec.text.size])
    if kind == "padding":
      return Span("padding", list(run))
    offset = next(r.offset for r in self.spec.audio_ranges if r.name == kind)
    return Span(kind, [t - offset for t in run])
