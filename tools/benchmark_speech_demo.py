"""The embedded default, measured: continued pretraining from the tiny text checkpoint vs from scratch at equal
steps, judged by held-out perplexity, ASR on the held-out bundled utterances and TTS round-trip WER.

    python -m tools.benchmark_speech_demo --workdir=runs/benchmark_demo [--steps=1000] [--stages] [--seeds=0,1,2]

Runs the main job's steps (`audiopalm.main.pipeline`: each kept when it finished earlier with the same command, so
rerunning resumes), from the repository root:
  1. tokens of the bundled corpus's train split and of its 40 held-out test utterances (`tokens_train`,
     `tokens_test`: speakers' sentences never in training), and the bundled text that both starts' `text_lm`
     task replays (`tokens_text`);
  2. the tiny text checkpoint (`text`);
  3. the AudioPaLM mixture for `--steps` steps from that checkpoint (`speech_text`,
     `speech_text_from_text_demo.gin`) and from scratch (`scratch`, `speech_text_demo.gin`): same model, data,
     schedule and seed; for each further seed in `--seeds`, both again (`speech_text_seed<N>`, `scratch_seed<N>`)
     with that seed for the data order and format randomness, dropout and new parameters;
  4. with `--stages`, the AudioLM coarse and fine stages, so the TTS round trip goes through audio;
  5. `audiopalm.main.evaluate` of every model on the test split, every transcript kept; prints a table (with each start's
     mean over the seeds when there are several) and writes `<workdir>/benchmark.json`.

A benchmark, not a test: on 2 CPU cores 1000 steps take ~9 minutes per model (19 minutes per seed). Chance, for
ASR, is the WER of answering with another test utterance's transcript (`evaluation.speech_metrics`). On 40
held-out utterances one seed's ASR WER moves by 0.04-0.08 between seeds: compare starts over several seeds.
The text start's lead is largest early and shrinks with steps (docs/benchmarks.md: at 300 steps it reads better,
at 1000 only its ASR and text perplexities are): for a learning curve, run `--steps=300`, `500`, ... each in its own
`--workdir` (the demo's rsqrt schedule does not depend on the run's length, so N steps equal the first N of a longer
run).

"held-out pairs read": every test sentence says a colour-object pair ("blue ball") that the training speech
never says and the bundled text does (`tools.make_demo_text`): the fraction of those the ASR transcript has
(same two words, adjacent, after WER's text normalisation). Language knowledge that reached the ASR shows there first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from audiopalm.evaluation.wer import normalize
from audiopalm.files import storage
from audiopalm.main import evaluate, pipeline
from data_pipeline.synthetic import grammar as corpus

CORPUS_SEED = 0  # the bundled corpus's --seed (audiopalm/data/assets/demo_speech/README.md)
STARTS = {"from_text": "text checkpoint", "scratch": "scratch"}  # a report's start -> its name in the table


def seed_flags(seed: int, from_text: bool) -> tuple[str, ...]:
  """Gin flags giving a run its seed: data order and format randomness, dropout and (text start) the new rows."""
  flags = (f"--gin.SpeechTextConfig.seed={seed}", f"--gin.TrainerConfig.seed={seed}")
  return flags + ((f"--gin.InitFromConfig.seed={seed}",) if from_text else ())


def plan(work: str, steps: int, stages: bool, seeds: Sequence[int]) -> tuple[list[pipeline.Step], dict]:
  """The steps to run, and (start, seed) -> the step of that model. Seed 0 is the main job's own `speech_text`."""
  by_name = {s.name: s for s in pipeline.steps(work, text_steps=200, speech_steps=steps, coarse_steps=100,
                                                fine_steps=100, eval_examples=None)}
  models = {}
  for seed in seeds:
    suffix = "" if seed == 0 else f"_seed{seed}"
    models["from_text", seed] = by_name["speech_text"] if seed == 0 else pipeline.training_step(
        work, f"speech_text{suffix}", f"the text checkpoint continued, seed {seed}", "speech_text_from_text_demo",
        steps, *pipeline.speech_text_flags(work), *seed_flags(seed, True))
    models["scratch", seed] = pipeline.training_step(
        work, f"scratch{suffix}", "the same mixture from scratch" + (f", seed {seed}" if seed else ""),
        "speech_text_demo", steps, *pipeline.data_flags(work), *(seed_flags(seed, False) if seed else ()))
  chosen = [by_name[n] for n in ("tokens_train", "tokens_test", "tokens_text", "text")] + list(models.values())
  if stages:
    chosen += [by_name["coarse"], by_name["fine"]]
  return chosen, models


def run(workdir: str, steps: int, stages: bool, seeds: Sequence[int] = (0,)) -> dict:
  work = workdir.rstrip("/")
  chosen, models = plan(work, steps, stages, seeds)
  test_tokens = next(s.artefact for s in chosen if s.name == "tokens_test")
  stage_flags = [f"--coarse_model={work}/coarse", f"--fine_model={work}/fine"] if stages else []
  pipeline.run_steps(work, chosen)
  results = {}
  for (start, seed), step in models.items():
    name = start if seed == 0 else f"{start}_seed{seed}"
    out = storage.join(work, "eval", f"{name}.json")
    status = evaluate.main([f"--model={step.artefact}", f"--tokens_dir={test_tokens}", "--split=test",
                            "--metrics=perplexity,asr,tts" + (",resynthesis" if stages else ""), *stage_flags,
                            "--samples=all", f"--output={out}"])
    if status:
      raise RuntimeError(f"audiopalm.main.evaluate of {step.artefact} failed ({status})")
    results[name] = {"start": start, "seed": seed, **json.loads(storage.read_text(out))}
  report = {"steps": steps, "seeds": list(seeds), "workdir": work, "results": results}
  storage.write_text(f"{work}/benchmark.json", json.dumps(report, indent=2))
  return report


def held_out_pairs_read(asr: dict) -> float | None:
  """Of the held-out colour-object pairs the references say, the fraction the hypotheses say too (module
  docstring); None without every transcript or without such pairs."""
  samples = asr.get("samples", [])
  if len(samples) < asr["utterances"]:
    return None
  pairs = {(colour, form) for colour, obj in corpus.held_out_pairs(CORPUS_SEED) for form in (obj, corpus.PLURALS[obj])}
  said = read = 0
  for sample in samples:
    ref, hyp = normalize(sample["reference"]).split(), normalize(sample["hypothesis"]).split()  # as WER scores
    heard = set(zip(hyp, hyp[1:]))
    for bigram in zip(ref, ref[1:]):
      if bigram in pairs:
        said, read = said + 1, read + (bigram in heard)
  return read / said if said else None


def _row(r: dict) -> tuple[float | None, ...]:
  """One model's figures, in the table's order after start / seed / steps."""
  res = r["results"]
  ppl, asr, tts = res["perplexity"], res["asr"], res["tts"]
  return (ppl["overall"]["perplexity"], ppl["tasks"]["asr"]["perplexity"], ppl["tasks"]["tts"]["perplexity"],
          asr["wer"], asr["cer"], asr.get("chance_wer"), held_out_pairs_read(asr), tts["semantic_roundtrip_wer"],
          tts.get("wer"), res.get("resynthesis", {}).get("wer"))


def table(report: dict) -> str:
  """Markdown: one row per model and, for a start run with several seeds, the mean over them."""
  rows = [("start", "seed", "steps", "ppl all", "ppl asr", "ppl tts", "ASR WER", "ASR CER", "chance WER",
           "held-out pairs read", "TTS sem. round-trip WER", "TTS audio round-trip WER", "resynth. WER")]
  fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
  for start, label in STARTS.items():
    runs = [r for r in report["results"].values() if r["start"] == start]
    figures = [_row(r) for r in runs]
    for r, row in zip(runs, figures):
      rows.append((label, str(r["seed"]), str(r["step"]), *map(fmt, row)))
    if len(runs) > 1:
      columns = zip(*figures)
      means = [None if any(v is None for v in c) else sum(c) / len(c) for c in columns]
      rows.append((f"**{label}, mean**", f"{len(runs)} seeds", str(runs[0]["step"]), *map(fmt, means)))
  return "\n".join("| " + " | ".join(row) + " |" + ("\n|" + "---|" * len(row) if i == 0 else "")
                   for i, row in enumerate(rows))


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.benchmark_speech_demo", description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="runs/benchmark_demo", help="relative paths: to the repository root")
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--stages", action="store_true", help="also train the AudioLM stages: TTS through audio")
  parser.add_argument("--seeds", default="0", help="comma-separated seeds; each trains both starts (0: the main job's)")
  args = parser.parse_args(argv)
  try:
    seeds = sorted({int(s) for s in args.seeds.split(",")})
  except ValueError:
    parser.error(f"--seeds={args.seeds!r}: give comma-separated integers, e.g. --seeds=0,1,2")
  if any(s < 0 for s in seeds):
    parser.error(f"--seeds={args.seeds!r}: seeds must be >= 0")
  if not os.path.exists("gin_configs/experiments/tiny.gin"):
    parser.error(f"run it from the repository root (the directory with gin_configs/), not {os.getcwd()}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    report = run(args.workdir, args.steps, args.stages, seeds)
  except RuntimeError as e:
    print(f"\n{e}", file=sys.stderr)
    return 1
  print(table(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
