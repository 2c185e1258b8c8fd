"""The embedded default, measured: continued pretraining from the tiny text checkpoint vs from scratch at equal
steps, judged by held-out perplexity, ASR on the held-out bundled utterances and TTS round-trip WER.

    python -m tools.benchmark_speech_demo --workdir=runs/benchmark_demo [--steps=1000] [--stages]

Runs the main job's steps (`audiopalm.pipeline`: each kept when it finished earlier with the same command, so
rerunning resumes), from the repository root:
  1. tokens of the bundled corpus's train split and of its 40 held-out test utterances (`tokens_train`,
     `tokens_test`: speakers' sentences never in training);
  2. the tiny text checkpoint (`text`);
  3. the AudioPaLM mixture for `--steps` steps from that checkpoint (`speech_text`,
     `speech_text_from_text_demo.gin`) and from scratch (`scratch`, `speech_text_demo.gin`): same model, data,
     schedule and seed;
  4. with `--stages`, the AudioLM coarse and fine stages, so the TTS round trip goes through audio;
  5. `tools.evaluate` of both on the test split; prints a table and writes `<workdir>/benchmark.json`.

A benchmark, not a test: on 2 CPU cores 1000 steps take ~9 minutes per model (19 minutes in all). Chance, for
ASR, is the WER of answering with another test utterance's transcript (`evaluation.speech_metrics`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from etils import epath

from audiopalm import pipeline
from audiopalm.files.atomic import write_text_atomic
from tools import evaluate

MODELS = {"from_text": "speech_text", "scratch": "scratch"}  # the table's name -> the step (and directory)


def run(workdir: str, steps: int, stages: bool) -> dict:
  work = workdir.rstrip("/")
  by_name = {s.name: s for s in pipeline.steps(work, text_steps=200, speech_steps=steps, stage_steps=100,
                                                eval_examples=None)}
  tokens, test_tokens = by_name["tokens_train"].artefact, by_name["tokens_test"].artefact
  scratch = pipeline.training_step(work, "scratch", "the same mixture from scratch", "speech_text_demo", steps,
                                   f"--gin.TOKENS_DIR='{tokens}'")
  chosen = [by_name[n] for n in ("tokens_train", "tokens_test", "text", "speech_text")] + [scratch]
  stage_flags = []
  if stages:
    chosen += [by_name["coarse"], by_name["fine"]]
    stage_flags = [f"--coarse_model={work}/coarse", f"--fine_model={work}/fine"]
  pipeline.run_steps(work, chosen)
  results = {}
  for name, step in MODELS.items():
    out = epath.Path(work) / "eval" / f"{name}.json"
    status = evaluate.main([f"--model={work}/{step}", f"--tokens_dir={test_tokens}", "--split=test",
                            "--metrics=perplexity,asr,tts" + (",resynthesis" if stages else ""), *stage_flags,
                            f"--output={out}"])
    if status:
      raise RuntimeError(f"tools.evaluate of {work}/{step} failed ({status})")
    results[name] = json.loads(out.read_text())
  report = {"steps": steps, "workdir": work, "results": results}
  write_text_atomic(f"{work}/benchmark.json", json.dumps(report, indent=2))
  return report


def table(report: dict) -> str:
  rows = [("start", "steps", "ppl all", "ppl asr", "ppl tts", "ASR WER", "ASR CER", "chance WER",
           "TTS sem. round-trip WER", "TTS audio round-trip WER", "resynth. WER")]
  for name, r in report["results"].items():
    res = r["results"]
    ppl, asr, tts = res["perplexity"], res["asr"], res["tts"]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    rows.append(("text checkpoint" if name == "from_text" else "scratch", str(r["step"]),
                 fmt(ppl["overall"]["perplexity"]), fmt(ppl["tasks"]["asr"]["perplexity"]),
                 fmt(ppl["tasks"]["tts"]["perplexity"]), fmt(asr["wer"]), fmt(asr["cer"]), fmt(asr.get("chance_wer")),
                 fmt(tts["semantic_roundtrip_wer"]), fmt(tts.get("wer")), fmt(res.get("resynthesis", {}).get("wer"))))
  return "\n".join("| " + " | ".join(row) + " |" + ("\n|" + "---|" * len(row) if i == 0 else "")
                   for i, row in enumerate(rows))


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.benchmark_speech_demo", description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="runs/benchmark_demo", help="relative paths: to the repository root")
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--stages", action="store_true", help="also train the AudioLM stages: TTS through audio")
  args = parser.parse_args(argv)
  if not os.path.exists("gin_configs/experiments/tiny.gin"):
    parser.error(f"run it from the repository root (the directory with gin_configs/), not {os.getcwd()}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    report = run(args.workdir, args.steps, args.stages)
  except RuntimeError as e:
    print(f"\n{e}", file=sys.stderr)
    return 1
  print(table(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
