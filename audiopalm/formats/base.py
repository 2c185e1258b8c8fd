"""What a format produces, and the registry of formats by name.

A format turns one example of a token shard (`audiopalm.tokens.schema.parse_example`: id, transcript, language,
speaker, `semantic` [T_s] codes, `acoustic` [T_a, Q] codes, ...) into zero or more training sequences:

    for seq in format_fn(example, vocab, rng):     # TokenSequence; vocab: a CombinedVocabulary
      seq.tokens   # [L] int32 combined-vocabulary ids, ending with the text vocabulary's EOS
      seq.weights  # [L] float32: weight of the loss for predicting tokens[i] from tokens[:i]
                   #   (0 on the prompt: task tags, inputs; > 0 only on the output part)

A multi-stream format (the AudioLM stages' 'streams' layout) gives tokens and weights [L, S]: S tokens per
position, all predicted from tokens[:i] (a model with `TransformerConfig.stream_vocab`).

Formats are registered by name (`register_format`) with their config dataclass, so a mixture names them in
gin. `rng` is a `numpy.random.Generator` seeded by the loader per example (formats that crop or choose use it,
so the data are a pure function of the seed).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any, Callable, Iterator, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class TokenSequence:
  """One training sequence: tokens [L] (or [L, S]) int32 and loss weights of the same shape, float32 (see the
  module docstring)."""

  tokens: np.ndarray
  weights: np.ndarray
  task: str = ""

  def __post_init__(self):
    if self.tokens.shape != self.weights.shape or self.tokens.ndim not in (1, 2):
      raise ValueError(f"tokens {self.tokens.shape} and weights {self.weights.shape} must be the same [L] or [L, S]")

  def __len__(self) -> int:
    return int(self.tokens.shape[0])


FormatFn = Callable[[Mapping[str, Any], Any, np.random.Generator], Iterator[TokenSequence]]
_FORMATS: dict[str, FormatFn] = {}
# Modules that register the built-in formats, imported on the first lookup.
_BUILTIN_MODULES = ("audiopalm.formats.audiopalm_tasks", "audiopalm.formats.audiolm_stages")


def _import_builtins() -> None:
  for module in _BUILTIN_MODULES:
    importlib.import_module(module)


def register_format(name: str) -> Callable[[FormatFn], FormatFn]:
  """Decorator: registers `fn(example, vocab, rng) -> Iterator[TokenSequence]` (usually a functools.partial of a
  function taking its config) under `name`."""

  def decorate(fn: FormatFn) -> FormatFn:
    if name in _FORMATS and _FORMATS[name] is not fn:
      raise ValueError(f"format {name!r} is already registered")
    _FORMATS[name] = fn
    return fn

  return decorate


def get_format(name: str, config: Any = None) -> FormatFn:
  """The format registered as `name`; with `config`, bound to that config instead of its default (the config
  must be of the default's type, e.g. `AsrConfig` for 'asr')."""
  _import_builtins()
  if name not in _FORMATS:
    raise ValueError(f"unknown format {name!r}; registered: {sorted(_FORMATS)}")
  fn = _FORMATS[name]
  if config is None:
    return fn
  default = fn.keywords.get("config") if isinstance(fn, functools.partial) else None
  if default is None:
    raise ValueError(f"format {name!r} takes no config (got {type(config).__name__})")
  if type(config) is not type(default):
    raise ValueError(f"format {name!r} takes a {type(default).__name__}, got a {type(config).__name__}")
  return functools.partial(fn.func, *fn.args, **{**fn.keywords, "config": config})


def default_config(name: str) -> Any:
  """The config the format `name` was registered with (None if it takes none)."""
  fn = get_format(name)
  return fn.keywords.get("config") if isinstance(fn, functools.partial) else None


def evaluation_config(config: Any) -> Any:
  """`config` as evaluation reads data with it: training-time augmentation off (a config's `for_evaluation()`,
  e.g. `AsrConfig`'s input noise), everything else as trained. None (the format's default) stays None."""
  return config.for_evaluation() if hasattr(config, "for_evaluation") else config


def config_from_json(name: str, fields: Mapping[str, Any] | None) -> Any:
  """The config of format `name` from its fields as JSON holds them (lists back to tuples; keys such as "__type__"
  are not fields); None stays None (the format's default)."""
  if fields is None:
    return None
  default = default_config(name)
  if default is None:
    raise ValueError(f"format {name!r} takes no config (got {dict(fields)})")
  as_tuples = lambda v: tuple(as_tuples(x) for x in v) if isinstance(v, list) else v  # noqa: E731
  return type(default)(**{k: as_tuples(v) for k, v in fields.items() if not k.startswith("__")})


def format_names() -> list[str]:
  _import_builtins()
  return sorted(_FORMATS)


def concat(parts: list[tuple[np.ndarray, float]], task: str = "") -> TokenSequence:
  """A TokenSequence from (ids, weight) parts in order: each part's tokens all get that weight."""
  tokens = np.concatenate([np.asarray(ids, np.int32) for ids, _ in parts]) if parts else np.zeros(0, np.int32)
  weights = np.concatenate([np.full(len(ids), w, np.float32) for ids, w in parts]) if parts else np.zeros(0, np.float32)
  return TokenSequence(tokens, weights, task)
