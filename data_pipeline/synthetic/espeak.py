"""espeak-ng, the formant speech synthesizer, as a library from PyPI or as the system program.

    engine = EspeakLibrary()                 # libespeak-ng + its data from the `espeakng-loader` wheel: no system package
    engine = EspeakProgram("espeak-ng")      # the `espeak-ng` program on PATH (apt-get install espeak-ng)
    engine.check_voices(["en-us+m1"])        # unknown voices or variants are refused (espeak-ng would fall back)
    audio = engine.synthesize("move two green boxes up", "en-us+m1", speed=165, pitch=45)  # float32 at 22050 Hz

Both speak the same voices (`<language>+<variant>`, e.g. `en-gb-x-rp+f4`) at a speed in words per minute and a
base pitch 0-99, and give mono float32 in [-1, 1] at `SAMPLE_RATE`. They are different espeak-ng builds, so
their audio differs: the library is what the main job generates training speech with (`espeakng-loader` is
pinned in requirements.txt, so the speech is reproducible wherever the requirements install), the program is
what the bundled corpus was made with (`tools.make_demo_corpus`, which reproduces it byte for byte with the
same program version).

The library keeps global state (one voice, one callback), so `EspeakLibrary` objects share one initialised
library and synthesize one utterance at a time (a lock); each call sets its own voice, speed and pitch. Two
more pieces of state shape the audio:
- its random generator (voice jitter and breath noise) is seeded from the clock at initialisation, so two runs
  started in different seconds differ (measured: 4 different outputs in 10 runs of the same 60 utterances).
  Each call therefore reseeds it (`espeak_ng_SetRandSeed(RAND_SEED)`): 10 of 10 runs then agree, with and
  without address-space randomisation;
- its waveform generator carries state from one utterance to the next (the same sentence and voice said again
  comes out some tens of samples longer or shorter; re-initialising the library does not reset it).
So its audio is reproducible as a sequence: the same utterances in the same order from a fresh process give
the same bytes (`data_pipeline.synthesize_speech` runs as its own process). The program starts afresh for
every utterance, so each of its utterances is reproducible on its own.
"""

from __future__ import annotations

import ctypes
import io
import os
import re
import shutil
import subprocess
import threading
from typing import Sequence

import numpy as np
import soundfile as sf

SAMPLE_RATE = 22050

# espeak_lib.h (espeak-ng 1.52)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_EE_OK = 0
RAND_SEED = 0  # espeak_ng_SetRandSeed before every utterance: the library seeds from the clock otherwise
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _split_voice(voice: str) -> tuple[str, str | None]:
  language, _, variant = voice.partition("+")
  return language, variant or None


class EspeakLibrary:
  """libespeak-ng from the `espeakng-loader` wheel (its own espeak-ng-data), called through ctypes."""

  name = "espeak-ng library (PyPI espeakng-loader)"
  _lock = threading.Lock()
  _lib: ctypes.CDLL | None = None
  _data: str = ""
  _chunks: list[np.ndarray] = []

  def __init__(self):
    with self._lock:
      if EspeakLibrary._lib is None:
        try:
          import espeakng_loader
        except ImportError as e:
          raise RuntimeError("the espeak-ng library needs the `espeakng-loader` package (pip install -r "
                             "requirements.txt)") from e
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path()
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, os.path.dirname(data).encode(), 0)
        if rate != SAMPLE_RATE:
          raise RuntimeError(f"espeak-ng library initialisation failed (returned {rate}, expected {SAMPLE_RATE} Hz)")
        EspeakLibrary._callback = _SynthCallback(EspeakLibrary._collect)  # kept: the library holds a pointer
        lib.espeak_SetSynthCallback(EspeakLibrary._callback)
        EspeakLibrary._lib, EspeakLibrary._data = lib, data

  @staticmethod
  def _collect(wav, count: int, _events) -> int:
    if count > 0:
      EspeakLibrary._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
    return 0

  @property
  def version(self) -> str:
    return self._lib.espeak_Info(None).decode()

  def check_voices(self, voices: Sequence[str]) -> None:
    """Refuses a language the library cannot select or a variant its data does not have."""
    variants = set(os.listdir(os.path.join(self._data, "voices", "!v")))
    with self._lock:
      for voice in voices:
        language, variant = _split_voice(voice)
        if self._lib.espeak_SetVoiceByName(language.encode()) != _EE_OK or (variant and variant not in variants):
          raise RuntimeError(f"the espeak-ng library has no voice {voice!r} (data: {self._data})")

  def synthesize(self, text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """float32 [samples] in [-1, 1] at SAMPLE_RATE."""
    data = text.encode("utf-8")
    with self._lock:
      lib = self._lib
      if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
        raise RuntimeError(f"espeak-ng library: cannot select voice {voice!r}")
      lib.espeak_SetParameter(_RATE, int(speed), 0)
      lib.espeak_SetParameter(_PITCH, int(pitch), 0)
      lib.espeak_ng_SetRandSeed(RAND_SEED)
      EspeakLibrary._chunks = []
      status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
      lib.espeak_Synchronize()
      chunks, EspeakLibrary._chunks = EspeakLibrary._chunks, []
    if status != _EE_OK or not chunks:
      raise RuntimeError(f"espeak-ng library failed on {text!r} ({voice}): status {status}")
    return (np.concatenate(chunks).astype(np.float32) / 32768.0)


class EspeakProgram:
  """The `espeak-ng` program (a system package), run once per utterance."""

  name = "espeak-ng program"

  def __init__(self, binary: str = "espeak-ng"):
    path = shutil.which(binary)
    if path is None:
      raise RuntimeError(f"espeak-ng not found (looked for {binary!r} on PATH); install it with "
                         "`apt-get install espeak-ng` (Debian/Ubuntu) and run again")
    self.path = path

  @property
  def version(self) -> str:
    """The version string from `espeak-ng --version`, e.g. '1.51'."""
    out = subprocess.run([self.path, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", out)
    return match.group(1) if match else out.strip()

  def _listed(self, arg: str) -> set[str]:
    out = subprocess.run([self.path, arg], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines()[1:]:
      fields = line.split()
      if len(fields) >= 5:
        names.add(fields[1])  # language
        names.add(fields[4].rsplit("/", 1)[-1])  # file, e.g. gmw/en-US or !v/m3
    return names

  def check_voices(self, voices: Sequence[str]) -> None:
    """Refuses unknown voices or variants: espeak-ng silently falls back to a default otherwise."""
    languages, variants = self._listed("--voices"), self._listed("--voices=variant")
    for voice in voices:
      language, variant = _split_voice(voice)
      if language not in languages or (variant and variant not in variants):
        raise RuntimeError(f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices` and "
                           "`espeak-ng --voices=variant`)")

  def synthesize(self, text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """float32 [samples] in [-1, 1] at SAMPLE_RATE."""
    result = subprocess.run([self.path, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                            capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
      raise RuntimeError(f"espeak-ng failed on {text!r} ({voice}): {result.stderr.decode(errors='replace')}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    if rate != SAMPLE_RATE or audio.ndim != 1:
      raise RuntimeError(f"unexpected espeak-ng output: {rate} Hz, shape {audio.shape}")
    return audio


def engine(name: str, binary: str = "espeak-ng") -> EspeakLibrary | EspeakProgram:
  """'library' or 'program'."""
  if name == "library":
    return EspeakLibrary()
  if name == "program":
    return EspeakProgram(binary)
  raise ValueError(f"espeak engine must be 'library' or 'program', not {name!r}")
