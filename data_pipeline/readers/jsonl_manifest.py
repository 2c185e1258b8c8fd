"""A generic JSONL manifest: one JSON object per line naming an audio file and what is known about it.

    {"path": "audio/a.flac", "text": "hello", "language": "en", "speaker": "s1"}
    {"id": "b-2", "path": "/data/b.wav", "start": 1.5, "end": 4.0}
    {"path": "batch.tar", "member": "x/c.mp3", "text": "bonjour", "language": "French"}

Fields: `path` (required): the audio file, or the tar archive holding it when `member` is given; a relative
path is resolved against the manifest's directory (a gs:// manifest's too). Optional: `id` (default: the path
(or member) as written, without its suffix), `text` (the transcript; null = none), `language` (a code such as
"en" becomes the AudioPaLM name "English"; names and unknown codes are kept as given; default: the config's),
`speaker` (string or number), `start`/`end` (the utterance's window in the file, seconds), `duration` (seconds).
Any other field goes to the Utterance's `extra`.

`manifests` are .jsonl files, or directories searched recursively for them. Lines are read one at a time
(a manifest may be large); blank lines are skipped. A line that is not UTF-8 JSON, is not an object, lacks
`path`, or has a field of the wrong type or a bad window is a `bad_metadata` Reject naming the manifest and
line number (its id: the line's `id` if it has one, else `{manifest}:{line}`). A transcript with control
characters or lone surrogates is a `bad_transcript` Reject; a member path escaping its archive is an
`unsafe_path` Reject; with `require_transcripts`, a line without text is a `missing_transcript` Reject.
Whether the audio exists is not checked here (the job rejects unreadable audio).

Order: manifests in sorted order, lines in file order.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import posixpath
from typing import Any, Iterator

from audiopalm.files import storage

from data_pipeline import audio_source
from data_pipeline.readers import base
from data_pipeline.records import (BAD_METADATA, BAD_TRANSCRIPT, MISSING_TRANSCRIPT, UNSAFE_PATH, AudioRef, Reject,
                                   Utterance)

_SUFFIX = ".jsonl"
_KNOWN = ("id", "path", "member", "text", "language", "speaker", "start", "end", "duration")


@dataclasses.dataclass(frozen=True)
class JsonlManifestConfig:
  """Which manifests to read.

  Attributes:
    manifests: .jsonl files, or directories holding them (searched recursively); local or gs://.
    language: the language name of lines that give none.
    require_transcripts: a line without `text` is a `missing_transcript` Reject (False: transcript None).
    listing_cache: a file caching the listing of `manifests` (see `data_pipeline.listing`); None: list every run.
  """

  manifests: tuple[str, ...] = ()
  language: str | None = None
  require_transcripts: bool = False
  listing_cache: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "manifests", base.as_tuple(self.manifests))
    if not self.manifests:
      raise ValueError("JsonlManifestConfig.manifests is empty: give at least one .jsonl file or directory")


class _BadLine(ValueError):
  """A manifest line that cannot become an Utterance: the Reject reason code and the specifics."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code


def _number(line: dict[str, Any], key: str) -> float | None:
  value = line.get(key)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
    raise _BadLine(BAD_METADATA, f"{key!r} must be a non-negative number of seconds, got {value!r}")
  return float(value)


def _string(line: dict[str, Any], key: str, numbers: bool = False) -> str | None:
  value = line.get(key)
  if value is None:
    return None
  if numbers and isinstance(value, int) and not isinstance(value, bool):
    return str(value)
  if not isinstance(value, str):
    raise _BadLine(BAD_METADATA, f"{key!r} must be a string, got {value!r}")
  return value


def resolve(path: str, manifest: str) -> str:
  """`path` from a manifest line: URLs and absolute paths as given, relative ones against the manifest's folder."""
  if "://" in path or os.path.isabs(path):
    return path
  if "://" in manifest:
    return posixpath.join(posixpath.dirname(manifest), path)
  return os.path.join(os.path.dirname(manifest), path)


@base.register_reader("jsonl_manifest")
class JsonlManifestReader:
  """Generic JSONL manifests (see the module docstring)."""

  name = "jsonl_manifest"

  def __init__(self, config: JsonlManifestConfig):
    self.config = config
    self._files: list[str] | None = None

  def _listing(self) -> list[str]:
    if self._files is None:
      self._files = base.list_inputs(self.config.manifests, (_SUFFIX,), self.config.listing_cache)
    return self._files

  def num_input_files(self) -> int:
    """Manifest files."""
    return len(self._listing())

  def utterances(self) -> Iterator[base.Item]:
    for manifest in self._listing():
      with storage.open_sequential(manifest) as f:
        for number, raw in enumerate(f, 1):
          if raw.strip():
            yield self._line(raw, manifest, number)

  def _line(self, raw: bytes, manifest: str, number: int) -> base.Item:
    utt_id, path = f"{manifest}:{number}", manifest  # what a Reject names until the line says better
    try:
      try:
        line = json.loads(raw.decode("utf-8"))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _BadLine(BAD_METADATA, f"not UTF-8 JSON: {e}") from None
      if not isinstance(line, dict):
        raise _BadLine(BAD_METADATA, f"a {type(line).__name__}, not an object")
      if line.get("id") is not None:
        if not (isinstance(line["id"], str) and line["id"]):
          raise _BadLine(BAD_METADATA, f"'id' must be a non-empty string, got {line['id']!r}")
        utt_id = line["id"]
      written = _string(line, "path")
      if not written:
        raise _BadLine(BAD_METADATA, "no 'path'")
      audio = AudioRef(resolve(written, manifest), _string(line, "member"))
      path = str(audio)
      if line.get("id") is None:
        utt_id = posixpath.splitext(audio.member or written)[0]
      if audio.member is not None and (reason := audio_source.unsafe_name(audio.member)):
        raise _BadLine(UNSAFE_PATH, reason)
      return self._utterance(line, utt_id, audio)
    except _BadLine as e:
      return Reject(utt_id, path, f"{e.code}: {manifest} line {number}: {e}")

  def _utterance(self, line: dict[str, Any], utt_id: str, audio: AudioRef) -> Utterance:
    text = _string(line, "text")
    if text is not None:
      problem = base.transcript_problem(text)
      if problem:
        raise _BadLine(BAD_TRANSCRIPT, problem)
    elif self.config.require_transcripts:
      raise _BadLine(MISSING_TRANSCRIPT, "no 'text'")
    start, end, duration = _number(line, "start"), _number(line, "end"), _number(line, "duration")
    if end is not None and end <= (start or 0.0):
      raise _BadLine(BAD_METADATA, f"empty window: start {start}, end {end}")
    language = base.language_name(_string(line, "language"), self.config.language)
    return Utterance(id=utt_id, audio=audio, start=start, end=end, transcript=text,
                     language=language, speaker=_string(line, "speaker", numbers=True), duration=duration,
                     extra={k: v for k, v in line.items() if k not in _KNOWN})
