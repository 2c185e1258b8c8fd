r"""Benchmark of the speech–text training loader: packed tokens per second per host, and packing efficiency.

    python -m tools.benchmark_data [--dataset=DIR] [--seconds=10] [--cases=audiopalm,semantic,coarse,fine] \
        [--read_threads=0] [--packing=best_fit_decreasing,best_fit] [--window=4096] [--bins=512]

Without --dataset, writes a synthetic LibriLight-like token dataset first (`audiopalm.tokens.synthetic`: 1000
segments of 5-30 s, semantic 25 Hz × 1024 units, acoustic 50 Hz × 12 × 1024, 2.7 words/s; byte-level text).
For each case (a mixture as in gin_configs/mixtures/), packer and --read_threads value, one host's loader
(`SpeechTextConfig.make_iterator`) runs from TFRecords to the trainer's batches; after one warm-up batch it
is timed for --seconds. Reported: non-pad tokens/s (the project's goal is >= 1M per host), rows/s and the
packing efficiency (non-pad fraction; goal >= 98%). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Sequence

from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.formats.audiolm_stages import CoarseAcousticConfig, FineAcousticConfig, SemanticLMConfig
from audiopalm.formats.audiopalm_tasks import ContinuationConfig
from audiopalm.tokens import synthetic

# case → (components as (format, rate, config), row length). The rates are gin_configs/mixtures/audiopalm.gin's.
# The stage windows are sized to fill a row of 2048: coarse 9 s × (25 + 4 × 50) tokens/s = 2025 (+ EOS), fine
# 3.4 s × 12 × 50 = 2040 (+ EOS); AudioLM's 10 s / 3 s windows need rows of 2304 / 1808 to pack as well.
_PALM = (("asr", 0.4, None), ("tts", 0.3, None), ("continuation", 0.2, ContinuationConfig(prefix_fraction=(0.3, 0.7))),
         ("text_lm", 0.1, None))
CASES = {
    "audiopalm": (_PALM, 2048),
    "audiopalm_4096": (_PALM, 4096),
    "semantic": ((("semantic_lm", 1.0, SemanticLMConfig(crop_seconds=30.0)),), 2048),
    "coarse": ((("coarse_acoustic", 1.0, CoarseAcousticConfig(crop_seconds=9.0, coarse_levels=4)),), 2048),
    "fine": ((("fine_acoustic", 1.0, FineAcousticConfig(chunk_seconds=3.4, coarse_levels=4)),), 2048),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m tools.benchmark_data", description=__doc__.split("\n\n")[0])
  p.add_argument("--dataset", default=None, help="a token dataset directory (default: write a synthetic one)")
  p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per case")
  p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {list(CASES)}")
  p.add_argument("--read_threads", default="0", help="comma-separated SpeechTextConfig.read_threads values")
  p.add_argument("--packing", default="best_fit_decreasing,best_fit",
                 help="comma-separated SpeechTextConfig.packing values")
  p.add_argument("--window", type=int, default=4096, help="SpeechTextConfig.packing_window (best_fit_decreasing)")
  p.add_argument("--bins", type=int, default=512, help="SpeechTextConfig.packing_bins (grain's packers)")
  p.add_argument("--rows", type=int, default=8, help="rows per host batch")
  return p.parse_args(argv)


def measure(dataset: str, case: str, *, read_threads: int, seconds: float, packing: str, window: int, bins: int,
            rows: int) -> dict:
  components, length = CASES[case]
  cfg = SpeechTextConfig(components=tuple(MixtureComponent(f, dataset, rate=r, config=c) for f, r, c in components),
                         seq_len=length, global_batch_size=rows, read_threads=read_threads, packing=packing,
                         packing_window=window, packing_bins=bins, log_every=0)
  it = cfg.make_iterator(0, rows)
  next(it)  # warm-up: thread pools, the first window / group of packed rows
  batches = tokens = 0
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    batch = next(it)
    batches += 1
    tokens += int((batch["segment_ids"] > 0).sum())
  wall = time.perf_counter() - start
  packer = f"{packing} ({window} seqs)" if packing == "best_fit_decreasing" else f"{packing} ({bins} bins)"
  return {"case": case, "seq_len": length, "packer": packer, "read_threads": read_threads,
          "tokens_per_s": tokens / wall, "rows_per_s": batches * rows / wall,
          "efficiency": tokens / (batches * rows * length)}


def format_table(results: list[dict]) -> str:
  lines = ["| case | seq_len | packer | read_threads | non-pad tokens/s | rows/s | packing efficiency |",
           "|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['case']} | {r['seq_len']} | {r['packer']} | {r['read_threads']} | "
                 f"{r['tokens_per_s'] / 1e6:.2f} M | {r['rows_per_s']:.0f} | {r['efficiency']:.2%} |")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
  args = parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    dataset = args.dataset
    if dataset is None:
      dataset = f"{tmp}/synthetic"
      meta = synthetic.write_synthetic_dataset(dataset, synthetic.SyntheticConfig())
      print(f"synthetic dataset: {meta.totals.examples} segments, {meta.totals.hours:.1f} h", flush=True)
    results = []
    for case in args.cases.split(","):
      for packing in args.packing.split(","):
        for threads in (int(t) for t in args.read_threads.split(",")):
          results.append(measure(dataset, case, read_threads=threads, seconds=args.seconds, packing=packing,
                                 window=args.window, bins=args.bins, rows=args.rows))
          r = results[-1]
          print(f"{case} {r['packer']} read_threads={threads}: {r['tokens_per_s'] / 1e6:.2f} M tokens/s, "
                f"{r['efficiency']:.2%}", flush=True)
  print(format_table(results))
  return results


if __name__ == "__main__":
  main()
