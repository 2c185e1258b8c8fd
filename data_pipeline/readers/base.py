"""The corpus reader interface, the registry that builds one by name, and helpers the readers share.

    reader = make_reader("librispeech", roots=("data/LibriSpeech/train-clean-100",))
    for item in reader.utterances():   # Utterance | Reject, in a deterministic order
      ...

A reader turns a corpus's files into `Utterance`s without decoding audio. Every input utterance comes out
exactly once, either as an Utterance or as a `Reject` with a specific reason (a metadata line that does not
parse, an unsafe archive member, a transcript that is not UTF-8, audio with no transcript, a transcript with no
audio); a reader never raises on bad data, only on configuration errors (a root that does not exist, an unknown
option). Duplicate ids are left to the job. The order is deterministic: files in sorted path order (archive
members in archive order), so a rerun sees the same sequence.

Readers are registered by name (`register_reader`) on a factory taking the reader's frozen config dataclass;
`make_reader(name, **options)` builds the config from keyword options (an unknown option or reader name is an
error naming the allowed ones). Optional reader methods:

- `num_input_files() -> int`: how many files (or archives) the reader reads, for progress reports;
- `load(ref) -> (waveform, sample_rate)`: audio the reader holds itself (TFDS), for
  `data_pipeline.audio_source.read_audio(..., loader=reader.load)`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import typing
import unicodedata
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

from data_pipeline import listing
from data_pipeline.records import Reject, Utterance

Item = Utterance | Reject
PARSE_THREADS = 32  # threads reading a corpus's small files while planning (latency-bound on object stores)


@runtime_checkable
class CorpusReader(Protocol):
  """Yields a corpus's utterances (see the module docstring)."""

  @property
  def name(self) -> str:
    """The registry name ('librispeech', 'emilia', ...)."""

  def utterances(self) -> Iterator[Item]:
    """Every input utterance as an Utterance or a Reject, in a deterministic order."""


_FACTORIES: dict[str, tuple[Callable[[Any], CorpusReader], type]] = {}


def _config_type(factory: Callable[..., Any]) -> type:
  """The config dataclass a factory takes: the annotation of its first parameter."""
  target = factory.__init__ if isinstance(factory, type) else factory
  hints = typing.get_type_hints(target)
  names = [n for n in target.__code__.co_varnames[:target.__code__.co_argcount] if n != "self"]
  config = hints.get(names[0]) if names else None
  if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
    raise TypeError(f"register_reader: {factory!r} must take a config dataclass as its first (annotated) argument")
  return config


def register_reader(name: str, config: type | None = None) -> Callable[[Callable[..., CorpusReader]],
                                                                         Callable[..., CorpusReader]]:
  """Decorator: `factory(config) -> CorpusReader` becomes buildable as `make_reader(name, **options)`.

  `config` is the factory's config dataclass; None takes it from the annotation of the factory's first parameter
  (a reader class's `__init__(self, config: XConfig)`).
  """

  def decorate(factory: Callable[..., CorpusReader]) -> Callable[..., CorpusReader]:
    config_type = config or _config_type(factory)
    if name in _FACTORIES and _FACTORIES[name][0] is not factory:
      raise ValueError(f"corpus reader {name!r} is already registered")
    _FACTORIES[name] = (factory, config_type)
    return factory

  return decorate


def reader_names() -> list[str]:
  """Every name `make_reader` accepts."""
  return sorted(_FACTORIES)


def reader_config(name: str) -> type:
  """The config dataclass of reader `name`."""
  if name not in _FACTORIES:
    raise ValueError(f"unknown corpus reader {name!r}; registered readers: {reader_names()}")
  return _FACTORIES[name][1]


def make_reader(name: str, /, **options: Any) -> CorpusReader:
  """The reader `name`, its config built from `options` (fields of its config dataclass)."""
  config_type = reader_config(name)
  fields = {f.name for f in dataclasses.fields(config_type) if f.init}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise ValueError(f"corpus reader {name!r}: unknown option(s) {unknown}; allowed: {sorted(fields)}")
  return _FACTORIES[name][0](config_type(**options))


def num_input_files(reader: CorpusReader) -> int | None:
  """`reader.num_input_files()` where the reader has it, else None."""
  count = getattr(reader, "num_input_files", None)
  return count() if callable(count) else None


# ---------------------------------------------------------------------------------------------------- helpers

# ISO 639-1 codes (as Emilia and many manifests write them) → language names as AudioPaLM's task tags spell them.
LANGUAGE_NAMES = {
    "ar": "Arabic", "ca": "Catalan", "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German", "el": "Greek",
    "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "lv": "Latvian", "mn": "Mongolian", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "sl": "Slovenian", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "tr": "Turkish",
    "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}


def language_name(code: str | None, default: str | None = None) -> str | None:
  """A language code ("en", "zh", "en-US", "EN") as a language name ("English"); a name or an unknown code is
  kept as given; None or "" gives `default`."""
  if not code:
    return default
  base = code.strip().lower().replace("_", "-").split("-")[0]
  return LANGUAGE_NAMES.get(base, code.strip())


def transcript_problem(text: str) -> str | None:
  """Why a transcript is refused (a `bad_transcript` reason's specifics), or None for a good one.

  Refused: text that cannot be written as UTF-8 (lone surrogates, e.g. from a JSON "\\ud800"), and control
  characters other than tab (NUL, escape codes, line breaks inside one utterance's text).
  """
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    return f"not UTF-8 ({e.reason} at character {e.start})"
  for i, ch in enumerate(text):
    if ch != "\t" and unicodedata.category(ch) == "Cc":
      return f"control character {ch!r} at character {i}"
  return None


def list_inputs(roots: tuple[str, ...], suffixes: tuple[str, ...], listing_cache: str | None) -> list[str]:
  """The files a reader reads: `listing.cached_listing` (sorted; cached when `listing_cache` is a path)."""
  return listing.cached_listing(roots, suffixes, listing_cache)


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], threads: int = PARSE_THREADS) -> Iterator[Any]:
  """fn(item) for every item, in order, computed on `threads` threads (at most 4 x threads ahead): for the many
  small files a reader parses (metadata, transcripts), whose time on an object store is mostly latency."""
  items = iter(items)
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    pending = collections.deque(pool.submit(fn, item) for item in itertools.islice(items, 4 * threads))
    while pending:
      result = pending.popleft().result()
      for item in itertools.islice(items, 1):
        pending.append(pool.submit(fn, item))
      yield result


def as_tuple(value: Any) -> tuple[str, ...]:
  """A config's path option as a tuple of strings ("a" → ("a",); None → ())."""
  if value is None:
    return ()
  if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
    value = (value,)
  return tuple(str(v) for v in value)


def check_roots(owner: str, roots: tuple[str, ...]) -> None:
  if not roots:
    raise ValueError(f"{owner}.roots is empty: give at least one corpus directory")
