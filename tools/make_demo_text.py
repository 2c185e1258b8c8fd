"""Generates the bundled text-only corpus of the embedded default: sentences of the demo speech corpus's grammar.

    python -m tools.make_demo_text --output=audiopalm/data/assets/demo_text.txt

AudioPaLM starts from a text model that already knows the language its speech data is in. The embedded default
mirrors that at toy scale: the tiny text checkpoint (`gin_configs/experiments/tiny.gin`) is trained on this file
(plus `licenses.txt`), so it knows the command grammar of the bundled speech (`tools.make_demo_corpus`) before
it sees any audio, and a speech-text model initialised from it can be compared with one trained from scratch.

What the text knows that the speech does not: sentences are drawn from every template with every colour-object
pair, including the pairs held out of the speech corpus's `train` split (as a large text corpus knows phrases
its paired speech data never says). What it never contains: a sentence of the speech corpus's `test` split
(the first `--exclude_test` of them, default 1000: far more than the 40 bundled), so held-out ASR is never
answered from memorised text.

Format: upper case like the transcripts, one sentence per paragraph (a blank line between sentences: the text
source's documents, each ending in EOS like a transcript in the `text_lm` task). Deterministic in `--seed`:
sentence i is drawn from a generator seeded with (seed, TEXT_CODE, i), so a smaller `--num_sentences`
reproduces a prefix of a larger run. No espeak-ng needed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np

from audiopalm.files import storage
from data_pipeline.synthetic import corpus, grammar
from tools.make_demo_corpus import DEFAULT_SEED

DEFAULT_NUM_SENTENCES = 10_000
DEFAULT_EXCLUDE_TEST = 1000
TEXT_CODE = 3  # seed-sequence key of the text split (make_demo_corpus uses 1 train, 2 test, 99 held-out pairs)


def held_out_sentences(seed: int, count: int) -> frozenset[str]:
  """Transcripts of the speech corpus's first `count` test utterances."""
  held_out = grammar.held_out_pairs(seed)
  return frozenset(corpus.plan_utterance(seed, "test", i, held_out).transcript for i in range(count))


def sentence(seed: int, index: int, held_out: frozenset[tuple[str, str]], excluded: frozenset[str]) -> str:
  """Text sentence `index` (upper case): any template, any colour-object pair (with or without one of the
  `held_out` pairs, even odds), never one of `excluded`."""
  rng = np.random.default_rng([seed, TEXT_CODE, index])
  while True:
    split = "test" if rng.random() < 0.5 else "train"  # test's rule: a held-out pair; train's: none
    text = grammar.sample_sentence(rng, split, held_out).upper()
    if text not in excluded:
      return text


def generate(seed: int, num_sentences: int, exclude_test: int) -> list[str]:
  held_out, excluded = grammar.held_out_pairs(seed), held_out_sentences(seed, exclude_test)
  return [sentence(seed, i, held_out, excluded) for i in range(num_sentences)]


def main(argv: Sequence[str] | None = None) -> list[str]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--output", required=True, help="text file to write")
  parser.add_argument("--num_sentences", type=int, default=DEFAULT_NUM_SENTENCES)
  parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                      help="the speech corpus's seed (its held-out pairs and test sentences)")
  parser.add_argument("--exclude_test", type=int, default=DEFAULT_EXCLUDE_TEST,
                      help="never write the transcripts of the speech corpus's first N test utterances")
  args = parser.parse_args(argv)
  if args.num_sentences < 1 or args.exclude_test < 0 or args.seed < 0:
    parser.error("--num_sentences must be >= 1, --exclude_test and --seed >= 0")
  sentences = generate(args.seed, args.num_sentences, args.exclude_test)
  storage.write_text(args.output, "\n\n".join(sentences) + "\n")
  print(f"{len(sentences)} sentences ({len(set(sentences))} distinct), {os.path.getsize(args.output) / 1e3:.0f} kB "
        f"-> {args.output}")
  return sentences


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
