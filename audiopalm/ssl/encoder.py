"""The contract every self-supervised speech encoder meets (`audiopalm.ssl.load.load_encoder` finds one by type).

    encoder = load_encoder("/path/to/hubert")                  # a transformers save_pretrained directory
    features, frames = encoder.features(waveforms, lengths, layer=6)
    # waveforms [B, S] float32 at encoder.sample_rate, lengths [B] int (samples)
    # → features [B, T, D] float32, frames [B] int32; rows past frames[b] are zero

`layer` indexes `transformers`' `output_hidden_states=True` tuple: 0 is the input of the first Transformer/
Conformer layer (after the front end, feature projection and, for HuBERT, the positional convolution), and
k ≥ 1 is the output of layer k. Only layers up to `layer` are computed.

Batching never changes a recording's features: an example's features in a padded batch equal its features
computed alone on exactly its samples (normalisations over time use only valid frames; attention and
convolutions never read padding).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np


@runtime_checkable
class SslEncoder(Protocol):
  """A speech encoder with its weights (see the module docstring for the contract)."""

  @property
  def sample_rate(self) -> int:
    """Input rate in Hz (16000 for HuBERT and w2v-BERT 2.0)."""

  @property
  def frame_rate(self) -> float:
    """Feature frames per second (50 for both)."""

  @property
  def num_layers(self) -> int:
    """Transformer/Conformer layers; valid `layer` values are 0..num_layers."""

  @property
  def dim(self) -> int:
    """Feature dimension D."""

  @property
  def name(self) -> str:
    """Architecture name: 'hubert', 'w2v_bert' or 'mfcc'."""

  @property
  def params(self) -> Any:
    """The weights (a pytree of arrays); `audiopalm.tokenizers.base.fingerprint` hashes them."""

  def num_frames(self, lengths: np.ndarray) -> np.ndarray:
    """Feature frames for recordings of `lengths` samples (what `features` returns as frames)."""

  def features(self, waveforms: Any, lengths: Any, layer: int) -> tuple[jax.Array, jax.Array]:
    """[B, S] float32, [B] → hidden states of `layer` [B, T, D] float32 (zero past frames), frames [B] int32."""


def as_batch(waveforms: Any, lengths: Any) -> tuple[jax.Array, jax.Array]:
  """Checked encoder input: waveforms [B, S] float32 and lengths [B] int32 (None: all S; clipped to S)."""
  waveforms = jnp.asarray(waveforms, jnp.float32)
  if waveforms.ndim != 2:
    raise ValueError(f"waveforms must be [batch, samples], got shape {waveforms.shape}")
  if lengths is None:
    lengths = np.full((waveforms.shape[0],), waveforms.shape[1])
  lengths = jnp.asarray(lengths, jnp.int32)
  if lengths.shape != waveforms.shape[:1]:
    raise ValueError(f"lengths must be [batch] = {waveforms.shape[:1]}, got shape {lengths.shape}")
  return waveforms, jnp.minimum(lengths, waveforms.shape[1])
