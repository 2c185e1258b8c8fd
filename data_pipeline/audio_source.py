"""Decoding an utterance's audio from where its `AudioRef` points: a file, a member of a tar archive, or a reader.

    waveform = read_audio(utterance.audio, 16000, start=utterance.start, end=utterance.end)   # float32 [samples]
    for name, data in iter_archive("EN_B00000.tar.gz", select=lambda n: n.endswith(".mp3")):  # one pass
      waveform = decode_audio_bytes(data, f"EN_B00000.tar.gz#{name}", 16000)

Files (local or gs://, through `audiopalm.files.storage`) go to `audiopalm.audio.io.load_audio`; a job reads each
file once (`audiopalm.files.storage.read_bytes`) and decodes it from memory (`data=`). Archive members are never
extracted to disk:

- an uncompressed `.tar` is indexed once (locally its headers only: tarfile seeks over the data; a remote one is
  streamed once) and a member is read by one ranged read of its bytes, so random access costs one request per
  member; the last few archives' indexes are kept;
- a compressed archive (`.tar.gz`, `.tgz`, `.tar.bz2`, `.tar.xz`) has no random access: `read_audio` reads it
  from the start up to the member, which is fine for a one-off read and quadratic for a whole archive. A job
  reads every archive, plain or compressed, with `iter_archive`, which streams it once (decompressing it once)
  and yields every member's bytes in archive order.

Member bytes are decoded in memory by soundfile (libsndfile; 1.2.2 here decodes MP3 through mpg123, and the
tests check it). libsndfile's MP3 seeking is not sample-accurate (the frames after a seek decode wrong, up to
~0.2 s), so an MP3 window is decoded from the beginning and cut; other formats seek.

Member names are compared after dropping a leading "./". A member whose name is absolute or has a `..`
component, or that is not a regular file (symlink, hard link, device, FIFO, sparse file), is refused: readers
turn it into an `unsafe_path` Reject, and `read_audio` raises `AudioDecodeError` with a reason starting with
"unsafe_path". `iter_archive` skips such members (readers have already rejected them).

Audio held by a reader (a TFDS dataset: `AudioRef.path` "tfds://...") is loaded with the reader's
`load(ref) -> (waveform, sample_rate)`, passed here as `loader`, then windowed and resampled as a file would be.

For `data_pipeline.audio_prep.prepare`, `read_native` and `ref_info` are its `reader` and `info` for any AudioRef:

    reader = functools.partial(read_native, loader=corpus_reader.load)         # TFDS
    reader, info = (functools.partial(f, data=member_bytes) for f in (read_native, ref_info))   # from iter_archive
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tarfile
import threading
import zlib
from typing import Callable, Iterator

import numpy as np
import soundfile as sf

from audiopalm.audio.io import AudioDecodeError, load_audio, resample
from audiopalm.files import storage
from data_pipeline.records import UNSAFE_PATH, AudioRef

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
READER_SCHEMES = ("tfds://",)  # AudioRef paths of audio held by a reader (loaded with its `load`)
_DECODE_ERRORS = (sf.SoundFileError, RuntimeError, OSError, EOFError)
ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)  # a corrupt, truncated or missing archive
_INDEXES_KEPT = 4  # uncompressed archives whose member index stays in memory

Loader = Callable[[AudioRef], tuple[np.ndarray, int]]


def is_archive(path: str) -> bool:
  """Whether `path` names a tar archive (by its suffix)."""
  return path.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(path: str) -> str:
  """The archive's path without its archive suffix ("a/EN_B00000.tar.gz" → "a/EN_B00000")."""
  lower = path.lower()
  for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
    if lower.endswith(suffix):
      return path[:-len(suffix)]
  return path


def _is_plain_tar(path: str) -> bool:
  return path.lower().endswith(".tar")


def member_key(name: str) -> str:
  """A member name as readers record it and lookups compare it: without a leading "./"."""
  while name.startswith("./"):
    name = name[2:]
  return name


def unsafe_name(name: str) -> str | None:
  """Why a member name (or a metadata path to one) could escape its archive, or None when it cannot."""
  if not name or name in (".", "./"):
    return "empty member name"
  if name.startswith(("/", "\\")) or (len(name) > 1 and name[0].isalpha() and name[1] == ":"):
    return f"absolute member path {name!r}"
  if ".." in name.replace("\\", "/").split("/"):
    return f"member path {name!r} has a '..' component"
  if "\x00" in name:
    return f"member path {name!r} has a NUL character"
  return None


def unsafe_member(info: tarfile.TarInfo) -> str | None:
  """Why an archive member is refused (an unsafe name, or not a regular file), or None for a safe one.

  Directories with safe names are safe (and hold no audio)."""
  reason = unsafe_name(info.name)
  if reason:
    return reason
  if info.issym():
    return f"member {info.name!r} is a symbolic link (to {info.linkname!r})"
  if info.islnk():
    return f"member {info.name!r} is a hard link (to {info.linkname!r})"
  if info.isdev():
    return f"member {info.name!r} is a device or FIFO"
  if info.issparse():
    return f"member {info.name!r} is a sparse file"
  if not (info.isreg() or info.isdir()):
    return f"member {info.name!r} has type {info.type!r}"
  return None


@contextlib.contextmanager
def _open_tar(path: str, *, stream: bool) -> Iterator[tarfile.TarFile]:
  """The archive opened for reading: random access (a local plain tar) or as a stream (any compression, and any
  remote archive: read front to back in large blocks, `storage.open_sequential`, since each seek would cost a
  request)."""
  if stream or storage.is_remote(path):
    with storage.open_sequential(path) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
      yield tar
  else:
    with open(path.removeprefix("file://"), "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
      yield tar


def scan_archive(path: str, read: Callable[[str], bool] | None = None
                 ) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
  """Every member of the archive in archive order, with its bytes when `read(member_key(name))` is true and the
  member is safe and regular (else None).

  A plain tar is scanned by seeking over the data (only headers are read); a compressed one is decompressed
  once. Memory stays bounded: members are not accumulated. Errors (a corrupt or truncated archive) propagate
  as tarfile.TarError / OSError / EOFError / zlib.error after the members before the damage.
  """
  with _open_tar(path, stream=not _is_plain_tar(path)) as tar:
    while (info := tar.next()) is not None:
      tar.members.clear()  # tarfile keeps every TarInfo it has read; a batch may have millions
      data = None
      if read is not None and info.isreg() and unsafe_member(info) is None and read(member_key(info.name)):
        data = tar.extractfile(info).read()
      yield info, data


def iter_archive(path: str, select: Callable[[str], bool] | None = None) -> Iterator[tuple[str, bytes]]:
  """(member_key(name), bytes) of every safe regular member (for which `select(name)` is true), in archive order.

  The archive is read once, sequentially (a compressed one is decompressed once): the way a job reads a whole
  archive. Unsafe members are skipped (readers reject them). A corrupt archive raises AudioDecodeError after the
  members before the damage.
  """
  try:
    for info, data in scan_archive(path, read=select or (lambda name: True)):
      if data is not None:
        yield member_key(info.name), data
  except ARCHIVE_ERRORS as e:
    raise AudioDecodeError(path, f"corrupt archive: {type(e).__name__}: {e}") from e


@functools.lru_cache(maxsize=_INDEXES_KEPT)
def _tar_index(path: str, signature: tuple) -> tuple[dict[str, tuple[int, int, str | None]], str | None]:
  """member_key → (data offset, size, why it is refused or None) for a plain tar (headers only), and what
  stopped the scan early (a corrupt or truncated archive: the members before the damage are indexed)."""
  del signature  # part of the cache key: a rewritten archive is indexed again
  index, error = {}, None
  try:
    for info, _ in scan_archive(path):
      index.setdefault(member_key(info.name), (info.offset_data, info.size, unsafe_member(info)))  # first wins
  except ARCHIVE_ERRORS as e:
    if not index and isinstance(e, FileNotFoundError):
      raise
    error = f"corrupt archive: {type(e).__name__}: {e}"
  return index, error


def _signature(path: str) -> tuple:
  if "://" in path and not path.startswith("file://"):
    return ()
  st = os.stat(path.removeprefix("file://"))
  return (st.st_size, st.st_mtime_ns)


_index_lock = threading.Lock()


def read_member(path: str, member: str) -> bytes:
  """The bytes of one archive member, read in place (see the module docstring for the cost).

  Raises:
    AudioDecodeError: no such member, an unsafe member (reason "unsafe_path: ..."), a corrupt archive.
  """
  key = member_key(member)
  where = str(AudioRef(path, member))
  reason = unsafe_name(key)
  if reason:
    raise AudioDecodeError(where, f"{UNSAFE_PATH}: {reason}")
  try:
    if _is_plain_tar(path):
      with _index_lock:
        index, error = _tar_index(path, _signature(path))
      if key not in index:
        raise AudioDecodeError(where, error or f"no member {member!r} in the archive")
      offset, size, reason = index[key]
      if reason:
        raise AudioDecodeError(where, f"{UNSAFE_PATH}: {reason}")
      data = storage.read_range(path, offset, size)  # one request: exactly the member's bytes
      if len(data) != size:
        raise AudioDecodeError(where, f"truncated archive: {len(data)} of {size} bytes")
      return data
    for info, data in scan_archive(path, read=lambda name: name == key):
      if member_key(info.name) == key:
        reason = unsafe_member(info)
        if reason:
          raise AudioDecodeError(where, f"{UNSAFE_PATH}: {reason}")
        if data is None:  # a directory
          raise AudioDecodeError(where, f"member {member!r} is not a file")
        return data
  except FileNotFoundError as e:
    raise AudioDecodeError(where, f"no such archive: {e}") from e
  except ARCHIVE_ERRORS as e:
    raise AudioDecodeError(where, f"corrupt archive: {type(e).__name__}: {e}") from e
  raise AudioDecodeError(where, f"no member {member!r} in the archive")


def window(data: np.ndarray, rate: int, sample_rate: int | None, start: float | None = None,
           end: float | None = None, *, mono: bool = True, name: str = "audio") -> np.ndarray:
  """The window [start, end) seconds of a decoded waveform, downmixed and resampled as `load_audio` does.

  Args:
    data: [samples] or [samples, channels] float at `rate`.
    rate: its sample rate.
    sample_rate: resample to this rate (None: keep `rate`).
    start, end: seconds (None: the beginning, the end); an `end` past the end is clipped.
    mono: average the channels.
    name: names the audio in errors.

  Returns:
    float32 in [-1, 1]: [samples] if mono, else [samples, channels].
  """
  if sample_rate is not None and sample_rate <= 0:
    raise ValueError(f"read_audio: sample_rate must be positive, got {sample_rate}")
  if (start is not None and start < 0) or (end is not None and end < (start or 0.0)):
    raise ValueError(f"read_audio: bad window [{start}, {end}) for {name}")
  data = np.asarray(data, np.float32)
  if data.ndim == 1:
    data = data[:, None]  # [samples, 1]
  first = int(round((start or 0.0) * rate))
  last = len(data) if end is None else min(len(data), int(round(end * rate)))
  data = data[first:max(first, last)]  # [samples, channels]
  if not np.isfinite(data).all():
    raise AudioDecodeError(name, "non-finite samples")
  if mono:
    data = data.mean(axis=1, dtype=np.float32)  # [samples]
  if sample_rate is not None:
    data = resample(data, rate, sample_rate)
  return np.ascontiguousarray(np.clip(data, -1.0, 1.0), dtype=np.float32)


def _decode_window(f: sf.SoundFile, name: str, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
  """The frames [start, end) seconds of an open sound file: (float32 [samples, channels], its rate).

  MP3 is decoded in one read from the beginning up to the window's end, then cut: libsndfile's MP3 decoding is
  only right that way (after a seek, or across two reads, the first frames come out wrong)."""
  if (start is not None and start < 0) or (end is not None and end < (start or 0.0)):
    raise ValueError(f"read_audio: bad window [{start}, {end}) for {name}")
  rate = f.samplerate
  first = int(round((start or 0.0) * rate))
  stop = None if end is None else int(round(end * rate))  # frames=-1 reads to the end (MP3 counts are estimates)
  if stop is not None and stop <= first:
    decoded = np.zeros((0, f.channels), np.float32)
  elif f.format == "MP3" and first:
    decoded = f.read(frames=-1 if stop is None else stop, dtype="float32", always_2d=True)[first:]
  elif first >= f.frames > 0:
    decoded = np.zeros((0, f.channels), np.float32)
  else:
    if first:
      f.seek(first)
    decoded = f.read(frames=-1 if stop is None else stop - first, dtype="float32", always_2d=True)
  return decoded, rate  # [samples, channels]


@contextlib.contextmanager
def _sound_file(source: str | bytes, name: str) -> Iterator[sf.SoundFile]:
  """A file path (local or URL) or encoded bytes, opened by soundfile; failures become AudioDecodeError."""
  try:
    with contextlib.ExitStack() as stack:
      if isinstance(source, bytes):
        opened: object = io.BytesIO(source)
      elif storage.is_remote(source):
        opened = io.BytesIO(storage.read_bytes(source))  # whole, in one request
      else:
        opened = source.removeprefix("file://")
      yield stack.enter_context(sf.SoundFile(opened))
  except _DECODE_ERRORS as e:
    raise AudioDecodeError(name, f"{type(e).__name__}: {e}") from e


def decode_audio_bytes(data: bytes, name: str, sample_rate: int | None, start: float | None = None,
                       end: float | None = None, *, mono: bool = True) -> np.ndarray:
  """Decodes an encoded audio file held in memory (FLAC, WAV, OGG, MP3, ...): the window [start, end) seconds.

  Same contract as `load_audio` (float32 [samples] or [samples, channels], in [-1, 1]); `name` names the audio
  in errors. Raises AudioDecodeError when the bytes are not decodable audio.
  """
  with _sound_file(data, name) as f:
    decoded, rate = _decode_window(f, name, start, end)
  return window(decoded, rate, sample_rate, mono=mono, name=name)


def is_reader_ref(ref: AudioRef) -> bool:
  return ref.path.startswith(READER_SCHEMES)


def _load(ref: AudioRef, loader: Loader | None) -> tuple[np.ndarray, int]:
  if loader is None:
    raise AudioDecodeError(str(ref), "audio held by a reader: pass the reader's load() as loader")
  return loader(ref)


def read_audio(ref: AudioRef, sample_rate: int | None, start: float | None = None, end: float | None = None, *,
               mono: bool = True, loader: Loader | None = None, data: bytes | None = None) -> np.ndarray:
  """Decodes the window [start, end) seconds of an utterance's audio, wherever `ref` points.

  Args:
    ref: a file (local or gs://), an archive member (`ref.member`), or audio held by a reader ("tfds://...").
    sample_rate: resample to this rate (soxr HQ); None keeps the audio's rate.
    start, end: window in seconds (None: the beginning, the end).
    mono: average the channels.
    loader: the reader's `load(ref) -> (waveform, sample_rate)`, for audio held by a reader.
    data: the member's bytes when the caller has them already (from `iter_archive`): the archive is not read.

  Returns:
    float32 in [-1, 1]: [samples] if mono, else [samples, channels].

  Raises:
    AudioDecodeError: missing, unreadable, corrupt or unsafe audio; the reason names it.
    ValueError: a bad window or sample rate.
  """
  name = str(ref)
  if is_reader_ref(ref):
    wave, rate = _load(ref, loader)
    return window(wave, rate, sample_rate, start, end, mono=mono, name=name)
  if ref.member is not None or data is not None:
    data = read_member(ref.path, ref.member) if data is None else data
    return decode_audio_bytes(data, name, sample_rate, start, end, mono=mono)
  if start and ref.path.lower().endswith(".mp3"):  # load_audio would seek, which MP3 does not do right
    with _sound_file(ref.path, name) as f:
      decoded, rate = _decode_window(f, name, start, end)
    return window(decoded, rate, sample_rate, mono=mono, name=name)
  return load_audio(ref.path, sample_rate, start=start, end=end, mono=mono)


def read_native(ref: AudioRef, start: float | None = None, end: float | None = None, *,
                loader: Loader | None = None, data: bytes | None = None) -> tuple[np.ndarray, int]:
  """(float32 [samples, channels], rate): the window [start, end) at the audio's own rate, wherever `ref` points.

  The `reader` that `data_pipeline.audio_prep.prepare` takes, for any AudioRef (bind `loader` / `data` with
  functools.partial). One open of the audio; MP3 windows as in `read_audio`.
  """
  name = str(ref)
  if is_reader_ref(ref):
    wave, rate = _load(ref, loader)
    return window(wave, rate, None, start, end, mono=False, name=name), int(rate)
  if ref.member is not None or data is not None:
    source: str | bytes = read_member(ref.path, ref.member) if data is None else data
  else:
    source = ref.path
  with _sound_file(source, name) as f:
    decoded, rate = _decode_window(f, name, start, end)
  return window(decoded, rate, None, mono=False, name=name), rate


def ref_info(ref: AudioRef, *, loader: Loader | None = None, data: bytes | None = None) -> tuple[int, int, int]:
  """(sample_rate, frames, channels) of the audio `ref` points at, from its header (the `info` of
  `data_pipeline.audio_prep.prepare`). Audio held by a reader is loaded (TFDS readers keep the last example,
  so the read that follows does not load it again)."""
  name = str(ref)
  if is_reader_ref(ref):
    wave, rate = _load(ref, loader)
    wave = np.asarray(wave)
    return int(rate), len(wave), wave.shape[1] if wave.ndim == 2 else 1
  if ref.member is not None or data is not None:
    source: str | bytes = read_member(ref.path, ref.member) if data is None else data
  else:
    source = ref.path
  with _sound_file(source, name) as f:
    return f.samplerate, f.frames, f.channels


def clear_index_cache() -> None:
  """Forgets the member indexes of uncompressed archives (e.g. after rewriting one in place in a test)."""
  _tar_index.cache_clear()


__all__ = ["ARCHIVE_ERRORS", "ARCHIVE_SUFFIXES", "READER_SCHEMES", "Loader", "archive_stem", "clear_index_cache",
           "is_reader_ref",
           "decode_audio_bytes", "is_archive", "iter_archive", "member_key", "read_audio", "read_member",
           "read_native", "ref_info", "scan_archive", "unsafe_member", "unsafe_name", "window"]
