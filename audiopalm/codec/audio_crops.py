"""The codec trainer's input: random fixed-length crops of audio files, with random gain.

Every file is decoded and resampled once, into memory, when the iterator is
made: this source is for small and medium corpora (an hour of 16 kHz audio is
about 230 MB of float32). The tokenization pipeline streams its audio instead.

Row order: global row j of step i is row r = i * global_batch_size + j of an
endless sequence that visits every file once per epoch, in a seeded order that
is reshuffled every epoch. Its crop start and gain are drawn from
(seed, i, j). A batch is therefore a pure function of (seed, step), and the
hosts' row ranges concatenate to the global batch whatever the host count.

A file shorter than the crop is zero-padded at the end; `lengths` gives the
valid samples of every crop so that losses can mask the padding.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from typing import Sequence

import grain
import numpy as np

from audiopalm.audio.io import AUDIO_SUFFIXES, AudioDecodeError, list_audio_files, load_audio
from audiopalm.data.global_rows import GlobalRowsIterator

log = logging.getLogger(__name__)

PEAK_LIMIT = 0.999  # a crop whose peak exceeds this after the gain is scaled down to it
_LOAD_THREADS = 8  # decoding is I/O- (gs://) or libsndfile-bound, both release the GIL
_PROGRESS_EVERY = 1000  # files
# A few batches ahead is plenty for in-memory crops (grain's default of 500 batches costs GBs at codec batch sizes).
_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


@dataclasses.dataclass(frozen=True)
class AudioCropsConfig:
  """Which audio, and how it is cut into training crops.

  Attributes:
    paths: audio files and directories (searched recursively for *.flac, *.wav,
      *.ogg, *.mp3), local or gs://.
    sample_rate: every file is resampled to this rate.
    crop_seconds: crop duration (SoundStream trains on 360 ms crops).
    global_batch_size: crops per step over all processes.
    seed: the crop order, offsets and gains are a pure function of it.
    gain_db: [low, high) range of the uniform random gain applied to each crop, in dB.
    min_seconds: files shorter than this are left out.
  """

  paths: tuple[str, ...] = ()
  sample_rate: int = 16000
  crop_seconds: float = 0.36
  global_batch_size: int = 16
  seed: int = 0
  gain_db: tuple[float, float] = (-6.0, 3.0)
  min_seconds: float = 0.0

  def __post_init__(self):
    if isinstance(self.paths, str):
      object.__setattr__(self, "paths", (self.paths,))
    object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
    object.__setattr__(self, "gain_db", tuple(float(g) for g in self.gain_db))
    if not self.paths:
      raise ValueError("AudioCropsConfig.paths is empty: give at least one audio file or directory")
    if self.sample_rate <= 0 or self.crop_samples < 1 or self.global_batch_size < 1:
      raise ValueError(f"AudioCropsConfig: sample_rate ({self.sample_rate}), crop_samples ({self.crop_samples}) "
                       f"and global_batch_size ({self.global_batch_size}) must be >= 1")
    if self.seed < 0:
      raise ValueError(f"AudioCropsConfig.seed must be >= 0, got {self.seed}")
    if len(self.gain_db) != 2 or self.gain_db[0] > self.gain_db[1]:
      raise ValueError(f"AudioCropsConfig.gain_db must be (low, high) with low <= high, got {self.gain_db}")
    if self.min_seconds < 0:
      raise ValueError(f"AudioCropsConfig.min_seconds must be >= 0, got {self.min_seconds}")
    if not list_audio_files(self.paths):
      raise ValueError(f"AudioCropsConfig: no audio files ({', '.join('*' + s for s in AUDIO_SUFFIXES)}) "
                       f"found under {list(self.paths)}")

  @property
  def crop_samples(self) -> int:
    """Samples per crop at `sample_rate`."""
    return int(round(self.crop_seconds * self.sample_rate))

  def make_iterator(self, row_start: int, row_stop: int) -> GlobalRowsIterator:
    """This host's rows [row_start, row_stop) of every global batch (see the module docstring)."""
    return make_audio_crops_iterator(self, row_start, row_stop)


def load_clips(cfg: AudioCropsConfig) -> list[np.ndarray]:
  """Decodes every file of `cfg` at `cfg.sample_rate`, mono: float32 [samples] each, in file order.

  Undecodable files are skipped with a warning naming them, as are empty files
  and files shorter than `cfg.min_seconds`; fails if nothing is left.
  """
  files = list_audio_files(cfg.paths)
  min_samples = max(1, int(round(cfg.min_seconds * cfg.sample_rate)))

  def decode(path: str) -> np.ndarray | AudioDecodeError:
    try:
      return load_audio(path, cfg.sample_rate)
    except AudioDecodeError as e:
      return e

  clips, undecodable, too_short, samples = [], 0, 0, 0
  with concurrent.futures.ThreadPoolExecutor(min(_LOAD_THREADS, len(files))) as pool:
    for n, clip in enumerate(pool.map(decode, files), start=1):
      if isinstance(clip, AudioDecodeError):
        log.warning("Skipping audio file %s: %s", clip.path, clip.reason)
        undecodable += 1
      elif len(clip) < min_samples:
        too_short += 1
      else:
        clips.append(clip)
        samples += len(clip)
      if n % _PROGRESS_EVERY == 0:
        log.info("Loading audio: %d/%d files, %.2f h", n, len(files), samples / cfg.sample_rate / 3600)
  log.info("Loaded %d audio files (%.2f h at %d Hz); skipped %d undecodable and %d shorter than %.2f s",
           len(clips), samples / cfg.sample_rate / 3600, cfg.sample_rate, undecodable, too_short,
           min_samples / cfg.sample_rate)
  if not clips:
    raise ValueError(f"None of the {len(files)} audio files under {list(cfg.paths)} could be used "
                     f"({undecodable} undecodable, {too_short} shorter than {cfg.min_seconds} s or empty)")
  return clips


def crop(clip: np.ndarray, crop_samples: int, gain_db: Sequence[float],
         rng: np.random.Generator) -> tuple[np.ndarray, int]:
  """A random window of `clip` (zero-padded if shorter) with a random gain, peak-limited.

  Returns (float32 [crop_samples], number of valid samples).
  """
  valid = min(len(clip), crop_samples)
  offset = int(rng.integers(0, len(clip) - valid + 1))
  gain = 10.0 ** (rng.uniform(*gain_db) / 20.0)
  out = np.zeros(crop_samples, np.float32)  # [samples]
  out[:valid] = clip[offset:offset + valid] * gain
  peak = float(np.abs(out).max())
  if peak > PEAK_LIMIT:
    out *= PEAK_LIMIT / peak
  return out, valid


def make_audio_crops_iterator(cfg: AudioCropsConfig, row_start: int, row_stop: int) -> GlobalRowsIterator:
  """Iterator of {"audio": float32 [rows, crop_samples], "lengths": int32 [rows]} for rows [row_start, row_stop).

  Endless; its state is the global rows consumed (`audiopalm.data.global_rows`), so `get_state` / `set_state`
  resume it exactly, on any number of processes.
  """
  if not 0 <= row_start < row_stop <= cfg.global_batch_size:
    raise ValueError(f"Row range [{row_start}, {row_stop}) is not inside the global batch of "
                     f"{cfg.global_batch_size}")
  clips = load_clips(cfg)
  order = grain.MapDataset.source(range(len(clips))).shuffle(seed=cfg.seed).repeat(None)
  g, samples = cfg.global_batch_size, cfg.crop_samples

  def row(k: int) -> dict[str, np.ndarray]:
    step, j = divmod(k, g)  # global row j of step `step`
    rng = np.random.default_rng((cfg.seed, step, j))
    audio, valid = crop(clips[order[k]], samples, cfg.gain_db, rng)
    return {"audio": audio, "lengths": np.int32(valid)}

  identity = {"source": "audio_crops", "paths": list(cfg.paths), "sample_rate": cfg.sample_rate,
              "crop_samples": samples, "seed": cfg.seed, "gain_db": list(cfg.gain_db), "clips": len(clips)}
  return GlobalRowsIterator(row, identity, global_batch_size=g, row_start=row_start, row_stop=row_stop,
                            read_options=_READ_OPTIONS)
