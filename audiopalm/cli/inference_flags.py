"""Flags shared by the inference entry points (`audiopalm.main.generate`, `audiopalm.main.evaluate`): the AudioLM stage models, and
the line between a usage error (exit 2, a message) and a failure (a traceback).

    add_stage_flags(parser, required=True)
    stages = load_stages(args, semantic_identity=model.spec.semantic.tokenizer, semantic_rate=tok.frame_rate)
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from audiopalm.inference.acoustic import AcousticConfig, AcousticStages
from audiopalm.inference.audio_tokens import tokenizer_for
from audiopalm.inference.models import load_model
from audiopalm.inference.sampling import SamplingConfig


class UsageError(Exception):
  """Bad flags, or inputs that do not fit together (models, tokenizers, data): reported without a traceback."""


def add_stage_flags(parser: argparse.ArgumentParser, required: bool) -> None:
  """--coarse_model / --fine_model / --codec, and overrides of the stage formats' settings (by default as the stage
  models were trained: their runs' saved configs)."""
  parser.add_argument("--coarse_model", required=required, default=None,
                      help="AudioLM stage 2 (run directory or export)")
  parser.add_argument("--fine_model", required=required, default=None,
                      help="AudioLM stage 3 (run directory or export)")
  parser.add_argument("--codec", default=None, help="default: the one the stage models' vocabularies name")
  trained = " (default: as the stage model was trained)"
  parser.add_argument("--coarse_levels", type=int, default=None, help="CoarseAcousticConfig.coarse_levels" + trained)
  parser.add_argument("--coarse_window_seconds", type=float, default=None,
                      help="CoarseAcousticConfig.crop_seconds" + trained)
  parser.add_argument("--coarse_dedupe", type=int, choices=(0, 1), default=None,
                      help="CoarseAcousticConfig.dedupe" + trained)
  parser.add_argument("--fine_chunk_seconds", type=float, default=None,
                      help="FineAcousticConfig.chunk_seconds" + trained)
  parser.add_argument("--num_levels", type=int, default=None,
                      help="FineAcousticConfig.num_levels" + trained + "; all levels if it says none")
  parser.add_argument("--coarse_temperature", type=float, default=0.8, help="0 = greedy")
  parser.add_argument("--fine_temperature", type=float, default=0.6, help="0 = greedy")


def load_stages(args: argparse.Namespace, semantic_identity: str, semantic_rate: float,
                voice_prompt_seconds: float = 3.0) -> AcousticStages | None:
  """The stage models, codec and config the flags name (None without --coarse_model); checks that they read the
  semantic tokens of `semantic_identity` and that the codec is the one their tokens came from."""
  if (args.coarse_model is None) != (args.fine_model is None):
    raise UsageError("give both --coarse_model and --fine_model, or neither")
  if args.coarse_model is None:
    return None
  try:
    coarse, fine = load_model(args.coarse_model), load_model(args.fine_model)
    coarse_cfg = _override(coarse.format_config("coarse_acoustic"), crop_seconds=args.coarse_window_seconds,
                           coarse_levels=args.coarse_levels,
                           dedupe=None if args.coarse_dedupe is None else bool(args.coarse_dedupe))
    fine_cfg = _override(fine.format_config("fine_acoustic"), chunk_seconds=args.fine_chunk_seconds,
                         coarse_levels=args.coarse_levels, num_levels=args.num_levels)
    config = AcousticConfig(
        coarse=coarse_cfg, fine=fine_cfg, coarse_sampling=SamplingConfig(temperature=args.coarse_temperature),
        fine_sampling=SamplingConfig(temperature=args.fine_temperature),
        voice_prompt_seconds=voice_prompt_seconds, batch_size=args.batch_size, seed=args.seed)
    codec = tokenizer_for(fine.spec, "acoustic", args.codec, search=[fine.path, coarse.path]).codec
    stages = AcousticStages(coarse, fine, codec, semantic_rate, config)
    stages.check_semantic(semantic_identity)
  except (ValueError, FileNotFoundError) as e:
    raise UsageError(str(e)) from e
  return stages


def _override(config: Any, **changes: Any) -> Any:
  """`config` with the fields whose flag was given (not None) replaced."""
  return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
