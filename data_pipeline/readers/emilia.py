"""Emilia: batches of MP3 segments in tar archives, with JSON metadata per utterance; read in place.

The layouts supported: the one Amphion's Emilia README documents (first two lines below), and the webdataset
form of the Hugging Face release (its dataset card says webdataset; no copy was at hand to check its member
names, so both nested and flat member names are matched):

    {root}/EN/EN_B00000.tar.gz     members EN_B00000/EN_B00000_S00000/mp3/EN_B00000_S00000_W000000.mp3, ...
    {root}/EN/EN_B00000.jsonl      beside the archive (same name, suffix .jsonl), one object per utterance:
      {"id": "EN_B00000_S00000_W000000", "wav": "EN_B00000/EN_B00000_S00000/mp3/EN_B00000_S00000_W000000.mp3",
       "text": " You can help my mother ...", "duration": 6.264, "speaker": "EN_B00000_S00000", "language": "en",
       "dnsmos": 3.2927}
    {root}/EN/EN-B000000.tar       the same objects as .jsonl member(s) inside the archive, or as one .json
                                   member per utterance next to its audio (webdataset: x/KEY.mp3 + x/KEY.json)

An archive is `.tar`, `.tar.gz`, `.tgz`, `.tar.bz2` or `.tar.xz`. Its metadata comes from one source, the first
present: the .jsonl beside it; .jsonl members inside it; .json members inside it (paired with the audio
member of the same name stem; their `id` defaults to that stem and `wav` to that member). A record's `wav` is
matched to a member by its path (a leading "./" ignored), else by its file name when that is unique in the
archive (so flat webdataset archives match records that give the original nested path).

Each archive's headers are read once (an uncompressed tar by seeking over the data; a compressed one is
decompressed once, reading only metadata members' bytes), so the reader never decodes audio and never extracts
anything; `scan=False` skips that pass for archives with a .jsonl beside them (see `EmiliaConfig.scan`). Memory:
one archive's records at a time (~1 kB each). The job reads audio with `data_pipeline.audio_source.iter_archive`
(one pass per archive) or `read_audio` (random access in an uncompressed tar).

Utterances: id, AudioRef(archive, member), transcript (`text`, stripped of surrounding whitespace), language
(codes mapped to AudioPaLM names: "en" → "English", "zh" → "Chinese", ...; unknown codes kept as given; else
the config's language), speaker, duration, and the other fields (`dnsmos`, ...) in `extra`.

Rejects:
- `bad_metadata`: a metadata line that is not UTF-8 JSON or not an object, lacks `id` or `wav` (a string), has a
  wrong-typed field; an audio member no record names;
- `unsafe_path`: a record naming an absolute or `..` path; an archive member that is absolute, has a `..`
  component, or is a symlink, hard link, device, FIFO or sparse file (named by a record, or with an audio
  suffix; other unsafe members are only logged);
- `unreadable`: a record whose member is not in the archive (or whose archive is missing, or corrupt before it);
- `missing_transcript` (no or empty `text`, unless `require_transcripts=False`), `bad_transcript` (control
  characters, lone surrogates).

Order: archives (and .jsonl files without an archive) in sorted path order; within an archive, its members in
archive order (the records naming each, in record order), then the records that match no member.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import posixpath
from typing import Any, Iterator

from audiopalm.files import storage

from audiopalm.audio.io import AUDIO_SUFFIXES
from data_pipeline import audio_source
from data_pipeline.readers import base
from data_pipeline.records import (BAD_METADATA, BAD_TRANSCRIPT, MISSING_TRANSCRIPT, UNREADABLE, UNSAFE_PATH,
                                   AudioRef, Reject, Utterance)

log = logging.getLogger(__name__)

_AUDIO = tuple(AUDIO_SUFFIXES) + (".opus",)
_KNOWN = ("id", "wav", "text", "duration", "speaker", "language")


@dataclasses.dataclass(frozen=True)
class EmiliaConfig:
  """Where the Emilia batches are and how to read them.

  Attributes:
    roots: directories searched recursively for archives and .jsonl files (e.g. `.../Emilia/EN`), or archives.
    language: the language name of records that give none.
    require_transcripts: a record without text is a `missing_transcript` Reject (False: transcript None).
    skip: file names (not paths) of archives and .jsonl files to ignore, e.g. the archive of all metadata.
    scan: read each archive's headers to match records with members and refuse unsafe ones. False (only for
      archives with a .jsonl beside them): trust the .jsonl and skip that pass over the archive; a record naming
      an absolute or `..` path is still an `unsafe_path` Reject, but a symlink member or a record naming no
      member is only found when the job reads the archive (`read_audio` / `iter_archive` refuse or miss it).
    listing_cache: a file caching the listing of `roots` (see `data_pipeline.listing`); None: list every run.
  """

  roots: tuple[str, ...] = ()
  language: str | None = None
  require_transcripts: bool = True
  skip: tuple[str, ...] = ("openemilia_all.tar.gz",)
  scan: bool = True
  listing_cache: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "roots", base.as_tuple(self.roots))
    object.__setattr__(self, "skip", base.as_tuple(self.skip))
    base.check_roots("EmiliaConfig", self.roots)


@dataclasses.dataclass
class _Record:
  """One utterance's metadata, or why it has none usable.

  Attributes:
    source: where it was read ("EN_B00000.jsonl line 3", "a.tar#x/KEY.json"), for reasons.
    id: the utterance id (or a stand-in naming the source when the record has none).
    fields: the JSON object (None when unparsable).
    error: (reason code, specifics) when the record cannot become an Utterance.
    pair: for a per-utterance .json member, its key without ".json" (paired with the audio of that stem).
  """

  source: str
  id: str
  fields: dict[str, Any] | None = None
  error: tuple[str, str] | None = None
  pair: str | None = None

  @property
  def wav(self) -> str | None:
    wav = (self.fields or {}).get("wav")
    return wav if isinstance(wav, str) and wav else None


def _parse(raw: bytes, source: str, stand_in: str, pair: str | None = None) -> _Record:
  """A record from one JSON text (a .jsonl line or a .json member)."""
  try:
    fields = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    return _Record(source, stand_in, error=(BAD_METADATA, f"{source}: not UTF-8 JSON: {e}"))
  if not isinstance(fields, dict):
    return _Record(source, stand_in, error=(BAD_METADATA, f"{source}: a {type(fields).__name__}, not an object"))
  utt_id = fields.get("id", posixpath.basename(pair) if pair else None)
  if not isinstance(utt_id, str) or not utt_id:
    return _Record(source, stand_in, fields, (BAD_METADATA, f"{source}: no 'id' (a non-empty string)"))
  record = _Record(source, utt_id, fields, pair=pair)
  if pair is None and record.wav is None:
    record.error = (BAD_METADATA, f"{source}: no 'wav' (the audio member, a non-empty string)")
  return record


def _parse_lines(data: bytes, source: str) -> list[_Record]:
  records = []
  for number, raw in enumerate(data.split(b"\n"), 1):
    if raw.strip():
      records.append(_parse(raw, f"{source} line {number}", f"{source}:{number}"))
  return records


def _stem(key: str) -> str:
  return posixpath.splitext(key)[0]


@dataclasses.dataclass
class _Archive:
  """What one scan of an archive found: members in order, metadata members' records, and what stopped it."""

  order: list[str] = dataclasses.field(default_factory=list)  # member keys, first occurrence, archive order
  unsafe: dict[str, str] = dataclasses.field(default_factory=dict)  # key → why it is refused
  files: set[str] = dataclasses.field(default_factory=set)  # keys of safe regular members
  jsonl_records: list[_Record] = dataclasses.field(default_factory=list)
  json_records: list[_Record] = dataclasses.field(default_factory=list)
  error: str | None = None
  by_name: dict[str, str] = dataclasses.field(default_factory=dict)  # file name → key ("": several members)
  by_stem: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # audio key without suffix → keys

  def match(self, record: _Record) -> str | None:
    """The key of the member a record names, or None."""
    if record.pair is not None and self.by_stem.get(record.pair):
      return self.by_stem[record.pair][0]
    wav = record.wav
    if wav is None:
      return None
    key = audio_source.member_key(wav)
    if key in self.files or key in self.unsafe:
      return key
    if audio_source.unsafe_name(wav):
      return None  # an escaping path never matches a member by its file name
    return self.by_name.get(posixpath.basename(key)) or None

  def index(self) -> None:
    for key in self.order:
      if key in self.files or key in self.unsafe:
        name = posixpath.basename(key)
        self.by_name[name] = "" if name in self.by_name else key
      if key.lower().endswith(_AUDIO):
        self.by_stem.setdefault(_stem(key), []).append(key)


def _scan(path: str, read_metadata: bool) -> _Archive:
  found = _Archive()
  seen = set()
  wanted = (lambda key: key.lower().endswith((".json", ".jsonl"))) if read_metadata else None
  try:
    for info, data in audio_source.scan_archive(path, read=wanted):
      key = audio_source.member_key(info.name)
      reason = audio_source.unsafe_member(info)
      if info.isdir() and reason is None:
        continue
      if key not in seen:
        seen.add(key)
        found.order.append(key)
      if reason:
        found.unsafe[key] = reason
        continue
      found.files.add(key)
      if data is not None:
        source = str(AudioRef(path, key))
        if key.lower().endswith(".jsonl"):
          found.jsonl_records.extend(_parse_lines(data, source))
        else:
          found.json_records.append(_parse(data, source, source, pair=_stem(key)))
  except audio_source.ARCHIVE_ERRORS as e:
    found.error = f"{type(e).__name__}: {e}"
    log.warning("emilia: %s is corrupt after %d members: %s", path, len(found.order), found.error)
    if found.order:  # the damage is most likely in the data of the member before it: give that one up too
      found.files.discard(found.order.pop())
  found.index()
  return found


@base.register_reader("emilia")
class EmiliaReader:
  """Emilia batches (see the module docstring)."""

  name = "emilia"

  def __init__(self, config: EmiliaConfig):
    self.config = config
    self._files: list[str] | None = None

  def _listing(self) -> list[str]:
    if self._files is None:
      files = base.list_inputs(self.config.roots, audio_source.ARCHIVE_SUFFIXES + (".jsonl",),
                               self.config.listing_cache)
      self._files = [p for p in files if posixpath.basename(p.replace("\\", "/")) not in self.config.skip]
    return self._files

  def num_input_files(self) -> int:
    """Archives."""
    return sum(1 for p in self._listing() if audio_source.is_archive(p))

  def utterances(self) -> Iterator[base.Item]:
    files = self._listing()
    listed = set(files)
    archives = {audio_source.archive_stem(p) + ".jsonl": p for p in files if audio_source.is_archive(p)}
    for path in files:
      if audio_source.is_archive(path):
        sidecar = audio_source.archive_stem(path) + ".jsonl"
        yield from self._archive(path, sidecar if sidecar in listed else None)
      elif path not in archives:  # metadata whose archive is missing
        for record in self._read_sidecar(path):
          yield self._unmatched(record, path, f"no archive {audio_source.archive_stem(path)}.tar(.gz) beside it")

  def _read_sidecar(self, path: str) -> list[_Record]:
    try:
      return _parse_lines(storage.read_bytes(path), path)
    except OSError as e:
      log.warning("emilia: cannot read %s: %s", path, e)
      return [_Record(path, path, error=(BAD_METADATA, f"cannot read {path}: {type(e).__name__}: {e}"))]

  def _archive(self, path: str, sidecar: str | None) -> Iterator[base.Item]:
    if sidecar and not self.config.scan:
      for record in self._read_sidecar(sidecar):
        if record.error or audio_source.unsafe_name(record.wav):
          yield self._unmatched(record, path, None)
        else:
          yield self._utterance(record, AudioRef(path, audio_source.member_key(record.wav)))
      return
    found = _scan(path, read_metadata=sidecar is None)
    records = self._read_sidecar(sidecar) if sidecar else (found.jsonl_records or found.json_records)
    named: dict[str, list[_Record]] = {}
    unmatched = []
    for record in records:
      key = None if record.error else found.match(record)
      if key is None:
        unmatched.append(record)
      else:
        named.setdefault(key, []).append(record)
    for key in found.order:
      ref = AudioRef(path, key)
      if key in named:
        for record in named[key]:
          if key in found.unsafe:
            yield Reject(record.id, str(ref), f"{UNSAFE_PATH}: {found.unsafe[key]}")
          else:
            yield self._utterance(record, ref)
      elif key.lower().endswith(_AUDIO):
        if key in found.unsafe:
          yield Reject(posixpath.basename(_stem(key)), str(ref), f"{UNSAFE_PATH}: {found.unsafe[key]}")
        else:
          yield Reject(posixpath.basename(_stem(key)), str(ref), f"{BAD_METADATA}: no metadata record names {key}")
      elif key in found.unsafe:
        log.warning("emilia: %s: ignored an unsafe member: %s", path, found.unsafe[key])
    why = f"corrupt archive after {len(found.order)} members: {found.error}" if found.error else None
    for record in unmatched:
      yield self._unmatched(record, path, why)

  def _unmatched(self, record: _Record, archive: str, why: str | None) -> Reject:
    """The Reject of a record that names no member of `archive` (or cannot be used at all)."""
    if record.error:
      return Reject(record.id, record.source, f"{record.error[0]}: {record.error[1]}")
    if record.wav is None:  # a per-utterance .json member without its audio
      return Reject(record.id, record.source, f"{UNREADABLE}: no audio member {record.pair}.* in the archive")
    wav = record.wav
    ref = str(AudioRef(archive, wav))
    reason = audio_source.unsafe_name(wav)
    if reason:
      return Reject(record.id, ref, f"{UNSAFE_PATH}: {record.source}: {reason}")
    return Reject(record.id, ref, f"{UNREADABLE}: no audio file {wav!r} in the archive ({why or 'no such member'})")

  def _utterance(self, record: _Record, ref: AudioRef) -> base.Item:
    fields = record.fields or {}
    try:
      text = fields.get("text")
      if text is not None and not isinstance(text, str):
        raise ValueError(f"'text' must be a string, got {text!r}")
      duration = fields.get("duration")
      if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                   or not math.isfinite(duration) or duration < 0):
        raise ValueError(f"'duration' must be non-negative seconds, got {duration!r}")
      speaker = _optional_name(fields, "speaker")
      language = _optional_name(fields, "language")
    except ValueError as e:
      return Reject(record.id, str(ref), f"{BAD_METADATA}: {record.source}: {e}")
    text = text.strip() if text is not None else None
    if text:
      problem = base.transcript_problem(text)
      if problem:
        return Reject(record.id, str(ref), f"{BAD_TRANSCRIPT}: {record.source}: {problem}")
    elif self.config.require_transcripts:
      return Reject(record.id, str(ref), f"{MISSING_TRANSCRIPT}: {record.source} has no text")
    return Utterance(id=record.id, audio=ref, transcript=text, language=base.language_name(language,
                                                                                          self.config.language),
                     speaker=speaker, duration=None if duration is None else float(duration),
                     extra={k: v for k, v in fields.items() if k not in _KNOWN})


def _optional_name(fields: dict[str, Any], key: str) -> str | None:
  value = fields.get(key)
  if value is None or value == "":
    return None
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise ValueError(f"{key!r} must be a string, got {value!r}")
  return str(value)

