r"""Generates training speech: the demo grammar's sentences spoken by many espeak-ng voices, reproducibly.

    python -m data_pipeline.synthesize_speech --output_dir=runs/main/speech [--num_utterances=4000] \
        [--speakers=40] [--seed=1] [--held_out_seed=0] [--engine=library]

Writes `<output_dir>/train/` in LibriSpeech layout (`data_pipeline.synthetic.corpus`: 16-bit mono FLAC and
per-chapter transcripts, ready for `data_pipeline.tokenize` with `tokenize_corpus.reader = 'librispeech'`) and
`<output_dir>/synthesis.json` (the settings, versions, speakers, sizes, and the held-out pairs kept out).

- The voices: `--speakers` speakers (`corpus.generated_speakers`): the bundled corpus's ten voices first, then
  voices drawn from espeak-ng's English languages and variants, each with its own speed and pitch.
- The sentences never say a held-out colour-object pair of the bundled test split (`--held_out_seed`, the
  bundle's seed 0), so no generated utterance is a held-out sentence; each is checked before it is written.
  `--seed` (default 1, the bundle's train split is seed 0) draws the sentences, speeds and pitches.
- The engine: by default the espeak-ng library of the PyPI wheel `espeakng-loader` (pinned in requirements.txt),
  so the same speech comes out wherever the requirements install, with no system package; `--engine=program`
  uses the `espeak-ng` program instead. About 2 hours of speech a minute on 2 CPU cores (docs/benchmarks.md).
  The library's audio is reproducible as a whole run in a fresh process (each utterance depends on those
  before it, `synthetic.espeak`): the same command gives the same bytes, and a smaller `--num_utterances` a
  prefix of them.
- Crash-safe: the corpus is written to `<output_dir>.partial/` and renamed when complete, so `<output_dir>`
  exists only whole. A rerun with the same settings finds it and keeps it; other settings need `--overwrite`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Sequence

import numpy as np
import soundfile as sf
import soxr

from data_pipeline.synthetic import espeak
from data_pipeline.synthetic.corpus import generated_speakers, plan_utterance, write_split
from data_pipeline.synthetic.grammar import held_out_pairs, says_held_out_pair

SYNTHESIS_FILE = "synthesis.json"
SPLIT = "train"


def settings(args: argparse.Namespace) -> dict:
  """What determines the corpus (with the engine's version): a rerun with equal settings keeps it."""
  return {"num_utterances": args.num_utterances, "speakers": args.speakers, "seed": args.seed,
          "held_out_seed": args.held_out_seed, "engine": args.engine, "sample_rate": args.sample_rate,
          "peak": args.peak, "bits": args.bits}


def check_held_out(args: argparse.Namespace, speakers: Sequence, held_out: frozenset) -> None:
  """Refuses to write a corpus any of whose sentences says a held-out pair (the grammar never draws one)."""
  for index in range(args.num_utterances):
    utt = plan_utterance(args.seed, SPLIT, index, held_out, speakers)
    if says_held_out_pair(utt.text, held_out):
      raise RuntimeError(f"utterance {index} ({utt.text!r}) says a held-out pair; the held-out sentences would leak")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m data_pipeline.synthesize_speech",
                                   description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--num_utterances", type=int, default=4000, help="about 1.9 s each")
  parser.add_argument("--speakers", type=int, default=40, help="voices (the bundled ten first)")
  parser.add_argument("--seed", type=int, default=1, help="sentences, speeds and pitches")
  parser.add_argument("--held_out_seed", type=int, default=0,
                      help="the seed of the held-out test split whose colour-object pairs are kept out")
  parser.add_argument("--engine", choices=("library", "program"), default="library")
  parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng binary (--engine=program)")
  parser.add_argument("--sample_rate", type=int, default=16000)
  parser.add_argument("--peak", type=float, default=0.5, help="peak level of each utterance (0, 1]")
  parser.add_argument("--bits", type=int, default=16, help="significant bits of the 16-bit samples, 8-16")
  parser.add_argument("--overwrite", action="store_true", help="replace a corpus made with other settings")
  args = parser.parse_args(argv)
  if args.num_utterances < 1 or args.speakers < 1 or args.seed < 0 or args.held_out_seed < 0:
    parser.error("--num_utterances and --speakers must be >= 1, the seeds >= 0")
  if args.sample_rate <= 0 or not 0.0 < args.peak <= 1.0 or not 8 <= args.bits <= 16:
    parser.error("need --sample_rate > 0, --peak in (0, 1], --bits in [8, 16]")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  out = args.output_dir.rstrip("/")
  record = os.path.join(out, SYNTHESIS_FILE)
  wanted = settings(args)
  if os.path.exists(out):
    have = json.load(open(record, encoding="utf-8")).get("settings") if os.path.exists(record) else None
    if have == wanted:
      print(f"{out} already holds this corpus ({record}); kept", flush=True)
      return 0
    if not args.overwrite:
      print(f"error: {out} exists with other settings ({have}); pass --overwrite to replace it", file=sys.stderr)
      return 2
    shutil.rmtree(out)
  engine = espeak.engine(args.engine, args.espeak)
  speakers = generated_speakers(args.speakers, args.seed)
  engine.check_voices([s.espeak_voice for s in speakers])
  held_out = held_out_pairs(args.held_out_seed)
  check_held_out(args, speakers, held_out)
  partial = out + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  print(f"{engine.name} {engine.version}: {args.num_utterances} utterances by {len(speakers)} speakers, seed "
        f"{args.seed}, keeping out the {len(held_out)} held-out pairs of seed {args.held_out_seed} -> {out}",
        flush=True)
  start = time.perf_counter()
  stats = write_split(engine, partial, SPLIT, args.num_utterances, args.seed, args.sample_rate, args.peak,
                      args.bits, held_out, speakers)
  seconds = time.perf_counter() - start
  hours = stats.frames / args.sample_rate / 3600
  info = {"settings": wanted, "command": "python -m data_pipeline.synthesize_speech " + " ".join(sys.argv[1:]
                                                                                                 if argv is None else argv),
          "engine": engine.name, "engine_version": engine.version, "numpy": np.__version__, "soxr": soxr.__version__,
          "soundfile": sf.__version__, "utterances": stats.utterances, "hours": round(hours, 4),
          "bytes": stats.bytes, "seconds_taken": round(seconds, 1),
          "held_out_pairs": sorted(" ".join(p) for p in held_out),
          "speakers": [{"id": s.speaker_id, "voice": s.espeak_voice, "speed": s.speed, "pitch": s.pitch}
                       for s in speakers]}
  with open(os.path.join(partial, SYNTHESIS_FILE), "w", encoding="utf-8") as f:
    json.dump(info, f, indent=2)
  os.rename(partial, out)
  print(f"{stats.utterances} utterances, {hours:.3f} h, {stats.bytes / 1e6:.1f} MB in {seconds:.0f} s "
        f"({hours * 3600 / max(seconds, 1e-9):.0f}x real time) -> {out}/{SPLIT}", flush=True)
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except RuntimeError as error:
    sys.exit(f"synthesize_speech: {error}")
