"""MFCC features behind the `SslEncoder` contract: HuBERT's first-iteration features, with no weights.

    encoder = MfccEncoder(MfccConfig())            # or load_encoder(dir) of a dir written by save_mfcc_encoder
    features, frames = encoder.features(waveforms, lengths, layer=0)   # [B, T, 78] at 50 Hz

HuBERT's first training iteration quantizes MFCCs (13 coefficients + deltas + delta-deltas) with k-means;
this encoder gives those features so that a semantic tokenizer can be fitted without any pretrained weights
(the project's embedded default does this on the bundled corpus). It is not a self-supervised encoder: its
tokens carry the phonetic content that a spectral envelope carries, and the speaker's timbre with it.

  waveform → Kaldi-style log mel fbank (`fbank.log_mel`: 25 ms frames every 10 ms, `num_mel_bins` bins)
           → DCT-II (orthonormal), first `num_ceps` coefficients → + Δ and ΔΔ (regression over ±2 frames,
             edges repeated) → per-utterance mean/variance normalisation over valid frames
           → `stride` consecutive frames stacked (100 Hz → 50 Hz; an incomplete last group dropped)

Every step reads only an utterance's own frames, so features do not depend on the batch. `num_layers` is 0:
the only valid `layer` is 0.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiopalm.files import storage
from audiopalm.ssl import fbank as fbank_lib
from audiopalm.ssl.encoder import as_batch

MODEL_TYPE = "audiopalm-mfcc"
VARIANCE_EPS = 1e-7


@dataclasses.dataclass(frozen=True)
class MfccConfig:
  """MFCC settings.

  Attributes:
    sample_rate: input rate in Hz.
    num_mel_bins: mel filters of the fbank the cepstra are taken from.
    num_ceps: cepstral coefficients kept (c0 included).
    delta_order: 0, 1 (+ Δ) or 2 (+ Δ and ΔΔ).
    delta_window: frames on each side of the delta regression.
    stride: 10 ms frames stacked into one feature frame.
  """

  sample_rate: int = 16000
  num_mel_bins: int = 40
  num_ceps: int = 13
  delta_order: int = 2
  delta_window: int = 2
  stride: int = 2

  def __post_init__(self):
    problems = []
    if not 1 <= self.num_ceps <= self.num_mel_bins:
      problems.append(f"num_ceps={self.num_ceps} must be in 1..num_mel_bins={self.num_mel_bins}")
    if self.delta_order not in (0, 1, 2):
      problems.append(f"delta_order={self.delta_order} must be 0, 1 or 2")
    if self.delta_window < 1 or self.stride < 1 or self.sample_rate < 1:
      problems.append("delta_window, stride and sample_rate must be >= 1")
    if problems:
      raise ValueError("invalid MfccConfig: " + "; ".join(problems))

  @property
  def dim(self) -> int:
    return self.num_ceps * (1 + self.delta_order) * self.stride

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / (fbank_lib.HOP_LENGTH * self.stride)


@functools.lru_cache(maxsize=4)
def _dct(num_mel_bins: int, num_ceps: int) -> np.ndarray:
  """[num_mel_bins, num_ceps] orthonormal DCT-II matrix."""
  n = np.arange(num_mel_bins)[:, None]
  k = np.arange(num_ceps)[None, :]
  basis = np.cos(np.pi / num_mel_bins * (n + 0.5) * k) * np.sqrt(2.0 / num_mel_bins)
  basis[:, 0] /= np.sqrt(2.0)
  return basis


def deltas(x: jax.Array, frames: jax.Array, window: int) -> jax.Array:
  """Regression deltas over ±window frames of x [B, n, C], repeating each utterance's first/last valid frame."""
  n = x.shape[1]
  last = jnp.maximum(frames - 1, 0)[:, None]  # [B, 1]
  out = jnp.zeros_like(x)
  for k in range(1, window + 1):
    ahead = jnp.minimum(jnp.arange(n)[None, :] + k, last)  # [B, n]
    behind = jnp.maximum(jnp.arange(n)[None, :] - k, 0)
    gather = lambda idx: jnp.take_along_axis(x, idx[..., None], axis=1)  # noqa: E731
    out = out + k * (gather(ahead) - gather(behind))
  return out / (2.0 * sum(k * k for k in range(1, window + 1)))


@functools.partial(jax.jit, static_argnames=("config",))
def mfcc(config: MfccConfig, waveforms: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[B, S] float32, [B] samples → features [B, T, config.dim] (zero past frames), frames [B] int32."""
  lengths = jnp.asarray(lengths, jnp.int32)
  fb = fbank_lib.FbankConfig(sample_rate=config.sample_rate, num_mel_bins=config.num_mel_bins, stride=1)
  log_mel = fbank_lib.log_mel(fb, waveforms)  # [B, n, mels]
  batch, count, _ = log_mel.shape
  ceps = jnp.einsum("bnm,mc->bnc", log_mel, jnp.asarray(_dct(config.num_mel_bins, config.num_ceps), jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)  # [B, n, ceps]
  fbank_frames = fbank_lib.num_fbank_frames(lengths)  # [B]
  parts = [ceps]
  for _ in range(config.delta_order):
    parts.append(deltas(parts[-1], fbank_frames, config.delta_window))
  x = jnp.concatenate(parts, axis=-1)  # [B, n, C]
  valid = (jnp.arange(count)[None, :] < fbank_frames[:, None])[..., None].astype(x.dtype)  # [B, n, 1]
  used = jnp.maximum(jnp.sum(valid, axis=1, keepdims=True), 1.0)
  mean = jnp.sum(x * valid, axis=1, keepdims=True) / used
  var = jnp.sum(jnp.square((x - mean) * valid), axis=1, keepdims=True) / used
  x = (x - mean) * jax.lax.rsqrt(var + VARIANCE_EPS) * valid
  stacked = count // config.stride
  x = x[:, :stacked * config.stride].reshape(batch, stacked, -1)  # [B, T, dim]
  frames = (fbank_frames // config.stride).astype(jnp.int32)
  return jnp.where(jnp.arange(stacked)[None, :, None] < frames[:, None, None], x, 0.0), frames


class MfccEncoder:
  """MFCC features implementing `audiopalm.ssl.encoder.SslEncoder` (name 'mfcc', no weights, layer 0 only)."""

  name = "mfcc"
  num_layers = 0

  def __init__(self, config: MfccConfig):
    self.config = config

  @property
  def sample_rate(self) -> int:
    return self.config.sample_rate

  @property
  def frame_rate(self) -> float:
    return self.config.frame_rate

  @property
  def dim(self) -> int:
    return self.config.dim

  @property
  def params(self) -> dict[str, Any]:
    return {}

  def num_frames(self, lengths: Any) -> np.ndarray:
    return (fbank_lib.num_fbank_frames(np.asarray(lengths)) // self.config.stride).astype(np.int32)

  def features(self, waveforms: Any, lengths: Any, layer: int = 0) -> tuple[jax.Array, jax.Array]:
    if layer != 0:
      raise ValueError(f"the MFCC encoder has only layer 0, got layer={layer}")
    return mfcc(self.config, *as_batch(waveforms, lengths))


def save_mfcc_encoder(directory: str, config: MfccConfig) -> None:
  """Writes `config.json` (model_type 'audiopalm-mfcc'), so `audiopalm.ssl.load.load_encoder(directory)` finds this encoder."""
  storage.makedirs(directory)
  storage.write_text(storage.join(directory, "config.json"),
                     json.dumps({"model_type": MODEL_TYPE, **dataclasses.asdict(config)}, indent=2))


def load_mfcc(directory: str, hf_config: dict[str, Any]) -> MfccEncoder:
  """The encoder of a directory written by `save_mfcc_encoder` (`hf_config` is its config.json)."""
  fields = {f.name for f in dataclasses.fields(MfccConfig)}
  unknown = sorted(set(hf_config) - fields - {"model_type"})
  if unknown:
    raise ValueError(f"{directory}/config.json: unknown MFCC settings {unknown}")
  return MfccEncoder(MfccConfig(**{k: v for k, v in hf_config.items() if k in fields}))
