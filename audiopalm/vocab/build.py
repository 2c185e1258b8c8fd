"""The combined vocabulary of a training run: built from the token datasets' tokenizers, or an existing spec.

    vocab = build_vocabulary(VocabConfig(), tokens_info, acoustic_levels=0)      # text + semantic (AudioPaLM)
    vocab = build_vocabulary(VocabConfig(), tokens_info, acoustic_levels=8,      # + 8 acoustic levels (stages)
                             specials=("<delay_pad>",))
    vocab = build_vocabulary(VocabConfig(spec_path="ckpt/vocab_spec.json"), tokens_info, ...)   # a checkpoint's

A spec from `spec_path` (an imported or earlier checkpoint's) is used as it is and the data are checked against
it: its semantic range must hold the dataset's semantic tokenizer, its acoustic ranges the acoustic tokenizer's
levels. Otherwise the spec is laid out by `make_spec` from the text vocabulary and the dataset's tokenizers.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from audiopalm.tokens.schema import TokensInfo
from audiopalm.vocab.combined import CombinedVocabulary, load_text_vocab
from audiopalm.vocab.spec import TEXT_KINDS, VocabSpec, load_spec, make_spec


@dataclasses.dataclass(frozen=True)
class VocabConfig:
  """How a run's combined vocabulary is made.

  Attributes:
    text_kind: 'byte', 'sentencepiece' or 'huggingface' (see `load_text_vocab`).
    text_path: the text vocabulary's file or directory (None for 'byte').
    spec_path: use this spec (a `vocab_spec.json` or the directory holding one, e.g. an imported checkpoint's)
      instead of laying one out; the text vocabulary must still be given to encode text.
    acoustic_levels: acoustic levels with a range in the vocabulary; None: what the mixture's formats need
      (all of the dataset's levels when a stage format reads acoustic tokens, else none).
    specials: special tokens beyond those the formats need ('<delay_pad>' is added for delay layouts).
    pad_to_multiple: the vocabulary size is padded to a multiple of this (shards evenly over the mesh).
  """

  text_kind: str = "byte"
  text_path: str | None = None
  spec_path: str | None = None
  acoustic_levels: int | None = None
  specials: tuple[str, ...] = ()
  pad_to_multiple: int = 128

  def __post_init__(self):
    if self.text_kind not in TEXT_KINDS:
      raise ValueError(f"VocabConfig.text_kind {self.text_kind!r}; choose one of {TEXT_KINDS}")
    if self.acoustic_levels is not None and self.acoustic_levels < 0:
      raise ValueError(f"VocabConfig.acoustic_levels must be >= 0, got {self.acoustic_levels}")
    if self.pad_to_multiple < 1:
      raise ValueError(f"VocabConfig.pad_to_multiple must be >= 1, got {self.pad_to_multiple}")
    object.__setattr__(self, "specials", tuple(self.specials))


def build_vocabulary(cfg: VocabConfig, tokens: TokensInfo, acoustic_levels: int = 0,
                     specials: Sequence[str] = (), source: str = "the dataset") -> CombinedVocabulary:
  """The run's vocabulary (see the module docstring). `acoustic_levels` and `specials` are what the formats need
  (used when `cfg` leaves them open); `source` names the data in errors."""
  text = load_text_vocab(cfg.text_kind, cfg.text_path)
  levels = acoustic_levels if cfg.acoustic_levels is None else cfg.acoustic_levels
  if levels > tokens.acoustic.num_codebooks:
    raise ValueError(f"{levels} acoustic levels asked for, but {source}'s acoustic tokenizer "
                     f"{tokens.acoustic.identity!r} has {tokens.acoustic.num_codebooks}")
  wanted_specials = tuple(dict.fromkeys((*cfg.specials, *specials)))
  if cfg.spec_path is not None:
    spec = load_spec(cfg.spec_path)
    if spec.text != text.spec:
      raise ValueError(f"{cfg.spec_path}: the spec's text vocabulary {spec.text.kind}:{spec.text.identity} is not "
                       f"the configured {text.spec.kind}:{text.spec.identity} (VocabConfig.text_kind/text_path)")
    missing = [s for s in wanted_specials if s not in spec.specials]
    if missing:
      raise ValueError(f"{cfg.spec_path}: the spec lacks the special tokens {missing} that the formats need")
    check_tokens(spec, tokens, levels, source)
  else:
    spec = make_spec(text.spec, semantic=(tokens.semantic.vocab_size, tokens.semantic.identity),
                     acoustic=[(tokens.acoustic.vocab_size, tokens.acoustic.identity)] * levels,
                     specials=wanted_specials, pad_to_multiple=cfg.pad_to_multiple)
  return CombinedVocabulary(spec, text)


def check_tokens(spec: VocabSpec, tokens: TokensInfo, acoustic_levels: int, source: str = "the dataset") -> None:
  """Refuses (ValueError) data whose tokenizers are not the ones whose codes `spec`'s ranges hold."""
  problems = []
  sem = spec.semantic
  if sem is None:
    problems.append("the vocabulary has no semantic range")
  elif (sem.tokenizer, sem.size) != (tokens.semantic.identity, tokens.semantic.vocab_size):
    problems.append(f"semantic: the vocabulary holds {sem.size} codes of {sem.tokenizer!r}, {source} has "
                    f"{tokens.semantic.vocab_size} codes of {tokens.semantic.identity!r}")
  if len(spec.acoustic) < acoustic_levels:
    problems.append(f"the vocabulary has {len(spec.acoustic)} acoustic levels, {acoustic_levels} are needed")
  for level in spec.acoustic[:acoustic_levels]:
    if (level.tokenizer, level.size) != (tokens.acoustic.identity, tokens.acoustic.vocab_size):
      problems.append(f"{level.name}: the vocabulary holds {level.size} codes of {level.tokenizer!r}, {source} has "
                      f"{tokens.acoustic.vocab_size} codes of {tokens.acoustic.identity!r}")
  if problems:
    raise ValueError(f"{source} does not match the vocabulary: " + "; ".join(problems)
                     + ". Re-tokenize with the vocabulary's tokenizers, or build the vocabulary from this data")
