"""The tokenization job: a corpus → sharded TFRecords of semantic + acoustic tokens, resumable, multi-host.

    summary = tokenize_corpus(reader="librispeech", reader_options={"roots": ("data/LibriSpeech",)},
                              output_dir="gs://bucket/tokens", semantic=("semantic", "...demo_semantic"),
                              acoustic=("codec", "...demo_codec"))

1. **Plan.** The reader's items (Utterance | Reject, deterministic order) become the manifest
   `<out>/manifest.jsonl` (written once, atomically; a rerun reads it instead of listing and parsing the
   corpus again). A repeated id is rejected (`duplicate_id`, the first kept). Items are cut into input shards
   of `utterances_per_shard` consecutive items; shard i is processed by process i mod num_processes.
2. **Shard.** Utterances are prepared (`audio_prep`: checks, decode, resample, cut) on a thread pool a few
   ahead of the devices, bucketed into fixed batch shapes (`batching`) and tokenized by both tokenizers on
   the local devices. Examples are written in item order (independent of batching), to a temporary name.
3. **Commit.** `<out>/shards/<shard>.json` (the shard's statistics and its rejects) is written, then the
   TFRecord is renamed to its final name. A shard is done exactly when its TFRecord exists; a rerun skips
   done shards and redoes the others, so every input utterance ends up exactly once in the output or in
   `rejects.jsonl`, however often the job is killed.
4. **Finish** (process 0, after all processes are done): `rejects.jsonl`, `metadata.json`, `stats.json` and
   the TFDS files (`audiopalm.tokens.dataset_info`), and a summary.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import json
import logging
import os
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from audiopalm.files.atomic import write_text_atomic
from audiopalm.tokenizers import AudioTokenizer, load_tokenizer
from audiopalm.tokens import dataset_info, schema
from audiopalm.tokens import shards as shards_lib
from data_pipeline import audio_source, batching
from data_pipeline.audio_prep import AudioPrepConfig, SegmentPlan, prepare
from data_pipeline.readers import make_reader
from data_pipeline.records import DUPLICATE_ID, AudioRef, Reject, Segment, Utterance

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
SHARD_RECORDS = "shards"
REJECTS = "rejects.jsonl"
_MATERIALIZE_SECONDS = 120.0  # utterances up to this long are decoded whole on the pool; longer ones lazily


@dataclasses.dataclass(frozen=True)
class JobConfig:
  """How the job cuts and runs the work.

  Attributes:
    utterances_per_shard: input items per shard (a shard is the unit of resumption and of multi-host work).
    decode_threads: threads preparing audio ahead of the devices.
    prefetch: utterances in flight on the pool.
    dataset_name: the name in the shard file names (and TFDS's).
    split: the TFDS split name.
  """

  utterances_per_shard: int = 1000
  decode_threads: int = 8
  prefetch: int = 32
  dataset_name: str = shards_lib.DEFAULT_DATASET_NAME
  split: str = shards_lib.DEFAULT_SPLIT

  def __post_init__(self):
    for name in ("utterances_per_shard", "decode_threads", "prefetch"):
      if getattr(self, name) < 1:
        raise ValueError(f"JobConfig.{name} must be >= 1, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------------- plan


def _item_json(item: Utterance | Reject) -> dict[str, Any]:
  if isinstance(item, Reject):
    return {"reject": item.to_json()}
  return {"utterance": dataclasses.asdict(item)}


def _item_from_json(data: Mapping[str, Any]) -> Utterance | Reject:
  if "reject" in data:
    return Reject(**data["reject"])
  u = dict(data["utterance"])
  u["audio"] = AudioRef(**u["audio"])
  if u.get("voice_activity") is not None:
    u["voice_activity"] = tuple(tuple(r) for r in u["voice_activity"])
  return Utterance(**u)


def _dedupe(items: Iterable[Utterance | Reject]) -> Iterator[Utterance | Reject]:
  seen: set[str] = set()
  for item in items:
    if isinstance(item, Utterance):
      if item.id in seen:
        item = Reject(item.id, str(item.audio), f"{DUPLICATE_ID}: an earlier utterance has this id")
      else:
        seen.add(item.id)
    yield item


def plan(reader_name: str, reader_options: Mapping[str, Any], output_dir: str) -> list[Utterance | Reject]:
  """The job's items: the manifest if an earlier run wrote one for the same reader, else the reader's items."""
  path = os.path.join(output_dir, MANIFEST)
  header = {"reader": reader_name, "options": json.loads(json.dumps(dict(reader_options), default=str))}
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      lines = f.read().splitlines()
    if lines and json.loads(lines[0]) == header:
      log.info("Read the plan of %d items from %s", len(lines) - 1, path)
      return [_item_from_json(json.loads(line)) for line in lines[1:]]
    raise ValueError(f"{path} was written for another input ({lines[0] if lines else 'empty'}); this run reads "
                     f"{header}: use another output_dir, or delete the old one")
  reader = make_reader(reader_name, **reader_options)
  start = time.time()
  items = list(_dedupe(tqdm(reader.utterances(), desc="listing", unit=" utt", mininterval=5, dynamic_ncols=True)))
  log.info("Listed %d items (%d rejected by the reader or as duplicates) in %.0f s", len(items),
           sum(isinstance(i, Reject) for i in items), time.time() - start)
  if jax.process_index() == 0:
    write_text_atomic(path, "".join(json.dumps(x) + "\n" for x in [header] + [_item_json(i) for i in items]))
  return items


def shard_items(items: Sequence[Utterance | Reject], per_shard: int) -> list[Sequence[Utterance | Reject]]:
  """Consecutive chunks of `per_shard` items (at least one shard, possibly empty)."""
  return [items[i:i + per_shard] for i in range(0, len(items), per_shard)] or [items[:0]]


# ---------------------------------------------------------------------------------------------------- shard


def _record_path(output_dir: str, shard_index: int, num_shards: int) -> str:
  return os.path.join(output_dir, SHARD_RECORDS, f"shard-{shard_index:05d}-of-{num_shards:05d}.json")


def _prepare(utterance: Utterance, config: AudioPrepConfig, loader: Any, data: bytes | None = None
             ) -> Reject | SegmentPlan | list:
  """On a pool thread: the Reject, or the pieces (decoded now for short utterances, lazily for long ones).

  `data`: the bytes of the utterance's archive member, when the job has read them already."""
  reader = functools.partial(audio_source.read_native, loader=loader, data=data)
  info = functools.partial(audio_source.ref_info, loader=loader, data=data)
  result = prepare(utterance, config, reader=reader, info=info)
  if isinstance(result, Reject) or result.duration > _MATERIALIZE_SECONDS:
    return result
  return list(result)


class _ArchiveStream:
  """Member bytes of compressed archives, read in one sequential pass per archive (members are asked for in
  archive order, as readers yield them); a plain tar or a member asked for out of order is read by random access
  in the worker (None here)."""

  def __init__(self):
    self.path: str | None = None
    self.members: Iterator[tuple[str, bytes]] | None = None

  def bytes_of(self, ref: AudioRef) -> bytes | None:
    if ref.member is None or not audio_source.is_archive(ref.path) or ref.path.lower().endswith(".tar"):
      return None
    if ref.path != self.path:
      self.path, self.members = ref.path, audio_source.iter_archive(ref.path)
    key = audio_source.member_key(ref.member)
    try:
      for name, data in self.members:
        if name == key:
          return data
    except audio_source.AudioDecodeError:  # a damaged archive: the worker's own read reports it per member
      pass
    self.path = None  # not found ahead: random access from the start
    return None


@dataclasses.dataclass
class StageTimes:
  """Where the run's wall time went: waiting for prepared audio (CPU stage) vs the tokenizers (device stage) vs
  writing; and the audio seconds and rejects seen so far (for the progress bar)."""

  waiting_for_audio: float = 0.0
  tokenizing: float = 0.0
  writing: float = 0.0
  audio_seconds: float = 0.0
  rejects: int = 0


def tokenized_segment(segment: Segment, semantic: Any, acoustic: Any) -> schema.TokenizedSegment:
  """A segment with its tokens (semantic [T_s] or [T_s, 1], acoustic [T_a, Q], already cut to their lengths).

  The utterance's transcript goes with the segment only when the segment is the whole utterance
  (`segment.single`): a piece of a cut utterance has no transcript of its own (None).
  """
  semantic = np.asarray(semantic)
  if semantic.ndim == 2 and semantic.shape[1] == 1:
    semantic = semantic[:, 0]
  utt = segment.utterance
  return schema.TokenizedSegment(id=segment.id, utterance_id=utt.id, segment_index=segment.index,
                                 source=str(utt.audio), start=float(segment.start), duration=float(segment.duration),
                                 transcript=utt.transcript if segment.single else None, language=utt.language,
                                 speaker=utt.speaker, semantic=semantic, acoustic=np.asarray(acoustic))


class _Tokenized:
  """Collects the tokens of one shard's segments, keyed by (item position, segment index)."""

  def __init__(self):
    self.results: dict[tuple[int, int], schema.TokenizedSegment] = {}

  def add(self, batch: batching.Batch, tokens: Mapping[str, list], keys: Mapping[int, tuple[int, int]]) -> None:
    for i, seg in enumerate(batch.segments):
      self.results[keys[id(seg)]] = tokenized_segment(seg, tokens["semantic"][i], tokens["acoustic"][i])


def run_shard(items: Sequence[Utterance | Reject], shard_index: int, num_shards: int, *, output_dir: str,
              tokenizers: Mapping[str, AudioTokenizer], info: schema.TokensInfo, prep: AudioPrepConfig,
              buckets: batching.BucketConfig, job: JobConfig, mesh: Any, loader: Any = None,
              progress: tqdm | None = None, times: StageTimes | None = None
              ) -> tuple[shards_lib.ShardStats, list[Reject]]:
  """Tokenizes one shard's items and commits the shard (see the module docstring); returns its stats, rejects."""
  times = times if times is not None else StageTimes()
  archives = _ArchiveStream()
  rejects: list[Reject] = []
  batcher = batching.Batcher(buckets, num_devices=mesh.size)
  collected = _Tokenized()
  keys: dict[int, tuple[int, int]] = {}

  def run(batch: batching.Batch) -> None:
    t = time.perf_counter()
    collected.add(batch, batching.tokenize(batch, tokenizers, mesh), keys)
    times.tokenizing += time.perf_counter() - t
    for seg in batch.segments:
      keys.pop(id(seg))

  def pieces_of(position: int, result: Any) -> Iterator[dict[int, Segment]]:
    for piece in result:
      keys[id(piece[max(piece)])] = (position, piece[max(piece)].index)
      yield piece

  with concurrent.futures.ThreadPoolExecutor(job.decode_threads) as pool:
    pending: collections.deque = collections.deque()
    queue = iter(enumerate(items))

    def submit_next() -> None:
      for position, item in queue:
        if isinstance(item, Reject):
          pending.append((position, item, None))
        else:
          data = archives.bytes_of(item.audio)
          pending.append((position, item, pool.submit(_prepare, item, prep, loader, data)))
        return

    for _ in range(job.prefetch):
      submit_next()
    while pending:
      position, item, future = pending.popleft()
      submit_next()
      t = time.perf_counter()
      result = item if future is None else future.result()
      times.waiting_for_audio += time.perf_counter() - t
      if isinstance(result, Reject):
        rejects.append(result)
        times.rejects += 1
      else:
        for piece in pieces_of(position, result):
          for batch in batcher.add(piece):
            run(batch)
      if not isinstance(result, Reject):
        times.audio_seconds += sum(p[max(p)].duration for p in result) if isinstance(result, list) else result.duration
      if progress is not None:
        progress.update(1)
        progress.set_postfix(hours=f"{times.audio_seconds / 3600:.3f}", rejects=times.rejects,
                             h_per_s=f"{times.audio_seconds / 3600 / max(progress.format_dict['elapsed'], 1e-9):.4f}",
                             refresh=False)
    for batch in batcher.flush():
      run(batch)

  def commit_record(stats: shards_lib.ShardStats) -> None:  # before the shard's rename: see the module docstring
    record = {"stats": stats.to_json(), "rejects": [r.to_json() for r in rejects]}
    write_text_atomic(_record_path(output_dir, shard_index, num_shards), json.dumps(record))

  t = time.perf_counter()
  with shards_lib.ShardWriter(output_dir, shard_index, num_shards, info, dataset_name=job.dataset_name,
                              split=job.split, before_rename=commit_record) as writer:
    for key in sorted(collected.results):
      writer.write(collected.results[key])
  times.writing += time.perf_counter() - t
  return writer.stats, rejects


# ------------------------------------------------------------------------------------------------------ job


def load_tokenizers(semantic: Sequence[Any], acoustic: Sequence[Any]) -> tuple[dict[str, AudioTokenizer],
                                                                                schema.TokensInfo]:
  """(kind, path[, options]) of each → the tokenizers and their TokensInfo."""
  loaded, specs = {}, {}
  for name, spec in (("semantic", semantic), ("acoustic", acoustic)):
    kind, path, options = spec[0], spec[1], dict(spec[2]) if len(spec) > 2 else {}
    loaded[name] = load_tokenizer(kind, path, **options)
    specs[name] = schema.TokenizerSpec.from_tokenizer(loaded[name], path)
  return loaded, schema.TokensInfo(semantic=specs["semantic"], acoustic=specs["acoustic"])


def _wait_for_everyone(tag: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(tag)


def finish(output_dir: str, num_shards: int, info: schema.TokensInfo, job: JobConfig,
           extra: Mapping[str, Any]) -> dict[str, Any]:
  """Process 0: rejects.jsonl, metadata/stats/TFDS files from every shard's record; returns the totals."""
  all_stats, rejects = [], []
  for i in range(num_shards):
    with tf.io.gfile.GFile(_record_path(output_dir, i, num_shards)) as f:
      record = json.load(f)
    all_stats.append(shards_lib.ShardStats.from_json(record["stats"]))
    rejects += [Reject(**r) for r in record["rejects"]]
  write_text_atomic(os.path.join(output_dir, REJECTS), "".join(json.dumps(r.to_json()) + "\n" for r in rejects))
  by_reason = collections.Counter(r.code for r in rejects)
  meta = dataset_info.write_dataset_info(output_dir, tokens=info, shards=all_stats, rejects=by_reason,
                                         dataset_name=job.dataset_name, extra_stats=dict(extra))
  totals = meta.totals.to_json()
  return {"shards": num_shards, "examples": totals.get("examples"), "hours": totals.get("hours"),
          "rejects": sum(by_reason.values()), "rejects_by_reason": dict(by_reason)}


def format_summary(summary: Mapping[str, Any]) -> str:
  """The end-of-job report: what is where, how much, how fast, what was left out and why."""
  out = summary["output_dir"]
  lines = [f"Tokenized into {out}: {summary.get('examples')} segments, {summary.get('hours', 0):.3f} h of audio in "
           f"{summary.get('shards')} shards ({summary['shards_this_run']} written by this run in {summary['seconds']} s"
           + (f", {summary['audio_hours_per_hour']}x real time" if summary.get("audio_hours_per_hour") else "") + ")",
           f"  rejected: {summary.get('rejects', 0)}"
           + "".join(f", {k} {v}" for k, v in sorted(summary.get("rejects_by_reason", {}).items()))
           + f" (details: {os.path.join(out, REJECTS)})",
           f"  metadata: {os.path.join(out, dataset_info.METADATA_FILE)}, {os.path.join(out, dataset_info.STATS_FILE)};"
           f" inspect: python -m tools.inspect_tokens --dir={out}"]
  return "\n".join(lines)


def tokenize_corpus(*, reader: str, reader_options: Mapping[str, Any], output_dir: str,
                    semantic: Sequence[Any], acoustic: Sequence[Any], prep: AudioPrepConfig = AudioPrepConfig(),
                    buckets: batching.BucketConfig = batching.BucketConfig(),
                    job: JobConfig = JobConfig()) -> dict[str, Any]:
  """Runs the job (see the module docstring); rerun the same call to resume. Returns a summary."""
  if prep.max_segment_seconds > buckets.bucket_seconds[-1]:
    raise ValueError(f"AudioPrepConfig.max_segment_seconds={prep.max_segment_seconds} is longer than the largest "
                     f"bucket ({buckets.bucket_seconds[-1]} s): raise BucketConfig.bucket_seconds or lower it")
  output_dir = os.fspath(output_dir)
  start = time.time()
  tokenizers, info = load_tokenizers(semantic, acoustic)
  prep = dataclasses.replace(prep, sample_rates=tuple(sorted({t.sample_rate for t in tokenizers.values()})))
  items = plan(reader, reader_options, output_dir)
  chunks = shard_items(items, job.utterances_per_shard)
  num_shards = len(chunks)
  mine = [i for i in range(num_shards) if i % jax.process_count() == jax.process_index()]
  todo = [i for i in mine if not shards_lib.is_complete(output_dir, i, num_shards, dataset_name=job.dataset_name,
                                                        split=job.split)]
  log.info("%d shards of %d items: %d for this process (%d of %d), %d already done", num_shards,
           job.utterances_per_shard, len(mine), jax.process_index(), jax.process_count(), len(mine) - len(todo))
  loader = getattr(make_reader(reader, **reader_options), "load", None) if todo else None
  mesh = batching.local_mesh()
  compiled = batching.shapes(buckets, mesh.size, [t.sample_rate for t in tokenizers.values()])
  log.info("The tokenizers run on %d batch shapes (batch, samples): %s", len(compiled), compiled)
  with tqdm(total=sum(len(chunks[i]) for i in todo), unit=" utt", desc="tokenize", mininterval=5,
            dynamic_ncols=True) as bar:  # ETA by utterances; hours processed and hours/s in the postfix
    times = StageTimes()
    for i in todo:
      stats, rejects = run_shard(chunks[i], i, num_shards, output_dir=output_dir, tokenizers=tokenizers, info=info,
                                 prep=prep, buckets=buckets, job=job, mesh=mesh, loader=loader, progress=bar,
                                 times=times)
      log.info("Shard %d/%d: %d examples, %.2f h, %d rejects", i + 1, num_shards, stats.examples, stats.hours,
               len(rejects))
  _wait_for_everyone("data_pipeline.tokenize: all shards written")
  seconds = time.time() - start
  summary: dict[str, Any] = {"output_dir": output_dir, "shards_this_run": len(todo), "seconds": round(seconds, 1),
                             "stage_seconds": {k: round(v, 2) for k, v in dataclasses.asdict(times).items()}}
  if jax.process_index() == 0:
    summary.update(finish(output_dir, num_shards, info, job,
                          {"inputs": len(items), "semantic_tokenizer": info.semantic.identity,
                           "acoustic_tokenizer": info.acoustic.identity}))
    if summary.get("hours") and seconds > 0:
      summary["audio_hours_per_hour"] = round(summary["hours"] * 3600 / seconds, 1)
    log.info("%s", format_summary(summary))
  _wait_for_everyone("data_pipeline.tokenize: finished")
  return summary

