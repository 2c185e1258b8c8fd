"""Reading and writing audio files: windowed decoding, downmix and resampling.

Decoding goes through `soundfile` (libsndfile): FLAC, WAV, OGG/Vorbis/Opus, and
MP3 where the installed libsndfile supports it (>= 1.1). Paths may be local or
URLs such as `gs://...`, read and written through `audiopalm.files.storage`: a
remote file is fetched whole in one request and decoded in memory (audio files
are small next to a request's latency, and libsndfile's seeks would otherwise
each cost a request). Waveforms are float32 in [-1, 1].

A file that cannot be opened or decoded raises `AudioDecodeError` (a
`ValueError`) naming the file, so that bulk readers can record it and go on.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf
import soxr

from audiopalm.files import storage

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3")  # what list_audio_files finds in directories
INPUT_SUFFIXES = (".flac", ".wav", ".ogg", ".oga", ".opus", ".mp3")  # what collect_inputs finds in directories
_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
# What a broken, truncated, missing or unsupported file raises inside soundfile or the storage layer.
_DECODE_ERRORS = (sf.SoundFileError, RuntimeError, OSError, EOFError)


class AudioDecodeError(ValueError):
  """An audio file could not be opened or decoded."""

  def __init__(self, path: str | os.PathLike, reason: str):
    self.path = os.fspath(path)
    self.reason = reason
    super().__init__(f"Cannot decode audio file {self.path}: {reason}")


def _is_local(path: str) -> bool:
  return "://" not in path or path.startswith("file://")


@contextlib.contextmanager
def _open(path: str | os.PathLike) -> Iterator[sf.SoundFile]:
  """Opens `path` for reading; any failure inside the block becomes an AudioDecodeError."""
  path = os.fspath(path)
  try:
    with contextlib.ExitStack() as stack:
      if _is_local(path):
        source: object = path.removeprefix("file://")
      else:
        source = io.BytesIO(storage.read_bytes(path))
      yield stack.enter_context(sf.SoundFile(source))
  except _DECODE_ERRORS as e:
    raise AudioDecodeError(path, f"{type(e).__name__}: {e}") from e


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
  """(sample_rate, num_frames, channels) of an audio file, from its header."""
  with _open(path) as f:
    return f.samplerate, f.frames, f.channels


def resample(waveform: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
  """soxr 'HQ' resampling along axis 0 of [samples] or [samples, channels]; float32."""
  waveform = np.asarray(waveform, np.float32)
  if from_rate == to_rate:
    return waveform
  if not len(waveform):
    return np.zeros((0,) + waveform.shape[1:], np.float32)
  return soxr.resample(waveform, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike, sample_rate: int | None, *, start: float | None = None,
               end: float | None = None, mono: bool = True) -> np.ndarray:
  """Decodes the window [start, end) seconds of an audio file.

  Only the window is read (the decoder seeks to `start`): the file's frames
  [round(start * rate), round(end * rate)), then downmixed and resampled. An
  `end` past the end of the file is clipped to it; a `start` past it gives an
  empty waveform.

  Args:
    path: local path or URL (gs://...).
    sample_rate: resample to this rate (soxr 'HQ') if the file's differs; None keeps the file's rate.
    start: window start in seconds (at the file's rate); None = 0.
    end: window end in seconds; None = end of file.
    mono: average the channels.

  Returns:
    float32 in [-1, 1]: [samples] if mono, else [samples, channels].

  Raises:
    AudioDecodeError: the file is missing, unreadable, corrupt or holds non-finite samples.
    ValueError: a negative `start`, an `end` before `start`, or a non-positive `sample_rate`.
  """
  if sample_rate is not None and sample_rate <= 0:
    raise ValueError(f"load_audio: sample_rate must be positive, got {sample_rate}")
  if (start is not None and start < 0) or (end is not None and end < (start or 0.0)):
    raise ValueError(f"load_audio: bad window [{start}, {end}) for {os.fspath(path)}")
  with _open(path) as f:
    rate = f.samplerate
    first = int(round((start or 0.0) * rate))
    count = -1 if end is None else max(0, int(round(end * rate)) - first)
    if first >= f.frames or count == 0:
      data = np.zeros((0, f.channels), np.float32)
    else:
      if first:
        f.seek(first)
      data = f.read(frames=count, dtype="float32", always_2d=True)  # [samples, channels]
  if not np.isfinite(data).all():
    raise AudioDecodeError(path, "non-finite samples")
  if mono:
    data = data.mean(axis=1, dtype=np.float32)  # [samples]
  if sample_rate is not None:
    data = resample(data, rate, sample_rate)
  # PCM decodes into [-1, 1) already; float files and the resampler's ringing may overshoot.
  data = np.clip(data, -1.0, 1.0)
  return np.ascontiguousarray(data, dtype=np.float32)


def write_audio(path: str | os.PathLike, waveform: np.ndarray, sample_rate: int) -> None:
  """Writes float [samples] or [samples, channels] as 16-bit PCM WAV or FLAC (by the suffix).

  Samples outside [-1, 1] are clipped, with a warning giving their count.
  Parent directories are created.
  """
  path = os.fspath(path)
  fmt = _WRITE_FORMATS.get(os.path.splitext(path)[1].lower())
  if fmt is None:
    raise ValueError(f"write_audio: {path} must end in one of {sorted(_WRITE_FORMATS)}")
  waveform = np.asarray(waveform, np.float32)
  if waveform.ndim not in (1, 2):
    raise ValueError(f"write_audio: waveform must be [samples] or [samples, channels], got shape {waveform.shape}")
  if not np.isfinite(waveform).all():
    raise ValueError(f"write_audio: waveform for {path} has non-finite samples")
  clipped = int(np.count_nonzero(np.abs(waveform) > 1.0))
  if clipped:
    log.warning("write_audio: clipped %d of %d samples to [-1, 1] in %s", clipped, waveform.size, path)
    waveform = np.clip(waveform, -1.0, 1.0)
  buffer = io.BytesIO()
  sf.write(buffer, waveform, sample_rate, format=fmt, subtype="PCM_16")
  storage.write_bytes(path, buffer.getvalue())


def list_audio_files(paths: Iterable[str]) -> list[str]:
  """The audio files named by `paths` (files as given, directories searched recursively); sorted, unique."""
  found = set()
  for path in paths:
    path = os.fspath(path)
    if storage.isdir(path):
      found.update(f for f in storage.find(path) if os.path.splitext(f)[1].lower() in AUDIO_SUFFIXES)
    elif storage.exists(path):
      found.add(path)
    else:
      raise FileNotFoundError(f"Audio path not found: {path}")
  return sorted(found)


def collect_inputs(inputs: Sequence[str]) -> list[tuple[str, str]]:
  """(path, relative name) of every input file a user names (generation and resynthesis inputs): files as given,
  directories searched recursively (in sorted order) for audio files (`INPUT_SUFFIXES`); local paths."""
  found = []
  for item in inputs:
    if os.path.isdir(item):
      for root, dirs, files in os.walk(item):
        dirs.sort()
        for name in sorted(files):
          if name.lower().endswith(INPUT_SUFFIXES):
            path = os.path.join(root, name)
            found.append((path, os.path.relpath(path, item)))
    else:
      found.append((item, os.path.basename(item)))
  return found
