"""Semantic tokens: one layer of a speech encoder, averaged to the token rate, standardized, k-means.

    tok = load_semantic_tokenizer("audiopalm/data/assets/demo_semantic")   # or load_tokenizer("semantic", path)
    tokens, token_lengths = tok.encode(waveforms, lengths)   # [B, S] → [B, T, 1] int32 (−1 past the end)

A semantic tokenizer is a directory written by `save_semantic_tokenizer` (`audiopalm.main.fit_kmeans` makes one):

    semantic_tokenizer.json   the encoder (path, architecture, identity), the layer, the rate, the
                              per-dimension standardization statistics and the k-means settings
    centroids.npy             [K, D] float32 k-means centroids, in the standardized feature space

The encoder is named by path (a relative path is resolved against the tokenizer directory, so a small
encoder can ship inside it) and identified by a fingerprint of its architecture, config and weights.
Loading refuses an encoder whose fingerprint, or feature size, differs from the one the k-means was fitted
on: tokens from a mismatched pair would be silently meaningless.

Frame rates: encoders give 50 Hz frames; `downsample=2` averages non-overlapping pairs of frames to 25 Hz
(AudioLM/AudioPaLM's rate; a last unpaired frame stands alone), `downsample=1` keeps 50 Hz. Removing
consecutive duplicate tokens is a data-format choice, not made here.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from audiopalm.files import storage
from audiopalm.semantic import kmeans
from audiopalm.semantic.standardize import FeatureStats
from audiopalm.ssl.encoder import SslEncoder
from audiopalm.ssl.load import load_encoder
from audiopalm.tokenizers.base import PAD_TOKEN, fingerprint, register

log = logging.getLogger(__name__)

SPEC_FILE = "semantic_tokenizer.json"
CENTROIDS_FILE = "centroids.npy"
FORMAT_VERSION = 1


def encoder_identity(encoder: SslEncoder) -> str:
  """`<architecture>-<hash of config and weights>`: what a k-means model was fitted on."""
  config = getattr(encoder, "config", None)
  return f"{encoder.name}-{fingerprint(encoder.params, repr(config))}"


@dataclasses.dataclass(frozen=True)
class SemanticTokenizerSpec:
  """Everything about a semantic tokenizer but the arrays.

  Attributes:
    encoder_path: the encoder's directory (relative to the tokenizer directory, or absolute / gs://).
    encoder_identity: `encoder_identity()` of the encoder the k-means was fitted on.
    layer: the encoder layer whose hidden states are quantized (`SslEncoder.features`).
    downsample: encoder frames averaged per token frame (2: 50 Hz → 25 Hz).
    num_clusters: K, the vocabulary size.
    dim: the feature dimension D.
    kmeans: how the centroids were fitted (config, sample size, final inertia, command), for the record.
  """

  encoder_path: str
  encoder_identity: str
  layer: int
  downsample: int
  num_clusters: int
  dim: int
  kmeans: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.downsample < 1:
      raise ValueError(f"downsample must be >= 1, got {self.downsample}")
    if self.layer < 0:
      raise ValueError(f"layer must be >= 0, got {self.layer}")


def pool_frames(features: jax.Array, frames: jax.Array, factor: int) -> tuple[jax.Array, jax.Array]:
  """Average non-overlapping groups of `factor` valid frames: [B, T, D], [B] → [B, ceil(T/f), D], ceil(frames/f).

  A last group with fewer valid frames averages those it has; rows past the new lengths are zero.
  """
  if factor == 1:
    return features, frames
  batch, time, dim = features.shape
  pad = -time % factor
  valid = (jnp.arange(time + pad)[None, :] < frames[:, None]).astype(features.dtype)  # [B, T']
  x = jnp.pad(features, ((0, 0), (0, pad), (0, 0))) * valid[..., None]
  sums = x.reshape(batch, -1, factor, dim).sum(2)  # [B, T'/f, D]
  counts = valid.reshape(batch, -1, factor).sum(2)  # [B, T'/f]
  return sums / jnp.maximum(counts, 1.0)[..., None], -(-frames // factor)


@functools.partial(jax.jit, static_argnames=("factor",))
def _quantize(features, frames, mean, std, centroids, factor):
  pooled, lengths = pool_frames(features, frames, factor)  # [B, T, D]
  tokens = kmeans.assign(centroids, (pooled - mean) / std)  # [B, T], the fit's own nearest-centroid rule
  valid = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
  return jnp.where(valid, tokens, PAD_TOKEN)[..., None], lengths.astype(jnp.int32)


class SemanticTokenizer:
  """An encoder layer + standardization + k-means, behind the `AudioTokenizer` interface (kind 'semantic')."""

  kind = "semantic"
  num_codebooks = 1

  def __init__(self, encoder: SslEncoder, spec: SemanticTokenizerSpec, stats: FeatureStats, centroids: np.ndarray):
    centroids = np.asarray(centroids, np.float32)
    if centroids.shape != (spec.num_clusters, spec.dim):
      raise ValueError(f"centroids have shape {centroids.shape}, the spec says ({spec.num_clusters}, {spec.dim})")
    if encoder.dim != spec.dim:
      raise ValueError(f"the encoder gives {encoder.dim}-dim features; the k-means was fitted on {spec.dim}-dim")
    if not 0 <= spec.layer <= encoder.num_layers:
      raise ValueError(f"layer {spec.layer} is not in 0..{encoder.num_layers} for this encoder")
    self.encoder, self.spec, self.stats = encoder, spec, stats
    self.centroids = jax.device_put(centroids)
    self.mean = jax.device_put(np.asarray(stats.mean, np.float32))
    self.std = jax.device_put(np.asarray(stats.std, np.float32))
    kmeans_hash = fingerprint({"centroids": centroids, "mean": np.asarray(stats.mean, np.float32),
                               "std": np.asarray(stats.std, np.float32)})
    self._identity = (f"semantic-{spec.encoder_identity}-l{spec.layer}-{self.frame_rate:g}hz-"
                      f"k{spec.num_clusters}-{kmeans_hash}")

  @property
  def sample_rate(self) -> int:
    return self.encoder.sample_rate

  @property
  def frame_rate(self) -> float:
    return self.encoder.frame_rate / self.spec.downsample

  @property
  def vocab_size(self) -> int:
    return self.spec.num_clusters

  @property
  def identity(self) -> str:
    return self._identity

  def num_frames(self, lengths: Any) -> np.ndarray:
    frames = np.asarray(self.encoder.num_frames(np.asarray(lengths)))
    return (-(-frames // self.spec.downsample)).astype(np.int32)

  def features(self, waveforms: Any, lengths: Any) -> tuple[jax.Array, jax.Array]:
    """Pooled, not yet standardized features at the token rate: [B, T, D] (zero past lengths), lengths [B]."""
    features, frames = self.encoder.features(waveforms, lengths, self.spec.layer)
    return pool_frames(features, frames, self.spec.downsample)

  def encode(self, waveforms: Any, lengths: Any = None) -> tuple[jax.Array, jax.Array]:
    """[B, S] float32 at `sample_rate`, [B] → tokens [B, T, 1] int32 (−1 past the end), token_lengths [B]."""
    waveforms = jnp.asarray(waveforms, jnp.float32)
    if lengths is None:
      lengths = np.full((waveforms.shape[0],), waveforms.shape[1], np.int32)
    features, frames = self.encoder.features(waveforms, lengths, self.spec.layer)
    return _quantize(features, frames, self.mean, self.std, self.centroids, self.spec.downsample)


def save_semantic_tokenizer(path: str, spec: SemanticTokenizerSpec, stats: FeatureStats,
                            centroids: np.ndarray) -> None:
  """Writes the tokenizer directory; it appears under `path` only once complete (written beside, renamed)."""
  target, staging = epath.Path(path), epath.Path(str(path).rstrip("/") + ".tmp")
  if storage.is_file(target / SPEC_FILE):
    raise FileExistsError(f"{target / SPEC_FILE} exists: refusing to overwrite a semantic tokenizer")
  if staging.exists():
    staging.rmtree()
  staging.mkdir(parents=True)
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(centroids, np.float32))
  storage.write_bytes(staging / CENTROIDS_FILE, buffer.getvalue())
  record = {"format_version": FORMAT_VERSION, "spec": dataclasses.asdict(spec), "stats": stats.to_dict()}
  storage.write_text(staging / SPEC_FILE, json.dumps(record, indent=2))
  if target.exists():  # an empty or partial directory from an earlier attempt, or files the user put there
    for child in staging.iterdir():
      child.rename(target / child.name)
    staging.rmtree()
  else:
    staging.rename(target)


def read_spec(path: str) -> tuple[SemanticTokenizerSpec, FeatureStats, np.ndarray]:
  """The spec, statistics and centroids of a tokenizer directory (the encoder is not loaded)."""
  spec_file = storage.join(path, SPEC_FILE)
  if not storage.is_file(spec_file):
    raise FileNotFoundError(f"{path} is not a semantic tokenizer: no {SPEC_FILE}")
  record = json.loads(storage.read_text(spec_file))
  if record.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{spec_file}: unsupported format {record.get('format_version')!r} "
                     f"(this code reads version {FORMAT_VERSION})")
  spec = SemanticTokenizerSpec(**record["spec"])
  centroids = np.load(io.BytesIO(storage.read_bytes(storage.join(path, CENTROIDS_FILE))))
  return spec, FeatureStats.from_dict(record["stats"]), centroids


def resolve_encoder_path(tokenizer_path: str, encoder_path: str) -> str:
  """An encoder path as recorded, resolved against the tokenizer directory when relative."""
  if "://" in encoder_path or encoder_path.startswith("/"):
    return encoder_path
  return storage.join(tokenizer_path, encoder_path)


@register("semantic")
def load_semantic_tokenizer(path: str, encoder_path: str | None = None) -> SemanticTokenizer:
  """The tokenizer at `path`, with its recorded encoder or the one at `encoder_path` (which must be identical)."""
  spec, stats, centroids = read_spec(path)
  location = encoder_path or resolve_encoder_path(path, spec.encoder_path)
  encoder = load_encoder(location)
  identity = encoder_identity(encoder)
  if identity != spec.encoder_identity:
    raise ValueError(f"the encoder at {location} ({identity}) is not the one the k-means at {path} was fitted "
                     f"on ({spec.encoder_identity}): its tokens would be meaningless. Use the same encoder "
                     "weights and config, or fit a new k-means (audiopalm.main.fit_kmeans)")
  return SemanticTokenizer(encoder, spec, stats, centroids)
