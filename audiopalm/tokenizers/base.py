"""The one interface every audio tokenizer implements, and the registry that loads one by kind and path.

A tokenizer turns waveforms into integer tokens at a fixed frame rate:

    tokens, token_lengths = tok.encode(waveforms, lengths)
    # waveforms [B, S] float32 at tok.sample_rate, lengths [B] samples
    # → tokens [B, T, tok.num_codebooks] int32 in [0, tok.vocab_size), PAD_TOKEN (−1) past token_lengths[b]

Every tokenizer returns the codebook axis, also when it has one codebook (semantic tokens are
`tokens[..., 0]`), so the tokenization job and the data formats never special-case a tokenizer. A
recording's tokens do not depend on the batch it is in. `identity` is a stable string naming the weights and
settings that produced the tokens (it is recorded with every token shard; two tokenizers with the same
identity give the same tokens).

Kinds are registered by name (`register`); the built-in ones, 'semantic' and 'codec', are imported on first
use. Gin selects one with `load_tokenizer.kind` / `load_tokenizer.path` (see `audiopalm/main/configurables.py`).
"""

from __future__ import annotations

import hashlib
import importlib
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import numpy as np

PAD_TOKEN = -1

# Kind → module that registers it when imported (lazily, so loading a codec never imports the SSL encoders).
_BUILTIN = {"semantic": "audiopalm.semantic.tokenizer", "codec": "audiopalm.codec.tokenizer"}
_LOADERS: dict[str, Callable[..., "AudioTokenizer"]] = {}


@runtime_checkable
class AudioTokenizer(Protocol):
  """Waveforms → tokens [B, T, num_codebooks] (see the module docstring)."""

  @property
  def kind(self) -> str:
    """The registry name: 'semantic', 'codec', ..."""

  @property
  def sample_rate(self) -> int:
    """Input sample rate in Hz; callers resample to it."""

  @property
  def frame_rate(self) -> float:
    """Token frames per second."""

  @property
  def num_codebooks(self) -> int:
    """Tokens per frame (1 for semantic tokens, the RVQ levels used for the codec)."""

  @property
  def vocab_size(self) -> int:
    """Tokens of each codebook are in [0, vocab_size)."""

  @property
  def identity(self) -> str:
    """A stable string naming weights and settings."""

  def num_frames(self, lengths: Any) -> Any:
    """Token frames for recordings of `lengths` samples (what `encode` returns as token_lengths)."""

  def encode(self, waveforms: Any, lengths: Any) -> tuple[jax.Array, jax.Array]:
    """[B, S] float32, [B] → tokens [B, T, num_codebooks] int32 (PAD_TOKEN past the end), token_lengths [B]."""


def register(kind: str) -> Callable[[Callable[..., AudioTokenizer]], Callable[..., AudioTokenizer]]:
  """Decorator: `loader(path, **options) -> AudioTokenizer` becomes loadable as `load_tokenizer(kind, path)`."""

  def decorate(loader: Callable[..., AudioTokenizer]) -> Callable[..., AudioTokenizer]:
    if kind in _LOADERS and _LOADERS[kind] is not loader:
      raise ValueError(f"audio tokenizer kind {kind!r} is already registered")
    _LOADERS[kind] = loader
    return loader

  return decorate


def registered() -> list[str]:
  """Every kind that `load_tokenizer` accepts."""
  return sorted(set(_LOADERS) | set(_BUILTIN))


def load_tokenizer(kind: str, path: str, **options: Any) -> AudioTokenizer:
  """The tokenizer of `kind` stored at `path` (options go to the kind's loader, e.g. num_levels)."""
  if kind not in _LOADERS and kind in _BUILTIN:
    importlib.import_module(_BUILTIN[kind])
  if kind not in _LOADERS:
    raise ValueError(f"unknown audio tokenizer kind {kind!r}; registered kinds: {registered()}")
  return _LOADERS[kind](path, **options)


def fingerprint(tree: Any, extra: str = "") -> str:
  """A stable 16-hex-digit hash of a pytree's paths, shapes, dtypes and values (plus `extra`, e.g. a config)."""
  h = hashlib.sha256(extra.encode())
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    array = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
    h.update(array.tobytes())
  return h.hexdigest()[:16]
