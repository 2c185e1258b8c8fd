r"""Entry point: fit a semantic tokenizer (encoder layer + standardization + k-means) on a corpus.

    python -m audiopalm.main.fit_kmeans --gin_file=gin_configs/experiments/semantic_demo_mfcc.gin \
        [--gin.OUTPUT_DIR=...] [--gin.NAME=VALUE ...]

Runs `audiopalm.semantic.fit.fit_semantic_tokenizer` as the gin file binds it (see
`gin_configs/runs/fit_kmeans.gin`): features of every audio file under AUDIO_PATHS, their statistics, then
mini-batch k-means on the local devices, with progress bars; the tokenizer is written to OUTPUT_DIR, which
`load_tokenizer("semantic", OUTPUT_DIR)` (and the tokenization job) read.
"""

from __future__ import annotations

import sys

import gin

from audiopalm.cli import entry_point
from audiopalm.main import configurables  # noqa: F401  (the gin configurables its arguments name)
from audiopalm.semantic.fit import fit_semantic_tokenizer

FIT_SEMANTIC_TOKENIZER = gin.external_configurable(fit_semantic_tokenizer, "fit_semantic_tokenizer")


def main(argv: list[str] | None = None) -> None:
  entry_point.run("python -m audiopalm.main.fit_kmeans", __doc__, FIT_SEMANTIC_TOKENIZER,
                  "fit_semantic_tokenizer.output_dir", argv)


if __name__ == "__main__":
  main(sys.argv[1:])
