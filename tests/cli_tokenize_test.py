"""The tokenization job from the command line: SIGKILL midway then rerun, and a 2-process run with a JAX
coordinator (elastic runs on object storage: tests/gcs_pipeline_test.py).

Both check the exactly-once promise on the bundled demo corpus's train split (360 utterances, all good): every utterance of
the manifest is in the output exactly once, and nothing is rejected.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import portpicker
import pytest

from audiopalm.tokens import shards

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO_GIN = "gin_configs/tokenize/demo.gin"
UTTERANCES, PER_SHARD = 360, 45  # 8 shards of the 360 demo train utterances
NUM_SHARDS = UTTERANCES // PER_SHARD
pytestmark = pytest.mark.slow


def _command(out, *extra):
  return [sys.executable, "-m", "data_pipeline.tokenize", f"--gin_file={DEMO_GIN}", f"--gin.OUTPUT_DIR={out}",
          f"--gin.JobConfig.utterances_per_shard={PER_SHARD}", *extra]


def _env(devices: int):
  env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOPALM_")}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             TF_CPP_MIN_LOG_LEVEL="2")
  return env


def _check_exactly_once(out: pathlib.Path) -> None:
  manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()[1:]]
  wanted = sorted(item["utterance"]["id"] for item in manifest)
  found = [ex["id"] for f in shards.find_shards(str(out)) for ex in shards.read_shard(f.path)]
  assert len(found) == len(set(found)), "an utterance was written twice"
  assert sorted(found) == wanted and len(wanted) == UTTERANCES
  assert (out / "rejects.jsonl").read_text() == ""
  assert not [p for p in out.iterdir() if p.name.startswith("incomplete.")]


def test_sigkill_midway_then_rerun_gives_every_utterance_once(tmp_path):
  out = tmp_path / "tokens"
  log = open(tmp_path / "first.log", "wb")
  proc = subprocess.Popen(_command(out), cwd=REPO, env=_env(1), stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 600
  while len(list(out.glob("shards/shard-*.json"))) < 2:  # wait until two shards are committed, then kill
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    assert time.time() < deadline, "the job made no progress"
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = len(shards.find_shards(str(out)))
  assert 0 < done < NUM_SHARDS, f"killed with {done} complete shards: not midway"
  assert not (out / "metadata.json").exists()
  rerun = subprocess.run(_command(out), cwd=REPO, env=_env(1), capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"{done} complete already" in rerun.stderr  # and no wait for the killed process's claim (dead, this host)
  _check_exactly_once(out)


def test_two_processes_with_a_coordinator_share_the_shards(tmp_path):
  out = tmp_path / "tokens"
  port = portpicker.pick_unused_port()
  procs, logs = [], []
  for i in range(2):
    logs.append(tmp_path / f"p{i}.log")
    cmd = _command(out, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}")
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(2), stdout=open(logs[-1], "wb"), stderr=subprocess.STDOUT))
  try:
    for p in procs:
      p.wait(timeout=600)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  texts = [log.read_text() for log in logs]
  assert all(p.returncode == 0 for p in procs), "\n".join(t[-2000:] for t in texts)
  assert sorted(k for t in texts for k in committed(t)) == list(range(NUM_SHARDS))  # each shard by one process
  _check_exactly_once(out)


def committed(log_text: str) -> list[int]:
  """The shards a process's log says it committed."""
  return [int(line.split("] Shard ")[1].split("/")[0]) - 1 for line in log_text.splitlines() if "] Shard " in line]
