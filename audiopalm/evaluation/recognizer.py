"""An independent judge of intelligibility: an off-the-shelf recognizer that this project neither trains nor tunes.

    judge = Recognizer.from_text_file("audiopalm/data/assets/demo_text.txt")   # or Recognizer() for open English
    judge.transcribe(waves, sample_rate)          # ["push nine yellow blocks right", ...]
    judge.describe()                              # what it is, for reports

The recognizer is CMU PocketSphinx (PyPI `pocketsphinx`, pinned in requirements.txt) with the US English acoustic
model and pronouncing dictionary bundled in its wheel. Its language model is either PocketSphinx's own bundled
general English trigram model (`Recognizer()`), or, for a corpus with a small known language, a bigram model of
the sentences given (`Recognizer(sentences)`): the judge still hears every word, the model only says which word
sequences are likely. The same judge scores the original recordings, the codec's resynthesis of them and the
synthesized speech, so what matters is the ratio of its error rates, not their level.

Each utterance is decoded on its own (`full_utt`: cepstral mean normalisation over the whole utterance), so a
transcript does not depend on which utterances came before it. Audio at any rate is resampled to 16 kHz.

The bigram model (`bigram_arpa`) is interpolated absolute discounting (Ney et al. 1994), written in the ARPA
format PocketSphinx reads: p(w | v) = max(c(v, w) − D, 0) / c(v) + λ(v) p(w), λ(v) = D · N₁₊(v ·) / c(v), with
sentence boundaries <s> and </s>. Words the dictionary does not know are left out of the sentences they occur in
(`describe()["unknown_words"]`).
"""

from __future__ import annotations

import collections
import functools
import math
import os
import tempfile
from importlib import metadata
from typing import Iterable, Sequence

import numpy as np

from audiopalm.audio.io import resample
from audiopalm.evaluation.wer import normalize
from audiopalm.files import storage

SAMPLE_RATE = 16000  # the bundled acoustic model's
DISCOUNT = 0.5  # absolute discount D of the bigram model
MIN_SAMPLES = SAMPLE_RATE // 10  # shorter audio (under 0.1 s) is heard as nothing


def bigram_arpa(sentences: Iterable[Sequence[str]], discount: float = DISCOUNT) -> str:
  """An ARPA bigram model of word sequences (module docstring); every word of `sentences` is in it."""
  if not 0.0 < discount < 1.0:
    raise ValueError(f"discount must be in (0, 1), got {discount}")
  unigrams: collections.Counter = collections.Counter()
  bigrams: collections.Counter = collections.Counter()
  for words in sentences:
    tokens = ["<s>", *words, "</s>"]
    bigrams.update(zip(tokens, tokens[1:]))
    unigrams.update(tokens[1:])
  if not bigrams:
    raise ValueError("bigram_arpa: no sentences")
  total = sum(unigrams.values())
  p1 = {w: c / total for w, c in unigrams.items()}
  context: collections.Counter = collections.Counter()
  followers: collections.Counter = collections.Counter()
  for (v, _), c in bigrams.items():
    context[v] += c
    followers[v] += 1
  backoff = {v: discount * followers[v] / context[v] for v in context}
  lines = ["\\data\\", f"ngram 1={len(p1) + 1}", f"ngram 2={len(bigrams)}", "", "\\1-grams:",
           f"-99.000000 <s> {math.log10(backoff['<s>']):.6f}"]
  for w in sorted(p1):
    weight = f" {math.log10(backoff[w]):.6f}" if w in backoff else ""
    lines.append(f"{math.log10(p1[w]):.6f} {w}{weight}")
  lines += ["", "\\2-grams:"]
  for (v, w), c in sorted(bigrams.items()):
    lines.append(f"{math.log10((c - discount) / context[v] + backoff[v] * p1[w]):.6f} {v} {w}")
  lines += ["", "\\end\\", ""]
  return "\n".join(lines)


class Recognizer:
  """PocketSphinx with its bundled US English model; the language model of `sentences`, or its own general one."""

  def __init__(self, sentences: Sequence[str] | None = None, source: str | None = None):
    import pocketsphinx  # imported here: only evaluation needs it

    self._pocketsphinx = pocketsphinx
    model = pocketsphinx.get_model_path()
    self._hmm = os.path.join(model, "en-us", "en-us")
    full_dictionary = os.path.join(model, "en-us", "cmudict-en-us.dict")
    self._version = metadata.version("pocketsphinx")
    self._source = source
    self._unknown: list[str] = []
    self._sentences = self._vocabulary = 0
    if sentences is None:
      self._dictionary, self._lm = full_dictionary, os.path.join(model, "en-us", "en-us.lm.bin")
      return
    pronunciations = _pronunciations(full_dictionary)
    kept, unknown = [], set()
    for sentence in sentences:
      words = normalize(sentence).split()
      unknown.update(w for w in words if w not in pronunciations)
      if words:
        kept.append([w for w in words if w in pronunciations])
    vocabulary = sorted({w for words in kept for w in words})
    if not vocabulary:
      raise ValueError(f"{source or 'the sentences'}: no word the recognizer's dictionary knows")
    self._sentences, self._vocabulary, self._unknown = len(kept), len(vocabulary), sorted(unknown)
    # The language model and a dictionary of its words only, in files the decoder reads (a small dictionary
    # makes a fresh decoder per utterance cheap: milliseconds instead of seconds for the whole one).
    self._dir = tempfile.TemporaryDirectory(prefix="recognizer_")
    self._dictionary, self._lm = os.path.join(self._dir.name, "words.dict"), os.path.join(self._dir.name, "lm.arpa")
    with open(self._dictionary, "w", encoding="utf-8") as f:
      f.writelines(line for w in vocabulary for line in pronunciations[w])
    with open(self._lm, "w", encoding="utf-8") as f:
      f.write(bigram_arpa(kept))

  @classmethod
  def from_text_file(cls, path: str) -> "Recognizer":
    """The language model of a text file's lines (local or gs://), one sentence per line."""
    lines = [line for line in storage.read_text(path).splitlines() if line.strip()]
    if not lines:
      raise ValueError(f"{path}: no sentences for the recognizer's language model")
    return cls(lines, source=path)

  def transcribe_one(self, wave: np.ndarray, sample_rate: int) -> str:
    """One waveform (float in [-1, 1], any rate) → its transcript (lower case, words separated by spaces).

    A fresh decoder per utterance: PocketSphinx's decoder adapts (cepstral mean, noise estimate) to what it
    heard before, which would make a transcript depend on the utterances decoded earlier."""
    wave = resample(np.asarray(wave, np.float32), sample_rate, SAMPLE_RATE)
    if wave.size < MIN_SAMPLES:  # nothing to hear (e.g. an empty synthesis)
      return ""
    pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).astype("<i2")
    decoder = self._pocketsphinx.Decoder(self._pocketsphinx.Config(hmm=self._hmm, dict=self._dictionary, lm=self._lm,
                                                                   loglevel="FATAL"))
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return normalize(hyp.hypstr) if hyp is not None else ""

  def transcribe(self, waves: Sequence[np.ndarray], sample_rate: int) -> list[str]:
    return [self.transcribe_one(w, sample_rate) for w in waves]

  def describe(self) -> dict:
    """What judged: engine, version, acoustic model, language model (and, for sentences, its size)."""
    out = {"engine": "pocketsphinx", "version": self._version, "acoustic_model": "bundled en-us"}
    if not self._sentences:
      out["language_model"] = "bundled en-us general trigram"
    else:
      out.update(language_model=f"bigram of {self._source or 'the sentences given'}", sentences=self._sentences,
                 vocabulary=self._vocabulary, unknown_words=self._unknown)
    return out


@functools.lru_cache(maxsize=2)
def _pronunciations(path: str) -> dict[str, list[str]]:
  """A CMU pronouncing dictionary's lines by word (alternatives `word(2)` under `word`)."""
  out: dict[str, list[str]] = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      head = line.split(" ", 1)[0]
      if head:
        out.setdefault(head.split("(", 1)[0], []).append(line if line.endswith("\n") else line + "\n")
  return out
