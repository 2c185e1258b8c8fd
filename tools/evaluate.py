"""Evaluate trained models on a held-out token dataset: perplexity, ASR, TTS round trip, codec and semantic
resynthesis. Results go to a JSON file, TensorBoard scalars and a table on the console.

    python -m data_pipeline.tokenize --gin_file=gin_configs/tokenize/demo_test.gin \
        --gin.OUTPUT_DIR=runs/tokens_demo_test
    python -m tools.evaluate --model=runs/speech_text_from_text --tokens_dir=runs/tokens_demo_test --split=test \
        [--coarse_model=runs/audiolm_coarse_demo --fine_model=runs/audiolm_fine_demo] \
        [--metrics=perplexity,asr,tts,codec,resynthesis] [--max_examples=N] [--output=eval.json]

Metrics (`--metrics`, default: every one the given models allow):
  perplexity    held-out perplexity of `--model` per AudioPaLM task (asr, tts, continuation, text_lm) and per
                modality of the predicted token (`audiopalm.evaluation.perplexity`), over one pass of the split
  asr           WER / CER of transcripts decoded from the examples' semantic tokens, and the chance baseline
  tts           round-trip WER: each transcript synthesized (semantic tokens; with the stage models, audio) and
                transcribed back by the same model
  codec         mel distance and SI-SNR of the examples' acoustic codes decoded by the codec, against the
                source audio (needs the source files the dataset was made from)
  resynthesis   WER of audio made by the stage models from the examples' real semantic tokens
(`audiopalm.evaluation.speech_metrics` defines each.) Stage models are needed for `resynthesis` and the audio
round trip of `tts`; the codec for `codec` and both of those.

Outputs: `--output` (default `<model>/eval/<split>.json`): the results, the models and step, the command;
TensorBoard scalars (`--tensorboard_dir`, default `<model>/tensorboard/eval_<split>` for a run directory) at
the checkpoint's step, named like `asr/wer`, `perplexity/tasks/asr/perplexity`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Sequence

from etils import epath

from audiopalm.cli.logging_setup import setup_logging
from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.evaluation import speech_metrics
from audiopalm.evaluation.perplexity import perplexity
from audiopalm.formats.audiolm_stages import CoarseAcousticConfig, FineAcousticConfig
from audiopalm.formats.audiopalm_tasks import ContinuationConfig
from audiopalm.inference.acoustic import AcousticConfig, AcousticStages
from audiopalm.inference.audio_tokens import tokenizer_for
from audiopalm.inference.models import LoadedModel, load_model
from audiopalm.inference.sampling import SamplingConfig
from audiopalm.inference.speech import SpeechConfig, SpeechTasks
from audiopalm.training.metrics import MetricsWriter
from audiopalm.vocab.build import VocabConfig

log = logging.getLogger("tools.evaluate")

METRICS = ("perplexity", "asr", "tts", "codec", "resynthesis")
NEEDS_STAGES = ("resynthesis",)
# The AudioPaLM mixture's components (gin_configs/mixtures/audiopalm.gin), each scored on its own.
PERPLEXITY_TASKS = {"asr": None, "tts": None, "continuation": ContinuationConfig(prefix_fraction=(0.3, 0.7)),
                    "text_lm": None}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, help="the speech-text decoder: run directory or export")
  parser.add_argument("--tokens_dir", required=True, help="a token dataset (data_pipeline.tokenize output)")
  parser.add_argument("--split", default="test")
  parser.add_argument("--coarse_model", default=None, help="AudioLM stage 2 (run directory or export)")
  parser.add_argument("--fine_model", default=None, help="AudioLM stage 3 (run directory or export)")
  parser.add_argument("--semantic_tokenizer", default=None, help="default: the one the model's vocabulary names")
  parser.add_argument("--codec", default=None, help="default: the one the stage models' / dataset's tokens name")
  parser.add_argument("--metrics", default=None, help=f"comma-separated subset of {','.join(METRICS)}")
  parser.add_argument("--max_examples", type=int, default=None, help="the first N transcribed examples")
  parser.add_argument("--seq_len", type=int, default=256, help="perplexity: packed row length")
  parser.add_argument("--batch_size", type=int, default=16, help="rows / prompts at a time")
  parser.add_argument("--coarse_levels", type=int, default=4, help="as the stage models were trained")
  parser.add_argument("--speech_temperature", type=float, default=0.6)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default=None, help="JSON results (default <model>/eval/<split>.json)")
  parser.add_argument("--tensorboard_dir", default=None)
  return parser.parse_args(argv)


def _metrics(args: argparse.Namespace) -> list[str]:
  stages = args.coarse_model is not None and args.fine_model is not None
  if (args.coarse_model is None) != (args.fine_model is None):
    raise ValueError("give both --coarse_model and --fine_model, or neither")
  if args.metrics is None:
    return [m for m in METRICS if stages or m not in NEEDS_STAGES]
  chosen = [m.strip() for m in args.metrics.split(",") if m.strip()]
  unknown = sorted(set(chosen) - set(METRICS))
  if unknown:
    raise ValueError(f"--metrics: unknown {unknown}; choose from {list(METRICS)}")
  if not stages and any(m in NEEDS_STAGES for m in chosen):
    raise ValueError(f"--metrics {','.join(m for m in chosen if m in NEEDS_STAGES)} needs --coarse_model and "
                     "--fine_model")
  return chosen


def held_out_perplexity(model: LoadedModel, tokens_dir: str, split: str, seq_len: int, batch_size: int
                        ) -> dict[str, Any]:
  """One pass over the split as the AudioPaLM mixture, with the model's own vocabulary."""
  components = tuple(MixtureComponent(format=name, dataset=tokens_dir, split=split, config=config)
                     for name, config in PERPLEXITY_TASKS.items())
  vocab = VocabConfig(text_kind=model.spec.text.kind, text_path=model.spec.text.path, spec_path=model.path)
  data = SpeechTextConfig(components=components, vocab_config=vocab, seq_len=seq_len, global_batch_size=batch_size,
                          shuffle=False, num_epochs=1, log_every=0)
  return perplexity(model.params, model.cfg, data, None, mesh=model.mesh, rules=model.rules)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
  metrics = _metrics(args)
  model = load_model(args.model)
  semantic = tokenizer_for(model.spec, "semantic", args.semantic_tokenizer, search=[model.path])
  speech = SpeechTasks(model, SpeechConfig(speech_sampling=SamplingConfig(temperature=args.speech_temperature),
                                           semantic_frame_rate=semantic.frame_rate, batch_size=args.batch_size,
                                           seed=args.seed))
  stages = codec = None
  if args.coarse_model is not None:
    coarse, fine = load_model(args.coarse_model), load_model(args.fine_model)
    codec = tokenizer_for(fine.spec, "acoustic", args.codec, search=[fine.path, coarse.path]).codec
    config = AcousticConfig(coarse=CoarseAcousticConfig(coarse_levels=args.coarse_levels),
                            fine=FineAcousticConfig(coarse_levels=args.coarse_levels), batch_size=args.batch_size,
                            seed=args.seed)
    stages = AcousticStages(coarse, fine, codec, semantic.frame_rate, config)
  elif "codec" in metrics:
    codec = _dataset_codec(args)
  examples = speech_metrics.read_examples(args.tokens_dir, args.split, args.max_examples)
  log.info("%d examples of %s split %r; metrics: %s", len(examples), args.tokens_dir, args.split, ", ".join(metrics))
  results: dict[str, Any] = {}
  for name in metrics:
    start = time.perf_counter()
    if name == "perplexity":
      results[name] = held_out_perplexity(model, args.tokens_dir, args.split, args.seq_len, args.batch_size)
    elif name == "asr":
      results[name] = speech_metrics.asr(speech, examples)
    elif name == "tts":
      results[name] = speech_metrics.tts(speech, examples, stages, semantic if stages else None)
    elif name == "codec":
      results[name] = speech_metrics.codec_resynthesis(codec, examples, _levels(stages, args))
    elif name == "resynthesis":
      results[name] = speech_metrics.semantic_resynthesis(speech, stages, semantic, examples)
    results[name]["seconds_taken"] = round(time.perf_counter() - start, 2)
    log.info("%s done in %.1f s", name, results[name]["seconds_taken"])
  return {"model": model.path, "step": model.step, "coarse_model": args.coarse_model, "fine_model": args.fine_model,
          "tokens_dir": args.tokens_dir, "split": args.split, "examples": len(examples),
          "command": "python -m tools.evaluate " + " ".join(sys.argv[1:]), "results": results}


def _levels(stages: AcousticStages | None, args: argparse.Namespace) -> int | None:
  return stages.num_levels if stages is not None else None


def _dataset_codec(args: argparse.Namespace):
  """Without stage models: the codec named by the dataset's metadata (or --codec)."""
  from audiopalm.tokenizers.base import load_tokenizer  # pylint: disable=import-outside-toplevel
  if args.codec:
    return load_tokenizer("codec", args.codec).codec
  meta = json.loads((epath.Path(args.tokens_dir) / "metadata.json").read_text())
  info = meta["tokenizers"].get("acoustic")
  if info is None:
    raise ValueError(f"{args.tokens_dir} has no acoustic tokens: drop 'codec' from --metrics")
  return load_tokenizer("codec", info["path"]).codec


def summary(report: dict[str, Any]) -> str:
  """A short table of the headline numbers."""
  rows = []
  res = report["results"]
  if "perplexity" in res:
    p = res["perplexity"]
    rows.append(("perplexity (overall)", f"{p['overall']['perplexity']:.3f}"))
    rows += [(f"perplexity {task}", f"{v['perplexity']:.3f}") for task, v in p["tasks"].items()]
  for name, keys in (("asr", ("wer", "cer", "chance_wer", "chance_cer")),
                     ("tts", ("semantic_roundtrip_wer", "wer", "cer", "length_ratio", "empty_outputs")),
                     ("codec", ("mel_distance", "si_snr_db")), ("resynthesis", ("wer", "cer", "reference_wer"))):
    for key in keys:
      if key in res.get(name, {}):
        rows.append((f"{name} {key}", f"{res[name][key]:.4g}"))
  width = max((len(r[0]) for r in rows), default=10)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
  setup_logging()
  args = parse_args(argv)
  try:
    report = evaluate(args)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  model_dir = epath.Path(report["model"])
  output = epath.Path(args.output) if args.output else model_dir / "eval" / f"{args.split}.json"
  output.parent.mkdir(parents=True, exist_ok=True)
  temp = output.parent / f".{output.name}.tmp-{os.getpid()}"
  temp.write_text(json.dumps(report, indent=2, ensure_ascii=False))
  temp.rename(output)
  tensorboard = args.tensorboard_dir or str(model_dir / "tensorboard" / f"eval_{args.split}")
  writer = MetricsWriter(tensorboard)
  writer.write(report["step"] or 0, {}, tensorboard_only=speech_metrics.flatten(report["results"]))
  writer.close()
  print(summary(report))
  print(f"wrote {output} and TensorBoard scalars to {tensorboard}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
