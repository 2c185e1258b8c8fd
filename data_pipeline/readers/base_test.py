"""The reader registry, the reader interface, and the helpers readers share."""

import dataclasses
from typing import Iterator

import pytest

from data_pipeline.readers import CorpusReader, base, make_reader, reader_names, register_reader
from data_pipeline.records import AudioRef, Reject, Utterance


@dataclasses.dataclass(frozen=True)
class ListConfig:
  """A fixed list of ids."""

  ids: tuple[str, ...] = ()


class ListReader:
  """Yields one utterance per id ("bad" ids are rejected)."""

  name = "test_list"

  def __init__(self, config: ListConfig):
    self.config = config

  def utterances(self) -> Iterator[base.Item]:
    for i in self.config.ids:
      yield Reject(i, i, "bad_metadata: test") if i == "bad" else Utterance(i, AudioRef(f"{i}.flac"))


def test_registry_builds_readers_by_name_from_options():
  assert {"librispeech", "librilight", "emilia", "jsonl_manifest", "tfds"} <= set(reader_names())
  register_reader("test_list")(ListReader)
  register_reader("test_list")(ListReader)  # registering the same factory again is harmless
  reader = make_reader("test_list", ids=("a", "bad"))
  assert isinstance(reader, CorpusReader) and reader.config == ListConfig(("a", "bad"))
  assert [type(i).__name__ for i in reader.utterances()] == ["Utterance", "Reject"]
  assert base.num_input_files(reader) is None
  with pytest.raises(ValueError, match="already registered"):
    register_reader("test_list", ListConfig)(lambda config: ListReader(config))
  with pytest.raises(ValueError, match=r"unknown corpus reader 'nope'; registered readers: \[.*'librispeech'"):
    make_reader("nope")
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['root'\]; allowed: \['language', 'listing_cache'"):
    make_reader("librispeech", root="x")
  with pytest.raises(TypeError, match="config dataclass"):
    register_reader("test_untyped")(lambda config: None)


def test_every_builtin_config_is_frozen_and_needs_its_paths():
  for name in reader_names():
    config = base.reader_config(name)
    assert dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen, name
  with pytest.raises(ValueError, match="roots is empty"):
    make_reader("emilia")
  assert base.reader_config("emilia")(roots="x").roots == ("x",)


def test_language_names_and_transcript_checks():
  assert [base.language_name(c) for c in ("en", "ZH", "de-DE", "ja_JP", "English", "xx", None)] == [
      "English", "Chinese", "German", "Japanese", "English", "xx", None]
  assert base.language_name("", "French") == "French"
  assert base.transcript_problem("Hello, 世界\tok") is None
  assert "control character" in base.transcript_problem("a\x1bb")
  assert "not UTF-8" in base.transcript_problem("a\ud800b")


def test_ordered_map_keeps_the_order_and_runs_in_parallel():
  import threading  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  seen = set()

  def slow(i):
    seen.add(threading.get_ident())
    time.sleep(0.001 * ((i * 7) % 5))
    return i * i

  assert list(base.ordered_map(slow, range(200), threads=8)) == [i * i for i in range(200)]
  assert len(seen) > 1
