"""The combined speech–text vocabulary's layout: a versioned, JSON-serialisable spec saved next to checkpoints.

    [0, text)                      the text vocabulary's own ids (byte-level, SentencePiece or Hugging Face)
    [text, +specials)              special tokens of the combined vocabulary (e.g. '<sep>'), if any
    [semantic.offset, +K)          semantic tokens (one range; the semantic tokenizer's K codes)
    [acoustic[q].offset, +K_q)     acoustic tokens of RVQ level q, one range per level (stage models)
    [used, size)                   padding up to a multiple of `pad_to_multiple` (never produced)

AudioPaLM extends a text model's embedding with audio rows after the text rows, so text ids keep their
meaning in the combined vocabulary. Task tags ("[ASR English]") are plain text. A spec names the tokenizers
whose codes its audio ranges hold (their identities); `check_compatible` refuses a checkpoint and a dataset
whose specs differ, naming the difference.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from audiopalm.files import storage

FORMAT_VERSION = 1
SPEC_FILE = "vocab_spec.json"
TEXT_KINDS = ("byte", "sentencepiece", "huggingface")


@dataclasses.dataclass(frozen=True)
class TextVocab:
  """The text vocabulary: its kind, file, size and identity.

  Attributes:
    kind: 'byte' (the project's byte-level vocabulary: 0 pad, 1 EOS, bytes at 2..257), 'sentencepiece' (a
      .model file) or 'huggingface' (a tokenizer.json, e.g. of an imported Gemma/Llama checkpoint).
    path: the model file (None for 'byte').
    size: number of text ids.
    identity: a hash of the model file ('byte' for the byte vocabulary).
    pad_id, eos_id: the text vocabulary's padding and end-of-sequence ids.
  """

  kind: str
  size: int
  identity: str
  pad_id: int
  eos_id: int
  path: str | None = dataclasses.field(default=None, compare=False)  # where it was read; not its identity

  def __post_init__(self):
    if self.kind not in TEXT_KINDS:
      raise ValueError(f"text vocabulary kind {self.kind!r}; choose one of {TEXT_KINDS}")
    if not 0 <= self.pad_id < self.size or not 0 <= self.eos_id < self.size:
      raise ValueError(f"pad_id {self.pad_id} / eos_id {self.eos_id} outside the text vocabulary of {self.size}")


@dataclasses.dataclass(frozen=True)
class AudioRange:
  """Ids [offset, offset + size) hold the codes 0..size-1 of one codebook of one tokenizer.

  Attributes:
    name: 'semantic' or 'acoustic_<level>'.
    offset: the first id.
    size: the codebook size K.
    tokenizer: the identity of the tokenizer whose codes these are (`AudioTokenizer.identity`).
  """

  name: str
  offset: int
  size: int
  tokenizer: str

  @property
  def end(self) -> int:
    return self.offset + self.size

  @property
  def level(self) -> int | None:
    """The RVQ level of an 'acoustic_<level>' range; None for 'semantic'."""
    return int(self.name.rsplit("_", 1)[1]) if self.name.startswith("acoustic_") else None


@dataclasses.dataclass(frozen=True)
class VocabSpec:
  """The whole layout (see the module docstring). Build one with `make_spec`."""

  text: TextVocab
  specials: tuple[str, ...]
  semantic: AudioRange | None
  acoustic: tuple[AudioRange, ...]
  pad_to_multiple: int
  size: int

  @property
  def used(self) -> int:
    """Ids that can be produced (the rest is padding)."""
    ranges = [self.text.size + len(self.specials)] + [r.end for r in self.audio_ranges]
    return max(ranges)

  @property
  def audio_ranges(self) -> tuple[AudioRange, ...]:
    return ((self.semantic,) if self.semantic else ()) + self.acoustic

  def special_id(self, token: str) -> int:
    if token not in self.specials:
      raise KeyError(f"{token!r} is not a special token of this vocabulary ({list(self.specials)})")
    return self.text.size + self.specials.index(token)

  def to_json(self) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

  @classmethod
  def from_json(cls, data: Mapping[str, Any], source: str = "<json>") -> "VocabSpec":
    if data.get("format_version") != FORMAT_VERSION:
      raise ValueError(f"{source}: vocabulary spec format {data.get('format_version')!r} is not supported "
                       f"(this code reads version {FORMAT_VERSION})")
    return cls(text=TextVocab(**data["text"]), specials=tuple(data["specials"]),
               semantic=AudioRange(**data["semantic"]) if data.get("semantic") else None,
               acoustic=tuple(AudioRange(**r) for r in data["acoustic"]), pad_to_multiple=data["pad_to_multiple"],
               size=data["size"])


def make_spec(text: TextVocab, *, semantic: tuple[int, str] | None = None,
              acoustic: Sequence[tuple[int, str]] = (), specials: Sequence[str] = (),
              pad_to_multiple: int = 128) -> VocabSpec:
  """Lays out text, specials, semantic (K, tokenizer identity) and acoustic levels [(K_q, identity)], padded."""
  if pad_to_multiple < 1:
    raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
  if len(set(specials)) != len(specials):
    raise ValueError(f"special tokens repeat: {list(specials)}")
  offset = text.size + len(specials)
  semantic_range = None
  if semantic is not None:
    semantic_range = AudioRange("semantic", offset, int(semantic[0]), semantic[1])
    offset = semantic_range.end
  levels = []
  for q, (k, identity) in enumerate(acoustic):
    levels.append(AudioRange(f"acoustic_{q}", offset, int(k), identity))
    offset += int(k)
  size = -(-offset // pad_to_multiple) * pad_to_multiple
  return VocabSpec(text=text, specials=tuple(specials), semantic=semantic_range, acoustic=tuple(levels),
                   pad_to_multiple=pad_to_multiple, size=size)


def differences(a: VocabSpec, b: VocabSpec) -> list[str]:
  """What differs between two specs, in words (empty if they are the same)."""
  out = []
  if a.text != b.text:
    out.append(f"text vocabulary {a.text.kind}:{a.text.identity} (size {a.text.size}) vs "
               f"{b.text.kind}:{b.text.identity} (size {b.text.size})")
  if a.specials != b.specials:
    out.append(f"special tokens {list(a.specials)} vs {list(b.specials)}")
  names = sorted({r.name for r in a.audio_ranges} | {r.name for r in b.audio_ranges})
  ra, rb = {r.name: r for r in a.audio_ranges}, {r.name: r for r in b.audio_ranges}
  for name in names:
    x, y = ra.get(name), rb.get(name)
    if x != y:
      describe = lambda r: "absent" if r is None else f"ids [{r.offset}, {r.end}) of {r.tokenizer}"  # noqa: E731
      out.append(f"{name}: {describe(x)} vs {describe(y)}")
  if a.size != b.size:
    out.append(f"padded size {a.size} vs {b.size}")
  return out


def check_compatible(checkpoint: VocabSpec, data: VocabSpec, what: str = "the dataset") -> None:
  """Refuses (ValueError) a checkpoint and data whose vocabularies disagree, saying how."""
  diff = differences(checkpoint, data)
  if diff:
    raise ValueError(f"the checkpoint's vocabulary and {what}'s disagree: " + "; ".join(diff)
                     + ". Tokens would mean different things: re-make the data with the checkpoint's tokenizers, "
                     "or extend the checkpoint's vocabulary (audiopalm.main.import_checkpoint)")


def save_spec(spec: VocabSpec, path: str) -> None:
  """Writes `vocab_spec.json` into directory `path` (or to `path` if it ends in .json), atomically: a reader
  sees the old file or the new one, never a partial one."""
  path = os.fspath(path)
  target = path if path.endswith(".json") else storage.join(path, SPEC_FILE)
  # Over an older spec: a rerun before the first checkpoint.
  storage.write_text(target, json.dumps(spec.to_json(), indent=2))


def load_spec(path: str) -> VocabSpec:
  path = os.fspath(path)
  target = path if path.endswith(".json") else storage.join(path, SPEC_FILE)
  if not storage.is_file(target):
    raise FileNotFoundError(f"no vocabulary spec at {target}")
  return VocabSpec.from_json(json.loads(storage.read_text(target)), target)
