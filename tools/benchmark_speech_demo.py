"""The embedded default, measured: continued pretraining from the tiny text checkpoint vs from scratch at equal
steps, judged by held-out perplexity, ASR on the held-out bundled utterances and TTS round-trip WER.

    python -m tools.benchmark_speech_demo --workdir=runs/benchmark_demo [--steps=1000] [--stages]

Runs the project's own entry points, each skipped when its output is complete (rerunning resumes):
  1. tokens of the bundled corpus's train split (`tokenize/demo.gin`) and of its 40 held-out test utterances
     (`tokenize/demo_test.gin`: speakers' sentences never in training);
  2. the tiny text checkpoint (`experiments/tiny.gin`);
  3. the AudioPaLM mixture for `--steps` steps from that checkpoint (`speech_text_from_text_demo.gin`) and from
     scratch (`speech_text_demo.gin`): same model, data, schedule and seed;
  4. with `--stages`, the AudioLM coarse and fine stages (`audiolm_{coarse,fine}_demo.gin`), so the TTS round
     trip goes through audio;
  5. `tools.evaluate` of both on the test split; prints a table and writes `<workdir>/benchmark.json`.

A benchmark, not a test: on 2 CPU cores 1000 steps take ~9 minutes per model (19 minutes in all). `--tokens_dir`,
`--test_tokens_dir` reuse tokens made elsewhere. Chance, for ASR, is the WER of answering with another test
utterance's transcript (`evaluation.speech_metrics`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Sequence

from etils import epath

from tools import evaluate

ROOT = epath.Path(__file__).resolve().parents[1]


def _run(cmd: list[str], log_path: epath.Path) -> None:
  """Runs an entry point, its output to `log_path`; fails with the log's tail."""
  print("$ " + " ".join(cmd), flush=True)
  start = time.perf_counter()
  with open(log_path, "w") as log:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); end of {log_path}:\n"
                       + "\n".join(log_path.read_text().splitlines()[-20:]))
  print(f"  done in {time.perf_counter() - start:.0f} s (log: {log_path})", flush=True)


def _train(gin_file: str, model_dir: epath.Path, logs: epath.Path, *overrides: str) -> None:
  _run([sys.executable, "-m", "audiopalm.train", f"--gin_file=gin_configs/experiments/{gin_file}",
        f"--gin.MODEL_DIR={model_dir}", *overrides], logs / f"{model_dir.name}.log")


def _tokens(gin_file: str, out: epath.Path, logs: epath.Path) -> None:
  if (ROOT / out / "metadata.json").exists():
    return
  _run([sys.executable, "-m", "data_pipeline.tokenize", f"--gin_file=gin_configs/tokenize/{gin_file}",
        f"--gin.OUTPUT_DIR={out}"], logs / f"{out.name}.log")


def run(workdir: str, steps: int, stages: bool, tokens_dir: str | None = None,
        test_tokens_dir: str | None = None) -> dict:
  # Paths go to the entry points as given (relative ones: to the repository root, where they run): a resumed
  # run refuses an input whose config, the token directory's spelling included, changed.
  work = epath.Path(workdir)
  logs = ROOT / work / "logs"
  logs.mkdir(parents=True, exist_ok=True)
  train_tokens = epath.Path(tokens_dir) if tokens_dir else work / "tokens_train"
  test_tokens = epath.Path(test_tokens_dir) if test_tokens_dir else work / "tokens_test"
  _tokens("demo.gin", train_tokens, logs)
  _tokens("demo_test.gin", test_tokens, logs)
  _train("tiny.gin", work / "tiny", logs)
  data = [f"--gin.TOKENS_DIR='{train_tokens}'", f"--gin.TRAIN_STEPS={steps}"]
  _train("speech_text_from_text_demo.gin", work / "from_text", logs, *data, f"--gin.INIT_DIR='{work / 'tiny'}'")
  _train("speech_text_demo.gin", work / "scratch", logs, *data)
  stage_flags = []
  if stages:
    _train("audiolm_coarse_demo.gin", work / "coarse", logs, f"--gin.TOKENS_DIR='{train_tokens}'")
    _train("audiolm_fine_demo.gin", work / "fine", logs, f"--gin.TOKENS_DIR='{train_tokens}'")
    stage_flags = [f"--coarse_model={ROOT / work / 'coarse'}", f"--fine_model={ROOT / work / 'fine'}"]
  results = {}
  for name in ("from_text", "scratch"):
    out = ROOT / work / "eval" / f"{name}.json"
    status = evaluate.main([f"--model={ROOT / work / name}", f"--tokens_dir={ROOT / test_tokens}", "--split=test",
                            "--metrics=perplexity,asr,tts" + (",resynthesis" if stages else ""), *stage_flags,
                            f"--output={out}"])
    if status:
      raise RuntimeError(f"tools.evaluate of {work / name} failed ({status})")
    results[name] = json.loads(out.read_text())
  report = {"steps": steps, "workdir": str(work), "results": results}
  (ROOT / work / "benchmark.json").write_text(json.dumps(report, indent=2))
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
  parser.add_argument("--tokens_dir", default=None, help="tokens of the train split (default: made in workdir)")
  parser.add_argument("--test_tokens_dir", default=None, help="tokens of the test split (default: made in workdir)")
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  report = run(args.workdir, args.steps, args.stages, args.tokens_dir, args.test_tokens_dir)
  print(table(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
