r"""How much of the words do the semantic tokens carry to the codec? A counting yardstick for the coarse stage.

    python -m tools.benchmark_coarse_table --train_tokens=runs/main/tokens/train --test_tokens=runs/main/tokens/test \
        --recognizer_text=audiopalm/data/assets/demo_text.txt [--max_train=N]

No training: from the training split it counts, for each context of semantic tokens, how often each level-0 code
of the acoustic frames it covers occurs, and predicts each held-out frame's level 0 as the most frequent code of
its context (backing off to the current semantic token alone for an unseen context). The held-out level-0 codes
so predicted are decoded by the dataset's codec (level 0 only) and heard by the independent recognizer
(`audiopalm.evaluation.recognizer`). Rows, one per context:

  codec, real level 0      the recognizer on the real level-0 codes: the best any coarse stage can do here
  sem[i]                   the semantic token covering the frame
  sem[i], phase            ... and which of the n_a frames of its aligned block the frame is (two at 25 / 50 Hz)
  sem[i-1..i], phase       ... and the semantic token before it
  sem[i-1..i+1], phase     ... and the one after it

Accuracy is the fraction of held-out frames whose level 0 is predicted exactly. A coarse stage (AudioLM stage 2)
that turns real semantic tokens into audio the recognizer hears worse than these tables (`python -m
audiopalm.main.evaluate --metrics=resynthesis`, `recognizer_wer`) is losing what its input carries: it is the
model or its decoding, not the units (docs/benchmarks.md, "The coarse stage follows its own codes").
"""

from __future__ import annotations

import argparse
import collections
import fractions
import json
import sys
import time
from typing import Any, Sequence

import numpy as np

from audiopalm.evaluation.recognizer import Recognizer
from audiopalm.evaluation.speech_metrics import read_examples
from audiopalm.evaluation.wer import error_rates
from audiopalm.files import storage
from audiopalm.formats.audiolm_stages import aligned_block, frame_semantic
from audiopalm.inference.acoustic import decode_codes
from audiopalm.tokenizers.base import load_tokenizer

# (name, semantic offsets around the frame's own semantic token, whether the frame's phase in its block counts)
CONTEXTS = (("sem[i]", (0,), False), ("sem[i], phase", (0,), True), ("sem[i-1..i], phase", (-1, 0), True),
            ("sem[i-1..i+1], phase", (-1, 0, 1), True))
PAD = 1  # semantic frames of edge padding on each side, enough for the offsets above


def frame_contexts(semantic: np.ndarray, frames: int, n_s: int, n_a: int, offsets: Sequence[int],
                   phase: bool) -> list[tuple[int, ...]]:
  """One context per acoustic frame: (phase,) + the semantic tokens at `offsets` from the one covering it (the
  coarse stage's mapping, `frame_semantic`; edges repeated)."""
  semantic = np.asarray(semantic).reshape(-1)
  padded = np.pad(semantic, (PAD, PAD), mode="edge")
  index = frame_semantic(np.arange(semantic.size), n_s, n_a, frames) + PAD  # [frames], into `padded`
  columns = ([np.arange(frames) % n_a] if phase else []) + [padded[index + o] for o in offsets]
  return list(zip(*(c.tolist() for c in columns)))


def _aligned(example: dict[str, Any], n_s: int, n_a: int) -> tuple[np.ndarray, np.ndarray]:
  """(semantic [blocks·n_s], level-0 codes [blocks·n_a]) over the whole aligned blocks both streams cover."""
  semantic, acoustic = np.asarray(example["semantic"]).reshape(-1), np.asarray(example["acoustic"])
  blocks = min(semantic.size // n_s, acoustic.shape[0] // n_a)
  return semantic[:blocks * n_s], acoustic[:blocks * n_a, 0]


def lookup_tables(train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]], n_s: int, n_a: int
                  ) -> list[tuple[str, float, list[np.ndarray]]]:
  """Per context of `CONTEXTS`: (name, held-out level-0 accuracy, predicted level-0 codes [frames] per example)."""
  rows = []
  for name, offsets, phase in CONTEXTS:
    table: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    backoff: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for example in train:
      semantic, level0 = _aligned(example, n_s, n_a)
      own = frame_semantic(semantic, n_s, n_a, level0.size).tolist()
      for context, token, code in zip(frame_contexts(semantic, level0.size, n_s, n_a, offsets, phase), own,
                                      level0.tolist()):
        table[context][code] += 1
        backoff[token][code] += 1
    overall = collections.Counter(code for counts in backoff.values() for code in counts.elements())
    hits = frames = 0
    predicted = []
    for example in test:
      semantic, level0 = _aligned(example, n_s, n_a)
      contexts = frame_contexts(semantic, level0.size, n_s, n_a, offsets, phase)
      own = frame_semantic(semantic, n_s, n_a, level0.size).tolist()
      codes = np.array([(table.get(c) or backoff.get(token) or overall).most_common(1)[0][0]
                        for c, token in zip(contexts, own)], np.int32)
      hits += int((codes == level0).sum())
      frames += level0.size
      predicted.append(codes)
    rows.append((name, hits / max(frames, 1), predicted))
  return rows


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.benchmark_coarse_table", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--train_tokens", required=True, help="token dataset whose 'train' split is counted")
  parser.add_argument("--test_tokens", required=True, help="token dataset whose 'test' split is predicted")
  parser.add_argument("--test_split", default="test")
  parser.add_argument("--recognizer_text", default=None, help="sentences for the recognizer's language model")
  parser.add_argument("--codec", default=None, help="the codec (default: the test dataset's acoustic tokenizer)")
  parser.add_argument("--max_train", type=int, default=None, help="count only the first N training examples")
  parser.add_argument("--max_test", type=int, default=None, help="predict only the first N held-out examples")
  parser.add_argument("--output", default=None, help="also write the rows as JSON here")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    train = read_examples(args.train_tokens, "train", args.max_train)
    test = read_examples(args.test_tokens, args.test_split, args.max_test)
    info = json.loads(storage.read_text(storage.join(args.test_tokens, "metadata.json")))["tokenizers"]
    if "acoustic" not in info:
      raise ValueError(f"{args.test_tokens} has no acoustic tokens")
    codec = load_tokenizer("codec", args.codec or info["acoustic"]["path"],
                           num_levels=info["acoustic"]["num_codebooks"]).codec
  except (ValueError, FileNotFoundError, KeyError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  n_s, n_a, _ = aligned_block(fractions.Fraction(test[0]["semantic_frame_rate"]).limit_denominator(1000),
                              fractions.Fraction(test[0]["acoustic_frame_rate"]).limit_denominator(1000))
  recognizer = Recognizer.from_text_file(args.recognizer_text) if args.recognizer_text else Recognizer()
  refs = [e["transcript"] for e in test]
  judge = lambda codes: error_rates(refs, recognizer.transcribe(  # noqa: E731
      [decode_codes(codec, np.asarray(c, np.int32)[:, None]) for c in codes], codec.sample_rate)).wer
  print(f"{len(train)} training and {len(test)} held-out examples; {n_s} semantic : {n_a} acoustic frames per block",
        flush=True)
  real = [_aligned(e, n_s, n_a)[1] for e in test]
  rows = [{"context": "codec, real level 0", "accuracy": 1.0, "recognizer_wer": judge(real)}]
  for name, accuracy, predicted in lookup_tables(train, test, n_s, n_a):
    rows.append({"context": name, "accuracy": accuracy, "recognizer_wer": judge(predicted)})
  print("| level 0 from | held-out accuracy | recognizer WER (level 0 only) |\n|---|---|---|")
  for row in rows:
    print(f"| {row['context']} | {row['accuracy']:.3f} | {row['recognizer_wer']:.3f} |")
  print(f"({time.perf_counter() - start:.0f} s)")
  if args.output:
    storage.write_text(args.output, json.dumps({"command": "python -m tools.benchmark_coarse_table " +
                                                " ".join(sys.argv[1:] if argv is None else argv), "rows": rows},
                                               indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
