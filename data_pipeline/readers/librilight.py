"""LibriLight: long unlabelled FLAC recordings, each with a JSON file of metadata and voice activity.

    {root}/{split}/{speaker}/{book}/{name}.flac
    {root}/{split}/{speaker}/{book}/{name}.json   {"speaker": "100", "book_meta": {...}, "snr": 7.9,
                                                   "voice_activity": [[0.43, 12.1], [12.6, 30.2], ...]}

`root` is a split directory (small, medium, large, ...) or a directory above several; files are found
recursively. One Utterance per FLAC file, with no transcript: id `{speaker}/{book}/{name}` (the last three path
components, so the id does not depend on which directory `roots` names), `speaker` from the JSON (else the
directory name), `voice_activity` as ((start, end), ...) seconds, the config's language, and in `extra` the book
directory (`book`) plus every other JSON field (`book_meta`, `snr`, ...).

A missing or malformed JSON file does not cost the recording: the utterance still goes, with voice_activity
None (the job then cuts it with its energy VAD), and the problem recorded in `extra["metadata_error"]`. With
`require_metadata=True` such a recording is a `bad_metadata` Reject instead. Malformed: not UTF-8 JSON, not an
object, or a `voice_activity` that is not a list of [start, end] finite seconds with 0 <= start <= end.
A JSON file with no FLAC file beside it is an `unreadable: no audio file` Reject.

Order: sorted paths.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import posixpath
from typing import Any, Iterator

from audiopalm.files import storage

from data_pipeline.readers import base
from data_pipeline.records import BAD_METADATA, UNREADABLE, AudioRef, Reject, Utterance

_AUDIO = ".flac"
_META = ".json"


@dataclasses.dataclass(frozen=True)
class LibriLightConfig:
  """Where a LibriLight-layout corpus is and how to read it.

  Attributes:
    roots: split directories (or directories above them), local or gs://.
    language: the utterances' language name.
    require_metadata: a recording whose JSON file is missing or malformed is a `bad_metadata` Reject (False:
      an Utterance with voice_activity None and `extra["metadata_error"]`).
    listing_cache: a file caching the listing of `roots` (see `data_pipeline.listing`); None: list every run.
  """

  roots: tuple[str, ...] = ()
  language: str | None = "English"
  require_metadata: bool = False
  listing_cache: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "roots", base.as_tuple(self.roots))
    base.check_roots("LibriLightConfig", self.roots)


def _parts(path: str) -> list[str]:
  return (posixpath if "://" in path else os.path).normpath(path).replace("\\", "/").split("/")


def voice_activity(value: Any) -> tuple[tuple[float, float], ...]:
  """LibriLight's `voice_activity` ([[start, end], ...] seconds) as a tuple of pairs; ValueError if malformed."""
  if not isinstance(value, list):
    raise ValueError(f"voice_activity is {type(value).__name__}, not a list")
  regions = []
  for i, pair in enumerate(value):
    ok = (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                           and math.isfinite(x) for x in pair))
    if not ok or not 0 <= pair[0] <= pair[1]:
      raise ValueError(f"voice_activity[{i}] = {pair!r} is not [start, end] seconds with 0 <= start <= end")
    regions.append((float(pair[0]), float(pair[1])))
  return tuple(regions)


def _read_metadata(path: str) -> dict[str, Any]:
  """The JSON object at `path`; ValueError (with the reason) when it is missing or malformed."""
  try:
    data = storage.read_bytes(path)
  except FileNotFoundError:
    raise ValueError(f"no metadata file {path}") from None
  except OSError as e:
    raise ValueError(f"cannot read {path}: {type(e).__name__}: {e}") from None
  try:
    meta = json.loads(data.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} is not UTF-8 JSON: {e}") from None
  if not isinstance(meta, dict):
    raise ValueError(f"{path} holds a {type(meta).__name__}, not an object")
  return meta


@base.register_reader("librilight")
class LibriLightReader:
  """LibriLight-layout corpora (see the module docstring)."""

  name = "librilight"

  def __init__(self, config: LibriLightConfig):
    self.config = config
    self._files: list[str] | None = None

  def _listing(self) -> list[str]:
    if self._files is None:
      self._files = base.list_inputs(self.config.roots, (_AUDIO, _META), self.config.listing_cache)
    return self._files

  def num_input_files(self) -> int:
    """FLAC files."""
    return sum(1 for p in self._listing() if p.lower().endswith(_AUDIO))

  def utterances(self) -> Iterator[base.Item]:
    files = self._listing()
    audio = {p[:-len(_AUDIO)] for p in files if p.lower().endswith(_AUDIO)}
    metadata = {p[:-len(_META)]: p for p in files if p.lower().endswith(_META)}

    def item(path: str) -> base.Item | None:
      stem = path[:-len(_META)] if path.lower().endswith(_META) else path[:-len(_AUDIO)]
      parts = _parts(stem)
      utt_id = "/".join(parts[-3:])
      if path.lower().endswith(_META):
        if stem not in audio:
          return Reject(utt_id, path, f"{UNREADABLE}: no audio file {stem}{_AUDIO} for the metadata file")
        return None
      return self._utterance(utt_id, path, parts, metadata.get(stem))

    for result in base.ordered_map(item, files):  # the JSON files are read on a thread pool, yielded in order
      if result is not None:
        yield result

  def _utterance(self, utt_id: str, path: str, parts: list[str], meta_path: str | None) -> base.Item:
    speaker = parts[-3] if len(parts) >= 3 else None
    extra: dict[str, Any] = {"book": parts[-2]} if len(parts) >= 2 else {}
    activity = None
    try:
      if meta_path is None:
        raise ValueError(f"no metadata file {path[:-len(_AUDIO)]}{_META}")
      meta = _read_metadata(meta_path)
      if "voice_activity" in meta:
        activity = voice_activity(meta["voice_activity"])
    except ValueError as e:
      if self.config.require_metadata:
        return Reject(utt_id, path, f"{BAD_METADATA}: {e}")
      extra["metadata_error"] = str(e)
    else:
      if meta.get("speaker") not in (None, ""):
        speaker = str(meta["speaker"])
      extra.update({k: v for k, v in meta.items() if k not in ("voice_activity", "speaker")})
    return Utterance(id=utt_id, audio=AudioRef(path), language=self.config.language, speaker=speaker,
                     voice_activity=activity, extra=extra)
