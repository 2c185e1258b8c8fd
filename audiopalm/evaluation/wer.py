"""Word and character error rates of transcripts (ASR, and TTS intelligibility as round-trip WER), via jiwer.

    rates = error_rates(references, hypotheses)      # corpus-level: errors summed over utterances
    rates.wer, rates.cer, rates.substitutions, ...

Both sides are normalised the same way before scoring (`normalize`): Unicode NFKC, lower case, punctuation
removed (apostrophes too, so "don't" and "dont" match), whitespace collapsed. Rates are corpus-level, as ASR
papers report them: (S + D + I) / reference words over all utterances, not a mean of per-utterance rates.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Sequence

import jiwer

_TEXT = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])


def normalize(text: str) -> str:
  """The text as it is scored: NFKC, lower case, no punctuation, single spaces."""
  return _TEXT(unicodedata.normalize("NFKC", text))


@dataclasses.dataclass(frozen=True)
class ErrorRates:
  """Corpus-level error counts and rates.

  Attributes:
    wer: (substitutions + deletions + insertions) / reference words.
    cer: the same over characters (spaces included, as jiwer counts them).
    substitutions, deletions, insertions, hits: word-level alignment counts.
    reference_words, reference_chars: the denominators.
    utterances: number of (reference, hypothesis) pairs.
  """

  wer: float
  cer: float
  substitutions: int
  deletions: int
  insertions: int
  hits: int
  reference_words: int
  reference_chars: int
  utterances: int

  def to_json(self) -> dict[str, float | int]:
    return dataclasses.asdict(self)


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
  """WER and CER of `hypotheses` against `references` (same order), after `normalize`.

  Raises ValueError for lists of different lengths, no utterances, or references that are empty after
  normalisation (a rate over nothing is undefined; the indices are named).
  """
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
  if not references:
    raise ValueError("no utterances to score")
  refs = [normalize(r) for r in references]
  hyps = [normalize(h) for h in hypotheses]
  empty = [i for i, r in enumerate(refs) if not r]
  if empty:
    raise ValueError(f"references {empty[:10]}{'...' if len(empty) > 10 else ''} are empty after normalisation "
                     "(nothing to score against); leave those utterances out")
  words = jiwer.process_words(refs, hyps)
  chars = jiwer.process_characters(refs, hyps)
  return ErrorRates(wer=float(words.wer), cer=float(chars.cer), substitutions=int(words.substitutions),
                    deletions=int(words.deletions), insertions=int(words.insertions), hits=int(words.hits),
                    reference_words=sum(len(r.split()) for r in refs), reference_chars=sum(len(r) for r in refs),
                    utterances=len(refs))
