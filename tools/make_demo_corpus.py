"""Generates the bundled demo speech corpus: seeded command sentences spoken by espeak-ng voices.

    python -m tools.make_demo_corpus --output_dir=audiopalm/data/assets/demo_speech --overwrite

Sentences come from a small seeded grammar ("move two green boxes up", "put the red ball on the
left") over a vocabulary of about 60 words. Each speaker is an espeak-ng voice plus a variant
(`en-us+m3`, `en-gb-x-rp+f2`, ...) with its own speed and pitch; each utterance jitters both a
little. The output is in LibriSpeech layout:

    {output_dir}/{split}/{speaker}/{chapter}/{speaker}-{chapter}-{utt:04d}.flac
    {output_dir}/{split}/{speaker}/{chapter}/{speaker}-{chapter}.trans.txt

with splits `train` and `test`, and a generated `README.md` (command, versions, counts, manifest).
The held-out `test` split uses the same words, but every test sentence contains at least one
colour-object pair (e.g. "red cup") that never occurs in `train`.

The grammar, the speakers and the rendering are `data_pipeline.synthetic` (the main job generates its training
speech with the same code, `data_pipeline.synthesize_speech`); this tool makes the bundle and its README.
Audio: espeak-ng WAV (22050 Hz) from `--stdout` of the espeak-ng program (`--engine=program`, the default: the
bundle was made with it) or from the espeak-ng library of the PyPI wheel (`--engine=library`), silence trimmed
to 0.1 s at each end, resampled with soxr, scaled to a fixed peak and written as 16-bit mono FLAC. espeak-ng speech costs about
18 kB/s as 16-bit FLAC at 16 kHz, like real speech, so by default only the top 12 bits of each
sample are kept (`--bits`): FLAC stores the zero low bits for free (about 11 kB/s), and the default
360 + 40 utterances fit the 10 MB budget of the bundled copy.

Utterance `index` of a split depends only on (seed, split, index): speakers take turns, and the
sentence, speed and pitch are drawn from a generator seeded with that triple. A run with smaller
counts therefore reproduces a prefix of a larger run byte for byte (same espeak-ng, soxr and
libsndfile versions).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Sequence

import numpy as np
import soundfile as sf
import soxr

from data_pipeline.synthetic import espeak
from data_pipeline.synthetic.corpus import (KEEP_SILENCE_S, PITCH_JITTER, SILENCE_THRESHOLD_DB, SPEAKERS,
                                            SPEED_JITTER, SplitStats, write_split)
from data_pipeline.synthetic.grammar import held_out_pairs, vocabulary

SPLITS = ("train", "test")

# About 20 kB per utterance at the defaults: 400 utterances are ~8 MB (the bundle's budget is 10 MB).
DEFAULT_NUM_TRAIN = 360
DEFAULT_NUM_TEST = 40
DEFAULT_SEED = 0
DEFAULT_PEAK = 0.5  # peak level of every utterance (of full scale)
DEFAULT_BITS = 12  # significant bits kept of the 16-bit samples (FLAC stores the rest for free)


def command_line(args: argparse.Namespace) -> str:
  """The command that reproduces `args`, every generation flag spelled out."""
  flags = [f"--output_dir={args.output_dir}", f"--num_train={args.num_train}", f"--num_test={args.num_test}",
           f"--seed={args.seed}", f"--sample_rate={args.sample_rate}", f"--peak={args.peak}",
           f"--bits={args.bits}"] + ([f"--engine={args.engine}"] if args.engine != "program" else [])
  return "python -m tools.make_demo_corpus " + " ".join(flags) + " --overwrite"


def readme_text(args: argparse.Namespace, version: str, stats: dict[str, SplitStats],
                held_out: frozenset[tuple[str, str]]) -> str:
  """README.md of the corpus: what it is, how it was made, sizes, license note and manifest."""
  total_bytes = sum(s.bytes for s in stats.values())
  total_hours = sum(s.frames for s in stats.values()) / args.sample_rate / 3600
  words = vocabulary()
  lines = [
      "# Demo speech corpus (synthetic, espeak-ng)",
      "",
      "A small speech corpus with transcripts, small enough to bundle and to learn from on a CPU in",
      "minutes: a tiny speech-text model learns ASR on it, and a small codec is trained on it. Short",
      "command sentences (about 1-3 s each, e.g. \"move two green boxes up\", \"put the red ball on the",
      f"left\") from a seeded grammar over a {len(words)}-word vocabulary are spoken by "
      f"{len(SPEAKERS)} espeak-ng voices.",
      "",
      "Layout is LibriSpeech's: `{split}/{speaker}/{chapter}/{speaker}-{chapter}-{utt:04d}.flac` (16-bit",
      f"mono FLAC, {args.sample_rate} Hz) and one `{{speaker}}-{{chapter}}.trans.txt` per chapter with lines",
      "`ID TRANSCRIPT` (upper case, no punctuation). Each speaker has one chapter per split.",
      "",
      "`test` is held out: same speakers and words, but every test sentence contains at least one of",
      f"{len(held_out)} colour-object pairs that never occur in `train`: "
      + ", ".join(f"\"{c} {o}\"" for c, o in sorted(held_out)) + ".",
      "",
      "## How it was made",
      "",
      "From the repository root (the file is generated by the same command):",
      "",
      "```",
      command_line(args),
      "```",
      "",
      f"- espeak-ng {version} (`espeak-ng --stdout`, {espeak.SAMPLE_RATE} Hz WAV), numpy {np.__version__}, "
      f"soxr {soxr.__version__}, soundfile {sf.__version__} (libsndfile {sf.__libsndfile_version__}).",
      f"- Per utterance: speed jittered by up to {SPEED_JITTER:.0%} and pitch by up to {PITCH_JITTER} around the",
      f"  speaker's; leading and trailing silence trimmed to {KEEP_SILENCE_S} s (threshold "
      f"{-SILENCE_THRESHOLD_DB:.0f} dB below the peak);",
      f"  resampled to {args.sample_rate} Hz with soxr (HQ); scaled to a peak of {args.peak} of full scale;",
      f"  rounded to {args.bits} significant bits: 16-bit samples whose low {16 - args.bits} bits are zero, "
      "which FLAC",
      "  stores for free (espeak-ng speech costs about 18 kB/s as full 16-bit FLAC at 16 kHz, about",
      "  11 kB/s at 12 bits); FLAC compression level 8.",
      "- Utterance `i` of a split depends only on (seed, split, i), so a run with smaller counts",
      "  reproduces a prefix of this corpus byte for byte with the same tool versions",
      "  (`tools/make_demo_corpus_test.py` checks this). Another espeak-ng version gives other audio.",
      "",
      "Speakers (espeak-ng `voice+variant`, base speed in words per minute, base pitch 0-99):",
      "",
      "| speaker | chapters (train, test) | voice | speed | pitch |",
      "|---|---|---|---|---|",
  ]
  for s in SPEAKERS:
    lines.append(f"| {s.speaker_id} | {s.chapter('train')}, {s.chapter('test')} | `{s.espeak_voice}` | "
                 f"{s.speed} | {s.pitch} |")
  lines += [
      "",
      f"Vocabulary ({len(words)} words): " + " ".join(words) + ".",
      "",
      "## Size",
      "",
      "| split | utterances | hours | MB |",
      "|---|---|---|---|",
  ]
  for split, s in stats.items():
    hours = s.frames / args.sample_rate / 3600
    lines.append(f"| {split} | {s.utterances} | {hours:.3f} | {s.bytes / 1e6:.2f} |")
  total_utterances = sum(s.utterances for s in stats.values())
  lines += [
      f"| total | {total_utterances} | {total_hours:.3f} | {total_bytes / 1e6:.2f} |",
      "",
      "MB are 10^6 bytes of FLAC files and transcripts (this README not included).",
      "",
      "## License",
      "",
      "Synthetic speech generated by espeak-ng. espeak-ng is a GPL program; its output audio is not",
      "covered by the GPL. The sentences come from this repository's grammar.",
      "",
      "## Manifest",
      "",
      "Utterances per split and speaker:",
      "",
      "| speaker | " + " | ".join(stats) + " |",
      "|---|" + "---|" * len(stats),
  ]
  for s in SPEAKERS:
    counts = [str(st.per_speaker[s.speaker_id]) for st in stats.values()]
    lines.append(f"| {s.speaker_id} | " + " | ".join(counts) + " |")
  return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--output_dir", required=True, help="corpus root (gets train/, test/, README.md)")
  parser.add_argument("--num_train", type=int, default=DEFAULT_NUM_TRAIN, help="train utterances")
  parser.add_argument("--num_test", type=int, default=DEFAULT_NUM_TEST, help="held-out test utterances")
  parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of sentences, speeds and pitches")
  parser.add_argument("--sample_rate", type=int, default=16000, help="output sample rate (Hz)")
  parser.add_argument("--peak", type=float, default=DEFAULT_PEAK, help="peak level of each utterance (0, 1]")
  parser.add_argument("--bits", type=int, default=DEFAULT_BITS,
                      help="significant bits of the 16-bit samples, 8-16 (fewer: smaller FLAC files)")
  parser.add_argument("--engine", choices=("program", "library"), default="program",
                      help="espeak-ng program (the bundle's) or the library of the espeakng-loader wheel")
  parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng binary (--engine=program)")
  parser.add_argument("--overwrite", action="store_true", help="replace existing train/ and test/ folders")
  args = parser.parse_args(argv)
  if args.num_train < 0 or args.num_test < 0 or args.seed < 0 or args.sample_rate <= 0:
    parser.error("--num_train, --num_test and --seed must be >= 0 and --sample_rate > 0")
  if not 0.0 < args.peak <= 1.0:
    parser.error("--peak must be in (0, 1]")
  if not 8 <= args.bits <= 16:
    parser.error("--bits must be in [8, 16]")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, SplitStats]:
  args = parse_args(argv)
  engine = espeak.engine(args.engine, args.espeak)
  version = engine.version
  engine.check_voices([s.espeak_voice for s in SPEAKERS])
  for split in SPLITS:
    folder = os.path.join(args.output_dir, split)
    if os.path.isdir(folder) and os.listdir(folder):
      if not args.overwrite:
        raise RuntimeError(f"{folder} is not empty; pass --overwrite to replace it")
      shutil.rmtree(folder)
  os.makedirs(args.output_dir, exist_ok=True)
  held_out = held_out_pairs(args.seed)
  print(f"espeak-ng {version}: {args.num_train} train + {args.num_test} test utterances, "
        f"{len(SPEAKERS)} speakers, seed {args.seed} -> {args.output_dir}", flush=True)
  counts = {"train": args.num_train, "test": args.num_test}
  stats = {split: write_split(engine, args.output_dir, split, counts[split], args.seed, args.sample_rate,
                              args.peak, args.bits, held_out) for split in SPLITS}
  with open(os.path.join(args.output_dir, "README.md"), "w", encoding="utf-8", newline="\n") as f:
    f.write(readme_text(args, version, stats, held_out))
  for split, s in stats.items():
    print(f"{split}: {s.utterances} utterances, {s.frames / args.sample_rate / 3600:.3f} h, "
          f"{s.bytes / 1e6:.2f} MB")
  total = sum(s.bytes for s in stats.values())
  print(f"total: {sum(s.utterances for s in stats.values())} utterances, "
        f"{sum(s.frames for s in stats.values()) / args.sample_rate / 3600:.3f} h, {total / 1e6:.2f} MB")
  return stats


if __name__ == "__main__":
  try:
    main()
  except RuntimeError as error:
    sys.exit(f"make_demo_corpus: {error}")
