r"""The main job: the whole AudioPaLM pipeline on the embedded default, one command, resumable.

    python -m audiopalm.main.pipeline --workdir=runs/main [--generated_utterances=4000] [--unit_encoder_steps=500] \
        [--text_steps=200] [--speech_steps=1000] [--coarse_steps=1200] [--fine_steps=200]

Each step runs one of the project's entry points (the same commands the README and the gin experiment files
show), in order:
   0. speech                      `--generated_utterances` training utterances: the demo grammar spoken by 40
                                  espeak-ng voices, never a held-out sentence (`data_pipeline.synthesize_speech`;
                                  0: none)
   1. unit_encoder, semantic      the semantic tokenizer of this speech: a small encoder trained with CTC on the
                                  training transcripts (`audiopalm.main.train_unit_encoder`,
                                  `experiments/unit_encoder_demo.gin`), and k-means units of its last layer
                                  (`audiopalm.main.fit_kmeans`, `experiments/semantic_demo_ctc.gin`); with
                                  --generated_utterances=0, the bundled MFCC units instead
      tokens/train, tokens/test   those and the bundled corpus's 360 training utterances, and its 40 held-out
                                  ones, to semantic and acoustic tokens (`data_pipeline.tokenize`,
                                  `tokenize/demo_generated.gin`, `tokenize/demo{,_test}.gin`)
   2. tokens_text                 the bundled text as a text-only token dataset, for the mixture's text task
                                  (`audiopalm.main.import_text`)
   3. text                        the tiny text checkpoint on the bundled text (`experiments/tiny.gin`)
   4. speech_text                 AudioPaLM continued pretraining of it on the ASR / TTS / continuation / text
                                  mixture (`experiments/speech_text_generated_demo.gin`; with
                                  --generated_utterances=0, `speech_text_from_text_demo.gin`)
   5. coarse, fine                the AudioLM acoustic stages (`experiments/audiolm_{coarse,fine}_demo.gin`)
   6. export                      the three models, their tokenizers and Hugging Face checkpoints
                                  (`audiopalm.main.export_checkpoint`)
   7. evaluate                    the export on the held-out split (`audiopalm.main.evaluate`): perplexity per
                                  task, ASR WER / CER against chance, and every held-out sentence synthesized
                                  through text → semantic → coarse → fine → codec, voiced like a held-out
                                  recording, into `<workdir>/samples/` (`generated.jsonl` lists them); an
                                  independent recognizer (PocketSphinx, `audiopalm.evaluation.recognizer`)
                                  transcribes the synthesized speech, the original recordings, the codec's
                                  resynthesis of them, and the audio the stages make from their real semantic
                                  tokens (the acoustic stages' share of the TTS error)
It ends with where every artefact is and a table of the results (also `<workdir>/summary.json`).

Rerunning the same command resumes: a step that finished with the same command, after every step before it, is
skipped, and the one that was interrupted is rerun, which resumes from its own progress (token shards already
written, the newest checkpoint).
Changing a setting (say `--speech_steps`) reruns that step, which continues training to the new count, and every
step after it; a training step rerun that way resumes from its own checkpoints (a new text checkpoint does not
restart `speech_text`: delete `<workdir>/speech_text` for that). A training step counts as finished only when
its last checkpoint exists (a preempted one exits cleanly before that). SIGTERM to the pipeline reaches the
running step, which saves and exits. Each step's output goes to `<workdir>/logs/<step>.log`; a failed step
prints the end of its log.
On 2 CPU cores the defaults take about 27 minutes (docs/benchmarks.md, "The main job"); CI runs it with a few steps
each.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Sequence

from audiopalm.files import storage

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO_SPEECH = "audiopalm/data/assets/demo_speech"
# The voice prompt for the synthesized held-out sentences: a held-out recording (test split) of speaker 102.
SYNTH_VOICE = f"{DEMO_SPEECH}/test/102/10202/102-10202-0000.flac"


@dataclasses.dataclass(frozen=True)
class Step:
  """One entry point run: `name` (its log and its done-marker), what it makes, the command (argv after
  `python -m`) and, for steps that can stop early and still exit 0 (training after a preemption), the path that
  exists only once the step has finished. `fresh`: the step writes its artefact directory whole and refuses an
  existing one (not resumable; minutes long), so a rerun deletes what an earlier run left there first."""
  name: str
  what: str
  artefact: str
  command: tuple[str, ...]
  finished_when: str | None = None
  fresh: bool = False


def training_step(work: str, name: str, what: str, gin: str, num_steps: int, *flags: str) -> Step:
  """`experiments/<gin>.gin` trained in `<work>/<name>`: finished when its checkpoint at `num_steps` exists."""
  model_dir = f"{work.rstrip('/')}/{name}"
  return Step(name, what, model_dir,
              ("audiopalm.main.train", f"--gin_file=gin_configs/experiments/{gin}.gin", f"--gin.MODEL_DIR='{model_dir}'",
               *flags, f"--gin.TRAIN_STEPS={num_steps}"), f"{model_dir}/checkpoints/{num_steps}")


DEMO_TEXT = "audiopalm/data/assets/demo_text.txt"
GENERATED_UTTERANCES = 4000  # about 2 hours of speech (data_pipeline.synthesize_speech)
UNIT_ENCODER_STEPS = 500  # CTC steps of the supervised unit encoder (audiopalm.main.train_unit_encoder)


def data_flags(work: str) -> tuple[str, ...]:
  """The speech-text mixture's data under `work`: the training tokens, and the text its `text_lm` task replays."""
  w = work.rstrip("/")
  return f"--gin.TOKENS_DIR='{w}/tokens/train'", f"--gin.TEXT_DIR='{w}/tokens/text'"


def speech_text_flags(work: str) -> tuple[str, ...]:
  """The `speech_text` step's init and data flags (its text checkpoint and `data_flags` under `work`)."""
  return (f"--gin.INIT_DIR='{work.rstrip('/')}/text'", *data_flags(work))


# The main job's decoding (docs/benchmarks.md, "Word-interleaved TTS and a coarse stage that looks ahead"): its
# history-free coarse stage predicts each frame alone, so sampling it at AudioLM's 0.8 mixes voices from frame to
# frame (0.582 vs 0.422 at 0.5, the recognizer on audio from real semantic tokens); its word-interleaved TTS says
# more of its words at 0.3 than at 0.6 (units WER 0.149 vs 0.197).
SAMPLING = ("--speech_temperature=0.3", "--coarse_temperature=0.5", "--fine_temperature=0.5")


def steps(work: str, text_steps: int, speech_steps: int, coarse_steps: int, fine_steps: int,
          eval_examples: int | None, generated_utterances: int = 0, unit_steps: int = UNIT_ENCODER_STEPS
          ) -> list[Step]:
  """The pipeline, in order. Paths are relative to the repository root (where it runs) or absolute."""
  w = work.rstrip("/")
  tokens, test = f"{w}/tokens/train", f"{w}/tokens/test"
  train = functools.partial(training_step, w)
  limit = () if eval_examples is None else (f"--max_examples={eval_examples}",)
  semantic_flag: tuple[str, ...] = ()
  if generated_utterances:
    generated = f"--gin.GENERATED='{w}/speech/train'"
    semantic_flag = (f"--gin.SEMANTIC_TOKENIZER='{w}/semantic'",)
    speech = [Step("speech", f"{generated_utterances} training utterances spoken by espeak-ng voices", f"{w}/speech",
                   ("data_pipeline.synthesize_speech", f"--output_dir={w}/speech",
                    f"--num_utterances={generated_utterances}")),
              Step("unit_encoder", "the supervised unit encoder: CTC on the training speech's transcripts",
                   f"{w}/unit_encoder",
                   ("audiopalm.main.train_unit_encoder", "--gin_file=gin_configs/experiments/unit_encoder_demo.gin",
                    generated, f"--gin.OUTPUT_DIR='{w}/unit_encoder'", f"--gin.CtcTrainConfig.steps={unit_steps}",
                    f"--gin.CtcTrainConfig.warmup_steps={min(100, unit_steps // 10)}"), fresh=True),
              Step("semantic", "the semantic tokenizer: k-means units of the unit encoder", f"{w}/semantic",
                   ("audiopalm.main.fit_kmeans", "--gin_file=gin_configs/experiments/semantic_demo_ctc.gin",
                    f"--gin.ENCODER_PATH='{w}/unit_encoder'", generated, f"--gin.OUTPUT_DIR='{w}/semantic'"),
                   fresh=True),
              Step("tokens_train", f"tokens of the 360 bundled and {generated_utterances} generated training utterances",
                   tokens, ("data_pipeline.tokenize", "--gin_file=gin_configs/tokenize/demo_generated.gin",
                            generated, *semantic_flag, f"--gin.OUTPUT_DIR='{tokens}'"))]
  else:
    speech = [Step("tokens_train", "tokens of the 360 training utterances", tokens,
                   ("data_pipeline.tokenize", "--gin_file=gin_configs/tokenize/demo.gin",
                    f"--gin.OUTPUT_DIR='{tokens}'"))]
  return [
      *speech,
      Step("tokens_test", "tokens of the 40 held-out utterances", test,
           ("data_pipeline.tokenize", "--gin_file=gin_configs/tokenize/demo_test.gin", *semantic_flag,
            f"--gin.OUTPUT_DIR='{test}'")),
      Step("tokens_text", "the bundled text as text-only examples", f"{w}/tokens/text",
           ("audiopalm.main.import_text", f"--text={DEMO_TEXT}", f"--like={tokens}", f"--output_dir={w}/tokens/text")),
      train("text", "the tiny text checkpoint", "tiny", text_steps),
      # Its regularisation is for the 360 bundled utterances alone; with generated speech the model reads best without.
      train("speech_text", "AudioPaLM: the text checkpoint continued on speech and text",
            "speech_text_generated_demo" if generated_utterances else "speech_text_from_text_demo",
            speech_steps, *speech_text_flags(w)),
      train("coarse", "AudioLM stage 2: semantic to coarse acoustic", "audiolm_coarse_demo", coarse_steps,
            f"--gin.TOKENS_DIR='{tokens}'"),
      train("fine", "AudioLM stage 3: coarse to fine acoustic", "audiolm_fine_demo", fine_steps,
            f"--gin.TOKENS_DIR='{tokens}'"),
      Step("export", "the three models for fine-tuning (orbax + Hugging Face) and their tokenizers", f"{w}/export",
           ("audiopalm.main.export_checkpoint", f"--models=lm={w}/speech_text", f"--models=coarse={w}/coarse",
            f"--models=fine={w}/fine", f"--tokens_dir={tokens}", f"--output={w}/export", "--overwrite")),
      Step("evaluate", "held-out perplexity, ASR, and every held-out sentence synthesized and judged",
           f"{w}/eval/test.json",
           ("audiopalm.main.evaluate", f"--model={w}/export/lm", f"--coarse_model={w}/export/coarse",
            f"--fine_model={w}/export/fine", f"--tokens_dir={test}", "--split=test",
            "--metrics=perplexity,asr,tts,resynthesis,intelligibility,stages", f"--voice_prompt={SYNTH_VOICE}",
            f"--recognizer_text={DEMO_TEXT}", f"--samples_dir={w}/samples", "--samples=all", *SAMPLING, *limit,
            f"--output={w}/eval/test.json", f"--tensorboard_dir={w}/eval/tensorboard")),
  ]


def _marker(work: pathlib.Path, step: Step) -> pathlib.Path:
  return work / ".steps" / f"{step.name}.json"


def _done_at(work: pathlib.Path, step: Step) -> int | None:
  """When the step last finished with its current command (its marker's mtime, ns); None: it must run."""
  marker = _marker(work, step)
  if not marker.exists() or json.loads(marker.read_text()).get("command") != list(step.command):
    return None
  return marker.stat().st_mtime_ns


def _run_step(work: pathlib.Path, step: Step, index: int, total: int) -> float:
  """Runs one step, its output to its log; returns its seconds. Raises RuntimeError with the log's end."""
  log_path = work / "logs" / f"{step.name}.log"
  log_path.parent.mkdir(parents=True, exist_ok=True)
  print(f"[{index}/{total}] {step.name}: {step.what}\n      $ python -m {' '.join(step.command)}", flush=True)
  if step.fresh and os.path.isdir(step.artefact):
    shutil.rmtree(step.artefact)
  start = time.perf_counter()
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  stopped: list[int] = []
  with open(log_path, "a") as log:
    log.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} python -m {' '.join(step.command)}\n")
    log.flush()
    proc = subprocess.Popen([sys.executable, "-m", *step.command], stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(signum: int, _frame: object) -> None:  # SIGTERM (preemption) to the step too: it saves and exits
      stopped.append(signum)
      if signum == signal.SIGTERM:
        proc.send_signal(signum)  # (Ctrl-C reaches the whole process group by itself)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
      returncode = proc.wait()
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
  seconds = time.perf_counter() - start
  if stopped:
    raise RuntimeError(f"step {step.name} was stopped ({signal.Signals(stopped[0]).name}) after {seconds:.0f} s; "
                       "rerun the same command to resume it")
  if returncode:
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
    raise RuntimeError(f"step {step.name} failed (exit {returncode}) after {seconds:.0f} s; the end of "
                       f"{log_path}:\n{tail}\nFix the cause and rerun the same command: finished steps are kept.")
  if step.finished_when is not None and not pathlib.Path(step.finished_when).exists():
    raise RuntimeError(f"step {step.name} exited before finishing ({step.finished_when} is missing: preempted, or "
                       f"its input ran out; see {log_path}); rerun the same command to resume it")
  storage.write_text(_marker(work, step), json.dumps({"command": list(step.command), "seconds": seconds}, indent=2))
  print(f"      done in {seconds:.0f} s (log: {log_path})", flush=True)
  return seconds


def run_steps(work_dir: str, all_steps: Sequence[Step]) -> dict[str, float | None]:
  """Runs the steps in order (from the current directory), skipping finished ones until the first that must run;
  returns each step's seconds in this run (None: kept from an earlier one)."""
  work = pathlib.Path(work_dir)
  ran: dict[str, float | None] = {}
  rerun_rest = False
  newest = 0  # when the newest of the kept steps before this one finished
  for i, step in enumerate(all_steps, 1):
    done_at = None if rerun_rest else _done_at(work, step)
    # Kept only if it finished after every step before it: a run of a subset of the steps (the speech demo
    # benchmark) that redid an earlier step leaves this one made from that step's old output.
    if done_at is not None and done_at >= newest:
      print(f"[{i}/{len(all_steps)}] {step.name}: done earlier, kept ({step.artefact})", flush=True)
      ran[step.name] = None
      newest = done_at
      continue
    # This step and every later one are redone; their markers go first, so that a later invocation cannot keep
    # a later step made from this step's old output (if this one is interrupted, it is the first to rerun).
    for later in all_steps[i - 1:]:
      _marker(work, later).unlink(missing_ok=True)
    rerun_rest = True
    ran[step.name] = _run_step(work, step, i, len(all_steps))
  return ran


def run(work_dir: str, all_steps: Sequence[Step]) -> dict:
  """`run_steps`, then the summary of the artefacts and results (also written to `<work_dir>/summary.json`)."""
  work = pathlib.Path(work_dir)
  ran = run_steps(work_dir, all_steps)
  summary = {"workdir": str(work_dir), "steps": {s.name: {"artefact": s.artefact, "what": s.what,
                                                          "seconds_this_run": ran[s.name]} for s in all_steps}}
  eval_path = work / "eval" / "test.json"
  if eval_path.exists():
    summary["evaluation"] = _results(json.loads(eval_path.read_text()))
    manifest = work / "export" / "manifest.json"  # an export does not know its step; its manifest does
    if manifest.exists():
      summary["evaluation"]["step"] = json.loads(manifest.read_text())["models"]["lm"].get("step")
  generated = work / "samples" / "generated.jsonl"
  if generated.exists():
    samples = [json.loads(line) for line in generated.read_text().splitlines() if line.strip()]
    summary["samples"] = {"manifest": str(generated), "count": len(samples),
                          "seconds": round(sum(s.get("seconds", 0.0) for s in samples), 2),
                          "first": samples[0] if samples else None}
  storage.write_text(work / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
  return summary


def _results(report: dict) -> dict:
  res = report["results"]
  ppl, asr, tts = res.get("perplexity", {}), res.get("asr", {}), res.get("tts", {})
  judge, resynthesis = res.get("intelligibility", {}), res.get("resynthesis", {})
  stages = {stage: {level: v["nll"] for level, v in res.get("stages", {}).get(stage, {}).get("levels", {}).items()}
            for stage in ("coarse", "fine")}
  return {"step": report.get("step"), "utterances": asr.get("utterances"), "stage_nll_per_level": stages,
          "recognizer_wer": {"original": judge.get("original_wer"), "codec": judge.get("codec_wer"),
                             "stages": resynthesis.get("recognizer_wer"), "tts": tts.get("recognizer_wer"),
                             "tts_to_original": judge.get("tts_to_original")},
          "asr_wer": asr.get("wer"), "asr_cer": asr.get("cer"), "chance_wer": asr.get("chance_wer"),
          "perplexity": {task: v["perplexity"] for task, v in ppl.get("tasks", {}).items()},
          "perplexity_overall": ppl.get("overall", {}).get("perplexity"),
          "tts_roundtrip_wer": tts.get("wer"), "tts_semantic_roundtrip_wer": tts.get("semantic_roundtrip_wer")}


def format_summary(summary: dict) -> str:
  fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
  lines = [f"\nArtefacts (in {summary['workdir']}):", "| step | artefact | this run |", "|---|---|---|"]
  for name, s in summary["steps"].items():
    took = "kept" if s["seconds_this_run"] is None else f"{s['seconds_this_run']:.0f} s"
    lines.append(f"| {name} | {s['artefact']} | {took} |")
  ev = summary.get("evaluation")
  if ev:
    lines += [f"\nHeld-out results ({ev['utterances']} test utterances, speech_text step {ev['step']}):",
              "| metric | value |", "|---|---|",
              f"| ASR WER / CER | {fmt(ev['asr_wer'])} / {fmt(ev['asr_cer'])} |",
              f"| ASR WER of chance (another utterance's transcript) | {fmt(ev['chance_wer'])} |",
              f"| TTS round-trip WER (audio / semantic tokens) | {fmt(ev['tts_roundtrip_wer'])} / "
              f"{fmt(ev['tts_semantic_roundtrip_wer'])} |",
              f"| perplexity, all tasks | {fmt(ev['perplexity_overall'])} |"]
    lines += [f"| perplexity, {task} | {fmt(v)} |" for task, v in ev["perplexity"].items()]
    judge = ev.get("recognizer_wer", {})
    if any(v is not None for v in judge.values()):
      lines += [f"| independent recognizer WER: original recordings / codec resynthesis / stages from real semantic "
                f"tokens / synthesized speech | {fmt(judge.get('original'))} / {fmt(judge.get('codec'))} / "
                f"{fmt(judge.get('stages'))} / {fmt(judge.get('tts'))} |",
                f"| synthesized / original recognizer WER (goal <= 1.5) | {fmt(judge.get('tts_to_original'))} |"]
    for stage, levels in ev.get("stage_nll_per_level", {}).items():
      if levels:
        lines.append(f"| {stage} stage held-out loss per token, levels {', '.join(levels)} (uniform 5.545) | "
                     + " / ".join(fmt(v) for v in levels.values()) + " |")
  samples = summary.get("samples")
  if samples:
    first = samples.get("first") or {}
    lines.append(f"\nSynthesized {samples['count']} held-out sentences ({fmt(samples['seconds'])} s), listed in "
                 f"{samples['manifest']}; the first: {first.get('wav')}: {first.get('text')!r}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m audiopalm.main.pipeline", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--workdir", default="runs/main", help="where everything goes")
  parser.add_argument("--text_steps", type=int, default=200, help="training steps of the text checkpoint")
  parser.add_argument("--speech_steps", type=int, default=1000, help="steps of speech-text continued pretraining")
  parser.add_argument("--coarse_steps", type=int, default=1200, help="steps of the AudioLM coarse acoustic stage")
  parser.add_argument("--fine_steps", type=int, default=200,
                      help="steps of the AudioLM fine acoustic stage (its levels add little to this codec's audio)")
  parser.add_argument("--eval_examples", type=int, default=None, help="evaluate the first N test utterances")
  parser.add_argument("--generated_utterances", type=int, default=GENERATED_UTTERANCES,
                      help="training utterances generated by espeak-ng voices beside the bundled 360 (0: none)")
  parser.add_argument("--unit_encoder_steps", type=int, default=UNIT_ENCODER_STEPS,
                      help="CTC steps of the supervised unit encoder whose units are the semantic tokens (with "
                           "generated speech)")
  args = parser.parse_args(argv)
  for flag in ("text_steps", "speech_steps", "coarse_steps", "fine_steps", "unit_encoder_steps"):
    if getattr(args, flag) < 1:
      parser.error(f"--{flag} must be at least 1")
  if args.eval_examples is not None and args.eval_examples < 1:
    parser.error("--eval_examples must be at least 1")
  if not pathlib.Path("gin_configs/experiments/tiny.gin").exists():
    parser.error(f"run it from the repository root (the directory with gin_configs/), not {os.getcwd()}")
  if args.generated_utterances < 0:
    parser.error("--generated_utterances must be >= 0")
  all_steps = steps(args.workdir, args.text_steps, args.speech_steps, args.coarse_steps, args.fine_steps, args.eval_examples,
                    args.generated_utterances, args.unit_encoder_steps)
  start = time.perf_counter()
  try:
    summary = run(args.workdir, all_steps)
  except RuntimeError as e:
    print(f"\n{e}", file=sys.stderr)
    return 1
  print(format_summary(summary))
  print(f"\nDone in {time.perf_counter() - start:.0f} s; summary: {pathlib.Path(args.workdir) / 'summary.json'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
