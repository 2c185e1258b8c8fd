"""The tokenization job: a corpus → sharded TFRecords of semantic + acoustic tokens, resumable, elastic.

    summary = tokenize_corpus(reader="librispeech", reader_options={"roots": ("gs://b/LibriSpeech",)},
                              output_dir="gs://bucket/tokens", semantic=("semantic", "...demo_semantic"),
                              acoustic=("codec", "...demo_codec"))

Any number of processes run the same call on the same output directory, started at any time, by any launcher
(a TPU pod, a SLURM array, N local processes; with or without a shared JAX coordinator); they share the work
through claims on the store (`data_pipeline.claims`), and a process killed at any time loses nothing.

1. **Plan** (`data_pipeline.plan`): the process that claims the planning lists and parses the corpus into
   `<out>/manifest.jsonl` (Utterance | Reject in the reader's order, written atomically); the others wait for it
   and read it. Items are cut into shards of `utterances_per_shard` consecutive items.
2. **Claim** (`claimed_shards`): a process claims the first shard that is neither complete nor held by a live
   claim, renews its lease while it works, and claims the next when done; a shard whose holder died (its lease
   expired) is taken over. With nothing left to claim it waits for the shards others hold, then finishes.
3. **Shard** (`run_shard`): each source is read once (a file whole, in one request; archives streamed once)
   and prepared on a thread pool (`audio_prep`: checks, decode, resample, cut, however long the recording, never
   on the main thread), a few utterances ahead of the devices; pieces are bucketed into fixed batch shapes
   (`batching`) and tokenized by both tokenizers on the local devices. Examples are written in item order
   (independent of batching) to a local staging file.
4. **Commit**: the shard's index, then `<out>/shards/<shard>.json` (its statistics and rejects), then the shard
   at its final name, exclusively (`audiopalm.tokens.shards`): a shard is done exactly when its TFRecord exists,
   and no shard is ever committed twice, so every input utterance ends up exactly once in the output or in
   `rejects.jsonl`, however often processes are killed, started late or taken over.
5. **Finish**: each process that sees every shard complete writes `rejects.jsonl`, `metadata.json`,
   `stats.json` and the TFDS files (`audiopalm.tokens.dataset_info`; the same bytes whoever writes them, each
   atomically), and every process writes its report `<out>/reports/<time>-<worker>.json`: the shards it wrote,
   its stage times, and its storage requests and bytes (`audiopalm.files.storage.counts`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import os
import queue
import threading
import time
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from tqdm import tqdm

from audiopalm.audio.io import AudioDecodeError
from audiopalm.files import storage
from audiopalm.semantic.unit_aligner import UnitAligner
from audiopalm.tokenizers import AudioTokenizer, load_tokenizer
from audiopalm.tokens import dataset_info, schema
from audiopalm.tokens import shards as shards_lib
from data_pipeline import audio_source, batching
from data_pipeline import plan as plan_lib
from data_pipeline.audio_prep import AudioPrepConfig, decode_reject, prepare
from data_pipeline.claims import Claims, Lease, LeaseConfig
from data_pipeline.readers import make_reader
from data_pipeline.records import UNSAFE_PATH, AudioRef, Reject, Segment, Utterance

log = logging.getLogger(__name__)

SHARD_RECORDS = "shards"
CLAIMS = "claims"  # the claims of the plan and of the shards (data_pipeline.claims)
REJECTS = "rejects.jsonl"
REPORTS = "reports"  # one JSON summary per process and run: what it did, its time, its storage requests and bytes
_PIECES_AHEAD = 4  # decoded pieces of one utterance that its pool thread may hold ready for the devices


@dataclasses.dataclass(frozen=True)
class JobConfig:
  """How the job cuts and runs the work.

  Attributes:
    utterances_per_shard: input items per shard (a shard is the unit of resumption and of multi-host work).
    decode_threads: threads preparing audio ahead of the devices.
    prefetch: utterances in flight on the pool.
    dataset_name: the name in the shard file names (and TFDS's).
    split: the TFDS split name.
    word_alignments: the word times of each transcribed segment (`schema` feature `alignments`), read from its
      semantic units (`audiopalm.semantic.unit_aligner`): 'auto' when the semantic tokenizer's units can be read
      as characters (a CTC encoder's k-means), 'on' (refuse to start otherwise), 'off'.
  """

  utterances_per_shard: int = 1000
  decode_threads: int = 8
  prefetch: int = 32
  dataset_name: str = shards_lib.DEFAULT_DATASET_NAME
  split: str = shards_lib.DEFAULT_SPLIT
  word_alignments: str = "auto"

  def __post_init__(self):
    for name in ("utterances_per_shard", "decode_threads", "prefetch"):
      if getattr(self, name) < 1:
        raise ValueError(f"JobConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.word_alignments not in ("auto", "on", "off"):
      raise ValueError(f"JobConfig.word_alignments {self.word_alignments!r}; choose 'auto', 'on' or 'off'")


# ---------------------------------------------------------------------------------------------------- shard


def _record_path(output_dir: str, shard_index: int, num_shards: int) -> str:
  return storage.join(output_dir, SHARD_RECORDS, f"shard-{shard_index:05d}-of-{num_shards:05d}.json")


_DONE = object()  # the end of one utterance's pieces in its queue


class _Stopped(Exception):
  """The shard is being abandoned (an error on the main thread): producers stop."""


def _put(pieces: queue.Queue, item: Any, stop: threading.Event) -> None:
  while True:
    try:
      pieces.put(item, timeout=0.2)
      return
    except queue.Full:
      if stop.is_set():
        raise _Stopped() from None


def _source_bytes(ref: AudioRef) -> bytes:
  """The bytes of a plain file or an archive member, read once (whole file: one request; member: one ranged
  read of a plain tar)."""
  if ref.member is not None:
    return audio_source.read_member(ref.path, ref.member)  # (raises AudioDecodeError itself)
  try:
    return storage.read_bytes(ref.path)
  except OSError as e:
    raise AudioDecodeError(str(ref), f"{type(e).__name__}: {e}") from e


def _produce(utterance: Utterance, config: AudioPrepConfig, loader: Any, data: bytes | AudioDecodeError | None,
             pieces: queue.Queue, stop: threading.Event) -> None:
  """On a pool thread: prepares one utterance and puts into `pieces` its Reject, or its duration then each of its
  pieces, decoded here (however long the recording), then _DONE; an unexpected error is put instead of _DONE.

  The source is read once: a plain file whole (one request), an archive member from the job's stream of its
  archive (`data`) or by one ranged read; every window and every piece is then decoded from memory."""
  try:
    if isinstance(data, AudioDecodeError):  # the archive's stream showed the member missing or unsafe
      _put(pieces, decode_reject(utterance, data), stop)
      _put(pieces, _DONE, stop)
      return
    if data is None and not audio_source.is_reader_ref(utterance.audio):
      try:
        data = _source_bytes(utterance.audio)
      except AudioDecodeError as e:
        _put(pieces, decode_reject(utterance, e), stop)
        _put(pieces, _DONE, stop)
        return
    reader = functools.partial(audio_source.read_native, loader=loader, data=data)
    info = functools.partial(audio_source.ref_info, loader=loader, data=data)
    result = prepare(utterance, config, reader=reader, info=info)
    if isinstance(result, Reject):
      _put(pieces, result, stop)
    else:
      _put(pieces, result.duration, stop)
      for piece in result:
        _put(pieces, piece, stop)
    _put(pieces, _DONE, stop)
  except _Stopped:
    pass
  except BaseException as e:  # pylint: disable=broad-except  # handed to the main thread, which raises it
    with contextlib.suppress(_Stopped):
      _put(pieces, e, stop)


class _ArchiveStream:
  """Member bytes of the archives a shard reads (plain or compressed, local or remote), each archive streamed
  once, front to back, reading only the members the shard wants.

  Members are usually asked for in archive order (readers yield them so). One asked for out of order was passed
  earlier and is served from the members kept while looking for another (as is one that several utterances
  share, windows of one file, until the last of them). One that is not in the archive, or is
  unsafe (a link, an escaping path), is known as such once the stream has passed the whole archive: its answer is
  the AudioDecodeError that reading it would raise. Only after a damaged archive's stream stops early is a member
  left to random access by the worker (None here), which reports why."""

  def __init__(self, items: Sequence[Utterance | Reject]):
    self.wanted: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)  # member → asks left
    for item in items:
      if isinstance(item, Utterance) and item.audio.member is not None and audio_source.is_archive(item.audio.path):
        self.wanted[item.audio.path][audio_source.member_key(item.audio.member)] += 1
    self.path: str | None = None
    self.members: Iterator[tuple[Any, bytes | None]] | None = None
    self.kept: dict[str, bytes] = {}  # members of `path` passed while looking for another, asked for later
    self.refused: dict[str, str] = {}  # unsafe members of `path` seen so far → why
    self.seen: dict[str, bool] = {}  # members of `path` handed out
    self.complete = False  # the stream of `path` reached its end without damage
    self.damaged = False  # the stream of `path` stopped at damage: members not seen are left to random access

  def _hand_out(self, key: str, data: bytes) -> bytes:
    """`data` for one utterance; kept for the shard's other utterances of the same member, if any."""
    asks = self.wanted[self.path]
    asks[key] -= 1
    if asks[key] > 0:
      self.kept[key] = data
    self.seen[key] = True
    return data

  def bytes_of(self, ref: AudioRef) -> bytes | AudioDecodeError | None:
    if ref.member is None or not audio_source.is_archive(ref.path):
      return None
    key = audio_source.member_key(ref.member)
    if ref.path != self.path:
      wanted = self.wanted[ref.path]
      self.path, self.kept, self.refused, self.seen = ref.path, {}, {}, {}
      self.complete = self.damaged = False
      self.members = audio_source.scan_archive(ref.path, read=lambda name: name in wanted)
    if key in self.kept:
      return self._hand_out(key, self.kept.pop(key))
    if self.damaged:
      return None
    if not self.complete:
      try:
        for info, data in self.members:
          name = audio_source.member_key(info.name)
          if data is None:
            reason = audio_source.unsafe_member(info)
            if reason:
              self.refused.setdefault(name, reason)
            continue
          if name == key:
            return self._hand_out(key, data)
          self.kept[name] = data
        self.complete = True
      except audio_source.ARCHIVE_ERRORS:  # a damaged archive: the worker's own read reports it per member
        self.damaged = True
        return None
    where = str(AudioRef(ref.path, ref.member))
    if self.seen.get(key):  # handed out already, for as many utterances as the shard has: asked once more
      return None
    if key in self.refused:
      return AudioDecodeError(where, f"{UNSAFE_PATH}: {self.refused[key]}")
    return AudioDecodeError(where, f"no member {ref.member!r} in the archive")


@dataclasses.dataclass
class StageTimes:
  """Where the run's wall time went: waiting for prepared audio (CPU stage) vs the tokenizers (device stage) vs
  writing; and the audio seconds and rejects seen so far (for the progress bar)."""

  waiting_for_audio: float = 0.0
  tokenizing: float = 0.0
  writing: float = 0.0
  audio_seconds: float = 0.0
  rejects: int = 0


def tokenized_segment(segment: Segment, semantic: Any, acoustic: Any,
                      aligner: UnitAligner | None = None) -> schema.TokenizedSegment:
  """A segment with its tokens (semantic [T_s] or [T_s, 1], acoustic [T_a, Q], already cut to their lengths).

  The utterance's transcript goes with the segment only when the segment is the whole utterance
  (`segment.single`): a piece of a cut utterance has no transcript of its own (None). With `aligner`, a
  transcribed segment gets the word times its semantic units give (None where they cannot be aligned).
  """
  semantic = np.asarray(semantic)
  if semantic.ndim == 2 and semantic.shape[1] == 1:
    semantic = semantic[:, 0]
  utt = segment.utterance
  transcript = utt.transcript if segment.single else None
  alignments = aligner.word_times(semantic, transcript) if aligner is not None and transcript else None
  return schema.TokenizedSegment(id=segment.id, utterance_id=utt.id, segment_index=segment.index,
                                 source=str(utt.audio), start=float(segment.start), duration=float(segment.duration),
                                 transcript=transcript, language=utt.language, speaker=utt.speaker,
                                 semantic=semantic, acoustic=np.asarray(acoustic), alignments=alignments)


class _Tokenized:
  """Collects the tokens of one shard's segments, keyed by (item position, segment index)."""

  def __init__(self, aligner: UnitAligner | None = None):
    self.results: dict[tuple[int, int], schema.TokenizedSegment] = {}
    self.aligner = aligner

  def add(self, batch: batching.Batch, tokens: Mapping[str, list], keys: Mapping[int, tuple[int, int]]) -> None:
    for i, seg in enumerate(batch.segments):
      self.results[keys[id(seg)]] = tokenized_segment(seg, tokens["semantic"][i], tokens["acoustic"][i],
                                                      self.aligner)


def run_shard(items: Sequence[Utterance | Reject], shard_index: int, num_shards: int, *, output_dir: str,
              tokenizers: Mapping[str, AudioTokenizer], info: schema.TokensInfo, prep: AudioPrepConfig,
              buckets: batching.BucketConfig, job: JobConfig, mesh: Any, loader: Any = None,
              progress: tqdm | None = None, times: StageTimes | None = None, lease: Lease | None = None,
              aligner: UnitAligner | None = None) -> tuple[shards_lib.ShardStats, list[Reject]]:
  """Tokenizes one shard's items and commits the shard (see the module docstring); returns its stats, rejects.
  With `aligner`, transcribed segments get word times (`tokenized_segment`)."""
  times = times if times is not None else StageTimes()
  archives = _ArchiveStream(items)
  rejects: list[Reject] = []
  batcher = batching.Batcher(buckets, num_devices=mesh.size)
  collected = _Tokenized(aligner)
  keys: dict[int, tuple[int, int]] = {}

  def run(batch: batching.Batch) -> None:
    t = time.perf_counter()
    collected.add(batch, batching.tokenize(batch, tokenizers, mesh), keys)
    times.tokenizing += time.perf_counter() - t
    for seg in batch.segments:
      keys.pop(id(seg))

  stop = threading.Event()
  with concurrent.futures.ThreadPoolExecutor(job.decode_threads) as pool:
    pending: collections.deque = collections.deque()  # (position, item, its queue of pieces or None)
    queue_ = iter(enumerate(items))

    def submit_next() -> None:
      for position, item in queue_:
        if isinstance(item, Reject):
          pending.append((position, item, None))
        else:
          data = archives.bytes_of(item.audio)
          pieces: queue.Queue = queue.Queue(maxsize=_PIECES_AHEAD)
          pool.submit(_produce, item, prep, loader, data, pieces, stop)
          pending.append((position, item, pieces))
        return

    def take(pieces: queue.Queue) -> Any:
      t = time.perf_counter()
      got = pieces.get()
      times.waiting_for_audio += time.perf_counter() - t
      if isinstance(got, BaseException):
        raise got
      return got

    try:
      for _ in range(job.prefetch):
        submit_next()
      while pending:
        position, item, pieces = pending.popleft()
        submit_next()
        first = item if pieces is None else take(pieces)
        if isinstance(first, Reject):
          rejects.append(first)
          times.rejects += 1
          if pieces is not None:
            take(pieces)  # _DONE
        else:
          times.audio_seconds += first
          while (piece := take(pieces)) is not _DONE:
            keys[id(piece[max(piece)])] = (position, piece[max(piece)].index)
            for batch in batcher.add(piece):
              run(batch)
        if progress is not None:
          progress.update(1)
          progress.set_postfix(hours=f"{times.audio_seconds / 3600:.3f}", rejects=times.rejects,
                               h_per_s=f"{times.audio_seconds / 3600 / max(progress.format_dict['elapsed'], 1e-9):.4f}",
                               refresh=False)
      for batch in batcher.flush():
        run(batch)
    finally:
      stop.set()  # producers blocked on a full queue give up (only after an error here)
      pool.shutdown(wait=False, cancel_futures=True)  # and the ones not started yet never start

  def commit_record(stats: shards_lib.ShardStats) -> None:  # before the shard's rename: see the module docstring
    if lease is not None and lease.lost():  # (a shard committed meanwhile: the writer's exclusive commit refuses it)
      raise shards_lib.ShardExistsError(f"shard {shard_index} was taken over by another process")
    record = {"stats": stats.to_json(), "rejects": [r.to_json() for r in rejects]}
    storage.write_text(_record_path(output_dir, shard_index, num_shards), json.dumps(record))

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


def word_aligner(semantic: AudioTokenizer, setting: str) -> UnitAligner | None:
  """The aligner `JobConfig.word_alignments` asks for: None for 'off', or for 'auto' when the semantic
  tokenizer's units cannot be read as characters; 'on' then fails, saying why."""
  if setting == "off":
    return None
  try:
    return UnitAligner.from_tokenizer(semantic)
  except ValueError as e:
    if setting == "on":
      raise ValueError(f"JobConfig.word_alignments='on': {e}") from e
    log.info("No word alignments: %s", e)
    return None


def _wait_for_everyone(tag: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(tag)


def finish(output_dir: str, num_shards: int, info: schema.TokensInfo, job: JobConfig,
           extra: Mapping[str, Any]) -> dict[str, Any]:
  """rejects.jsonl, metadata/stats/TFDS files from every shard's record (read in parallel); returns the totals."""
  all_stats, rejects = [], []
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    records = list(pool.map(lambda i: json.loads(storage.read_text(_record_path(output_dir, i, num_shards))),
                            range(num_shards)))
  sizes = storage.list_sizes(output_dir)
  for record in records:
    stats = shards_lib.ShardStats.from_json(record["stats"])
    if sizes.get(stats.filename) != stats.num_bytes:  # a record written by an attempt that did not commit
      raise RuntimeError(f"{output_dir}: {SHARD_RECORDS}/ holds a record of {stats.filename} ({stats.num_bytes} bytes) "
                         f"that does not describe the shard there ({sizes.get(stats.filename)} bytes): delete both "
                         "and rerun the job to redo that shard")
    all_stats.append(stats)
    rejects += [Reject(**r) for r in record["rejects"]]
  storage.write_text(storage.join(output_dir, REJECTS), "".join(json.dumps(r.to_json()) + "\n" for r in rejects))
  by_reason = collections.Counter(r.code for r in rejects)
  meta = dataset_info.write_dataset_info(output_dir, tokens=info, shards=all_stats, rejects=by_reason,
                                         dataset_name=job.dataset_name, extra_stats=dict(extra))
  totals = meta.totals.to_json()
  return {"shards": num_shards, "examples": totals.get("examples"), "hours": totals.get("hours"),
          "rejects": sum(by_reason.values()), "rejects_by_reason": dict(by_reason)}


def format_summary(summary: Mapping[str, Any]) -> str:
  """The end-of-job report: what is where, how much, how fast, what was left out and why."""
  out = summary["output_dir"]
  if "examples" not in summary:  # a process of a coordinated run other than process 0
    return (f"Wrote {summary['shards_this_run']} shards into {out} in {summary['seconds']} s; process 0 writes the "
            f"dataset's metadata")
  lines = [f"Tokenized into {out}: {summary.get('examples')} segments, {summary.get('hours', 0):.3f} h of audio in "
           f"{summary.get('shards')} shards ({summary['shards_this_run']} written by this run in {summary['seconds']} s"
           + (f", {summary['audio_hours_per_hour']}x real time" if summary.get("audio_hours_per_hour") else "") + ")",
           f"  storage (this process): {summary['io']['requests']} requests, "
           f"{summary['io']['bytes_read'] / 1e6:.1f} MB read, {summary['io']['bytes_written'] / 1e6:.1f} MB written",
           f"  rejected: {summary.get('rejects', 0)}"
           + "".join(f", {k} {v}" for k, v in sorted(summary.get("rejects_by_reason", {}).items()))
           + f" (details: {os.path.join(out, REJECTS)})",
           f"  metadata: {os.path.join(out, dataset_info.METADATA_FILE)}, {os.path.join(out, dataset_info.STATS_FILE)};"
           f" inspect: python -m tools.inspect_tokens --dir={out}"]
  return "\n".join(lines)


def shard_key(shard_index: int, num_shards: int) -> str:
  """The claim key of a shard."""
  return f"shard-{shard_index:05d}-of-{num_shards:05d}"


def claimed_shards(output_dir: str, num_shards: int, job: JobConfig, claims: Claims) -> Iterator[tuple[int, Lease]]:
  """Shards for this process, claimed one at a time, until every shard is complete (see the module docstring).

  Each round: one listing of the complete shards, one of the claims (and a read of each live claim); the first
  shard that is neither complete nor held by a live claim is claimed. With nothing to claim, the process waits
  for the shards others hold (`LeaseConfig.poll_seconds`), taking over any whose claim expires, and gives up
  after `LeaseConfig.wait_seconds` without progress (no shard completed, no claim changed hands)."""
  config = claims.config
  last_change, last_seen = time.monotonic(), None
  while True:
    complete = set(shards_lib.list_complete_shards(output_dir, num_shards, dataset_name=job.dataset_name,
                                                   split=job.split))
    keys = {shard_key(i, num_shards): i for i in range(num_shards) if i not in complete}
    if not keys:
      return
    states = claims.scan(set(keys))
    for key, i in keys.items():
      state = states.get(key)
      if state is not None and not state.expired(claims.clock()):
        continue
      lease = claims.try_claim(key, state, scanned=True)
      if lease is None:
        continue
      if shards_lib.is_complete(output_dir, i, num_shards, dataset_name=job.dataset_name, split=job.split):
        lease.release()  # committed just before the claim
        continue
      yield i, lease
      last_change = time.monotonic()
      break
    else:
      seen = (len(complete), sorted((k, s.generation, s.owner) for k, s in states.items()))
      if seen != last_seen:
        last_seen, last_change = seen, time.monotonic()
        log.info("Waiting for %d shards held by other processes: %s", len(keys),
                 ", ".join(f"{k} ({s.owner})" for k, s in sorted(states.items())[:8]) + (" ..." if len(states) > 8 else ""))
      elif time.monotonic() - last_change > config.wait_seconds:
        raise TimeoutError(
            f"{len(keys)} shards of {output_dir} did not complete and no claim changed hands for "
            f"{config.wait_seconds:.0f} s: {', '.join(sorted(keys)[:10])}; holders: "
            f"{sorted({s.owner for s in states.values()})}. A live holder is stuck, or LeaseConfig.wait_seconds is "
            "shorter than a shard takes: rerun to go on")
      time.sleep(config.poll_seconds)


def tokenize_corpus(*, reader: str, reader_options: Mapping[str, Any], output_dir: str,
                    semantic: Sequence[Any], acoustic: Sequence[Any], prep: AudioPrepConfig = AudioPrepConfig(),
                    buckets: batching.BucketConfig = batching.BucketConfig(),
                    job: JobConfig = JobConfig(), lease: LeaseConfig = LeaseConfig()) -> dict[str, Any]:
  """Runs the job (see the module docstring); rerun the same call to resume, start more processes to help.
  Returns this process's summary (with the dataset's totals)."""
  if prep.max_segment_seconds > buckets.bucket_seconds[-1]:
    raise ValueError(f"AudioPrepConfig.max_segment_seconds={prep.max_segment_seconds} is longer than the largest "
                     f"bucket ({buckets.bucket_seconds[-1]} s): raise BucketConfig.bucket_seconds or lower it")
  output_dir = os.fspath(output_dir)
  start, io_start = time.time(), storage.counts()
  tokenizers, info = load_tokenizers(semantic, acoustic)
  aligner = word_aligner(tokenizers["semantic"], job.word_alignments)
  prep = dataclasses.replace(prep, sample_rates=tuple(sorted({t.sample_rate for t in tokenizers.values()})))
  claims = Claims(storage.join(output_dir, CLAIMS), lease)
  items = plan_lib.plan(reader, reader_options, output_dir, claims)
  chunks = plan_lib.shard_items(items, job.utterances_per_shard)
  num_shards = len(chunks)
  complete = shards_lib.list_complete_shards(output_dir, num_shards, dataset_name=job.dataset_name, split=job.split)
  log.info("%d shards of %d items, %d complete already; this process (%s) claims shards until none is left",
           num_shards, job.utterances_per_shard, len(complete), claims.owner)
  loader = getattr(make_reader(reader, **reader_options), "load", None) if len(complete) < num_shards else None
  mesh = batching.local_mesh()
  compiled = batching.shapes(buckets, mesh.size, [t.sample_rate for t in tokenizers.values()])
  log.info("The tokenizers run on %d batch shapes (batch, samples): %s", len(compiled), compiled)
  written: list[int] = []
  with tqdm(total=sum(len(chunks[i]) for i in range(num_shards) if i not in set(complete)), unit=" utt",
            desc="tokenize", mininterval=5, dynamic_ncols=True) as bar:  # ETA by utterances (all processes' share)
    times = StageTimes()
    for i, held in claimed_shards(output_dir, num_shards, job, claims):
      try:
        with held.renewing():
          stats, rejects = run_shard(chunks[i], i, num_shards, output_dir=output_dir, tokenizers=tokenizers,
                                     info=info, prep=prep, buckets=buckets, job=job, mesh=mesh, loader=loader,
                                     progress=bar, times=times, lease=held, aligner=aligner)
      except shards_lib.ShardExistsError:
        log.warning("Discarded shard %d/%d: another process committed it (this one's claim was taken over)",
                    i + 1, num_shards)
        continue
      finally:
        held.release()  # committed, or failed here (another process may take it at once)
      written.append(i)
      log.info("Shard %d/%d: %d examples, %.2f h, %d rejects", i + 1, num_shards, stats.examples, stats.hours,
               len(rejects))
  _wait_for_everyone("data_pipeline.tokenize: all shards written")
  seconds = time.time() - start
  summary: dict[str, Any] = {"output_dir": output_dir, "worker": claims.owner, "shards_this_run": len(written),
                             "shards_written": written, "seconds": round(seconds, 1),
                             "stage_seconds": {k: round(v, 2) for k, v in dataclasses.asdict(times).items()}}
  # Every process that sees the shards complete writes the dataset's files (the same bytes, each atomically);
  # with a JAX coordinator, which has just made them all wait for each other, process 0 alone.
  if jax.process_count() == 1 or jax.process_index() == 0:
    summary.update(finish(output_dir, num_shards, info, job,
                          {"inputs": len(items), "semantic_tokenizer": info.semantic.identity,
                           "acoustic_tokenizer": info.acoustic.identity}))
    claims.clear()
  if written and seconds > 0:  # this process's audio per second of its run (real-time factor)
    summary["audio_hours_per_hour"] = round(times.audio_seconds / seconds, 1)
  summary["io"] = (storage.counts() - io_start).to_json()
  storage.write_text(storage.join(output_dir, REPORTS, f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(start))}-"
                                  f"{claims.owner.replace(':', '-')}.json"), json.dumps(summary, indent=1) + "\n")
  log.info("%s", format_summary(summary))
  _wait_for_everyone("data_pipeline.tokenize: finished")
  return summary
