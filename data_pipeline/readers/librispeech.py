"""LibriSpeech (and corpora in its layout, such as the bundled demo corpus): FLAC files with chapter transcripts.

    {root}/{speaker}/{chapter}/{speaker}-{chapter}-{utt}.flac
    {root}/{speaker}/{chapter}/{speaker}-{chapter}.trans.txt      lines "ID TRANSCRIPT"

`root` is a split directory (train-clean-100, ...) or any directory above several: files are found
recursively, and a FLAC file is matched with the `*.trans.txt` lines of its own directory by utterance id
(its file name without the suffix). One Utterance per (id, flac) pair, with the transcript as written (LibriSpeech:
upper case, no punctuation), `speaker` and `extra["chapter"]` from the directory names, the config's language.

Rejects (every input utterance, a FLAC file or a transcript line, comes out once):
- a FLAC file with no transcript line: `missing_transcript` (with `require_transcripts=False` it is an
  Utterance with transcript None instead), also when the line has an id and no text;
- a transcript line with no FLAC file: `unreadable: no audio file ...`;
- a transcript line that is not UTF-8 or holds control characters: `bad_transcript`;
- a transcript file that cannot be read: its directory's FLAC files are `missing_transcript` with the error.

Order: directories in sorted order, utterance ids sorted within each.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
from typing import Iterator

from audiopalm.files import storage

from data_pipeline.readers import base
from data_pipeline.records import BAD_TRANSCRIPT, MISSING_TRANSCRIPT, UNREADABLE, AudioRef, Reject, Utterance

log = logging.getLogger(__name__)

_AUDIO = ".flac"
_TRANS = ".trans.txt"


@dataclasses.dataclass(frozen=True)
class LibriSpeechConfig:
  """Where a LibriSpeech-layout corpus is and how to read it.

  Attributes:
    roots: split directories (or directories above them), local or gs://.
    language: the utterances' language name.
    require_transcripts: a FLAC file without a transcript is a `missing_transcript` Reject (False: an
      Utterance with transcript None).
    listing_cache: a file caching the listing of `roots` (see `data_pipeline.listing`); None: list every run.
  """

  roots: tuple[str, ...] = ()
  language: str | None = "English"
  require_transcripts: bool = True
  listing_cache: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "roots", base.as_tuple(self.roots))
    base.check_roots("LibriSpeechConfig", self.roots)


def _split(path: str) -> tuple[str, str]:
  """(directory, file name) for local paths and URLs alike."""
  return posixpath.split(path) if "://" in path else os.path.split(path)


def _parse_transcripts(path: str, lines: dict[str, list[tuple[str, str | None]]]) -> str | None:
  """Adds id → [(transcript, why it is refused or None), ...] from one `*.trans.txt` to `lines`; returns why the
  file is unreadable, or None."""
  try:
    data = storage.read_bytes(path)
  except OSError as e:
    return f"cannot read {path}: {type(e).__name__}: {e}"
  for number, raw in enumerate(data.split(b"\n"), 1):
    raw = raw.rstrip(b"\r")
    if not raw.strip():
      continue
    utt_id, _, text = raw.strip().partition(b" ")
    utt_id = utt_id.decode("utf-8", errors="replace")
    try:
      transcript = text.strip().decode("utf-8")
    except UnicodeDecodeError as e:
      entry = ("", f"{BAD_TRANSCRIPT}: {path} line {number}: not UTF-8 ({e.reason} at byte {e.start})")
    else:
      problem = base.transcript_problem(transcript)
      if problem:
        entry = (transcript, f"{BAD_TRANSCRIPT}: {path} line {number}: {problem}")
      elif not transcript:
        entry = ("", f"{MISSING_TRANSCRIPT}: {path} line {number} has no text")
      else:
        entry = (transcript, None)
    lines.setdefault(utt_id, []).append(entry)  # a repeated id: each line comes out (the job rejects repeats)
  return None


@base.register_reader("librispeech")
class LibriSpeechReader:
  """LibriSpeech-layout corpora (see the module docstring)."""

  name = "librispeech"

  def __init__(self, config: LibriSpeechConfig):
    self.config = config
    self._files: list[str] | None = None

  def _listing(self) -> list[str]:
    if self._files is None:
      self._files = base.list_inputs(self.config.roots, (_AUDIO, _TRANS), self.config.listing_cache)
    return self._files

  def num_input_files(self) -> int:
    """FLAC files."""
    return sum(1 for p in self._listing() if p.lower().endswith(_AUDIO))

  def utterances(self) -> Iterator[base.Item]:
    folders: dict[str, tuple[dict[str, str], list[str]]] = {}
    for path in self._listing():
      folder, name = _split(path)
      audio, transcripts = folders.setdefault(folder, ({}, []))
      if name.lower().endswith(_TRANS):
        transcripts.append(path)
      else:
        audio[name[:-len(_AUDIO)]] = path
    for folder in sorted(folders):
      yield from self._folder(folder, *folders[folder])

  def _folder(self, folder: str, audio: dict[str, str], transcript_files: list[str]) -> Iterator[base.Item]:
    lines: dict[str, list[tuple[str, str | None]]] = {}
    unreadable = None
    for path in sorted(transcript_files):
      error = _parse_transcripts(path, lines)
      if error:
        log.warning("librispeech: %s", error)
        unreadable = error
    speaker, chapter = _speaker_chapter(folder)
    for utt_id in sorted(set(audio) | set(lines)):
      path = audio.get(utt_id)
      if path is None:
        expected = f"{folder}/{utt_id}{_AUDIO}"
        for _ in lines[utt_id]:
          yield Reject(utt_id, expected, f"{UNREADABLE}: no audio file {expected} for the transcript line")
        continue
      for transcript, problem in lines.get(utt_id) or [(None, None)]:
        if problem:
          yield Reject(utt_id, path, problem)
        elif transcript is None and self.config.require_transcripts:
          why = unreadable or f"no line for {utt_id} in the *{_TRANS} files of {folder}"
          yield Reject(utt_id, path, f"{MISSING_TRANSCRIPT}: {why}")
        else:
          yield Utterance(id=utt_id, audio=AudioRef(path), transcript=transcript, language=self.config.language,
                          speaker=speaker, extra={"chapter": chapter} if chapter else {})


def _speaker_chapter(folder: str) -> tuple[str | None, str | None]:
  """(speaker, chapter) from `.../{speaker}/{chapter}`."""
  parent, chapter = _split(folder.rstrip("/"))
  speaker = _split(parent)[1]
  return speaker or None, chapter or None
