"""The codec's architecture: one frozen config for SoundStream- and EnCodec-style codecs.

One SEANet-style layout covers both papers (`../shared/reference/papers.md`):

  encoder: conv(k=first_kernel_size, C) → for each stride s_b (channels C·2^b):
             residual units (pre-activation: ELU → conv(k, dilation d) → ELU → conv(k=1), + skip)
             → ELU → strided conv(k=2·s_b, 2·channels)
           → optional LSTM (with skip) → ELU → conv(k=encoder_last_kernel_size, latent_dim)
  decoder: the mirror: conv → optional LSTM → per stride (reversed): ELU → transposed conv(k=2·s, stride s,
           channels/2) → residual units → ELU → conv(k=decoder_last_kernel_size, 1)
  quantizer: residual vector quantization, `num_quantizers` levels × `codebook_size` codes of `latent_dim`.

Every convolution is causal: it sees only the current and past samples, so encoding can run chunk by chunk
with carried state, and padding after the end of a recording never changes an earlier frame.

The defaults are AudioLM's SoundStream at 16 kHz (50 Hz × 12 levels × 1024). Named presets are gin files,
`gin_configs/models/codec/*.gin` (`audiopalm.main.presets.codec_preset` reads them in Python).

SoundStream (`soundstream_*` presets): residual units with dilations (1, 3, 9), kernel 7, identity skip,
no LSTM, no weight norm, zero left padding, encoder output kernel 3. EnCodec (`encodec_24khz`): one residual
unit per block (dilation 1, kernel 3, hidden = channels/2, 1×1 conv skip), 2-layer LSTM, weight norm,
reflect left padding, latent 128, 32 levels: the architecture of `transformers.EncodecModel`'s default
config, so its weights load exactly (`encodec_import.py`).
"""

from __future__ import annotations

import dataclasses
import math

_PAD_MODES = ("constant", "reflect")


@dataclasses.dataclass(frozen=True)
class CodecConfig:
  """Architecture and quantizer of one codec.

  Attributes:
    sample_rate: audio sample rate in Hz.
    channels: C, the width of the first convolution; doubled at each downsampling.
    strides: downsampling factors in encoder order; their product is the hop (samples per frame).
    latent_dim: D, the width of the latent frames and of the codebook entries.
    dilations: one residual unit per entry, with that dilation, before each downsampling.
    residual_kernel_size: kernel of the dilated conv in a residual unit.
    residual_compress: the residual unit's hidden width is channels // residual_compress.
    residual_conv_shortcut: a 1×1 conv on the skip path (EnCodec) instead of the identity (SoundStream).
    first_kernel_size: kernel of the first encoder conv and the first decoder conv.
    encoder_last_kernel_size: kernel of the conv that makes the latent.
    decoder_last_kernel_size: kernel of the conv that makes the waveform.
    lstm_layers: LSTM layers (with a skip) after the encoder's convs and before the decoder's; 0 = none.
    weight_norm: weight-normalised convs (kernel = g · v / ‖v‖), as EnCodec.
    pad_mode: how the first chunk is padded on the left: 'constant' (zeros) or 'reflect' (EnCodec).
    codebook_size: codes per quantizer level.
    num_quantizers: RVQ levels Q.
    ema_decay: codebook EMA decay.
    ema_epsilon: Laplace smoothing of the EMA cluster sizes.
    dead_code_threshold: a code whose EMA usage falls below this is replaced by a random frame of the batch.
    kmeans_iters: Lloyd iterations of the first-batch k-means initialisation of each level.
    quantizer_dropout: in training, each example uses n_q ~ U{1..Q} levels.
  """

  sample_rate: int = 16000
  channels: int = 32
  strides: tuple[int, ...] = (2, 4, 5, 8)
  latent_dim: int = 256
  dilations: tuple[int, ...] = (1, 3, 9)
  residual_kernel_size: int = 7
  residual_compress: int = 1
  residual_conv_shortcut: bool = False
  first_kernel_size: int = 7
  encoder_last_kernel_size: int = 3
  decoder_last_kernel_size: int = 7
  lstm_layers: int = 0
  weight_norm: bool = False
  pad_mode: str = "constant"
  codebook_size: int = 1024
  num_quantizers: int = 12
  ema_decay: float = 0.99
  ema_epsilon: float = 1e-5
  dead_code_threshold: float = 2.0
  kmeans_iters: int = 10
  quantizer_dropout: bool = True

  def __post_init__(self):
    for name in ("strides", "dilations"):
      value = getattr(self, name)
      if not isinstance(value, tuple):
        object.__setattr__(self, name, tuple(value))
    problems = []
    if self.sample_rate <= 0:
      problems.append(f"sample_rate must be positive, got {self.sample_rate}")
    if not self.strides or any(s < 1 for s in self.strides):
      problems.append(f"strides must be a non-empty tuple of positive ints, got {self.strides}")
    if any(d < 1 for d in self.dilations):
      problems.append(f"dilations must be positive, got {self.dilations}")
    for name in ("channels", "latent_dim", "residual_kernel_size", "residual_compress", "first_kernel_size",
                 "encoder_last_kernel_size", "decoder_last_kernel_size", "codebook_size", "num_quantizers",
                 "kmeans_iters"):
      if getattr(self, name) < 1:
        problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.channels % self.residual_compress:
      problems.append(f"channels={self.channels} is not divisible by residual_compress={self.residual_compress}")
    if self.lstm_layers < 0:
      problems.append(f"lstm_layers must be >= 0, got {self.lstm_layers}")
    if self.pad_mode not in _PAD_MODES:
      problems.append(f"pad_mode must be one of {_PAD_MODES}, got {self.pad_mode!r}")
    if not 0.0 < self.ema_decay < 1.0:
      problems.append(f"ema_decay must be in (0, 1), got {self.ema_decay}")
    if problems:
      raise ValueError("invalid CodecConfig: " + "; ".join(problems))

  @property
  def hop_length(self) -> int:
    """Samples per latent frame (the product of the strides)."""
    return math.prod(self.strides)

  @property
  def frame_rate(self) -> float:
    """Latent frames (and codes per level) per second."""
    return self.sample_rate / self.hop_length

  @property
  def bits_per_level(self) -> float:
    return math.log2(self.codebook_size)

  def bitrate(self, num_levels: int | None = None) -> float:
    """Bits per second when `num_levels` levels (default: all) are kept."""
    return self.frame_rate * self.bits_per_level * (num_levels or self.num_quantizers)

  @property
  def bottleneck_channels(self) -> int:
    """Channels at the deepest point (after the last downsampling)."""
    return self.channels * 2 ** len(self.strides)
