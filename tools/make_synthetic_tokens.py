"""Synthetic token datasets: real shards and metadata with random codes, for benchmarks and loader tests.

    python -m tools.make_synthetic_tokens --output=/tmp/synth --examples=2000 --min_seconds=5 --max_seconds=30

writes `audiopalm.tokens.synthetic.write_synthetic_dataset` into --output: what `data_pipeline.tokenize` writes
(TFRecord shards, metadata.json, stats.json, TFDS files), with random codes. One flag per `SyntheticConfig`
field (same names and defaults: --examples, --num_shards, --min_seconds, --max_seconds, --semantic_rate, ...).
"""

from __future__ import annotations

import argparse
import dataclasses

from audiopalm.tokens.synthetic import SyntheticConfig, write_synthetic_dataset


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--output", required=True, help="dataset directory to write")
  for field in dataclasses.fields(SyntheticConfig):
    parser.add_argument(f"--{field.name}", type=type(field.default), default=field.default)
  args = parser.parse_args(argv)
  cfg = SyntheticConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticConfig)})
  meta = write_synthetic_dataset(args.output, cfg)
  print(f"wrote {meta.totals.examples} examples ({meta.totals.hours:.2f} h) in {cfg.num_shards} shards to "
        f"{args.output}")


if __name__ == "__main__":
  main()
