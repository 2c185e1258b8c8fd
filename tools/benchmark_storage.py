r"""Benchmark of the data path on object storage, counted (not timed) against a GCS emulator on loopback.

    python -m tools.benchmark_storage [--recordings=4] [--minutes=10] [--processes=2] [--shards=2000] \
        [--workdir=/tmp/benchmark_storage]

Starts fake-gcs-server (`tools.gcs_emulator`), then:

1. **Tokenization of a LibriLight-like corpus on gs://.** `--recordings` FLAC recordings of `--minutes` minutes
   each (bundled demo utterances laid end to end with pauses; LibriLight layout, a JSON file with
   `voice_activity` beside each), uploaded to the emulator, tokenized by `--processes` independent processes
   (`python -m data_pipeline.tokenize`, no coordinator: they share the work through claims) from gs:// to gs://
   with the bundled tokenizers, one recording per shard. Every request and body byte of every process is traced
   (`AUDIOPALM_STORAGE_TRACE`): bytes read ÷ bytes of the source files, requests per source file, which
   processes listed and parsed the corpus (planning), and all traffic per process.
2. **CPU side per core**: the preparation stage (`data_pipeline.audio_prep`: decode, resample, VAD, cut) over
   the same recordings on one thread, in real-time factor (seconds of audio per second of one core), and the
   job's writing time from the reports.
3. **Loader on gs://**: a synthetic token dataset of `--shards` shards written to the emulator, then
   `TokenShardSource` started on it (requests per shard: listing + one index each) and `--reads` random
   examples read (bytes fetched ÷ the record's size).

Prints Markdown tables (results in docs/benchmarks.md). Not a test: the counts are the point, and the issue's
targets are checked in the table (`ok` column).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.parse
from typing import Sequence

import numpy as np
import soundfile as sf

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO_SPEECH = REPO / "audiopalm/data/assets/demo_speech/train"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m tools.benchmark_storage", description=__doc__.split("\n\n")[0])
  p.add_argument("--recordings", type=int, default=4, help="long recordings in the LibriLight-like corpus")
  p.add_argument("--minutes", type=float, default=10.0, help="length of each recording")
  p.add_argument("--processes", type=int, default=2, help="tokenization processes (no coordinator)")
  p.add_argument("--shards", type=int, default=2000, help="shards of the synthetic dataset for the loader")
  p.add_argument("--reads", type=int, default=500, help="random example reads for the loader's steady state")
  p.add_argument("--workdir", default="/tmp/benchmark_storage", help="local scratch (deleted first)")
  return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------- the corpus


def make_librilight_corpus(root: pathlib.Path, recordings: int, minutes: float, seed: int = 0) -> list[pathlib.Path]:
  """`recordings` FLAC files of `minutes` minutes of demo speech with pauses, LibriLight layout; returns the FLACs."""
  rng = np.random.default_rng(seed)
  utterances = sorted(DEMO_SPEECH.rglob("*.flac"))
  out = []
  for r in range(recordings):
    pieces, activity, t = [], [], 0.0
    while t < minutes * 60:
      wave, rate = sf.read(utterances[int(rng.integers(len(utterances)))], dtype="float32")
      pause = np.zeros(int(rate * rng.uniform(0.3, 2.0)), np.float32)
      activity.append([round(t, 3), round(t + len(wave) / rate, 3)])
      pieces += [wave, pause]
      t += (len(wave) + len(pause)) / rate
    path = root / f"{100 + r}" / "book" / f"recording_{r:03d}.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.concatenate(pieces), rate, subtype="PCM_16")
    path.with_suffix(".json").write_text(json.dumps({"speaker": str(100 + r), "voice_activity": activity}))
    out.append(path)
  return out


# ---------------------------------------------------------------------------------------------------- traces


def _object(url: str) -> str | None:
  """The object name a request URL reads (None for a listing or a bucket-level request)."""
  path = urllib.parse.urlparse(url).path
  return urllib.parse.unquote(path.split("/o/", 1)[1]) if "/o/" in path else None


def read_trace(path: pathlib.Path) -> tuple[collections.Counter, collections.Counter, collections.Counter]:
  """(requests per object, bytes received per object, listing requests per prefix) from an
  AUDIOPALM_STORAGE_TRACE file."""
  requests, received, listings = collections.Counter(), collections.Counter(), collections.Counter()
  if not path.exists():
    return requests, received, listings
  for line in path.read_text().splitlines():
    kind, rest = line.split(" ", 1)
    if kind == "REQ":
      method, url = rest.split(" ", 1)
      name = _object(url)
      if name is None and method == "GET" and "/o?" in url:
        listings[urllib.parse.parse_qs(urllib.parse.urlparse(url).query).get("prefix", [""])[0]] += 1
      requests[name or f"{method} (bucket)"] += 1
    elif kind == "RX":
      size, url = rest.split(" ", 1)
      received[_object(url) or "(listing)"] += int(size)
  return requests, received, listings


# ------------------------------------------------------------------------------------------------------- main


def tokenization(args, emulator, bucket: str, work: pathlib.Path) -> list[dict]:
  from audiopalm.files import storage  # pylint: disable=import-outside-toplevel
  from tools.gcs_emulator import upload_tree  # pylint: disable=import-outside-toplevel

  corpus = work / "corpus"
  flacs = make_librilight_corpus(corpus, args.recordings, args.minutes)
  sources = {f"corpus/{name}": size for name, size in upload_tree(corpus, f"gs://{bucket}/corpus").items()}
  source_bytes = sum(sources.values())
  audio_seconds = sum(sf.info(p).duration for p in flacs)
  out = f"gs://{bucket}/tokens"
  cmd = [sys.executable, "-m", "data_pipeline.tokenize", "--gin_file=gin_configs/tokenize/demo.gin",
         "--gin.tokenize_corpus.reader='librilight'", f"--gin.INPUT='gs://{bucket}/corpus'", f"--gin.OUTPUT_DIR='{out}'",
         "--gin.AudioPrepConfig.require_transcript=False", "--gin.JobConfig.utterances_per_shard=1",
         "--gin.LeaseConfig.poll_seconds=1"]
  procs, traces = [], []
  start = time.time()
  for i in range(args.processes):
    traces.append(work / f"trace-{i}.txt")
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, **emulator.env(),
           "AUDIOPALM_STORAGE_TRACE": str(traces[-1])}
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(work / f"log-{i}.txt", "wb"),
                                  stderr=subprocess.STDOUT))
  for i, p in enumerate(procs):
    if p.wait() != 0:
      raise RuntimeError(f"process {i} failed:\n{(work / f'log-{i}.txt').read_text()[-3000:]}")
  wall = time.time() - start
  rows = []
  total_requests = collections.Counter()
  total_received = collections.Counter()
  planners = []
  for i, trace in enumerate(traces):
    requests, received, listings = read_trace(trace)
    total_requests.update(requests)
    total_received.update(received)
    parsed = sum(requests[n] for n in sources if n.endswith(".json"))
    corpus_listings = sum(n for prefix, n in listings.items() if prefix.startswith("corpus"))
    if corpus_listings or parsed:
      planners.append(i)
    rows.append({"what": f"process {i}: all its traffic", "value": f"{sum(requests.values())} requests, "
                 f"{sum(received.values()) / 1e6:.1f} MB read; corpus listings {corpus_listings}, metadata files "
                 f"read {parsed}; other listings {sum(listings.values()) - corpus_listings}", "target": "", "ok": ""})
  read_source = sum(total_received[n] for n in sources)
  ratio_all = sum(total_received.values()) / source_bytes
  per_file = [total_requests[n] for n in sources]
  rows += [
      {"what": f"source: {len(flacs)} recordings x {args.minutes:g} min ({audio_seconds / 3600:.2f} h) + JSON",
       "value": f"{len(sources)} files, {source_bytes / 1e6:.1f} MB", "target": "", "ok": ""},
      {"what": "bytes of source files read / their size", "value": f"{read_source / source_bytes:.3f}",
       "target": "<= 1.1", "ok": read_source / source_bytes <= 1.1},
      {"what": "all bytes read (any object, listings) / source size", "value": f"{ratio_all:.3f}", "target": "",
       "ok": ""},
      {"what": "requests per source file (max over files)", "value": f"{max(per_file)} (min {min(per_file)})",
       "target": "<= 3", "ok": max(per_file) <= 3},
      {"what": "processes that listed and parsed the corpus", "value": f"{planners} of {args.processes}",
       "target": "exactly one", "ok": len(planners) == 1},
      {"what": "wall time, all processes (2 CPU cores here)", "value": f"{wall:.0f} s", "target": "", "ok": ""},
  ]
  reports = [json.loads(storage.read_text(p)) for p in storage.find(f"{out}/reports")]
  writing = sum(r["stage_seconds"]["writing"] for r in reports)
  rows.append({"what": "job writing time (all processes) per hour of audio", "value":
               f"{writing / (audio_seconds / 3600):.2f} s/h (real-time factor {audio_seconds / max(writing, 1e-9):.0f}x)",
               "target": "", "ok": ""})
  rows.append({"what": "shards written per process", "value": str([r["shards_written"] for r in reports]),
               "target": "each once", "ok": sorted(k for r in reports for k in r["shards_written"]) ==
               list(range(len(flacs)))})
  return rows, flacs


def cpu_side(flacs: list[pathlib.Path]) -> list[dict]:
  from data_pipeline.audio_prep import AudioPrepConfig, measure_throughput  # pylint: disable=import-outside-toplevel
  from data_pipeline.readers import make_reader  # pylint: disable=import-outside-toplevel
  from data_pipeline.records import Utterance  # pylint: disable=import-outside-toplevel

  root = flacs[0].parents[2]
  utterances = [u for u in make_reader("librilight", roots=(str(root),)).utterances() if isinstance(u, Utterance)]
  stats = measure_throughput(utterances, AudioPrepConfig(sample_rates=(16000,)))
  rtf = stats.audio_seconds / stats.busy_seconds
  return [{"what": "preparation (decode, resample to 16 kHz, VAD cut) on one core", "value":
           f"{rtf:.0f}x real time ({stats.segments} segments)", "target": "", "ok": ""}]


def loader(args, bucket: str) -> list[dict]:
  from audiopalm.data.token_source import TokenShardSource  # pylint: disable=import-outside-toplevel
  from audiopalm.files import storage  # pylint: disable=import-outside-toplevel
  from audiopalm.tokens import synthetic  # pylint: disable=import-outside-toplevel

  out = f"gs://{bucket}/synthetic"
  cfg = synthetic.SyntheticConfig(examples=2 * args.shards, num_shards=args.shards, min_seconds=2, max_seconds=12,
                                  num_codebooks=8)
  before = storage.counts()
  synthetic.write_synthetic_dataset(out, cfg)
  written = storage.counts() - before
  before = storage.counts()
  source = TokenShardSource(out)
  start = storage.counts() - before
  rng = np.random.default_rng(0)
  ratios, requests = [], 0
  for i in rng.integers(0, len(source), args.reads):
    shard = int(np.searchsorted(source.starts, i, side="right") - 1)
    j = int(i - source.starts[shard])
    record = int(source.offsets[shard][j + 1] - source.offsets[shard][j])
    before = storage.counts()
    source[int(i)]
    delta = storage.counts() - before
    ratios.append(delta.bytes_read / record)
    requests += delta.requests
  per_shard = start.requests / args.shards
  mean_record = float(np.mean([np.diff(o).mean() for o in source.offsets]))
  return [
      {"what": f"writing {args.shards} shards ({len(source)} examples) to gs://", "value":
       f"{written.requests} requests ({written.requests / args.shards:.2f} per shard)", "target": "", "ok": ""},
      {"what": "loader start: requests per shard", "value": f"{per_shard:.3f} ({start.requests} in all, "
       f"{start.bytes_read / 1e3:.0f} kB read)", "target": "<= 2", "ok": per_shard <= 2},
      {"what": "random example: bytes read / record size", "value":
       f"mean {np.mean(ratios):.3f}, max {np.max(ratios):.3f} (records ~{mean_record / 1e3:.1f} kB)",
       "target": "<= 2", "ok": float(np.max(ratios)) <= 2},
      {"what": "random example: requests", "value": f"{requests / args.reads:.2f}", "target": "1",
       "ok": requests == args.reads},
  ]


def main(argv: Sequence[str] | None = None) -> list[dict]:
  args = parse_args(argv)
  from tools.gcs_emulator import GcsEmulator  # pylint: disable=import-outside-toplevel

  work = pathlib.Path(args.workdir)
  shutil.rmtree(work, ignore_errors=True)
  work.mkdir(parents=True)
  with GcsEmulator() as emulator, emulator.environment():
    bucket = emulator.create_bucket("benchmark")
    rows, flacs = tokenization(args, emulator, bucket, work)
    rows += cpu_side(flacs)
    rows += loader(args, bucket)
  print("| measure | value | target | ok |\n|---|---|---|---|")
  for row in rows:
    ok = {True: "yes", False: "**no**"}.get(row["ok"], row["ok"])
    print(f"| {row['what']} | {row['value']} | {row['target']} | {ok} |")
  return rows


if __name__ == "__main__":
  main()
