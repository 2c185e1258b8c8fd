r"""Entry point: the supervised unit encoder, a small convolutional encoder trained with CTC on transcripts.

    python -m audiopalm.main.train_unit_encoder --gin_file=gin_configs/experiments/unit_encoder_demo.gin \
        --gin.GENERATED=runs/main/speech/train --gin.OUTPUT_DIR=runs/unit_encoder [--gin.NAME=VALUE ...]

Runs `train_unit_encoder` as the gin file binds it (see `gin_configs/runs/train_unit_encoder.gin`):
`audiopalm.semantic.ctc_train.train_ctc_encoder`, CTC over the characters of the transcribed recordings under
AUDIO_PATHS (LibriSpeech layout) with progress lines, then the greedy CTC transcripts of the recordings under
EVAL_PATHS and their WER / CER (in `<OUTPUT_DIR>/train.json`). OUTPUT_DIR is an encoder directory that
`python -m audiopalm.main.fit_kmeans --gin_file=gin_configs/experiments/semantic_demo_ctc.gin \
--gin.ENCODER_PATH=OUTPUT_DIR` turns into a semantic tokenizer.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Sequence

import gin

from audiopalm.cli import entry_point
from audiopalm.evaluation.wer import error_rates
from audiopalm.files import storage
from audiopalm.main import configurables  # noqa: F401  (the gin configurables its arguments name)
from audiopalm.semantic import ctc_train
from audiopalm.ssl.ctc_encoder import CtcEncoderConfig

log = logging.getLogger(__name__)


@gin.configurable("train_unit_encoder")
def train_unit_encoder(*, audio_paths: Sequence[str], output_dir: str, encoder: CtcEncoderConfig = CtcEncoderConfig(),
                       config: ctc_train.CtcTrainConfig = ctc_train.CtcTrainConfig(),
                       eval_paths: Sequence[str] = ()) -> dict[str, Any]:
  """`train_ctc_encoder`, then (with `eval_paths`) the held-out WER / CER of its greedy transcripts, added to the
  summary and `<output_dir>/train.json`."""
  summary = ctc_train.train_ctc_encoder(audio_paths=audio_paths, output_dir=output_dir, encoder=encoder,
                                        config=config)
  if eval_paths:
    references, hypotheses = ctc_train.transcribe(output_dir, eval_paths)
    rates = error_rates(references, hypotheses)
    summary["held_out"] = {"audio_paths": list(eval_paths), "utterances": len(references), "wer": rates.wer,
                           "cer": rates.cer, "first": [{"reference": r, "hypothesis": h}
                                                       for r, h in zip(references[:3], hypotheses[:3])]}
    log.info("Held out (%s): greedy CTC WER %.3f, CER %.3f on %d recordings", ", ".join(eval_paths), rates.wer,
             rates.cer, len(references))
    storage.write_text(storage.join(output_dir, ctc_train.SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
  return summary


def main(argv: list[str] | None = None) -> None:
  entry_point.run("python -m audiopalm.main.train_unit_encoder", __doc__, train_unit_encoder,
                  "train_unit_encoder.output_dir", argv)


if __name__ == "__main__":
  main(sys.argv[1:])
