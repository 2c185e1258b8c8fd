"""Audio preparation: an Utterance → its Segments (checked, decoded, downmixed, resampled, cut), or one Reject.

    config = AudioPrepConfig(sample_rates=(16000, 24000))   # the tokenizers' rates
    result = prepare(utterance, config)                      # reader=/info= for archive members
    if isinstance(result, Reject):
      rejects.append(result)
    else:
      for piece in result:                                   # SegmentPlan: one piece decoded at a time
        piece[16000], piece[24000]                           # the same Segment at each target rate

All or nothing, without exceptions for bad input: `prepare` returns exactly one Reject, or a SegmentPlan that
yields every segment of the utterance. Everything that can be wrong with the input is found before the plan is
returned: the transcript, the header (channels, sample rate, no frames), the window and the metadata, and the
decoded audio itself (undecodable data such as a truncated FLAC, NaN/Inf samples, silence, too short; audio that
ends before its header says, as a truncated WAV does, counts for what was decoded). A short utterance (at
most `max_segment_seconds`) is decoded once, by `prepare`, and the plan holds it. A longer one is first scanned
window by window (`window_seconds` at a time), which validates every sample and builds the energy envelope;
the plan then decodes each segment with its own windowed read. Iterating a plan therefore only fails on faults
of the environment (the file changed or became unreachable since the scan), which raise.

Bounded memory: no decode is longer than `window_seconds` (>= max_segment_seconds) of audio (MP3 aside, below),
whatever the length of the file (an hour-long LibriLight recording, or an Utterance window into one).

Cutting (utterances longer than `max_segment_seconds`): speech regions come from the utterance's
`voice_activity` (LibriLight; in file seconds, clipped to the utterance window) or from the energy VAD
(`data_pipeline.vad`) on the scanned envelope. Regions are packed greedily into segments, cut only in the gaps
between regions; a gap longer than `max_pause_seconds` always ends a segment; a region longer than a segment is
itself cut at its quietest point. Segments get up to `segment_pad_seconds` of context on each side (at most half
the gap to the neighbour), are snapped to the file's sample grid, and are never longer than
`max_segment_seconds`; segments shorter than `min_segment_seconds` are dropped (speech isolated between long
pauses that short is not worth a sequence). Silence between segments is dropped.

Sources: `reader(ref, start, end)` decodes the window [start, end) seconds of `ref` (None: from the beginning /
to the end) at the file's own rate and returns (waveform [samples] or [samples, channels], rate);
`info(ref)` returns (sample_rate, frames, channels) from the header. They raise `AudioDecodeError` for a file
that cannot be read. The defaults read plain files with `audiopalm.audio.io`; archive members need a reader and
an info function that understand `AudioRef.member`. MP3 is the exception to bounded memory: libsndfile decodes it
right only in one read from the start (see `_read_mp3`), so the default reader decodes an MP3 window from the
beginning of the file; a long MP3 (cut into many windows) costs memory up to the whole file and time quadratic in
its length. (Corpora in MP3, such as Emilia, come in short files: one window each.)

Throughput: `prepare_many` runs the stage over a stream of utterances and counts, in a `PrepStats`, the time
spent inside it (decode, checks, VAD, resampling; not the consumer's time between pieces);
`measure_throughput` drains it, for benchmarks (`PrepStats.hours_per_second`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import math
import time
import unicodedata
from typing import Callable, Iterable, Iterator

import numpy as np
import soundfile as sf

from audiopalm.audio import io as audio_io
from audiopalm.audio.io import AudioDecodeError
from audiopalm.files import storage
from data_pipeline.records import (BAD_CHANNELS, BAD_METADATA, BAD_SAMPLE_RATE, BAD_TRANSCRIPT, EMPTY,
                                   MISSING_TRANSCRIPT, NON_FINITE, REASONS, SILENT, TOO_LONG, TOO_SHORT,
                                   UNREADABLE, AudioRef, Reject, Segment, Utterance)
from data_pipeline.vad import EnergyEnvelope, Envelope, VadConfig, detect_speech, quietest_time

# (ref, start seconds or None, end seconds or None) → (float [samples] or [samples, channels], the file's rate)
Reader = Callable[[AudioRef, float | None, float | None], tuple[np.ndarray, int]]
# ref → (sample_rate, frames, channels), from the header
Info = Callable[[AudioRef], tuple[int, int, int]]

_NON_FINITE_REASON = "non-finite samples"  # audiopalm.audio.io.load_audio's AudioDecodeError.reason for NaN/Inf
_FILE_ERRORS = (sf.SoundFileError, RuntimeError, OSError, EOFError)  # what soundfile/storage raise for a bad file


def _plain_file(ref: AudioRef) -> str:
  if ref.member is not None:
    raise ValueError(f"{ref} is an archive member: pass prepare() a reader and an info function for archives")
  return ref.path


def _read_mp3(path: str, start: float, end: float | None) -> tuple[np.ndarray, int]:
  """A window of an MP3 file, decoded from the beginning in one read, then cut.

  libsndfile 1.2.2's MP3 decoding is only right in one read from the start: after a seek, and after the boundary
  between two reads, it returns wrong audio for a while (up to ~0.3 s off by 0.2-0.5 of full scale on a tonal
  test file), so neither seeking nor skipping in blocks works. Memory and time grow with `end`, not with the window.
  """
  try:
    with contextlib.ExitStack() as stack:
      local = not storage.is_remote(path)
      source = path.removeprefix("file://") if local else io.BytesIO(storage.read_bytes(path))
      f = stack.enter_context(sf.SoundFile(source))
      rate = f.samplerate
      first = int(round(start * rate))
      last = -1 if end is None else max(first, int(round(end * rate)))
      data = f.read(frames=last, dtype="float32", always_2d=True)[first:]  # [samples, channels]
  except _FILE_ERRORS as e:
    raise AudioDecodeError(path, f"{type(e).__name__}: {e}") from e
  if not np.isfinite(data).all():
    raise AudioDecodeError(path, _NON_FINITE_REASON)
  return np.clip(data, -1.0, 1.0), rate  # [samples, channels]


def read_file(ref: AudioRef, start: float | None = None, end: float | None = None) -> tuple[np.ndarray, int]:
  """The default reader: the window [start, end) of a plain audio file, [samples, channels] at its own rate.

  `audiopalm.audio.io.load_audio` (which seeks to the window), except for MP3 windows not at the start, which are
  decoded from the beginning (see `_read_mp3`).
  """
  path = _plain_file(ref)
  if start and path.lower().endswith(".mp3"):
    return _read_mp3(path, start, end)
  rate = audio_io.audio_info(path)[0]
  return audio_io.load_audio(path, None, start=start, end=end, mono=False), rate


def file_info(ref: AudioRef) -> tuple[int, int, int]:
  """The default info: (sample_rate, frames, channels) of a plain audio file, from its header."""
  return audio_io.audio_info(_plain_file(ref))


@dataclasses.dataclass(frozen=True)
class AudioPrepConfig:
  """What the preparation accepts and produces.

  Attributes:
    sample_rates: the tokenizers' input rates; every segment is resampled (soxr HQ) once to each distinct rate.
    max_segment_seconds: the longest segment (the batcher's largest bucket); longer utterances are cut.
    min_segment_seconds: pieces of a cut utterance shorter than this are dropped (at most half of
      max_segment_seconds - 2 * segment_pad_seconds).
    segment_pad_seconds: context kept around the speech of each piece of a cut utterance, per side.
    max_pause_seconds: a pause longer than this always ends a piece (None: pack up to max_segment_seconds).
    min_utterance_seconds: shorter utterances are rejected (too_short).
    max_utterance_seconds: longer utterances are rejected (too_long); None: no limit (long ones are cut).
    silence_threshold_db: an utterance whose peak (dBFS, after downmixing) is at or below this is `silent`.
    max_channels: more channels are rejected (bad_channels); None: any number. Channels are averaged (downmix),
      unless `channel` picks one.
    channel: take this channel (0-based) instead of the downmix; audio with fewer channels is rejected
      (bad_channels). None: the average of all channels.
    min_sample_rate, max_sample_rate: the plausible range of file sample rates, Hz (else bad_sample_rate).
    require_transcript: reject utterances without a (non-blank) transcript (missing_transcript).
    window_seconds: audio decoded at once when scanning a long utterance (memory bound).
    vad: the energy VAD, for long utterances without `voice_activity`.
  """

  sample_rates: tuple[int, ...] = (16000,)
  max_segment_seconds: float = 30.0
  min_segment_seconds: float = 1.0
  segment_pad_seconds: float = 0.2
  max_pause_seconds: float | None = 5.0
  min_utterance_seconds: float = 0.5
  max_utterance_seconds: float | None = None
  silence_threshold_db: float = -60.0
  max_channels: int | None = None
  channel: int | None = None
  min_sample_rate: int = 4000
  max_sample_rate: int = 192000
  require_transcript: bool = False
  window_seconds: float = 60.0
  vad: VadConfig = VadConfig()

  def __post_init__(self):
    rates = tuple(self.sample_rates)
    object.__setattr__(self, "sample_rates", rates)
    if not rates or any(not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r <= 0 for r in rates):
      raise ValueError(f"AudioPrepConfig.sample_rates must be positive integers (Hz), got {rates}")
    if not self.max_segment_seconds > 0:
      raise ValueError(f"AudioPrepConfig.max_segment_seconds must be positive, got {self.max_segment_seconds}")
    if not 0 <= self.segment_pad_seconds < self.max_segment_seconds / 4:
      raise ValueError(f"AudioPrepConfig.segment_pad_seconds must be in [0, max_segment_seconds / 4), got "
                       f"{self.segment_pad_seconds}")
    longest = self.max_segment_seconds - 2 * self.segment_pad_seconds
    if not 0 < self.min_segment_seconds <= longest / 2:
      raise ValueError(f"AudioPrepConfig.min_segment_seconds must be in (0, {longest / 2:g}] (half of "
                       f"max_segment_seconds - 2 * segment_pad_seconds), got {self.min_segment_seconds}")
    if self.max_pause_seconds is not None and not self.max_pause_seconds >= 0:
      raise ValueError(f"AudioPrepConfig.max_pause_seconds must be >= 0 or None, got {self.max_pause_seconds}")
    if not self.min_utterance_seconds >= 0:
      raise ValueError(f"AudioPrepConfig.min_utterance_seconds must be >= 0, got {self.min_utterance_seconds}")
    if self.max_utterance_seconds is not None and not self.max_utterance_seconds >= self.min_utterance_seconds:
      raise ValueError(f"AudioPrepConfig.max_utterance_seconds must be >= min_utterance_seconds or None, got "
                       f"{self.max_utterance_seconds}")
    if self.max_channels is not None and not self.max_channels >= 1:
      raise ValueError(f"AudioPrepConfig.max_channels must be >= 1 or None, got {self.max_channels}")
    if self.channel is not None and not 0 <= self.channel < (self.max_channels or self.channel + 1):
      raise ValueError(f"AudioPrepConfig.channel must be >= 0 (and below max_channels) or None, got {self.channel}")
    if not 0 < self.min_sample_rate <= self.max_sample_rate:
      raise ValueError(f"AudioPrepConfig: need 0 < min_sample_rate <= max_sample_rate, got "
                       f"{self.min_sample_rate}, {self.max_sample_rate}")
    if not self.window_seconds >= self.max_segment_seconds:
      raise ValueError(f"AudioPrepConfig.window_seconds must be >= max_segment_seconds "
                       f"({self.max_segment_seconds}), got {self.window_seconds}")

  @property
  def target_rates(self) -> tuple[int, ...]:
    """The distinct sample rates, in the order given."""
    return tuple(dict.fromkeys(int(r) for r in self.sample_rates))

  @property
  def silence_threshold(self) -> float:
    """`silence_threshold_db` as a linear amplitude."""
    return 10.0 ** (self.silence_threshold_db / 20.0)


class _Rejected(Exception):
  """Internal: ends `prepare` with a Reject reason."""

  def __init__(self, code: str, detail: str):
    super().__init__(f"{code}: {detail}")
    self.reason = f"{code}: {detail}"


def check_transcript(text: object, required: bool) -> str | None:
  """The Reject reason for a transcript (bad_transcript / missing_transcript), or None if it is acceptable.

  Bad: not a str (bytes that are not UTF-8 are named so), lone surrogates (undecodable bytes smuggled in by
  'surrogateescape'), U+FFFD (bytes replaced upstream), control characters (Unicode category Cc: tabs and
  newlines included). Missing, when required: None, or only whitespace.
  """
  if text is None:
    return f"{MISSING_TRANSCRIPT}: no transcript" if required else None
  if isinstance(text, (bytes, bytearray)):
    try:
      bytes(text).decode("utf-8")
    except UnicodeDecodeError as e:
      return f"{BAD_TRANSCRIPT}: not UTF-8 ({e.reason} at byte {e.start})"
    return f"{BAD_TRANSCRIPT}: bytes, not str"
  if not isinstance(text, str):
    return f"{BAD_TRANSCRIPT}: a {type(text).__name__}, not str"
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    return f"{BAD_TRANSCRIPT}: not UTF-8 (undecodable character at {e.start})"
  for i, ch in enumerate(text):
    if ch == "\ufffd":
      return f"{BAD_TRANSCRIPT}: U+FFFD replacement character at {i} (the text was not UTF-8 upstream)"
    if unicodedata.category(ch) == "Cc":
      return f"{BAD_TRANSCRIPT}: control character U+{ord(ch):04X} at {i}"
  if required and not text.strip():
    return f"{MISSING_TRANSCRIPT}: blank transcript"
  return None


def _mono(wave: np.ndarray) -> np.ndarray:
  """[samples] or [samples, channels] → float32 [samples]."""
  wave = np.asarray(wave)
  if wave.ndim == 2:
    wave = wave[:, 0] if wave.shape[1] == 1 else wave.mean(axis=1, dtype=np.float32)
  elif wave.ndim != 1:
    raise ValueError(f"reader returned a waveform of shape {wave.shape}; expected [samples] or [samples, channels]")
  return np.asarray(wave, np.float32)


def _one_channel(reader: Reader, channel: int) -> Reader:
  """`reader`, keeping only `channel` of what it returns ([samples, channels] → [samples])."""

  def read(ref: AudioRef, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    wave, rate = reader(ref, start, end)
    wave = np.asarray(wave)
    return (wave[:, channel] if wave.ndim == 2 else wave), rate

  return read


def _decode(reader: Reader, ref: AudioRef, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
  """reader(ref, start, end), checked for NaN/Inf (→ non_finite) and downmixed: (float32 [samples], rate)."""
  try:
    wave, rate = reader(ref, start, end)
  except AudioDecodeError as e:
    if e.reason == _NON_FINITE_REASON:
      raise _Rejected(NON_FINITE, f"NaN or Inf samples in [{start or 0.0:.2f}, {end or math.inf:.2f}) s") from e
    raise
  if not np.isfinite(wave).all():
    raise _Rejected(NON_FINITE, f"NaN or Inf samples in [{start or 0.0:.2f}, {end or math.inf:.2f}) s")
  return _mono(wave), int(rate)


def _split_region(a: float, b: float, longest: float, shortest: float, envelope: Envelope | None
                  ) -> list[tuple[float, float]]:
  """Cuts [a, b] into pieces of at most `longest` seconds: at the quietest point between half and all of
  `longest` from the previous cut (leaving at least `shortest`), or evenly when there is no envelope."""
  pieces = []
  while b - a > longest:
    if envelope is None:
      cut = a + (b - a) / math.ceil((b - a) / longest)
    else:
      cut = quietest_time(envelope, a + longest / 2, min(a + longest, b - shortest))
    pieces.append((a, cut))
    a = cut
  pieces.append((a, b))
  return pieces


def plan_segments(regions: Iterable[tuple[float, float]], start: float, end: float, sample_rate: int,
                  config: AudioPrepConfig, envelope: Envelope | None = None) -> list[tuple[float, float]]:
  """Speech regions (sorted, disjoint, seconds) inside [start, end] → segment windows (start, end) seconds.

  See the module docstring ("Cutting"). Windows are on the sample grid of `sample_rate` and hold at most
  floor(max_segment_seconds * sample_rate) samples.
  """
  pad = config.segment_pad_seconds
  longest = config.max_segment_seconds - 2 * pad
  pieces = [p for a, b in regions for p in _split_region(a, b, longest, config.min_segment_seconds, envelope)]
  packed: list[list[float]] = []
  for a, b in pieces:
    if packed and b - packed[-1][0] <= longest and (
        config.max_pause_seconds is None or a - packed[-1][1] <= config.max_pause_seconds):
      packed[-1][1] = b
    else:
      packed.append([a, b])
  max_samples = int(math.floor(config.max_segment_seconds * sample_rate + 1e-6))
  windows = []
  for i, (a, b) in enumerate(packed):
    lo = start if i == 0 else (packed[i - 1][1] + a) / 2
    hi = end if i == len(packed) - 1 else (b + packed[i + 1][0]) / 2
    first = int(round(max(a - pad, lo) * sample_rate))
    count = min(int(round(min(b + pad, hi) * sample_rate)) - first, max_samples)
    if count >= config.min_segment_seconds * sample_rate:
      windows.append((first / sample_rate, (first + count) / sample_rate))
  return windows


def _voice_activity(utterance: Utterance, start: float, end: float) -> list[tuple[float, float]]:
  """The utterance's voice_activity regions clipped to [start, end], sorted and merged (bad_metadata if malformed)."""
  regions = []
  try:
    for region in utterance.voice_activity:
      a, b = (float(x) for x in region)
      if not (math.isfinite(a) and math.isfinite(b) and 0 <= a <= b):
        raise ValueError(f"region {region!r}")
      a, b = max(a, start), min(b, end)
      if b > a:
        regions.append((a, b))
  except (TypeError, ValueError) as e:
    raise _Rejected(BAD_METADATA, f"malformed voice_activity: {e}") from e
  merged: list[list[float]] = []
  for a, b in sorted(regions):
    if merged and a <= merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], b)
    else:
      merged.append([a, b])
  return [(a, b) for a, b in merged]


@dataclasses.dataclass(frozen=True, eq=False)
class SegmentPlan:
  """The segments of one accepted utterance; iterating decodes them one at a time.

  Each item is {rate: Segment} for every target rate (same index, start and `single`; waveform float32 mono in
  [-1, 1]). Iterating again decodes again. A decode failure while iterating is a fault of the environment (the
  audio was fully decoded once by `prepare`) and raises AudioDecodeError.

  Attributes:
    utterance: the utterance.
    windows: (start, end) seconds in the file of each segment.
    sample_rate: the file's rate.
    target_rates: the rates each segment is resampled to.
    reader: decodes a window (for plans of several segments).
    decoded: float32 [samples] mono at `sample_rate`: the one segment of a short utterance, decoded already.
  """

  utterance: Utterance
  windows: tuple[tuple[float, float], ...]
  sample_rate: int
  target_rates: tuple[int, ...]
  reader: Reader = dataclasses.field(repr=False)
  decoded: np.ndarray | None = dataclasses.field(default=None, repr=False)

  @property
  def single(self) -> bool:
    return len(self.windows) == 1

  @property
  def duration(self) -> float:
    """Seconds of audio in the segments."""
    return sum(e - s for s, e in self.windows)

  def __len__(self) -> int:
    return len(self.windows)

  def __iter__(self) -> Iterator[dict[int, Segment]]:
    for index, (start, end) in enumerate(self.windows):
      if self.decoded is not None:
        mono, rate = self.decoded, self.sample_rate
      else:
        try:
          mono, rate = _decode(self.reader, self.utterance.audio, start, end)
        except _Rejected as e:  # it was finite during the scan: the file changed
          raise AudioDecodeError(str(self.utterance.audio), f"changed since it was scanned: {e.reason}") from e
      yield {target: Segment(self.utterance, index, start, _resampled(mono, rate, target), target, self.single)
             for target in self.target_rates}


def _resampled(mono: np.ndarray, rate: int, target: int) -> np.ndarray:
  """float32 [samples] at `target` (soxr HQ), clipped to [-1, 1] (the resampler's ringing can overshoot)."""
  return np.clip(audio_io.resample(mono, rate, target), -1.0, 1.0).astype(np.float32, copy=False)


def _window(utterance: Utterance, file_seconds: float) -> tuple[float, float]:
  """The utterance's [start, end) in the file, end clipped to the file (bad_metadata / empty if impossible)."""
  try:
    start = 0.0 if utterance.start is None else float(utterance.start)
    end = math.inf if utterance.end is None else float(utterance.end)
  except (TypeError, ValueError) as e:
    raise _Rejected(BAD_METADATA, f"window [{utterance.start!r}, {utterance.end!r}): {e}") from e
  if not (math.isfinite(start) and start >= 0 and not math.isnan(end) and end > start):
    raise _Rejected(BAD_METADATA, f"window [{utterance.start!r}, {utterance.end!r}) is not a time range")
  if start >= file_seconds:
    raise _Rejected(EMPTY, f"window starts at {start:.2f} s, past the end of the audio ({file_seconds:.2f} s)")
  return start, min(end, file_seconds)


def _check_decoded(seconds: float, peak: float, config: AudioPrepConfig) -> None:
  if seconds <= 0:
    raise _Rejected(EMPTY, "no samples decoded")
  if seconds < config.min_utterance_seconds:
    raise _Rejected(TOO_SHORT, f"{seconds:.3f} s decoded < {config.min_utterance_seconds} s")
  if peak <= config.silence_threshold:
    raise _Rejected(SILENT, f"peak {20 * math.log10(max(peak, 1e-12)):.1f} dBFS <= {config.silence_threshold_db} dBFS")


def _scan(utterance: Utterance, start: float, end: float, config: AudioPrepConfig, reader: Reader
          ) -> tuple[Envelope, int]:
  """Decodes [start, end) window by window: every sample checked, the energy envelope built. (envelope, rate)."""
  envelope = None
  k = 0
  while start + k * config.window_seconds < end:
    a, b = start + k * config.window_seconds, min(start + (k + 1) * config.window_seconds, end)
    mono, rate = _decode(reader, utterance.audio, a, b)
    if envelope is None:
      envelope = EnergyEnvelope(rate, config.vad.frame_seconds, start)
    if not len(mono):
      break  # the audio ends before the header said it would: what was decoded is what counts
    envelope.add(mono)
    del mono
    k += 1
  assert envelope is not None  # end > start
  return envelope.finish(), envelope.sample_rate


def _prepare(utterance: Utterance, config: AudioPrepConfig, reader: Reader, info: Info) -> SegmentPlan:
  """`prepare`, rejecting by raising _Rejected or AudioDecodeError."""
  reason = check_transcript(utterance.transcript, config.require_transcript)
  if reason:
    raise _Rejected(*reason.split(": ", 1))
  rate, frames, channels = info(utterance.audio)
  if channels < 1 or (config.max_channels is not None and channels > config.max_channels):
    raise _Rejected(BAD_CHANNELS, f"{channels} channels (allowed: 1 to {config.max_channels or 'any'})")
  if config.channel is not None:
    if config.channel >= channels:
      raise _Rejected(BAD_CHANNELS, f"{channels} channels: there is no channel {config.channel} to take")
    reader = _one_channel(reader, config.channel)
  if not config.min_sample_rate <= rate <= config.max_sample_rate:
    raise _Rejected(BAD_SAMPLE_RATE, f"{rate} Hz (allowed: {config.min_sample_rate} to {config.max_sample_rate})")
  if frames <= 0:
    raise _Rejected(EMPTY, "no frames in the header")
  start, end = _window(utterance, frames / rate)
  if end - start < config.min_utterance_seconds:
    raise _Rejected(TOO_SHORT, f"{end - start:.3f} s < {config.min_utterance_seconds} s")
  if config.max_utterance_seconds is not None and end - start > config.max_utterance_seconds:
    raise _Rejected(TOO_LONG, f"{end - start:.1f} s > {config.max_utterance_seconds} s")

  if end - start <= config.max_segment_seconds:  # one segment: decode once, keep it
    mono, rate = _decode(reader, utterance.audio, None if utterance.start is None else start,
                         None if utterance.end is None else end)
    mono = mono[:int(math.floor(config.max_segment_seconds * rate + 1e-6))]  # window rounding: at most a sample
    _check_decoded(len(mono) / rate, float(np.max(np.abs(mono))) if len(mono) else 0.0, config)
    return SegmentPlan(utterance, ((start, start + len(mono) / rate),), rate, config.target_rates, reader, mono)

  if utterance.voice_activity is not None:
    _voice_activity(utterance, start, end)  # malformed metadata is rejected before any decoding
  envelope, rate = _scan(utterance, start, end, config, reader)
  _check_decoded(envelope.duration, envelope.peak, config)
  end = envelope.end
  if utterance.voice_activity is not None:
    regions = _voice_activity(utterance, start, end)
    if not regions:
      raise _Rejected(SILENT, f"no voice_activity region inside [{start:.2f}, {end:.2f}) s")
  else:
    regions = detect_speech(envelope, config.vad)
    if not regions:
      raise _Rejected(SILENT, "the energy VAD found no speech")
  windows = plan_segments(regions, start, end, rate, config, envelope)
  if not windows:
    raise _Rejected(TOO_SHORT, f"no stretch of speech of at least {config.min_segment_seconds} s")
  return SegmentPlan(utterance, tuple(windows), rate, config.target_rates, reader)


def prepare(utterance: Utterance, config: AudioPrepConfig, *, reader: Reader = read_file, info: Info = file_info
            ) -> SegmentPlan | Reject:
  """Checks, decodes and cuts one utterance: its SegmentPlan, or exactly one Reject (see the module docstring).

  Bad input never raises: AudioDecodeError from `reader`/`info` becomes `unreadable` (`non_finite` for
  load_audio's "non-finite samples"; a reason that starts with a reject code, as `audio_source` gives for unsafe
  archive members, keeps it).
  A configuration error does (an archive member with the default reader: ValueError).
  """
  try:
    return _prepare(utterance, config, reader, info)
  except _Rejected as e:
    return Reject(utterance.id, str(utterance.audio), e.reason)
  except AudioDecodeError as e:
    return decode_reject(utterance, e)


def decode_reject(utterance: Utterance, error: AudioDecodeError) -> Reject:
  """The Reject of an utterance whose audio could not be read or decoded."""
  if error.reason == _NON_FINITE_REASON:
    reason = f"{NON_FINITE}: {error.reason}"
  elif error.reason.split(":", 1)[0] in REASONS:  # a source that names the reject code itself ("unsafe_path: ...")
    reason = error.reason
  else:
    reason = f"{UNREADABLE}: {error.reason}"
  return Reject(utterance.id, str(utterance.audio), reason)


@dataclasses.dataclass
class PrepStats:
  """Counters of the preparation stage (updated in place by `prepare_many`).

  Attributes:
    utterances: utterances seen.
    segments: segments produced (counted once, not once per target rate).
    audio_seconds: seconds of audio in those segments.
    busy_seconds: wall time spent inside the stage (header, decode, checks, VAD, resampling).
    rejects: reject counts by reason code.
  """

  utterances: int = 0
  segments: int = 0
  audio_seconds: float = 0.0
  busy_seconds: float = 0.0
  rejects: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  @property
  def hours_per_second(self) -> float:
    """Hours of prepared audio per second of the stage's time (0 before any)."""
    return self.audio_seconds / 3600.0 / self.busy_seconds if self.busy_seconds > 0 else 0.0

  def summary(self) -> str:
    rejects = ", ".join(f"{k} {v}" for k, v in sorted(self.rejects.items())) or "none"
    return (f"{self.utterances} utterances → {self.segments} segments, {self.audio_seconds / 3600:.3f} h in "
            f"{self.busy_seconds:.2f} s ({self.hours_per_second:.2f} h/s); rejects: {rejects}")


def prepare_many(utterances: Iterable[Utterance], config: AudioPrepConfig, *, reader: Reader = read_file,
                 info: Info = file_info, stats: PrepStats | None = None) -> Iterator[Reject | dict[int, Segment]]:
  """`prepare` over a stream: yields each utterance's Reject, or its pieces ({rate: Segment}) one by one.

  `stats` (if given) counts utterances, segments, rejects and the time spent here, excluding the consumer's
  time between items.
  """
  stats = stats if stats is not None else PrepStats()
  for utterance in utterances:
    t = time.perf_counter()
    result = prepare(utterance, config, reader=reader, info=info)
    stats.utterances += 1
    if isinstance(result, Reject):
      stats.rejects[result.code] += 1
      stats.busy_seconds += time.perf_counter() - t
      yield result
      continue
    pieces = iter(result)
    while True:
      piece = next(pieces, None)
      stats.busy_seconds += time.perf_counter() - t
      if piece is None:
        break
      stats.segments += 1
      stats.audio_seconds += next(iter(piece.values())).duration
      yield piece
      t = time.perf_counter()


def measure_throughput(utterances: Iterable[Utterance], config: AudioPrepConfig, *, reader: Reader = read_file,
                       info: Info = file_info) -> PrepStats:
  """Runs the preparation over `utterances`, discarding the segments: its PrepStats (hours_per_second)."""
  stats = PrepStats()
  for _ in prepare_many(utterances, config, reader=reader, info=info, stats=stats):
    pass
  return stats
