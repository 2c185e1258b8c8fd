r"""Benchmark of restarts: time to the first step with a cold and a warm compilation cache, and a run's goodput
across a SIGKILL and a restart, from the run's own goodput records.

    python -m tools.benchmark_restart [--gin_file=gin_configs/experiments/tiny.gin] [--steps=40] \
        [--workdir=/tmp/benchmark_restart]

Runs `python -m audiopalm.main.train` as a user would (one process, this machine's devices):
1. **cold**: a new run, its persistent compilation cache (`<model_dir>/compilation_cache`) empty, `--steps` steps;
2. **warm**: the same run continued for `--steps` more steps (restored checkpoint, cache filled by run 1);
3. **no cache**: a new run with `--compilation_cache_dir=none`, for comparison with 1;
4. **killed + restarted**: a new run of 2 × `--steps` steps (a checkpoint every `--steps` / 4) killed (SIGKILL)
   at 1.6 × `--steps`, then restarted: the goodput summary of the two invocations (steps redone: those after the
   killed run's newest checkpoint, up to its last goodput record, written here every second; time per category).
Each invocation's figures come from its goodput record (`<model_dir>/goodput/*.json`, written by process 0):
startup (process start → loop), compilation (the first step), and the time to the first step (their sum).
Prints Markdown tables (results in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]


def _command(gin_file: str, model_dir: pathlib.Path, steps: int, *extra: str) -> list[str]:
  return [sys.executable, "-m", "audiopalm.main.train", f"--gin_file={gin_file}", f"--gin.MODEL_DIR={model_dir}",
          f"--gin.TRAIN_STEPS={steps}", "--gin.TrainerConfig.log_every=1",
          f"--gin.CheckpointConfig.save_interval_steps={max(1, steps // 4)}", *extra]


def _env() -> dict[str, str]:
  return {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _records(model_dir: pathlib.Path) -> list[dict]:
  return [json.loads(p.read_text()) for p in sorted((model_dir / "goodput").glob("*.json"))
          if p.name != "summary.json"]


def _run(cmd: list[str], log: pathlib.Path) -> None:
  with log.open("ab") as out:
    rc = subprocess.run(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT, check=False).returncode
  if rc:
    raise SystemExit(f"{' '.join(cmd)} failed ({rc}); see {log}")


def _logged_step(model_dir: pathlib.Path) -> int:
  path = model_dir / "metrics.jsonl"
  lines = path.read_text().splitlines() if path.exists() else []
  return max((json.loads(line)["step"] for line in lines if line.strip()), default=0)


def _row(name: str, record: dict) -> str:
  s = record["seconds"]
  return (f"| {name} | {s['startup']:.1f} | {s['compilation']:.1f} | {s['startup'] + s['compilation']:.1f} | "
          f"{record['last_step'] - record['start_step']} |")


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", default="gin_configs/experiments/tiny.gin")
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--workdir", default="/tmp/benchmark_restart")
  args = parser.parse_args(argv)
  work = pathlib.Path(args.workdir)
  shutil.rmtree(work, ignore_errors=True)
  work.mkdir(parents=True)
  log = work / "log.txt"

  cached, plain, killed = work / "cached", work / "no_cache", work / "killed"
  print(f"1-2. cold then warm compilation cache ({args.gin_file}, {args.steps} steps each)", flush=True)
  _run(_command(args.gin_file, cached, args.steps), log)
  _run(_command(args.gin_file, cached, 2 * args.steps), log)
  print("3. no cache", flush=True)
  _run(_command(args.gin_file, plain, args.steps, "--compilation_cache_dir=none"), log)
  kill_at = 8 * args.steps // 5
  print(f"4. killed at step {kill_at}, restarted", flush=True)
  with log.open("ab") as out:
    proc = subprocess.Popen(_command(args.gin_file, killed, 2 * args.steps, "--gin.TrainerConfig.goodput_every_s=1"),
                            cwd=REPO, env=_env(), stdout=out,
                            stderr=subprocess.STDOUT)
  while _logged_step(killed) < kill_at and proc.poll() is None:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  _run(_command(args.gin_file, killed, 2 * args.steps), log)

  cold, warm = _records(cached)
  print("\n| invocation | startup s | compilation + first step s | time to first step s | steps |")
  print("|---|---|---|---|---|")
  print(_row("cold cache (new run)", cold))
  print(_row("warm cache (restart)", warm))
  print(_row("no cache (new run)", _records(plain)[0]))
  summary = json.loads((killed / "goodput" / "summary.json").read_text())
  print(f"\nKilled at step {kill_at} and restarted ({summary['invocations']} invocations, "
        f"{summary['steps']} steps, {summary['redone_steps']} redone): goodput {100 * summary['goodput']:.1f}% "
        f"of {summary['wall_s']:.1f} s")
  print("\n| category | seconds | share |")
  print("|---|---|---|")
  for name, seconds in summary["seconds"].items():
    print(f"| {name} | {seconds:.1f} | {100 * seconds / summary['wall_s']:.1f}% |")


if __name__ == "__main__":
  main()
