"""Fit a semantic tokenizer: encoder features of a corpus → standardization statistics → k-means → directory.

    fit_semantic_tokenizer(encoder_path="/models/hubert_base", layer=6,
                           audio_paths=["/data/LibriSpeech/train-clean-100"], output_dir="/out/semantic",
                           kmeans=KMeansConfig(num_clusters=1024))

The HuBERT recipe, in bounded memory:
1. Every audio file is decoded at the encoder's rate (corrupt files are logged with the reason and skipped),
   cut into segments of at most `segment_seconds`, and batched by length bucket (a few fixed shapes, so the
   encoder compiles a handful of times). The chosen layer's features are averaged to the token rate.
2. Statistics (per-dimension mean and variance) accumulate over every frame; a seeded random fraction
   (`sample_fraction`) of the frames is written to `<output_dir>.features/` as float32 .npy chunks.
3. Mini-batch k-means (`audiopalm.semantic.kmeans`, data-parallel over the local devices) reads random rows of
   those chunks through memory maps, standardized, so the sample never needs to fit in memory.
4. The tokenizer directory (`audiopalm.semantic.tokenizer`) is written atomically and the scratch features
   deleted; files that could not be decoded are listed with the reason in `skipped_files.tsv` there. A rerun finds a finished tokenizer and refuses to overwrite it.

With `copy_encoder=True` the encoder directory is copied into the tokenizer (`encoder/`), which keeps small
encoders (the embedded default) next to their k-means.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import time
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from etils import epath
from tqdm import tqdm

from audiopalm.audio.io import AudioDecodeError, list_audio_files, load_audio
from audiopalm.files import storage
from audiopalm.semantic import kmeans as kmeans_lib
from audiopalm.semantic.standardize import FeatureStats
from audiopalm.semantic.tokenizer import (SPEC_FILE, SemanticTokenizer, SemanticTokenizerSpec, encoder_identity,
                                          pool_frames, save_semantic_tokenizer)
from audiopalm.ssl.encoder import SslEncoder
from audiopalm.ssl.load import load_encoder

log = logging.getLogger(__name__)

_CHUNK_ROWS = 200_000  # rows per scratch .npy file
_DECODE_THREADS = 4
SKIPPED_FILE = "skipped_files.tsv"  # path<TAB>reason of every file left out of the fit


@dataclasses.dataclass(frozen=True)
class FeatureDumpConfig:
  """How audio becomes feature rows for the fit.

  Attributes:
    segment_seconds: recordings are cut into segments of at most this long (bounded encoder memory).
    batch_seconds: audio seconds per encoder batch (padded); each batch holds segments of one length bucket.
    bucket_seconds: segment lengths are padded up to a multiple of this (and to a power of two number of
      multiples), so the encoder compiles for a few shapes only.
    min_seconds: shorter files are skipped.
    sample_fraction: fraction of frames kept for k-means (statistics use every frame).
    max_hours: stop reading audio after this much (None: all of it).
    seed: which frames are sampled.
  """

  segment_seconds: float = 30.0
  batch_seconds: float = 240.0
  bucket_seconds: float = 1.0
  min_seconds: float = 0.1
  sample_fraction: float = 1.0
  max_hours: float | None = None
  seed: int = 0

  def __post_init__(self):
    if not 0 < self.sample_fraction <= 1:
      raise ValueError(f"FeatureDumpConfig.sample_fraction must be in (0, 1], got {self.sample_fraction}")
    if self.segment_seconds <= 0 or self.bucket_seconds <= 0 or self.batch_seconds < self.segment_seconds:
      raise ValueError("FeatureDumpConfig: need segment_seconds > 0, bucket_seconds > 0 and batch_seconds >= "
                       f"segment_seconds, got {self.segment_seconds}, {self.bucket_seconds}, {self.batch_seconds}")

  def bucket(self, samples: int, rate: int) -> int:
    """Padded length of a segment: bucket_seconds × a power of two, capped at segment_seconds."""
    unit = round(self.bucket_seconds * rate)
    cap = math.ceil(self.segment_seconds * rate / unit) * unit
    return min(cap, bucket_length(samples, unit))


def bucket_length(samples: int, unit: int) -> int:
  """`samples` padded up to `unit` × a power of two: batches of a few shapes, so an encoder compiles a few times."""
  return unit * 2 ** math.ceil(math.log2(max(1, math.ceil(samples / unit))))


def segments(waveform: np.ndarray, rate: int, segment_seconds: float) -> list[np.ndarray]:
  """Consecutive pieces of at most segment_seconds, of near-equal length (no tiny last piece)."""
  limit = max(1, round(segment_seconds * rate))
  count = max(1, math.ceil(len(waveform) / limit))
  bounds = np.linspace(0, len(waveform), count + 1).round().astype(int)
  return [waveform[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class _FeatureDump:
  """Scratch float32 chunks of sampled feature rows, and the statistics of every row."""

  def __init__(self, directory: epath.Path, dim: int, sample_fraction: float, seed: int):
    self.directory, self.sample_fraction = directory, sample_fraction
    self.rng = np.random.default_rng(seed)
    self.stats = FeatureStats.empty(dim)
    self.buffer: list[np.ndarray] = []
    self.buffered = 0
    self.files: list[epath.Path] = []
    self.rows = 0

  def add(self, rows: np.ndarray) -> None:  # [n, D]
    self.stats = self.stats.update(rows)
    if self.sample_fraction < 1:
      rows = rows[self.rng.random(rows.shape[0]) < self.sample_fraction]
    self.buffer.append(np.asarray(rows, np.float32))
    self.buffered += rows.shape[0]
    if self.buffered >= _CHUNK_ROWS:
      self.flush()

  def flush(self) -> None:
    if not self.buffered:
      return
    path = self.directory / f"features_{len(self.files):05d}.npy"
    with path.open("wb") as f:
      np.save(f, np.concatenate(self.buffer))
    self.files.append(path)
    self.rows += self.buffered
    self.buffer, self.buffered = [], 0

  def random_batches(self, batch_size: int, steps: int, seed: int) -> Iterator[np.ndarray]:
    """`steps` batches of rows drawn uniformly with replacement, standardized: [batch_size, D] float32."""
    arrays = [np.load(str(p), mmap_mode="r") for p in self.files]
    offsets = np.cumsum([0] + [a.shape[0] for a in arrays])
    rng = np.random.default_rng(seed)
    for _ in range(steps):
      rows = np.sort(rng.integers(0, self.rows, batch_size))
      which = np.searchsorted(offsets, rows, side="right") - 1
      batch = np.concatenate([arrays[c][rows[which == c] - offsets[c]] for c in np.unique(which)])
      yield self.stats.apply(batch)


def decode_all(files: Sequence[str], rate: int, failures: list[tuple[str, str]]) -> Iterator[tuple[str, np.ndarray]]:
  """(path, waveform) in file order, decoded on a thread pool a few files ahead; failures recorded and skipped."""
  with concurrent.futures.ThreadPoolExecutor(_DECODE_THREADS) as pool:
    futures = [pool.submit(load_audio, f, rate) for f in files[:2 * _DECODE_THREADS]]
    for i, path in enumerate(files):
      if i + 2 * _DECODE_THREADS < len(files):
        futures.append(pool.submit(load_audio, files[i + 2 * _DECODE_THREADS], rate))
      try:
        yield path, futures[i].result()
      except AudioDecodeError as e:
        log.warning("Skipping %s: %s", path, e.reason)
        failures.append((path, str(e)))
      futures[i] = None  # free the waveform


def dump_features(encoder: SslEncoder, layer: int, downsample: int, files: Sequence[str], cfg: FeatureDumpConfig,
                  directory: epath.Path) -> tuple[_FeatureDump, dict[str, Any]]:
  """Runs the encoder over every file (step 1 and 2 of the module docstring)."""
  rate = encoder.sample_rate
  dump = _FeatureDump(directory, encoder.dim, cfg.sample_fraction, cfg.seed)
  pending: dict[int, list[np.ndarray]] = {}  # bucket length → segments waiting for a batch
  failures: list[tuple[str, str]] = []
  seconds, files_done = 0.0, 0
  pooled = jax.jit(pool_frames, static_argnums=2)

  def run(bucket: int, batch: list[np.ndarray]) -> None:
    waves = np.zeros((len(batch), bucket), np.float32)
    for i, w in enumerate(batch):
      waves[i, :len(w)] = w
    lengths = np.array([len(w) for w in batch], np.int32)
    features, frames = encoder.features(waves, lengths, layer)
    features, frames = pooled(features, frames, downsample)
    features, frames = np.asarray(features), np.asarray(frames)
    dump.add(np.concatenate([features[i, :frames[i]] for i in range(len(batch))]))

  limit = None if cfg.max_hours is None else cfg.max_hours * 3600
  with tqdm(total=limit or None, unit="s audio", desc="features", dynamic_ncols=True, mininterval=5) as bar:
    for path, waveform in decode_all(files, rate, failures):
      if len(waveform) < cfg.min_seconds * rate:
        failures.append((path, f"shorter than min_seconds={cfg.min_seconds}"))
        continue
      for piece in segments(waveform, rate, cfg.segment_seconds):
        bucket = cfg.bucket(len(piece), rate)
        group = pending.setdefault(bucket, [])
        group.append(piece)
        if len(group) * bucket >= cfg.batch_seconds * rate:
          run(bucket, group)
          pending[bucket] = []
      seconds += len(waveform) / rate
      files_done += 1
      bar.update(len(waveform) / rate)
      bar.set_postfix(files=files_done, hours=f"{seconds / 3600:.2f}", failed=len(failures), refresh=False)
      if limit is not None and seconds >= limit:
        break
    for bucket, group in pending.items():
      if group:
        run(bucket, group)
  dump.flush()
  return dump, {"files": files_done, "failed": failures, "audio_hours": seconds / 3600,
                "frames": int(dump.stats.count), "sampled_frames": dump.rows}


def fit_semantic_tokenizer(*, encoder_path: str, layer: int, audio_paths: Sequence[str], output_dir: str,
                           downsample: int = 2, kmeans: kmeans_lib.KMeansConfig = kmeans_lib.KMeansConfig(),
                           features: FeatureDumpConfig = FeatureDumpConfig(), copy_encoder: bool = False,
                           keep_features: bool = False) -> dict[str, Any]:
  """Fits standardization + k-means on `layer` features of the audio and writes a tokenizer to `output_dir`.

  Returns a summary (audio hours, frames, k-means steps and final inertia, the tokenizer's identity).
  """
  out = epath.Path(output_dir)
  if "://" in str(output_dir):
    raise ValueError(f"output_dir {output_dir!r}: fit on local disk (the sampled features beside it are memory-"
                     "mapped), then copy the tokenizer directory to object storage (gcloud storage cp -r)")
  if storage.is_file(out / SPEC_FILE):
    raise FileExistsError(f"{out / SPEC_FILE} exists: a semantic tokenizer was already fitted there (delete it or "
                          "choose another output_dir)")
  start = time.time()
  encoder = load_encoder(encoder_path)
  if not 0 <= layer <= encoder.num_layers:
    raise ValueError(f"layer={layer} is not in 0..{encoder.num_layers} for the encoder at {encoder_path}")
  if downsample < 1:
    raise ValueError(f"downsample must be >= 1, got {downsample}")
  files = list_audio_files(audio_paths)
  if not files:
    raise ValueError(f"no audio files in {list(audio_paths)}")
  log.info("Fitting a semantic tokenizer: %s layer %d at %g Hz, K=%d, on %d files", encoder.name, layer,
           encoder.frame_rate / downsample, kmeans.num_clusters, len(files))

  scratch = epath.Path(str(out).rstrip("/") + ".features")
  if scratch.exists():
    scratch.rmtree()
  scratch.mkdir(parents=True)
  try:
    dump, summary = dump_features(encoder, layer, downsample, files, features, scratch)
    if dump.rows < kmeans.num_clusters:
      raise ValueError(f"only {dump.rows} feature frames were sampled, fewer than num_clusters={kmeans.num_clusters}: "
                       "use more audio, a larger sample_fraction or fewer clusters")
    log.info("Features: %.2f h of audio, %d frames (%d sampled) in %.0f s; %d files skipped", summary["audio_hours"],
             summary["frames"], summary["sampled_frames"], time.time() - start, len(summary["failed"]))

    steps = kmeans.max_iters + math.ceil(kmeans.sample_size / kmeans.batch_size)  # the init sample is reused first
    with tqdm(total=kmeans.max_iters, desc="k-means", unit="step", dynamic_ncols=True, mininterval=5) as bar:
      def progress(step: int, inertia: float) -> None:
        bar.update(1)
        bar.set_postfix(inertia=f"{inertia:.4g}", refresh=False)

      result = kmeans_lib.fit(dump.random_batches(kmeans.batch_size, steps, kmeans.seed), kmeans,
                              progress=progress)

    encoder_record = encoder_path
    if copy_encoder:
      target = out / "encoder"
      target.mkdir(parents=True, exist_ok=True)
      for item in epath.Path(encoder_path).iterdir():
        if item.is_file():
          item.copy(target / item.name, overwrite=True)
      encoder_record = "encoder"
    spec = SemanticTokenizerSpec(
        encoder_path=encoder_record, encoder_identity=encoder_identity(encoder), layer=layer,
        downsample=downsample, num_clusters=kmeans.num_clusters, dim=encoder.dim,
        kmeans={"config": dataclasses.asdict(kmeans), "fit": result.summary(),
                "audio_hours": round(summary["audio_hours"], 4), "frames": summary["frames"],
                "sampled_frames": summary["sampled_frames"], "audio_paths": list(audio_paths)})
    save_semantic_tokenizer(str(out), spec, dump.stats, result.centroids)
    if summary["failed"]:
      storage.write_text(out / SKIPPED_FILE, "".join(f"{path}\t{reason}\n" for path, reason in summary["failed"]))
      log.warning("%d files were skipped; they are listed with the reasons in %s", len(summary["failed"]),
                  out / SKIPPED_FILE)
  finally:
    if not keep_features and scratch.exists():
      scratch.rmtree()
  tokenizer = SemanticTokenizer(encoder, spec, dump.stats, result.centroids)
  summary.update(output_dir=str(out), identity=tokenizer.identity, kmeans_steps=result.num_steps,
                 final_inertia=float(result.inertia[-1]) if result.num_steps else None,
                 seconds=round(time.time() - start, 1), failed=len(summary["failed"]))
  log.info("Wrote %s (%s): k-means %d steps, final inertia %.4g, %.0f s", out, tokenizer.identity,
           result.num_steps, summary["final_inertia"] or float("nan"), summary["seconds"])
  return summary
