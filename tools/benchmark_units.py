"""Do a semantic tokenizer's units follow the words or the voice? A minutes-long check, before any training.

    python -m tools.benchmark_units --tokenizer=audiopalm/data/assets/demo_semantic --tokenizer=runs/semantic_k64 \
        --speech=runs/main/speech/train [--pairs=200]

Needs a LibriSpeech-layout corpus in which some sentences are spoken by several voices (the main job's generated
speech; `python -m data_pipeline.synthesize_speech`). For up to `--pairs` such sentences it takes one recording A,
the same sentence B by another voice, and a different sentence C by A's voice, tokenizes all three with each
tokenizer, removes consecutive repeats, and measures the normalized edit distance (Levenshtein / longer length)
between the unit sequences:

  same text, other voice   d(A, B): low when the units carry the words whoever speaks them
  other text, same voice   d(A, C): the baseline of unrelated content with the voice held fixed
  gap                      d(A, C) − d(A, B): > 0 when the units follow the words more than the voice; ≤ 0 when
                           the voice decides them (what a speech LM would then have to learn per voice)
  repeats                  fraction of 25 Hz frames equal to the previous one (units that flicker frame to
                           frame have few repeats)

It is a count, not a timing, and the same recordings are used for every tokenizer (chosen with `--seed`), so
the rows are comparable. Edit distances between unit strings are a coarse version of the ABX discriminability
tests of the zero-resource speech challenges; the gap shrinks with more clusters (longer, sparser strings),
so compare tokenizers of similar K. docs/benchmarks.md ("Which units") has the embedded default's rows.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
from typing import Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

from audiopalm.audio.io import load_audio
from audiopalm.semantic.tokenizer import load_semantic_tokenizer
from data_pipeline.readers.librispeech import LibriSpeechConfig, LibriSpeechReader
from data_pipeline.records import Utterance

BUCKET_SECONDS = 1.0  # recordings are padded to whole seconds so the encoder compiles for a few shapes only


def edit_distance(a: Sequence[int], b: Sequence[int]) -> float:
  """Levenshtein distance / the longer length (0: equal, 1: nothing in common)."""
  return Levenshtein.normalized_distance(a, b)


def deduplicated(units: np.ndarray) -> list[int]:
  return [int(u) for i, u in enumerate(units) if i == 0 or u != units[i - 1]]


def triples(utterances: Sequence[Utterance], pairs: int, seed: int) -> list[tuple[Utterance, Utterance, Utterance]]:
  """(A, B: A's sentence by another voice, C: another sentence by A's voice) for up to `pairs` sentences."""
  by_text: dict[str, list[Utterance]] = collections.defaultdict(list)
  by_voice: dict[str, list[Utterance]] = collections.defaultdict(list)
  for u in utterances:
    by_text[u.transcript].append(u)
    by_voice[u.speaker].append(u)
  rng = random.Random(seed)
  out = []
  for text in sorted(by_text):
    group = by_text[text]
    if len({u.speaker for u in group}) < 2:
      continue
    a = group[0]
    b = next(u for u in group if u.speaker != a.speaker)
    others = [u for u in by_voice[a.speaker] if u.transcript != text]
    if others:
      out.append((a, b, rng.choice(others)))
  rng.shuffle(out)
  return out[:pairs]


def decode(chosen: Sequence[tuple[Utterance, Utterance, Utterance]], rate: int) -> dict[str, np.ndarray]:
  """Each chosen recording's waveform at `rate`, decoded once for every tokenizer."""
  return {u.id: load_audio(u.audio.path, rate, start=u.start, end=u.end) for t in chosen for u in t}


def measure(tokenizer_path: str, chosen: Sequence[tuple[Utterance, Utterance, Utterance]],
            waves: dict[int, dict[str, np.ndarray]]) -> dict[str, float]:
  """The row of one tokenizer; `waves` caches the decoded recordings per sample rate across tokenizers."""
  tokenizer = load_semantic_tokenizer(tokenizer_path)
  rate = tokenizer.sample_rate
  if rate not in waves:
    waves[rate] = decode(chosen, rate)
  bucket = round(BUCKET_SECONDS * rate)
  units: dict[str, np.ndarray] = {}
  for uid, wave in waves[rate].items():
    padded = np.zeros((1, max(1, -(-len(wave) // bucket)) * bucket), np.float32)
    padded[0, :len(wave)] = wave
    codes, lengths = tokenizer.encode(padded, np.array([len(wave)], np.int32))
    units[uid] = np.asarray(codes)[0, :int(lengths[0]), 0]
  strings = {uid: deduplicated(u) for uid, u in units.items()}
  same = [edit_distance(strings[a.id], strings[b.id]) for a, b, _ in chosen]
  other = [edit_distance(strings[a.id], strings[c.id]) for a, _, c in chosen]
  frames = np.concatenate([units[u.id] for t in chosen for u in t])
  starts = np.concatenate([[True], np.diff(frames) != 0])  # (sequence boundaries counted as changes: negligible)
  return {"clusters": tokenizer.vocab_size, "rate": tokenizer.frame_rate, "same_text_other_voice": float(np.mean(same)),
          "other_text_same_voice": float(np.mean(other)), "gap": float(np.mean(other) - np.mean(same)),
          "repeats": float(1 - starts.mean())}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tokenizer", action="append", required=True, help="a semantic tokenizer directory (repeat)")
  parser.add_argument("--speech", action="append", required=True,
                      help="a LibriSpeech-layout directory with sentences spoken by several voices (repeat)")
  parser.add_argument("--pairs", type=int, default=200, help="sentences compared")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  reader = LibriSpeechReader(LibriSpeechConfig(roots=tuple(args.speech)))
  utterances = [u for u in reader.utterances() if isinstance(u, Utterance)]
  chosen = triples(utterances, args.pairs, args.seed)
  if not chosen:
    print(f"no sentence of {args.speech} is spoken by two voices: nothing to compare", file=sys.stderr)
    return 1
  print(f"{len(chosen)} sentences, each by two voices, and another sentence of the first voice "
        f"(of {len(utterances)} utterances)")
  header = ("tokenizer", "K", "Hz", "same text, other voice", "other text, same voice", "gap", "repeats")
  print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
  waves: dict[int, dict[str, np.ndarray]] = {}
  for path in args.tokenizer:
    r = measure(path, chosen, waves)
    print(f"| {path} | {r['clusters']} | {r['rate']:g} | {r['same_text_other_voice']:.3f} | "
          f"{r['other_text_same_voice']:.3f} | {r['gap']:.3f} | {r['repeats']:.3f} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
