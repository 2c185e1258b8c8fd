"""Evaluate trained models on a held-out token dataset: perplexity, ASR, TTS round trip, codec and semantic
resynthesis. Results go to a JSON file, TensorBoard scalars and a table on the console.

    python -m data_pipeline.tokenize --gin_file=gin_configs/tokenize/demo_test.gin \
        --gin.OUTPUT_DIR=runs/tokens_demo_test
    python -m audiopalm.main.evaluate --model=runs/speech_text_from_text --tokens_dir=runs/tokens_demo_test --split=test \
        [--coarse_model=runs/audiolm_coarse_demo --fine_model=runs/audiolm_fine_demo] \
        [--metrics=perplexity,asr,tts,codec,resynthesis,intelligibility] [--max_examples=N] [--samples=N|all] \
        [--voice_prompt=held_out.flac] [--recognizer_text=sentences.txt] [--samples_dir=DIR] [--output=eval.json]

Metrics (`--metrics`, default: every one the given models allow):
  perplexity    held-out perplexity of `--model` per AudioPaLM task (asr, tts, continuation, text_lm) and per
                modality of the predicted token (`audiopalm.evaluation.perplexity`), over one pass of the split
  asr           WER / CER of transcripts decoded from the examples' semantic tokens, and the chance baseline
  tts           round-trip WER: each transcript synthesized (semantic tokens; with the stage models, audio) and
                transcribed back by the same model; with the stage models also by the independent recognizer
                (`recognizer_wer`), voiced like `--voice_prompt`, the audio kept in `--samples_dir`
  codec         mel distance and SI-SNR of the examples' acoustic codes decoded by the codec, against the
                source audio (needs the source files the dataset was made from)
  resynthesis   WER of audio made by the stage models from the examples' real semantic tokens (voiced like
                --voice_prompt), by the model and by the independent recognizer: the acoustic stages' share
                of the TTS figures
  stages        held-out loss of the AudioLM coarse and fine models on their own formats (as trained), per
                acoustic level, beside the uniform loss ln(codebook size) of a model that has learnt nothing
  intelligibility  an independent off-the-shelf recognizer (`audiopalm.evaluation.recognizer`: PocketSphinx and
                its bundled English model, the language model of `--recognizer_text` or its own) on the examples'
                original recordings and on the codec's resynthesis of them; with `tts` through audio, the
                ratio of the synthesized speech's recognizer WER to the originals' (`tts_to_original`)
(`audiopalm.evaluation.speech_metrics` defines each.) Stage models are needed for `resynthesis` and the audio
round trip of `tts`; the codec for `codec` and both of those. Each task is read as the model was trained on it:
its format config from the run's saved config (`train_config.json`, carried into exports), training-time
augmentation off; so are the stage models' windows and levels.

Outputs: `--output` (default `<model>/eval/<split>.json`): the results, the models and step, the command;
TensorBoard scalars (`--tensorboard_dir`, default `<model>/tensorboard/eval_<split>` for a run directory) at
the checkpoint's step, named like `asr/wer`, `perplexity/tasks/asr/perplexity`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from typing import Any, Sequence

from audiopalm.audio.io import AudioDecodeError
from audiopalm.checkpoints.source import RUN_CONFIG_FILE
from audiopalm.cli.inference_flags import UsageError, add_stage_flags, load_stages
from audiopalm.cli.logging_setup import setup_logging
from audiopalm.codec.tokenizer import CodecTokenizer
from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.evaluation import speech_metrics
from audiopalm.evaluation.perplexity import perplexity
from audiopalm.evaluation.recognizer import Recognizer
from audiopalm.files import storage
from audiopalm.inference.audio_tokens import tokenizer_for
from audiopalm.inference.models import LoadedModel, load_model
from audiopalm.inference.sampling import SamplingConfig
from audiopalm.inference.speech import SpeechConfig, SpeechTasks
from audiopalm.semantic.unit_aligner import UnitAligner
from audiopalm.tokenizers.base import load_tokenizer
from audiopalm.training.metrics import MetricsWriter
from audiopalm.vocab.build import VocabConfig

log = logging.getLogger("audiopalm.main.evaluate")

METRICS = ("perplexity", "asr", "tts", "codec", "resynthesis", "intelligibility", "stages")
DEFAULT_SEQ_LEN = 256  # perplexity's row length for a model whose training runs saved none
DEFAULT_STAGE_SEQ_LEN = 1024  # the same for a stage model
NEEDS_STAGES = ("resynthesis", "stages")


TASKS = ("asr", "tts", "continuation", "text_lm")  # the AudioPaLM tasks evaluated


def task_configs(model: LoadedModel) -> dict[str, Any]:
  """Each AudioPaLM task's format config as the model was trained with it (its run's mixture, saved with the
  checkpoint as `train_config.json`), training-time augmentation off; the format's default for a task its
  mixture did not have."""
  if model.run_config is None:
    log.warning("%s has no %s: the tasks are evaluated with their formats' default configs", model.path,
                RUN_CONFIG_FILE)
  return model.format_configs(TASKS)


def _sample_count(value: str) -> int | None:
  """--samples: a count >= 0, or 'all' (None)."""
  if value == "all":
    return None
  if not value.isdigit():
    raise argparse.ArgumentTypeError(f"give a count >= 0 or 'all', not {value!r}")
  return int(value)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m audiopalm.main.evaluate", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, help="the speech-text decoder: run directory or export")
  parser.add_argument("--tokens_dir", required=True, help="a token dataset (data_pipeline.tokenize output)")
  parser.add_argument("--split", default="test")
  add_stage_flags(parser, required=False)
  parser.add_argument("--semantic_tokenizer", default=None, help="default: the one the model's vocabulary names")
  parser.add_argument("--metrics", default=None, help=f"comma-separated subset of {','.join(METRICS)}")
  parser.add_argument("--max_examples", type=int, default=None, help="the first N transcribed examples")
  parser.add_argument("--seq_len", type=int, default=None,
                      help="perplexity: packed row length (default: the model's training runs', else 256)")
  parser.add_argument("--batch_size", type=int, default=16, help="rows / prompts at a time")
  parser.add_argument("--speech_temperature", type=float, default=0.6)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--samples", type=_sample_count, default=speech_metrics.SAMPLES,
                      help="(reference, hypothesis) pairs kept per metric in the JSON, from the first: N or 'all'")
  parser.add_argument("--voice_prompt", default=None,
                      help="tts through audio: a recording of the voice to synthesize with (its first 3 s)")
  parser.add_argument("--recognizer_text", default=None,
                      help="the independent recognizer's language model: a bigram of this file's lines (one "
                           "sentence each); default: the recognizer's own general English model")
  parser.add_argument("--samples_dir", default=None,
                      help="tts through audio: write every synthesized utterance here (<i>.wav, generated.jsonl)")
  parser.add_argument("--output", default=None, help="JSON results (default <model>/eval/<split>.json)")
  parser.add_argument("--tensorboard_dir", default=None)
  return parser.parse_args(argv)


def _metrics(args: argparse.Namespace) -> list[str]:
  stages = args.coarse_model is not None and args.fine_model is not None
  if (args.coarse_model is None) != (args.fine_model is None):
    raise UsageError("give both --coarse_model and --fine_model, or neither")
  if args.metrics is None:
    return [m for m in METRICS if stages or m not in NEEDS_STAGES]
  chosen = [m.strip() for m in args.metrics.split(",") if m.strip()]
  unknown = sorted(set(chosen) - set(METRICS))
  if unknown:
    raise UsageError(f"--metrics: unknown {unknown}; choose from {list(METRICS)}")
  if not stages and any(m in NEEDS_STAGES for m in chosen):
    raise UsageError(f"--metrics {','.join(m for m in chosen if m in NEEDS_STAGES)} needs --coarse_model and "
                     "--fine_model")
  return chosen


def held_out_perplexity(model: LoadedModel, tokens_dir: str, split: str, seq_len: int, batch_size: int,
                        configs: dict[str, Any]) -> dict[str, Any]:
  """Each AudioPaLM task (`configs`: format config by task) over one pass of the split, with the model's own
  vocabulary; the modalities and the overall figure sum over the tasks. A pass ends with the last whole batch."""
  vocab = VocabConfig(text_kind=model.spec.text.kind, text_path=model.spec.text.path, spec_path=model.path)
  tasks, modalities, batches = {}, {}, 0
  for name, config in configs.items():
    data = SpeechTextConfig(components=(MixtureComponent(format=name, dataset=tokens_dir, split=split, config=config),),
                            vocab_config=vocab, seq_len=seq_len, global_batch_size=batch_size, shuffle=False,
                            num_epochs=1, log_every=0)
    result = perplexity(model.params, model.cfg, data, None, mesh=model.mesh, rules=model.rules)
    tasks[name], batches = result["tasks"][name], batches + result["batches"]
    for modality, value in result["modalities"].items():
      total = modalities.setdefault(modality, [0.0, 0])
      total[0] += value["nll"] * value["tokens"]
      total[1] += value["tokens"]
  overall = [sum(t["nll"] * t["tokens"] for t in tasks.values()), sum(t["tokens"] for t in tasks.values())]
  return {"tasks": tasks, "modalities": {m: _summary(*v) for m, v in modalities.items()}, "overall": _summary(*overall),
          "batches": batches}


def stage_losses(stages: Any, tokens_dir: str, split: str, batch_size: int) -> dict[str, Any]:
  """Each stage model's held-out loss per acoustic level over one pass of the split, read as the model was trained
  (its format config and row length); per level also `uniform_nll` = ln(codebook size)."""
  out = {}
  for name, model, fmt, config in (("coarse", stages.coarse_model, "coarse_acoustic", stages.config.coarse),
                                   ("fine", stages.fine_model, "fine_acoustic", stages.config.fine)):
    vocab = VocabConfig(text_kind=model.spec.text.kind, text_path=model.spec.text.path, spec_path=model.path)
    data = SpeechTextConfig(components=(MixtureComponent(format=fmt, dataset=tokens_dir, split=split, config=config),),
                            vocab_config=vocab, seq_len=model.trained_data.get("seq_len") or DEFAULT_STAGE_SEQ_LEN,
                            global_batch_size=batch_size, shuffle=False, num_epochs=1, log_every=0)
    result = perplexity(model.params, model.cfg, data, None, mesh=model.mesh, rules=model.rules)
    out[name] = {"layout": config.layout, "levels": result["levels"], "acoustic": result["modalities"].get("acoustic")}
  return out


def _summary(nll_sum: float, tokens: int) -> dict[str, float]:
  mean = nll_sum / tokens
  return {"tokens": int(tokens), "nll": mean, "perplexity": math.exp(mean)}


def _check_dataset(tokens_dir: str, model: LoadedModel, codec_identity: str | None) -> None:
  """Refuses a dataset whose tokens come from other tokenizers than the models read."""
  info = json.loads(storage.read_text(storage.join(tokens_dir, "metadata.json")))["tokenizers"]
  wanted = {"semantic": model.spec.semantic.tokenizer, "acoustic": codec_identity}
  for role, identity in wanted.items():
    have = info.get(role, {}).get("identity")
    if identity is not None and have != identity:
      raise UsageError(f"{tokens_dir}: its {role} tokens are {have!r}, the models read {identity!r}")


def _setup(args: argparse.Namespace, metrics: list[str]):
  """Models, tokenizers, codec and examples; UsageError when they do not load or do not fit together."""
  try:
    model = load_model(args.model)
    semantic = tokenizer_for(model.spec, "semantic", args.semantic_tokenizer, search=[model.path])
    stages = load_stages(args, model.spec.semantic.tokenizer, semantic.frame_rate)
    codec = codec_identity = None
    if stages is not None:
      codec, codec_identity = stages.codec, CodecTokenizer(stages.codec, len(stages.fine_model.spec.acoustic)).identity
    elif "codec" in metrics or "intelligibility" in metrics:
      codec, codec_identity = _dataset_codec(args, required="codec" in metrics)
    _check_dataset(args.tokens_dir, model, codec_identity)
    examples = speech_metrics.read_examples(args.tokens_dir, args.split, args.max_examples)
    prompt = None
    if args.samples_dir is not None and stages is None:
      raise UsageError("--samples_dir needs the stage models (--coarse_model, --fine_model)")
    if args.voice_prompt is not None:
      if stages is None:
        raise UsageError("--voice_prompt needs the stage models (--coarse_model, --fine_model)")
      prompt = stages.voice_prompt_from_recording(args.voice_prompt, semantic)
    recognizer = None
    if "intelligibility" in metrics or (("tts" in metrics or "resynthesis" in metrics) and stages is not None):
      recognizer = Recognizer.from_text_file(args.recognizer_text) if args.recognizer_text else Recognizer()
  except (AudioDecodeError, ValueError, FileNotFoundError, KeyError, OSError) as e:
    raise UsageError(str(e)) from e
  return model, semantic, stages, codec, examples, prompt, recognizer


def unit_reader(semantic: Any) -> UnitAligner | None:
  """The semantic tokenizer's units read as characters (`semantic.unit_aligner`), or None when they cannot be."""
  try:
    return UnitAligner.from_tokenizer(semantic)
  except ValueError:
    return None


def evaluate(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
  metrics = _metrics(args)
  model, semantic, stages, codec, examples, prompt, recognizer = _setup(args, metrics)
  configs = task_configs(model)
  if stages is not None and any(configs[t].dedupe_semantic for t in ("asr", "tts", "continuation")):
    raise UsageError(f"{model.path} was trained with dedupe_semantic: the stages need one semantic token per frame "
                     "(drop the stage models)")
  seq_len = args.seq_len or model.trained_data.get("seq_len") or DEFAULT_SEQ_LEN
  speech = SpeechTasks(model, SpeechConfig(asr=configs["asr"], tts=configs["tts"],
                                           continuation=configs["continuation"],
                                           speech_sampling=SamplingConfig(temperature=args.speech_temperature),
                                           semantic_frame_rate=semantic.frame_rate, batch_size=args.batch_size,
                                           seed=args.seed))
  log.info("%d examples of %s split %r; metrics: %s", len(examples), args.tokens_dir, args.split, ", ".join(metrics))
  results: dict[str, Any] = {}
  for name in metrics:
    start = time.perf_counter()
    if name == "perplexity":
      results[name] = held_out_perplexity(model, args.tokens_dir, args.split, seq_len, args.batch_size, configs)
    elif name == "asr":
      results[name] = speech_metrics.asr(speech, examples, args.samples)
    elif name == "tts":
      results[name] = speech_metrics.tts(speech, examples, stages, semantic if stages else None, args.samples,
                                         prompt=prompt, recognizer=recognizer, samples_dir=args.samples_dir,
                                         unit_reader=unit_reader(semantic))
    elif name == "codec":
      results[name] = speech_metrics.codec_resynthesis(codec, examples,
                                                        stages.num_levels if stages is not None else None)
    elif name == "resynthesis":
      results[name] = speech_metrics.semantic_resynthesis(speech, stages, semantic, examples, args.samples,
                                                          prompt=prompt, recognizer=recognizer)
    elif name == "stages":
      results[name] = stage_losses(stages, args.tokens_dir, args.split, args.batch_size)
    elif name == "intelligibility":
      results[name] = speech_metrics.intelligibility(recognizer, examples, codec,
                                                     stages.num_levels if stages is not None else None, args.samples)
    results[name]["seconds_taken"] = round(time.perf_counter() - start, 2)
    log.info("%s done in %.1f s", name, results[name]["seconds_taken"])
  judged, original = results.get("tts", {}).get("recognizer_wer"), results.get("intelligibility", {}).get("original_wer")
  if judged is not None and original:
    results["intelligibility"]["tts_wer"] = judged
    results["intelligibility"]["tts_to_original"] = judged / original
  return {"model": model.path, "step": model.step, "coarse_model": args.coarse_model, "fine_model": args.fine_model,
          "tokens_dir": args.tokens_dir, "split": args.split, "examples": len(examples),
          "command": "python -m audiopalm.main.evaluate " + " ".join(argv), "results": results}


def _dataset_codec(args: argparse.Namespace, required: bool = True) -> tuple[Any, str | None]:
  """Without stage models: the codec of --codec or of the dataset's metadata, and the identity of its tokens
  ((None, None) for a dataset without acoustic tokens, unless `required`)."""
  meta = json.loads(storage.read_text(storage.join(args.tokens_dir, "metadata.json")))
  info = meta["tokenizers"].get("acoustic")
  if info is None and not required:
    return None, None
  if info is None:
    raise UsageError(f"{args.tokens_dir} has no acoustic tokens: drop 'codec' from --metrics")
  tokenizer = load_tokenizer("codec", args.codec or info["path"], num_levels=info["num_codebooks"])
  return tokenizer.codec, tokenizer.identity


def summary(report: dict[str, Any]) -> str:
  """A short table of the headline numbers."""
  rows = []
  res = report["results"]
  if "perplexity" in res:
    p = res["perplexity"]
    rows.append(("perplexity (overall)", f"{p['overall']['perplexity']:.3f}"))
    rows += [(f"perplexity {task}", f"{v['perplexity']:.3f}") for task, v in p["tasks"].items()]
  for name, keys in (("asr", ("wer", "cer", "chance_wer", "chance_cer")),
                     ("tts", ("semantic_roundtrip_wer", "units_wer", "units_reference_wer", "wer", "cer",
                              "recognizer_wer", "length_ratio", "empty_outputs")),
                     ("codec", ("mel_distance", "si_snr_db")),
                     ("resynthesis", ("wer", "cer", "reference_wer", "recognizer_wer")),
                     ("intelligibility", ("original_wer", "codec_wer", "tts_wer", "tts_to_original"))):
    for key in keys:
      if key in res.get(name, {}):
        rows.append((f"{name} {key}", f"{res[name][key]:.4g}"))
  for stage in ("coarse", "fine"):
    for level, value in res.get("stages", {}).get(stage, {}).get("levels", {}).items():
      rows.append((f"stages {stage} level {level} nll (uniform)", f"{value['nll']:.3f} ({value['uniform_nll']:.3f})"))
  width = max((len(r[0]) for r in rows), default=10)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
  setup_logging()
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  try:
    report = evaluate(args, argv)
  except UsageError as e:  # anything else is a failure, with its traceback
    print(f"error: {e}", file=sys.stderr)
    return 2
  model_dir = report["model"]
  output = args.output or storage.join(model_dir, "eval", f"{args.split}.json")
  storage.write_text(output, json.dumps(report, indent=2, ensure_ascii=False))  # over an earlier evaluation
  tensorboard = args.tensorboard_dir or storage.join(model_dir, "tensorboard", f"eval_{args.split}")
  writer = MetricsWriter(tensorboard)
  writer.write(report["step"] or 0, {}, tensorboard_only=speech_metrics.flatten(report["results"]))
  writer.close()
  print(summary(report))
  print(f"wrote {output} and TensorBoard scalars to {tensorboard}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
