"""The data path on object storage, end to end against a real GCS emulator (fake-gcs-server on loopback, started by
the `gcs_emulator` fixture): the corpus on gs://, the tokenization job reading it and writing its shards to gs://,
the loader and `audiopalm.main.import_text` on gs://, and orbax checkpoints on gs://.

The tokens written from gs:// are the tokens written from local disk (the `demo_tokens` fixture), example for
example; the job reads each source byte once (counted on the wire by the storage layer).
"""

import collections
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import pytest

from audiopalm.data.token_source import TokenShardSource
from audiopalm.files import storage
from audiopalm.tokens import dataset_info, shards
from tests import cli_tokenize_test
from tools.gcs_emulator import upload_tree

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO_TRAIN = REPO / "audiopalm/data/assets/demo_speech/train"
pytestmark = pytest.mark.slow


def _run(module: str, *args: str, timeout: int = 600, extra_env=None) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the emulator's variables included
  env.update(extra_env or {})
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return proc


def _examples(directory: str) -> dict[str, dict]:
  return {ex["id"]: ex for f in shards.find_shards(directory) for ex in shards.read_shard(f.path)}


def test_tokenize_load_and_import_text_on_gcs(gcs_bucket, demo_tokens, tmp_path):
  corpus_bytes = sum(upload_tree(DEMO_TRAIN, f"{gcs_bucket}/corpus/train").values())
  out = f"{gcs_bucket}/tokens"
  proc = _run("data_pipeline.tokenize", "--gin_file=gin_configs/tokenize/demo.gin", f"--gin.INPUT='{gcs_bucket}/corpus/train'",
              f"--gin.OUTPUT_DIR='{out}'", extra_env={"AUDIOPALM_STORAGE_TRACE": str(tmp_path / "requests.txt")})
  assert "storage (this process)" in proc.stderr + proc.stdout

  # The same examples as the local run, token for token.
  remote, local = _examples(out), _examples(str(demo_tokens))
  assert sorted(remote) == sorted(local) and len(remote) == 360
  for uid in list(remote)[::37]:
    np.testing.assert_array_equal(remote[uid]["semantic"], local[uid]["semantic"])
    np.testing.assert_array_equal(remote[uid]["acoustic"], local[uid]["acoustic"])
  assert json.loads(storage.read_text(f"{out}/metadata.json"))["totals"]["examples"] == 360
  assert dataset_info.read_metadata(out).totals.examples == 360

  # Each source byte read once: one request per source file (its transcripts included; a rare retry of a failed
  # request under load is allowed, within the bound of 3), and the bytes read in all (the corpus, the job's
  # own small files) within 1.1x the corpus.
  requests = [line for line in (tmp_path / "requests.txt").read_text().splitlines() if line.startswith("REQ ")]
  per_file = collections.Counter()
  for line in requests:
    name = urllib.parse.unquote(urllib.parse.urlparse(line.split(" ")[2]).path.split("/o/")[-1])
    if name.startswith("corpus/train/"):
      per_file[name] += 1
  files = {"corpus/train/" + str(p.relative_to(DEMO_TRAIN)) for p in DEMO_TRAIN.rglob("*") if p.is_file()}
  assert set(per_file) == files and max(per_file.values()) <= 3
  assert sum(per_file.values()) <= len(files) + 3, per_file.most_common(5)
  [report] = [json.loads(storage.read_text(p)) for p in storage.find(f"{out}/reports")]
  assert len(requests) - 3 <= report["io"]["requests"] <= len(requests)  # (not: config.gin, operative_config.gin, the report)
  assert corpus_bytes <= report["io"]["bytes_read"] <= 1.1 * corpus_bytes, (report["io"], corpus_bytes)

  # The loader from gs:// sees what the writer wrote.
  source = TokenShardSource(out)
  assert len(source) == 360 and {source[i]["id"] for i in (0, 100, 359)} <= set(local)

  # import_text from and to gs://: text-only examples the loader reads like any other.
  text_out = f"{gcs_bucket}/text"
  _run("audiopalm.main.import_text", "--text=audiopalm/data/assets/demo_text.txt", f"--like={out}",
       f"--output_dir={text_out}")
  text = TokenShardSource(text_out)
  assert len(text) > 10 and text[0]["transcript"] and text[0]["acoustic"].shape[0] == 0


def _claim_owners(out: str) -> list[str]:
  owners = []
  for name in storage.listdir(f"{out}/claims"):
    if name.startswith("shard-"):
      try:
        owners.append(json.loads(storage.read_bytes(f"{out}/claims/{name}"))["owner"])
      except FileNotFoundError:
        pass
  return owners


def test_elastic_processes_on_gcs(gcs_bucket, tmp_path):
  """Three processes with no coordinator share one job on gs://: the first is SIGKILLed while it holds a shard,
  the third starts late. The job completes, every utterance is in the output exactly once, every shard is
  committed by exactly one process, and the dead process's shard is taken over when its lease expires."""
  upload_tree(DEMO_TRAIN, f"{gcs_bucket}/corpus/train")
  out = f"{gcs_bucket}/tokens"
  cmd = [sys.executable, "-m", "data_pipeline.tokenize", "--gin_file=gin_configs/tokenize/demo.gin",
         f"--gin.INPUT='{gcs_bucket}/corpus/train'", f"--gin.OUTPUT_DIR='{out}'",
         "--gin.JobConfig.utterances_per_shard=45", "--gin.JobConfig.decode_threads=2",
         "--gin.LeaseConfig.lease_seconds=4", "--gin.LeaseConfig.renew_seconds=1",
         "--gin.LeaseConfig.poll_seconds=0.5", "--gin.LeaseConfig.wait_seconds=300"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["AUDIOPALM_CLAIMS_TIME_ONLY"] = "1"  # all three run on this host: the dead one's claim must expire by time
  logs = [tmp_path / f"p{i}.log" for i in range(3)]

  def start(i):
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(logs[i], "wb"), stderr=subprocess.STDOUT)

  procs = [start(0), start(1)]
  try:
    deadline = time.time() + 600
    while not (cli_tokenize_test.committed(logs[0].read_text())
               and any(f":{procs[0].pid}:" in o for o in _claim_owners(out))):
      assert procs[0].poll() is None, logs[0].read_text()[-3000:]
      assert time.time() < deadline, "process 0 never held a shard after committing one"
      time.sleep(0.1)
    procs[0].send_signal(signal.SIGKILL)  # mid-shard: it holds a claim
    procs[0].wait()
    procs.append(start(2))  # late
    for p in procs[1:]:
      p.wait(timeout=600)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  texts = [log.read_text() for log in logs]
  assert [p.returncode for p in procs[1:]] == [0, 0], "\n".join(t[-3000:] for t in texts[1:])
  by_process = [cli_tokenize_test.committed(t) for t in texts]
  assert sorted(k for c in by_process for k in c) == list(range(8)), by_process  # each shard committed once
  assert by_process[2], "the late process found nothing to do"
  assert any("took over shard-" in t for t in texts[1:]), "nobody took over the dead process's shard"
  found = [ex["id"] for f in shards.find_shards(out) for ex in shards.read_shard(f.path)]
  manifest = [json.loads(line) for line in storage.read_text(f"{out}/manifest.jsonl").splitlines()[1:]]
  assert len(found) == len(set(found)) == 360 and sorted(found) == sorted(i["utterance"]["id"] for i in manifest)
  assert storage.read_text(f"{out}/rejects.jsonl") == ""
  assert dataset_info.read_metadata(out).totals.examples == 360
  assert [n for n in storage.listdir(f"{out}/claims")] == []  # every claim released


def test_training_on_gcs_resumes_from_its_checkpoint_and_compilation_cache(gcs_bucket):
  """A run whose MODEL_DIR is on gs://: checkpoints, metrics, goodput records and JAX's persistent compilation
  cache all live there, and a restart restores the checkpoint and loads its train step from the cache."""
  model_dir = f"{gcs_bucket}/runs/tiny"
  flags = ["--gin_file=gin_configs/experiments/tiny.gin", f"--gin.MODEL_DIR={model_dir}",
           "--gin.TrainerConfig.log_every=1"]
  _run("audiopalm.main.train", *flags, "--gin.TRAIN_STEPS=2")
  assert any("jit_train_step" in name for name in storage.listdir(storage.join(model_dir, "compilation_cache")))
  second = _run("audiopalm.main.train", *flags, "--gin.TRAIN_STEPS=4",
                extra_env={"JAX_DEBUG_LOG_MODULES": "jax._src.compiler", "JAX_PLATFORMS": "cpu"})
  log = second.stdout + second.stderr
  assert "Restored checkpoint of step 2" in log and "Persistent compilation cache hit for 'jit_train_step'" in log
  summary = json.loads(storage.read_text(storage.join(model_dir, "goodput", "summary.json")))
  assert summary["invocations"] == 2 and summary["steps"] == 4
