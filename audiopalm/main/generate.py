"""Generate with trained models: ASR (audio → text), TTS (text → WAV) and speech continuation (audio → WAV).

    python -m audiopalm.main.generate asr --model=runs/speech_text_from_text --audio=a.flac [--audio=DIR ...] \
        [--language=English] [--output=transcripts.jsonl]
    python -m audiopalm.main.generate tts --model=runs/speech_text_from_text --coarse_model=runs/audiolm_coarse_demo \
        --fine_model=runs/audiolm_fine_demo --text="turn left twice" [--text_file=lines.txt] \
        [--voice_prompt=speaker.flac] --output=DIR
    python -m audiopalm.main.generate continue --model=runs/speech_text_from_text --coarse_model=... --fine_model=... \
        --audio=a.flac [--prompt_seconds=3] [--seconds=5] --output=DIR

`--model` is the speech-text decoder (a run directory or an export, `audiopalm.inference.models`). TTS and
continuation turn semantic tokens into audio with the coarse and fine stage models and the codec
(`audiopalm.inference.acoustic`): `--voice_prompt` is a recording of the voice to use (its first
`--voice_prompt_seconds`); without one the stages choose a voice. Continuation prompts the stages with the
input's own first seconds, and writes the input's prompt followed by the generated continuation. Every model is
prompted as it was trained (task tags, `dedupe_semantic`, the stages' windows and levels: its run's saved config,
`train_config.json`); the stage flags (`--coarse_levels`, `--coarse_window_seconds`, `--fine_chunk_seconds`,
`--num_levels`) override the stages'. The stages need one semantic token per frame: models trained with
`dedupe_semantic` (the AudioLM semantic stage) cannot drive them.

The semantic tokenizer and codec default to the ones the models' vocabularies name, found in an export's
`tokenizers/` or the bundled assets (`--semantic_tokenizer`, `--codec` to point elsewhere; identities are
checked). Audio inputs are files or directories (searched recursively). A file that cannot be decoded is
reported and skipped; the exit status is 1 if any input failed, 2 for bad arguments or models, tokenizers and
inputs that do not fit together.

Outputs: `asr` prints `path<TAB>transcript` and writes JSON lines {"audio", "transcript"} to `--output`;
`tts` and `continue` write `<output>/<name>.wav` at the codec's rate and `<output>/generated.jsonl` (one line
per output: its text or input, WAV, seconds, semantic tokens).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Sequence

import numpy as np

from audiopalm.audio.io import AudioDecodeError, collect_inputs, load_audio, write_audio
from audiopalm.cli.inference_flags import UsageError, add_stage_flags, load_stages
from audiopalm.cli.logging_setup import setup_logging
from audiopalm.codec.tokenizer import CodecTokenizer
from audiopalm.inference.acoustic import AcousticStages
from audiopalm.inference.audio_tokens import tokenize, tokenizer_for
from audiopalm.inference.models import LoadedModel, load_model
from audiopalm.inference.sampling import SamplingConfig
from audiopalm.inference.speech import SpeechConfig, SpeechTasks
from audiopalm.tokenizers.base import AudioTokenizer

log = logging.getLogger("audiopalm.main.generate")

SPEECH_TASKS = ("asr", "tts", "continuation")  # SpeechConfig's tasks, prompted as the model was trained (tags, dedupe)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m audiopalm.main.generate", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="task", required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--model", required=True, help="the speech-text decoder: run directory or export")
  common.add_argument("--semantic_tokenizer", default=None, help="default: the one the model's vocabulary names")
  common.add_argument("--language", default="English", help="the language in the task tags")
  common.add_argument("--batch_size", type=int, default=16)
  common.add_argument("--seed", type=int, default=0)
  audio_out = argparse.ArgumentParser(add_help=False)
  add_stage_flags(audio_out, required=True)
  audio_out.add_argument("--speech_temperature", type=float, default=0.6, help="semantic tokens (0 = greedy)")
  audio_out.add_argument("--max_seconds", type=float, default=20.0, help="the longest speech generated")
  audio_out.add_argument("--output", required=True, help="directory for the WAV files")

  asr = sub.add_parser("asr", parents=[common], help="audio → text")
  asr.add_argument("--audio", action="append", required=True, help="audio file or directory (repeatable)")
  asr.add_argument("--output", default=None, help="JSON lines file of the transcripts")
  asr.add_argument("--max_text_tokens", type=int, default=256)

  tts = sub.add_parser("tts", parents=[common, audio_out], help="text → WAV")
  tts.add_argument("--text", action="append", default=[], help="a sentence to speak (repeatable)")
  tts.add_argument("--text_file", default=None, help="one sentence per line")
  tts.add_argument("--voice_prompt", default=None, help="a recording of the voice to speak with")
  tts.add_argument("--voice_prompt_seconds", type=float, default=3.0)

  cont = sub.add_parser("continue", parents=[common, audio_out], help="audio prompt → its continuation as WAV")
  cont.add_argument("--audio", action="append", required=True, help="audio file or directory (repeatable)")
  cont.add_argument("--prompt_seconds", type=float, default=3.0, help="the first seconds of each input prompt")
  cont.add_argument("--seconds", type=float, default=None, help="the longest continuation (default --max_seconds)")
  return parser.parse_args(argv)


def _sampling(temperature: float) -> SamplingConfig:
  return SamplingConfig(temperature=temperature)


def _load_inputs(items: Sequence[str], sample_rate: int, seconds: float | None = None
                 ) -> tuple[list[tuple[str, str, np.ndarray]], list[tuple[str, str]]]:
  """(path, name, waveform) of every decodable input (its first `seconds`), and (path, reason) of the others."""
  good, bad = [], []
  for path, rel in collect_inputs(items):
    try:
      good.append((path, os.path.splitext(rel)[0], load_audio(path, sample_rate, end=seconds)))
    except (AudioDecodeError, ValueError, OSError) as e:
      print(f"FAILED: {path}: {e}", file=sys.stderr, flush=True)
      bad.append((path, str(e)))
  return good, bad


def _setup(args: argparse.Namespace) -> tuple[LoadedModel, AudioTokenizer, AcousticStages | None]:
  """The speech-text model, its semantic tokenizer and (for audio output) the stages; UsageError if they do not
  load or do not fit together."""
  try:
    model = load_model(args.model)
    semantic = tokenizer_for(model.spec, "semantic", args.semantic_tokenizer, search=[model.path])
  except (ValueError, FileNotFoundError) as e:
    raise UsageError(str(e)) from e
  stages = None
  if args.task != "asr":
    stages = load_stages(args, model.spec.semantic.tokenizer, semantic.frame_rate,
                         getattr(args, "voice_prompt_seconds", 3.0))
  return model, semantic, stages


def _codec_tokens(stages: AcousticStages, paths: Sequence[str], seconds: float | None
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Each file's first `seconds` read at the codec's rate, and the codec's tokens [T, Q] of it."""
  codec_tok = CodecTokenizer(stages.codec, len(stages.fine_model.spec.acoustic))
  waves = [load_audio(p, codec_tok.sample_rate, end=seconds) for p in paths]
  return waves, tokenize(codec_tok, waves)


def _write(out_dir: str, name: str, wave: np.ndarray, rate: int, record: dict) -> dict:
  path = os.path.join(out_dir, name + ".wav")
  write_audio(path, wave, rate)
  return {**record, "wav": path, "seconds": round(wave.size / rate, 3)}


def run_asr(args: argparse.Namespace) -> int:
  model, semantic, _ = _setup(args)
  inputs, bad = _load_inputs(args.audio, semantic.sample_rate)
  codes = [c[:, 0] for c in tokenize(semantic, [w for _, _, w in inputs])]
  speech = SpeechTasks(model, SpeechConfig(**model.format_configs(SPEECH_TASKS),
                                           max_text_tokens=args.max_text_tokens, batch_size=args.batch_size,
                                           semantic_frame_rate=semantic.frame_rate, seed=args.seed))
  start = time.perf_counter()
  texts = speech.transcribe(codes, args.language)
  log.info("transcribed %d inputs in %.1f s", len(texts), time.perf_counter() - start)
  records = [{"audio": path, "transcript": text} for (path, _, _), text in zip(inputs, texts)]
  for r in records:
    print(f"{r['audio']}\t{r['transcript']}", flush=True)
  if args.output:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
  return 1 if bad else 0


def _speech_config(args: argparse.Namespace, model: LoadedModel, rate: float, **kwargs) -> SpeechConfig:
  return SpeechConfig(**model.format_configs(SPEECH_TASKS), speech_sampling=_sampling(args.speech_temperature),
                      max_speech_seconds=args.max_seconds, semantic_frame_rate=rate, batch_size=args.batch_size,
                      seed=args.seed, **kwargs)


def run_tts(args: argparse.Namespace) -> int:
  texts = list(args.text)
  if args.text_file:
    with open(args.text_file, encoding="utf-8") as f:
      texts += [line.strip() for line in f if line.strip()]
  if not texts:
    raise UsageError("give --text or --text_file")
  model, semantic, stages = _setup(args)
  prompt = None
  if args.voice_prompt:
    try:
      prompt = stages.voice_prompt_from_recording(args.voice_prompt, semantic)
    except (AudioDecodeError, ValueError, OSError) as e:
      raise UsageError(f"--voice_prompt {args.voice_prompt}: {e}") from e
  start = time.perf_counter()
  codes = SpeechTasks(model, _speech_config(args, model, semantic.frame_rate)).synthesize(texts, args.language)
  log.info("semantic tokens for %d texts in %.1f s", len(texts), time.perf_counter() - start)
  waves = stages.synthesize(codes, prompt)
  log.info("waveforms in %.1f s", time.perf_counter() - start)
  records = [_write(args.output, f"{i:04d}", wave, stages.codec.sample_rate,
                    {"text": text, "semantic_tokens": int(c.size)})
             for i, (text, c, wave) in enumerate(zip(texts, codes, waves))]
  _manifest(args.output, records)
  return 0


def run_continue(args: argparse.Namespace) -> int:
  model, semantic, stages = _setup(args)
  inputs, bad = _load_inputs(args.audio, semantic.sample_rate, args.prompt_seconds)
  sem = [c[:, 0] for c in tokenize(semantic, [w for _, _, w in inputs])]
  codec_waves, acoustic = _codec_tokens(stages, [path for path, _, _ in inputs], args.prompt_seconds)
  new = SpeechTasks(model, _speech_config(args, model, semantic.frame_rate)).continue_speech(sem, args.seconds or
                                                                                     args.max_seconds)
  records = []
  for (path, name, _), prompt_audio, s, a, n in zip(inputs, codec_waves, sem, acoustic, new):
    # The continuation, voiced like its own prompt; the prompt's audio is kept as it was recorded.
    generated = stages.synthesize([n], stages.voice_prompt(s, a))[0]
    rate = stages.codec.sample_rate
    records.append(_write(args.output, name, np.concatenate([prompt_audio, generated]), rate,
                          {"audio": path, "prompt_seconds": round(prompt_audio.size / rate, 3),
                           "semantic_tokens": int(n.size)}))
  _manifest(args.output, records)
  return 1 if bad else 0


def _manifest(out_dir: str, records: list[dict]) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "generated.jsonl"), "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
  for r in records:
    print(f"wrote {r['wav']} ({r['seconds']} s)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
  setup_logging()
  args = parse_args(argv)
  if args.batch_size < 1:
    print("error: --batch_size must be >= 1", file=sys.stderr)
    return 2
  run = {"asr": run_asr, "tts": run_tts, "continue": run_continue}[args.task]
  try:
    return run(args)
  except UsageError as e:  # anything else is a failure, with its traceback
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
