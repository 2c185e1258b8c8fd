"""Synthetic speech corpora in LibriSpeech layout: the demo grammar's sentences spoken by espeak-ng voices.

    utt = plan_utterance(seed, "train", index, held_out, speakers)   # who says what, how fast, how high
    pcm = render(engine, utt, sample_rate=16000, peak=0.5, bits=16)   # int16 [samples]
    stats = write_split(engine, "out", "train", count, seed, 16000, 0.5, 16, held_out, speakers)

Layout: `{split}/{speaker}/{chapter}/{speaker}-{chapter}-{utt:04d}.flac` (16-bit mono FLAC) and one
`{speaker}-{chapter}.trans.txt` per chapter with lines `ID TRANSCRIPT` (upper case). Utterance `index` of a split
depends only on (seed, split, index) and the speaker list: speakers take turns, and the sentence, speed and pitch
are drawn from a generator seeded with that triple. The held-out colour-object pairs (`grammar.held_out_pairs`)
are a separate argument, so speech generated with another seed still keeps clear of the bundled test split.

Audio: espeak-ng's 22050 Hz output (`espeak.EspeakLibrary` or `EspeakProgram`), silence trimmed to 0.1 s at each
end, resampled with soxr (HQ), scaled to a fixed peak, rounded to `bits` significant bits (FLAC stores the zero
low bits for free).

Speakers: `SPEAKERS` are the bundled corpus's ten (`tools.make_demo_corpus`); `generated_speakers(n, seed)`
starts with the same ten voices (other ids) and adds voices drawn from every English language of espeak-ng and
its twelve human-like variants, each with its own base speed and pitch.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Sequence

import numpy as np
import soundfile as sf
import soxr

from data_pipeline.synthetic.espeak import SAMPLE_RATE as ESPEAK_SAMPLE_RATE, EspeakLibrary, EspeakProgram
from data_pipeline.synthetic.grammar import sample_sentence

_SPLIT_CODES = {"train": 1, "test": 2}
_SPEAKER_CODE = 7  # seed-sequence key of generated speakers
KEEP_SILENCE_S = 0.1
SILENCE_THRESHOLD_DB = -40.0  # relative to the utterance peak
SPEED_JITTER = 0.06  # per-utterance speed factor in [1 - j, 1 + j]
PITCH_JITTER = 4  # per-utterance pitch offset in [-j, j]

# espeak-ng's English languages and its human-like variants (both engines have them all).
LANGUAGES = ("en-us", "en-gb-x-rp", "en", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan",
             "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
Engine = EspeakLibrary | EspeakProgram
SPEED_RANGE = (140, 195)  # words per minute, base speed of a generated speaker
PITCH_RANGE = (25, 75)


@dataclasses.dataclass(frozen=True)
class Speaker:
  """One synthetic speaker: an espeak-ng voice and variant at a base speed (wpm) and pitch (0-99)."""

  speaker_id: int
  voice: str
  variant: str
  speed: int
  pitch: int

  @property
  def espeak_voice(self) -> str:
    return f"{self.voice}+{self.variant}"

  def chapter(self, split: str) -> int:
    """LibriSpeech-like chapter id: one chapter per speaker and split."""
    return self.speaker_id * 100 + _SPLIT_CODES[split]


SPEAKERS = (
    Speaker(101, "en-us", "m1", 165, 45),
    Speaker(102, "en-us", "f2", 175, 60),
    Speaker(103, "en-gb-x-rp", "m3", 150, 35),
    Speaker(104, "en-gb-x-rp", "f4", 160, 65),
    Speaker(105, "en", "m2", 185, 50),
    Speaker(106, "en", "f1", 145, 55),
    Speaker(107, "en-gb-scotland", "m4", 170, 40),
    Speaker(108, "en-029", "f3", 155, 70),
    Speaker(109, "en-us-nyc", "m7", 180, 30),
    Speaker(110, "en-gb-x-gbclan", "f5", 190, 60),
)


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One planned utterance: who says what, at which speed and pitch, and where it goes."""

  split: str
  index: int
  speaker: Speaker
  utt: int  # number within the speaker's chapter
  text: str  # lower case, words separated by single spaces
  speed: int
  pitch: int

  @property
  def chapter(self) -> int:
    return self.speaker.chapter(self.split)

  @property
  def utt_id(self) -> str:
    return f"{self.speaker.speaker_id}-{self.chapter}-{self.utt:04d}"

  @property
  def rel_dir(self) -> str:
    return os.path.join(self.split, str(self.speaker.speaker_id), str(self.chapter))

  @property
  def transcript(self) -> str:
    return self.text.upper()


def generated_speakers(count: int, seed: int, first_id: int = 201) -> tuple[Speaker, ...]:
  """`count` speakers: the bundled ten's voices, speeds and pitches first (ids from `first_id`), then voices
  drawn from LANGUAGES × VARIANTS with base speed and pitch drawn from SPEED_RANGE and PITCH_RANGE."""
  if count < 1:
    raise ValueError(f"need at least one speaker, got {count}")
  out = [dataclasses.replace(s, speaker_id=first_id + i) for i, s in enumerate(SPEAKERS[:count])]
  rng = np.random.default_rng([seed, _SPEAKER_CODE])
  while len(out) < count:
    out.append(Speaker(first_id + len(out), LANGUAGES[int(rng.integers(len(LANGUAGES)))],
                       VARIANTS[int(rng.integers(len(VARIANTS)))], int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
                       int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))))
  return tuple(out)


def plan_utterance(seed: int, split: str, index: int, held_out: frozenset[tuple[str, str]],
                   speakers: Sequence[Speaker] = SPEAKERS) -> Utterance:
  """Utterance `index` of `split`, a function of (seed, split, index) and the speakers only."""
  speaker = speakers[index % len(speakers)]
  rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
  text = sample_sentence(rng, split, held_out)
  speed = int(round(speaker.speed * rng.uniform(1 - SPEED_JITTER, 1 + SPEED_JITTER)))
  pitch = int(np.clip(speaker.pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 99))
  return Utterance(split=split, index=index, speaker=speaker, utt=index // len(speakers), text=text,
                   speed=speed, pitch=pitch)


def trim_silence(audio: np.ndarray, sample_rate: int, keep_s: float = KEEP_SILENCE_S,
                 threshold_db: float = SILENCE_THRESHOLD_DB) -> np.ndarray:
  """Cuts leading and trailing silence, keeping `keep_s` seconds (zero-padded where shorter)."""
  peak = float(np.max(np.abs(audio))) if audio.size else 0.0
  if peak == 0.0:
    raise ValueError("silent audio")
  loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (threshold_db / 20))
  keep = int(round(keep_s * sample_rate))
  start, stop = int(loud[0]) - keep, int(loud[-1]) + 1 + keep
  out = audio[max(start, 0):min(stop, audio.size)]
  return np.pad(out, (max(-start, 0), max(stop - audio.size, 0)))


def to_int16(audio: np.ndarray, peak: float, bits: int = 16) -> np.ndarray:
  """Scales to `peak` of full scale and rounds to int16 multiples of 2**(16 - bits), clipped (no wrap).

  With `bits` < 16 the low bits of every sample are zero, which FLAC stores at no cost ("wasted
  bits"): 12 bits take about 40% less space than 16, with quantisation noise ~65 dB below the peak.
  """
  if not 0.0 < peak <= 1.0:
    raise ValueError(f"peak must be in (0, 1], got {peak}")
  if not 8 <= bits <= 16:
    raise ValueError(f"bits must be in [8, 16], got {bits}")
  step = 2 ** (16 - bits)
  max_abs = float(np.max(np.abs(audio)))
  scaled = audio.astype(np.float64) * (peak * 32767.0 / max_abs if max_abs > 0 else 0.0)
  return (np.clip(np.round(scaled / step), -32768 // step, 32767 // step) * step).astype(np.int16)


def render(engine: Engine, utt: Utterance, sample_rate: int, peak: float, bits: int) -> np.ndarray:
  """int16 mono audio of one utterance at `sample_rate`."""
  audio = engine.synthesize(utt.text, utt.speaker.espeak_voice, utt.speed, utt.pitch)
  audio = trim_silence(audio, ESPEAK_SAMPLE_RATE)
  if sample_rate != ESPEAK_SAMPLE_RATE:
    audio = soxr.resample(audio, ESPEAK_SAMPLE_RATE, sample_rate, quality="HQ")
  return to_int16(audio, peak, bits)


@dataclasses.dataclass
class SplitStats:
  """What was written for one split."""

  utterances: int = 0
  frames: int = 0
  bytes: int = 0
  per_speaker: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def write_split(engine: Engine, output_dir: str, split: str, count: int, seed: int, sample_rate: int,
                peak: float, bits: int, held_out: frozenset[tuple[str, str]],
                speakers: Sequence[Speaker] = SPEAKERS) -> SplitStats:
  """Writes `count` utterances of `split` (FLAC files and per-chapter transcripts)."""
  stats = SplitStats()
  transcripts: dict[str, list[str]] = collections.defaultdict(list)
  for index in range(count):
    utt = plan_utterance(seed, split, index, held_out, speakers)
    pcm = render(engine, utt, sample_rate, peak, bits)
    folder = os.path.join(output_dir, utt.rel_dir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{utt.utt_id}.flac")
    sf.write(path, pcm, sample_rate, format="FLAC", subtype="PCM_16", compression_level=1.0)
    transcripts[os.path.join(folder, f"{utt.speaker.speaker_id}-{utt.chapter}.trans.txt")].append(
        f"{utt.utt_id} {utt.transcript}\n")
    stats.utterances += 1
    stats.frames += pcm.size
    stats.bytes += os.path.getsize(path)
    stats.per_speaker[utt.speaker.speaker_id] += 1
    if (index + 1) % max(100, count // 10) == 0 or index + 1 == count:
      print(f"  {split}: {index + 1}/{count} utterances, {stats.frames / sample_rate / 60:.1f} min, "
            f"{stats.bytes / 1e6:.2f} MB", flush=True)
  for path, lines in transcripts.items():
    with open(path, "w", encoding="utf-8", newline="\n") as f:
      f.writelines(sorted(lines))
    stats.bytes += os.path.getsize(path)
  return stats
