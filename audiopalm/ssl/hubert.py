"""HuBERT in JAX/Flax: waveforms → the hidden states of one Transformer layer, as `transformers`' HubertModel.

    encoder = HubertEncoder(preset("hubert_base"), params)      # or hubert_import.load_hubert(directory)
    features, frames = encoder.features(waveforms, lengths, layer=6)
    # waveforms [B, S] float32 at 16 kHz, lengths [B] samples → features [B, T, 768] (zero past frames), frames [B]

The network is `transformers`' HubertModel in inference mode (no dropout, no SpecAugment masking):

  waveform → [per-utterance zero-mean unit-variance normalisation, if do_normalize (the preprocessor's step)]
           → conv front end (GroupNorm on the first layer's output, or LayerNorm after every layer; GELU)
           → [LayerNorm] → Linear → + GELU(weight-normalised grouped positional convolution)
           → [LayerNorm, post-LN variant] → Transformer layers (post-LN, or pre-LN "stable layer norm")
           → [final LayerNorm, stable-LN variant; only in `last_hidden_state`]

`layer` indexes `transformers`' `output_hidden_states=True` tuple: 0 is the input of the first Transformer
layer, k is the output of layer k. For the stable-layer-norm variant (hubert-large/xlarge) the output of the
last layer is taken before the encoder's final LayerNorm, as transformers ≥ 5 returns it (transformers 4.x put
the normalised state last in the tuple; `last_hidden_state` gives that one).

Batching never changes a recording's features: samples past `lengths` are never read, the per-utterance
waveform normalisation and the per-channel GroupNorm of the first conv layer use only the valid samples /
frames of each example, padded frames are zeroed before the positional convolution and masked out of
attention. An example in a padded batch therefore gives what transformers gives on that example alone,
unpadded. (transformers itself, given a padded batch and an attention mask, normalises the GroupNorm over the
padding too, so its batched output for the 'group' front end differs from its unbatched one.)

Compute is float32 with `precision='highest'` matmuls and convolutions by default (no TF32/bfloat16 passes).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiopalm.ssl.encoder import as_batch

# torch's GroupNorm / LayerNorm default, which transformers uses in the conv front end (not config.layer_norm_eps).
FRONT_END_NORM_EPS = 1e-5
# Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm: (x - mean) / sqrt(var + 1e-7).
WAVEFORM_NORM_EPS = 1e-7

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class HubertConfig:
  """The architecture of a HuBERT encoder (the names are `transformers.HubertConfig`'s) and its preprocessing.

  Attributes:
    conv_dim: output channels of each conv layer of the front end.
    conv_kernel: kernel size of each conv layer.
    conv_stride: stride of each conv layer (their product is the hop: 320 samples = 20 ms at 16 kHz).
    conv_bias: whether the front-end convolutions have a bias.
    feat_extract_norm: 'group' (a per-channel GroupNorm after the first conv only) or 'layer' (LayerNorm over
      channels after every conv).
    hidden_size: Transformer width D.
    num_hidden_layers: Transformer layers.
    num_attention_heads: attention heads (D must be a multiple).
    intermediate_size: feed-forward width.
    hidden_act: feed-forward activation; only 'gelu' (exact, erf-based, as torch's) is supported.
    layer_norm_eps: epsilon of the feature-projection and Transformer LayerNorms.
    do_stable_layer_norm: pre-LN Transformer layers and a final LayerNorm (hubert-large/xlarge), else post-LN
      with a LayerNorm before the first layer (hubert-base).
    num_conv_pos_embeddings: kernel size of the positional convolution.
    num_conv_pos_embedding_groups: groups of the positional convolution.
    feat_proj_layer_norm: LayerNorm on the front end's output before the feature projection.
    do_normalize: zero-mean unit-variance normalisation of each waveform (over its valid samples) before the
      network, as `Wav2Vec2FeatureExtractor(do_normalize=True)`.
    sample_rate: input sample rate in Hz.
  """

  conv_dim: tuple[int, ...] = (512,) * 7
  conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
  conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
  conv_bias: bool = False
  feat_extract_norm: str = "group"
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-5
  do_stable_layer_norm: bool = False
  num_conv_pos_embeddings: int = 128
  num_conv_pos_embedding_groups: int = 16
  feat_proj_layer_norm: bool = True
  do_normalize: bool = False
  sample_rate: int = 16000

  def __post_init__(self):
    for name in ("conv_dim", "conv_kernel", "conv_stride"):  # lists (from JSON) become tuples: hashable for jit
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    self.validate()

  def validate(self) -> None:
    """Raises ValueError listing every inconsistent or unsupported field."""
    problems = []
    n = len(self.conv_dim)
    if n == 0:
      problems.append("conv_dim is empty: the front end needs at least one conv layer")
    if len(self.conv_kernel) != n or len(self.conv_stride) != n:
      problems.append(f"conv_dim, conv_kernel and conv_stride must have the same length, got {n}, "
                      f"{len(self.conv_kernel)}, {len(self.conv_stride)}")
    for name in ("conv_dim", "conv_kernel", "conv_stride"):
      if any(v < 1 for v in getattr(self, name)):
        problems.append(f"{name} must be positive, got {getattr(self, name)}")
    if self.feat_extract_norm not in ("group", "layer"):
      problems.append(f"feat_extract_norm is {self.feat_extract_norm!r}, must be 'group' or 'layer'")
    if self.hidden_act != "gelu":
      problems.append(f"hidden_act is {self.hidden_act!r}: only 'gelu' (exact erf GELU) is supported")
    for name in ("hidden_size", "num_attention_heads", "intermediate_size", "num_conv_pos_embeddings",
                 "num_conv_pos_embedding_groups", "sample_rate"):
      if getattr(self, name) < 1:
        problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.num_hidden_layers < 0:
      problems.append(f"num_hidden_layers must be >= 0, got {self.num_hidden_layers}")
    if self.num_attention_heads >= 1 and self.hidden_size % self.num_attention_heads:
      problems.append(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                      f"{self.num_attention_heads}")
    if self.num_conv_pos_embedding_groups >= 1 and self.hidden_size % self.num_conv_pos_embedding_groups:
      problems.append(f"hidden_size {self.hidden_size} is not a multiple of num_conv_pos_embedding_groups "
                      f"{self.num_conv_pos_embedding_groups}")
    if not self.layer_norm_eps > 0:
      problems.append(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")
    if problems:
      raise ValueError("invalid HubertConfig: " + "; ".join(problems))

  @property
  def hop_length(self) -> int:
    """Samples per feature frame (the product of the strides)."""
    return math.prod(self.conv_stride)

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop_length

  @property
  def receptive_field(self) -> int:
    """Samples one feature frame of the front end reads (400 for hubert-base): shorter inputs give no frame."""
    field = 1
    for kernel, stride in reversed(list(zip(self.conv_kernel, self.conv_stride))):
      field = (field - 1) * stride + kernel
    return field


PRESETS: dict[str, HubertConfig] = {
    # facebook/hubert-base-ls960 (fairseq HuBERT base pre-training used normalize=False).
    "hubert_base": HubertConfig(),
    # facebook/hubert-large-ll60k.
    "hubert_large": HubertConfig(conv_bias=True, feat_extract_norm="layer", hidden_size=1024, num_hidden_layers=24,
                                 num_attention_heads=16, intermediate_size=4096, do_stable_layer_norm=True,
                                 do_normalize=True),
    # facebook/hubert-xlarge-ll60k.
    "hubert_xlarge": HubertConfig(conv_bias=True, feat_extract_norm="layer", hidden_size=1280, num_hidden_layers=48,
                                  num_attention_heads=16, intermediate_size=5120, do_stable_layer_norm=True,
                                  do_normalize=True),
    # For tests: 2 layers of width 32, hop 20 samples.
    "tiny": HubertConfig(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), hidden_size=32,
                         num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=4),
}


def preset(name: str, **overrides: Any) -> HubertConfig:
  """A named preset, with fields replaced by `overrides` (validated)."""
  if name not in PRESETS:
    raise ValueError(f"unknown HuBERT preset {name!r}; known: {sorted(PRESETS)}")
  return dataclasses.replace(PRESETS[name], **overrides)


def conv_output_lengths(config: HubertConfig, lengths: Any, xp: Any = np) -> Any:
  """Front-end output frames for `lengths` samples (transformers' `_get_feat_extract_output_lengths`, ≥ 0)."""
  for kernel, stride in zip(config.conv_kernel, config.conv_stride):
    lengths = xp.maximum((lengths - kernel) // stride + 1, 0)
  return lengths


def frame_mask(frames: jax.Array, length: int) -> jax.Array:
  """[B] valid counts → [B, length] bool, True on valid positions."""
  return jnp.arange(length)[None, :] < frames[:, None]


def prepare_waveforms(waveforms: jax.Array, lengths: jax.Array, normalize: bool) -> jax.Array:
  """Zero samples past lengths; if `normalize`, zero-mean unit-variance over each waveform's valid samples."""
  valid = jnp.arange(waveforms.shape[1])[None, :] < lengths[:, None]  # [B, S]
  x = jnp.where(valid, waveforms, 0.0)
  if not normalize:
    return x
  count = jnp.maximum(lengths, 1).astype(jnp.float32)[:, None]  # [B, 1]
  mean = jnp.sum(x, axis=1, keepdims=True) / count
  centred = jnp.where(valid, x - mean, 0.0)
  var = jnp.sum(jnp.square(centred), axis=1, keepdims=True) / count  # biased, as numpy's var
  return centred * jax.lax.rsqrt(var + WAVEFORM_NORM_EPS)


def _gelu(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=False)  # torch's nn.functional.gelu (erf)


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
  # Two-pass variance (E[(x - mean)²]) as torch, not E[x²] - mean², which loses precision on large means.
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class MaskedGroupNorm(nn.Module):
  """GroupNorm with one group per channel, statistics over each example's valid frames only."""

  eps: float = FRONT_END_NORM_EPS

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x [B, T, C], mask [B, T] bool → [B, T, C]."""
    channels = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    m = mask[..., None].astype(x.dtype)  # [B, T, 1]
    count = jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1.0)  # [B, 1, 1]
    mean = jnp.sum(x * m, axis=1, keepdims=True) / count  # [B, 1, C]
    var = jnp.sum(jnp.square(x - mean) * m, axis=1, keepdims=True) / count  # [B, 1, C]
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


class FeatureEncoder(nn.Module):
  """The conv front end: waveform samples → frames of conv_dim[-1] channels, with valid frame counts."""

  config: HubertConfig
  precision: str = "highest"

  @nn.compact
  def __call__(self, waveforms: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B, S], [B] samples → [B, T, C], frames [B]."""
    cfg = self.config
    x = waveforms[..., None]  # [batch, samples, 1]
    frames = lengths
    for i, (dim, kernel, stride) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
      x = nn.Conv(dim, (kernel,), strides=(stride,), padding="VALID", use_bias=cfg.conv_bias,
                  precision=self.precision, name=f"conv_{i}")(x)  # [batch, frames_i, dim]
      frames = jnp.maximum((frames - kernel) // stride + 1, 0)
      if cfg.feat_extract_norm == "layer":
        x = nn.LayerNorm(epsilon=FRONT_END_NORM_EPS, use_fast_variance=False, name=f"norm_{i}")(x)
      elif i == 0:
        x = MaskedGroupNorm(name="norm_0")(x, frame_mask(frames, x.shape[1]))
      x = _gelu(x)
    return x, frames


class PositionalConv(nn.Module):
  """Weight-normalised (over all but the kernel axis: torch weight_norm(dim=2)) grouped conv, 'same' length."""

  config: HubertConfig
  precision: str = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, T, D] (zero on padded frames) → GELU(conv(x)) [B, T, D]."""
    kernel, groups, dim = self.config.num_conv_pos_embeddings, self.config.num_conv_pos_embedding_groups, x.shape[-1]
    kernel_v = self.param("kernel_v", nn.initializers.lecun_normal(), (kernel, dim // groups, dim))  # [K, D/G, D]
    kernel_g = self.param("kernel_g", nn.initializers.ones, (kernel,))  # [K]
    bias = self.param("bias", nn.initializers.zeros, (dim,))
    norm = jnp.sqrt(jnp.sum(jnp.square(kernel_v), axis=(1, 2)))  # [K]
    weight = kernel_v * (kernel_g / norm)[:, None, None]
    # torch pads K // 2 on both sides and, for an even K, drops the last output frame.
    padding = (kernel // 2, kernel // 2 - (1 - kernel % 2))
    y = jax.lax.conv_general_dilated(x, weight, window_strides=(1,), padding=[padding],
                                     dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups,
                                     precision=self.precision)  # [batch, frames, dim]
    return _gelu(y + bias)


class SelfAttention(nn.Module):
  """Multi-head self-attention over the valid frames."""

  num_heads: int
  precision: str = "highest"

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x [B, T, D], mask [B, T] bool (keys to attend to) → [B, T, D]."""
    dim = x.shape[-1]
    head_dim = dim // self.num_heads
    project = lambda name: nn.DenseGeneral((self.num_heads, head_dim), precision=self.precision, name=name)  # noqa: E731
    q, k, v = project("query")(x), project("key")(x), project("value")(x)  # [batch, frames, heads, head_dim]
    logits = jnp.einsum("BTNH,BSNH->BNTS", q, k, precision=self.precision) * head_dim ** -0.5
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)  # [batch, heads, frames, frames]
    out = jnp.einsum("BNTS,BSNH->BTNH", weights, v, precision=self.precision)
    return nn.DenseGeneral(dim, axis=(-2, -1), precision=self.precision, name="out")(out)


class FeedForward(nn.Module):
  """Dense → GELU → Dense."""

  config: HubertConfig
  precision: str = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, T, D] → [B, T, D]."""
    h = _gelu(nn.Dense(self.config.intermediate_size, precision=self.precision, name="intermediate")(x))
    return nn.Dense(self.config.hidden_size, precision=self.precision, name="output")(h)


class EncoderLayer(nn.Module):
  """A Transformer layer: post-LN (hubert-base) or pre-LN (`do_stable_layer_norm`, hubert-large/xlarge)."""

  config: HubertConfig
  precision: str = "highest"

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, T, D], mask [B, T] → [B, T, D]."""
    cfg = self.config
    attention = SelfAttention(cfg.num_attention_heads, self.precision, name="attention")
    feed_forward = FeedForward(cfg, self.precision, name="feed_forward")
    norm = _layer_norm(cfg.layer_norm_eps, "layer_norm")
    final_norm = _layer_norm(cfg.layer_norm_eps, "final_layer_norm")
    if cfg.do_stable_layer_norm:
      x = x + attention(norm(x), mask)
      return x + feed_forward(final_norm(x))
    x = norm(x + attention(x, mask))
    return final_norm(x + feed_forward(x))


class HubertNetwork(nn.Module):
  """HubertModel's forward pass up to one layer (see the module docstring)."""

  config: HubertConfig
  precision: str = "highest"

  def setup(self):
    cfg = self.config
    self.feature_encoder = FeatureEncoder(cfg, self.precision)
    if cfg.feat_proj_layer_norm:
      self.projection_norm = _layer_norm(cfg.layer_norm_eps, "projection_norm")
    self.projection = nn.Dense(cfg.hidden_size, precision=self.precision)
    self.pos_conv = PositionalConv(cfg, self.precision)
    self.encoder_norm = _layer_norm(cfg.layer_norm_eps, "encoder_norm")
    self.layers = [EncoderLayer(cfg, self.precision) for _ in range(cfg.num_hidden_layers)]

  def __call__(self, waveforms: jax.Array, lengths: jax.Array, layer: int, final_norm: bool = False,
               time_mask: jax.Array | None = None, mask_embedding: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    """[B, S], [B] samples → hidden states of `layer` [B, T, D] (garbage past frames), frames [B].

    `final_norm` (with layer = num_hidden_layers) applies the stable-LN variant's final LayerNorm: transformers'
    `last_hidden_state`. Only the layers up to `layer` are run. Training only: `time_mask` [B, T] bool replaces
    those frames' projected features by `mask_embedding` [D] before the positional convolution (transformers'
    `mask_time_indices` and `masked_spec_embed`; `audiopalm.semantic.hubert_pretrain`).
    """
    cfg = self.config
    x = prepare_waveforms(waveforms, lengths, cfg.do_normalize)
    x, frames = self.feature_encoder(x, lengths)  # [batch, frames, conv_dim[-1]]
    mask = frame_mask(frames, x.shape[1])  # [batch, frames]
    if cfg.feat_proj_layer_norm:
      x = self.projection_norm(x)
    x = self.projection(x)  # [batch, frames, hidden]
    if time_mask is not None:
      x = jnp.where(time_mask[..., None], mask_embedding, x)
    x = x * mask[..., None]  # padding zeroed for the positional conv
    x = x + self.pos_conv(x)
    if not cfg.do_stable_layer_norm:
      x = self.encoder_norm(x)
    for encoder_layer in self.layers[:layer]:
      x = encoder_layer(x, mask)
    if final_norm and cfg.do_stable_layer_norm:
      x = self.encoder_norm(x)
    return x, frames


def init_params(config: HubertConfig, key: jax.Array) -> Params:
  """Random weights (every parameter, including the stable-LN variant's final LayerNorm)."""
  dummy = jnp.zeros((1, config.receptive_field), jnp.float32)
  lengths = jnp.full((1,), config.receptive_field, jnp.int32)
  return HubertNetwork(config).init(key, dummy, lengths, config.num_hidden_layers, True)["params"]


def abstract_params(config: HubertConfig) -> Params:
  """The parameter tree as ShapeDtypeStructs (no memory allocated)."""
  return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


@functools.partial(jax.jit, static_argnames=("config", "layer", "final_norm", "precision"))
def _forward(config: HubertConfig, params: Params, waveforms: jax.Array, lengths: jax.Array, layer: int,
             final_norm: bool, precision: str) -> tuple[jax.Array, jax.Array]:
  x, frames = HubertNetwork(config, precision).apply({"params": params}, waveforms, lengths, layer, final_norm)
  x = jnp.where(frame_mask(frames, x.shape[1])[..., None], x, 0.0)
  return x, frames.astype(jnp.int32)


class HubertEncoder:
  """A HuBERT encoder with its weights, implementing `audiopalm.ssl.encoder.SslEncoder`."""

  def __init__(self, config: HubertConfig, params: Params, precision: str = "highest"):
    self.config = config
    self.precision = precision
    self._params = jax.device_put(params)  # copied to the device once, not per call

  @property
  def sample_rate(self) -> int:
    return self.config.sample_rate

  @property
  def frame_rate(self) -> float:
    return self.config.frame_rate

  @property
  def num_layers(self) -> int:
    return self.config.num_hidden_layers

  @property
  def dim(self) -> int:
    return self.config.hidden_size

  @property
  def name(self) -> str:
    return "hubert"

  @property
  def params(self) -> Params:
    return self._params

  def num_frames(self, lengths: np.ndarray) -> np.ndarray:
    """Feature frames for recordings of `lengths` samples (0 for recordings shorter than the receptive field)."""
    return conv_output_lengths(self.config, np.asarray(lengths, np.int64)).astype(np.int32)

  def features(self, waveforms: Any, lengths: Any, layer: int) -> tuple[jax.Array, jax.Array]:
    """[B, S] float32, [B] samples (None: all S) → hidden states of `layer` [B, T, D] (zero past frames), frames [B]."""
    if not 0 <= layer <= self.num_layers:
      raise ValueError(f"layer {layer} is not in 0..{self.num_layers} for this HuBERT")
    return self._run(waveforms, lengths, int(layer), final_norm=False)

  def last_hidden_state(self, waveforms: Any, lengths: Any = None) -> tuple[jax.Array, jax.Array]:
    """transformers' `last_hidden_state`: the last layer's output, after the final LayerNorm of stable-LN models."""
    return self._run(waveforms, lengths, self.num_layers, final_norm=True)

  def _run(self, waveforms: Any, lengths: Any, layer: int, final_norm: bool) -> tuple[jax.Array, jax.Array]:
    waveforms, lengths = as_batch(waveforms, lengths)
    samples = waveforms.shape[1]
    if samples < self.config.receptive_field:  # so that the front end has a (then invalid) frame to compute
      waveforms = jnp.pad(waveforms, ((0, 0), (0, self.config.receptive_field - samples)))
    return _forward(self.config, self._params, waveforms, lengths, layer, final_norm, self.precision)
