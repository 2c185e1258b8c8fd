"""Acoustic tokens: the codec (`audiopalm.codec`) behind the `AudioTokenizer` interface, kind 'codec'.

    tok = load_tokenizer("codec", "audiopalm/data/assets/demo_codec", num_levels=8)
    tokens, token_lengths = tok.encode(waveforms, lengths)   # [B, T, 8] RVQ codes, −1 past the end

`path` is a project codec checkpoint or a `transformers` EnCodec directory (`codec.checkpoint.load_codec`).
Recordings longer than `chunk_seconds` are encoded chunk by chunk with the causal state carried, which
gives the same codes in bounded memory.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from audiopalm.codec.checkpoint import config_to_json, load_codec
from audiopalm.codec.model import Codec
from audiopalm.tokenizers.base import fingerprint, register


class CodecTokenizer:
  """The first `num_levels` RVQ levels of a codec as tokens [B, T, num_levels]."""

  kind = "codec"

  def __init__(self, codec: Codec, num_levels: int | None = None, chunk_seconds: float | None = 60.0):
    levels = codec.config.num_quantizers if num_levels is None else num_levels
    if not 1 <= levels <= codec.config.num_quantizers:
      raise ValueError(f"num_levels must be in 1..{codec.config.num_quantizers} for this codec, got {levels}")
    if chunk_seconds is not None and chunk_seconds <= 0:
      raise ValueError(f"chunk_seconds must be positive or None, got {chunk_seconds}")
    self.codec = codec
    self.levels = levels
    self.chunk_seconds = chunk_seconds
    self._identity = (f"codec-{fingerprint(codec.variables, config_to_json(codec.config))}"
                      f"-{codec.config.sample_rate // 1000}khz-q{levels}")

  @property
  def sample_rate(self) -> int:
    return self.codec.config.sample_rate

  @property
  def frame_rate(self) -> float:
    return self.codec.config.frame_rate

  @property
  def num_codebooks(self) -> int:
    return self.levels

  @property
  def vocab_size(self) -> int:
    return self.codec.config.codebook_size

  @property
  def identity(self) -> str:
    return self._identity

  def num_frames(self, lengths: Any) -> np.ndarray:
    hop = self.codec.config.hop_length
    return (-(-np.asarray(lengths) // hop)).astype(np.int32)

  def encode(self, waveforms: Any, lengths: Any = None) -> tuple[jax.Array, jax.Array]:
    """[B, S] float32, [B] → codes [B, ceil(S / hop), num_levels] int32 (−1 past the end), lengths [B]."""
    samples = np.shape(waveforms)[1]
    if self.chunk_seconds is not None and samples > self.chunk_seconds * self.sample_rate:
      codes, code_lengths = self.codec.encode_chunked(waveforms, lengths, self.chunk_seconds, self.levels)
      return jax.numpy.asarray(codes), jax.numpy.asarray(code_lengths)
    return self.codec.encode(waveforms, lengths, self.levels)


@register("codec")
def load_codec_tokenizer(path: str, num_levels: int | None = None,
                         chunk_seconds: float | None = 60.0) -> CodecTokenizer:
  """The 'codec' kind: a codec checkpoint (or EnCodec directory) at `path`, its first `num_levels` levels."""
  return CodecTokenizer(load_codec(path), num_levels, chunk_seconds)
