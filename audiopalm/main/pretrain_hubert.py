r"""Entry point: HuBERT's next iteration, a small HuBERT trained to predict a semantic tokenizer's units.

    python -m audiopalm.main.pretrain_hubert --gin_file=gin_configs/experiments/hubert_demo_iteration2.gin \
        [--gin.OUTPUT_DIR=...] [--gin.NAME=VALUE ...]

Runs `audiopalm.semantic.hubert_pretrain.pretrain_hubert` as the gin file binds it (see
`gin_configs/runs/pretrain_hubert.gin`): masked prediction of the units of the tokenizer at TARGETS over the
audio under AUDIO_PATHS, with progress lines; OUTPUT_DIR becomes a transformers HubertModel directory (plus
pretrain.json) that `python -m audiopalm.main.fit_kmeans --gin.ENCODER_PATH=OUTPUT_DIR --gin.LAYER=k` turns into
the next iteration's semantic tokenizer.
"""

from __future__ import annotations

import sys

import gin

from audiopalm.cli import entry_point
from audiopalm.main import configurables  # noqa: F401  (the gin configurables its arguments name)
from audiopalm.semantic.hubert_pretrain import pretrain_hubert

PRETRAIN_HUBERT = gin.external_configurable(pretrain_hubert, "pretrain_hubert")


def main(argv: list[str] | None = None) -> None:
  entry_point.run("python -m audiopalm.main.pretrain_hubert", __doc__, PRETRAIN_HUBERT, "pretrain_hubert.output_dir",
                  argv)


if __name__ == "__main__":
  main(sys.argv[1:])
