"""A small convolutional encoder over MFCCs, trained with CTC on transcripts: supervised semantic features.

    encoder = load_encoder("runs/main/unit_encoder")     # a directory written by save_ctc_encoder
    features, frames = encoder.features(waveforms, lengths, layer=encoder.num_layers)   # [B, T, width] at 25 Hz

Semantic tokens are k-means units of an encoder's hidden layer (`audiopalm.semantic.fit`). A self-supervised
encoder (HuBERT, w2v-BERT 2.0) learns phonetic features from thousands of hours; with neither pretrained weights
nor that much audio, a small encoder trained to transcribe (CTC over the transcript's characters) learns them
from the transcribed speech at hand. This is how CosyVoice's S3 tokenizer and GLM-4-Voice's tokenizer make their
"supervised semantic tokens" (an ASR encoder, quantized). Its hidden layer follows the words and little of the
voice, where MFCC clusters follow both (docs/benchmarks.md, "Supervised units").

  waveform → MFCC (`audiopalm.ssl.mfcc`, `stride` 10 ms frames stacked: 4 → 25 Hz)
           → Dense to `width`                                                    (layer 0)
           → `num_layers` × residual block: LayerNorm → Conv1D(`kernel_size`) → GELU → Dense   (layers 1..N)
           → LayerNorm (the final layer's output is normalised)
  training only: → Dense to the alphabet + blank → CTC (`audiopalm.semantic.ctc_train`)

Only convolutions and per-frame maps, with padding frames zeroed before every convolution, so a recording's
features do not depend on its batch, and any length works (the receptive field is
1 + num_layers · (kernel_size − 1) frames). The directory holds config.json (model_type 'audiopalm-ctc', the MFCC
settings, the network's shape and the alphabet) and model.safetensors.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from audiopalm.files import storage
from audiopalm.hf.tensors import check_shapes, read_tensors
from audiopalm.ssl import mfcc as mfcc_lib
from audiopalm.ssl.encoder import as_batch

MODEL_TYPE = "audiopalm-ctc"
WEIGHTS_FILE = "model.safetensors"
BLANK = 0  # CTC's blank is output 0; character i of the alphabet is output i + 1


@dataclasses.dataclass(frozen=True)
class CtcEncoderConfig:
  """The encoder's shape.

  Attributes:
    mfcc: its input features (stride 4: 25 Hz frames of 4 stacked 10 ms MFCC frames).
    width: channels of every layer.
    num_layers: residual convolution blocks.
    kernel_size: frames each convolution reads (odd: centred).
    alphabet: the characters CTC transcribes into (set from the training transcripts).
  """

  mfcc: mfcc_lib.MfccConfig = mfcc_lib.MfccConfig(stride=4)
  width: int = 256
  num_layers: int = 6
  kernel_size: int = 5
  alphabet: str = ""

  def __post_init__(self):
    problems = []
    if self.width < 1 or self.num_layers < 1:
      problems.append(f"width ({self.width}) and num_layers ({self.num_layers}) must be >= 1")
    if self.kernel_size < 1 or self.kernel_size % 2 == 0:
      problems.append(f"kernel_size must be odd and >= 1, got {self.kernel_size}")
    if len(set(self.alphabet)) != len(self.alphabet):
      problems.append(f"alphabet has repeated characters: {self.alphabet!r}")
    if problems:
      raise ValueError("invalid CtcEncoderConfig: " + "; ".join(problems))

  @property
  def receptive_field(self) -> int:
    """Frames of input that one output frame depends on."""
    return 1 + self.num_layers * (self.kernel_size - 1)


class CtcNetwork(nn.Module):
  """MFCC frames → hidden states of `layer`, and (with `logits`) the CTC outputs over blank + alphabet."""

  config: CtcEncoderConfig

  @nn.compact
  def __call__(self, x: jax.Array, frames: jax.Array, layer: int, logits: bool = False) -> jax.Array:
    """x [B, T, mfcc.dim], frames [B] → [B, T, width] (layer 0..num_layers; zero past frames), or with `logits`
    (needs layer == num_layers) [B, T, 1 + len(alphabet)]."""
    cfg = self.config
    valid = (jnp.arange(x.shape[1])[None, :] < frames[:, None])[..., None].astype(x.dtype)  # [B, T, 1]
    h = nn.Dense(cfg.width, name="input")(x) * valid  # [batch, time, width]
    for i in range(min(layer, cfg.num_layers)):
      y = nn.LayerNorm(name=f"block_{i}_norm")(h) * valid  # padding is zero before the convolution reads it
      y = nn.Conv(cfg.width, (cfg.kernel_size,), padding="SAME", name=f"block_{i}_conv")(y)
      h = h + nn.Dense(cfg.width, name=f"block_{i}_out")(nn.gelu(y)) * valid
    if layer == cfg.num_layers:
      h = nn.LayerNorm(name="final_norm")(h) * valid
    if logits:
      if layer != cfg.num_layers:
        raise ValueError(f"CTC logits come after the last layer ({cfg.num_layers}), not layer {layer}")
      return nn.Dense(1 + len(cfg.alphabet), name="ctc_head")(h)
    return h


@functools.partial(jax.jit, static_argnames=("config", "layer"))
def _features(config: CtcEncoderConfig, layer: int, params: Any, waveforms: jax.Array, lengths: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
  x, frames = mfcc_lib.mfcc(config.mfcc, waveforms, lengths)  # [B, T, mfcc.dim]
  return CtcNetwork(config).apply({"params": params}, x, frames, layer), frames


class CtcEncoder:
  """`CtcNetwork` with its weights, implementing `audiopalm.ssl.encoder.SslEncoder` (name 'ctc')."""

  name = "ctc"

  def __init__(self, config: CtcEncoderConfig, params: Any):
    self.config = config
    self._params = params

  @property
  def sample_rate(self) -> int:
    return self.config.mfcc.sample_rate

  @property
  def frame_rate(self) -> float:
    return self.config.mfcc.frame_rate

  @property
  def num_layers(self) -> int:
    return self.config.num_layers

  @property
  def dim(self) -> int:
    return self.config.width

  @property
  def params(self) -> Any:
    return self._params

  def num_frames(self, lengths: Any) -> np.ndarray:
    return mfcc_lib.MfccEncoder(self.config.mfcc).num_frames(lengths)

  def features(self, waveforms: Any, lengths: Any, layer: int | None = None) -> tuple[jax.Array, jax.Array]:
    layer = self.num_layers if layer is None else layer
    if not 0 <= layer <= self.num_layers:
      raise ValueError(f"layer must be in 0..{self.num_layers}, got {layer}")
    return _features(self.config, layer, self._params, *as_batch(waveforms, lengths))


def _config_json(config: CtcEncoderConfig) -> dict[str, Any]:
  return {"model_type": MODEL_TYPE, **dataclasses.asdict(config)}


def save_ctc_encoder(directory: str, config: CtcEncoderConfig, params: Mapping[str, Any]) -> list[str]:
  """Writes model.safetensors, then config.json (so a directory with config.json is complete); returns the paths."""
  from safetensors.numpy import save  # pylint: disable=import-outside-toplevel

  flat = {"/".join(k): np.ascontiguousarray(v, np.float32)
          for k, v in traverse_util.flatten_dict(jax.device_get(dict(params))).items()}
  storage.makedirs(directory)
  return [storage.write_bytes(storage.join(directory, WEIGHTS_FILE), save(flat)),
          storage.write_text(storage.join(directory, "config.json"), json.dumps(_config_json(config), indent=2) + "\n")]


def config_from_json(directory: str, hf_config: Mapping[str, Any]) -> CtcEncoderConfig:
  """The config of a directory's config.json; unknown settings are refused by name."""
  fields = {f.name for f in dataclasses.fields(CtcEncoderConfig)}
  unknown = sorted(set(hf_config) - fields - {"model_type"})
  if unknown:
    raise ValueError(f"{directory}/config.json: unknown CTC encoder settings {unknown}")
  settings = {k: v for k, v in hf_config.items() if k in fields}
  if "mfcc" in settings:
    settings["mfcc"] = mfcc_lib.MfccConfig(**settings["mfcc"])
  return CtcEncoderConfig(**settings)


def load_ctc_encoder(directory: str, hf_config: Mapping[str, Any]) -> CtcEncoder:
  """The encoder of a directory written by `save_ctc_encoder` (`hf_config` is its config.json); weights whose
  names or shapes differ from the config's network are refused, naming them."""
  config = config_from_json(directory, hf_config)
  params = traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v)
                                         for k, v in read_tensors(directory).items()})
  expected = jax.eval_shape(lambda: CtcNetwork(config).init(
      jax.random.key(0), jnp.zeros((1, 1, config.mfcc.dim)), jnp.ones((1,), jnp.int32), config.num_layers, True))
  check_shapes(expected["params"], params, f"{directory} (CTC encoder)")
  return CtcEncoder(config, params)
