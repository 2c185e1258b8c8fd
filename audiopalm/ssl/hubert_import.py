"""Load HuBERT weights in Hugging Face `transformers` format (`HubertModel`) into the JAX encoder.

    encoder = load_hubert("/path/to/hubert-base-ls960")   # config.json + weights + preprocessor_config.json

The directory is what `HubertModel.save_pretrained` writes (or a snapshot of facebook/hubert-*); a
`HubertForCTC` / `HubertForSequenceClassification` directory also loads: its `hubert.` tensors are the
encoder, and its task head (lm_head, projector, classifier, layer_weights) is ignored.

The waveform preprocessing comes from `preprocessor_config.json` (a `Wav2Vec2FeatureExtractor`): its
`do_normalize` and `sampling_rate`. Without that file, the `Wav2Vec2FeatureExtractor` defaults are used
(do_normalize=True, sampling_rate=16000), with a warning.

Options the JAX encoder cannot represent exactly are refused with every reason, never approximated: an
activation other than exact GELU (feat_extract_activation, hidden_act), batch norm instead of weight norm in
the positional convolution (conv_pos_batch_norm), attention adapters (adapter_attn_dim), other feature
extractors or multi-channel input. Training-only settings (dropouts, layerdrop, SpecAugment masking) do not
change inference and are not read.

Both spellings of the positional convolution's weight norm are read: `parametrizations.weight.original0/1`
(current torch) and `weight_g`/`weight_v` (older checkpoints); torch normalises it over all axes but the
kernel axis (`weight_norm(dim=2)`), so g has shape [1, 1, kernel]. Every tensor of the checkpoint must be
used (or be ignored for a stated reason) and every parameter filled, with matching shapes; anything else is
an error naming the tensors.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import jax
import numpy as np

from audiopalm.files import storage
from audiopalm.hf.tensors import TensorSet, check_shapes, read_config, read_tensors
from audiopalm.ssl.hubert import HubertConfig, HubertEncoder, Params, abstract_params

log = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor_config.json"
# Wav2Vec2FeatureExtractor's defaults, used when a directory has no preprocessor_config.json.
DEFAULT_PREPROCESSOR = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": True,
                        "sampling_rate": 16000, "feature_size": 1}
# Task heads of HubertForCTC / HubertForSequenceClassification: not part of the encoder.
TASK_HEAD_TENSORS = ("lm_head.weight", "lm_head.bias", "projector.weight", "projector.bias", "classifier.weight",
                     "classifier.bias", "layer_weights")


def config_from_hf(hf: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None) -> HubertConfig:
  """HubertConfig equal to a `transformers` HubertConfig (config.json) and Wav2Vec2FeatureExtractor settings.

  `preprocessor` is preprocessor_config.json as a dict; None means the Wav2Vec2FeatureExtractor defaults.
  Raises ValueError listing every option that cannot be represented exactly.
  """
  get = lambda key, default: hf.get(key) if hf.get(key) is not None else default  # noqa: E731
  pre = dict(DEFAULT_PREPROCESSOR) if preprocessor is None else dict(preprocessor)
  pre_get = lambda key, default: pre.get(key) if pre.get(key) is not None else default  # noqa: E731
  problems = []
  if hf.get("model_type", "hubert") != "hubert":
    problems.append(f"model_type is {hf.get('model_type')!r}, not 'hubert'")
  if get("feat_extract_activation", "gelu") != "gelu":
    problems.append(f"feat_extract_activation={hf.get('feat_extract_activation')!r} is not supported (only 'gelu', "
                    "the exact erf GELU; it is also the positional convolution's activation)")
  if get("hidden_act", "gelu") != "gelu":
    problems.append(f"hidden_act={hf.get('hidden_act')!r} is not supported (only 'gelu', the exact erf GELU)")
  if get("conv_pos_batch_norm", False):
    problems.append("conv_pos_batch_norm=True (batch norm instead of weight norm in the positional convolution) "
                    "is not supported")
  if hf.get("adapter_attn_dim") is not None:
    problems.append(f"adapter_attn_dim={hf.get('adapter_attn_dim')} (attention adapters in every layer) is not "
                    "supported")
  extractor = pre_get("feature_extractor_type", "Wav2Vec2FeatureExtractor")
  if extractor != "Wav2Vec2FeatureExtractor":
    problems.append(f"feature_extractor_type={extractor!r} is not supported (only Wav2Vec2FeatureExtractor)")
  if pre_get("feature_size", 1) != 1:
    problems.append(f"feature_size={pre.get('feature_size')} is not supported (only mono waveforms, 1)")
  fields = dict(
      conv_dim=tuple(get("conv_dim", (512,) * 7)), conv_kernel=tuple(get("conv_kernel", (10, 3, 3, 3, 3, 2, 2))),
      conv_stride=tuple(get("conv_stride", (5, 2, 2, 2, 2, 2, 2))), conv_bias=bool(get("conv_bias", False)),
      feat_extract_norm=get("feat_extract_norm", "group"), hidden_size=get("hidden_size", 768),
      num_hidden_layers=get("num_hidden_layers", 12), num_attention_heads=get("num_attention_heads", 12),
      intermediate_size=get("intermediate_size", 3072), hidden_act="gelu",
      layer_norm_eps=float(get("layer_norm_eps", 1e-5)), do_stable_layer_norm=bool(get("do_stable_layer_norm", False)),
      num_conv_pos_embeddings=get("num_conv_pos_embeddings", 128),
      num_conv_pos_embedding_groups=get("num_conv_pos_embedding_groups", 16),
      feat_proj_layer_norm=bool(get("feat_proj_layer_norm", True)), do_normalize=bool(pre_get("do_normalize", True)),
      sample_rate=int(pre_get("sampling_rate", 16000)))
  try:
    config = HubertConfig(**fields)
  except ValueError as e:
    problems.append(str(e))
    config = None
  if problems:
    raise ValueError("cannot represent this HuBERT config exactly: " + "; ".join(problems))
  return config


def _dense(t: TensorSet, prefix: str) -> dict[str, np.ndarray]:
  return {"kernel": t.take(f"{prefix}.weight").T, "bias": t.take(f"{prefix}.bias")}  # torch [out, in] → [in, out]


def _norm(t: TensorSet, prefix: str) -> dict[str, np.ndarray]:
  return {"scale": t.take(f"{prefix}.weight"), "bias": t.take(f"{prefix}.bias")}


def _attention(t: TensorSet, prefix: str, heads: int) -> dict[str, Any]:
  out = {}
  for name, torch_name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    w = t.take(f"{prefix}.{torch_name}.weight")  # [heads · head_dim, dim], heads major
    out[name] = {"kernel": w.T.reshape(w.shape[1], heads, -1), "bias": t.take(f"{prefix}.{torch_name}.bias")
                 .reshape(heads, -1)}
  w = t.take(f"{prefix}.out_proj.weight")  # [dim, heads · head_dim]
  out["out"] = {"kernel": w.T.reshape(heads, -1, w.shape[0]), "bias": t.take(f"{prefix}.out_proj.bias")}
  return out


def _front_end(t: TensorSet, config: HubertConfig) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for i in range(len(config.conv_dim)):
    prefix = f"feature_extractor.conv_layers.{i}"
    conv = {"kernel": t.take(f"{prefix}.conv.weight").transpose(2, 1, 0)}  # torch [out, in, k] → [k, in, out]
    if config.conv_bias:
      conv["bias"] = t.take(f"{prefix}.conv.bias")
    out[f"conv_{i}"] = conv
    if config.feat_extract_norm == "layer" or i == 0:
      out[f"norm_{i}"] = _norm(t, f"{prefix}.layer_norm")
  return out


def _positional_conv(t: TensorSet, config: HubertConfig) -> dict[str, np.ndarray]:
  prefix = "encoder.pos_conv_embed.conv"
  g, v = t.weight_norm(prefix)  # v [dim, dim / groups, kernel]; g [1, 1, kernel] (weight_norm over dim=2)
  kernel = config.num_conv_pos_embeddings
  if g.shape != (1, 1, kernel):
    raise ValueError(f"HuBERT checkpoint: {prefix} weight-norm gain has shape {g.shape}, expected (1, 1, {kernel}) "
                     "(torch weight_norm(dim=2), one gain per kernel position)")
  return {"kernel_v": v.transpose(2, 1, 0), "kernel_g": g.reshape(kernel), "bias": t.take(f"{prefix}.bias")}


def _encoder_tensors(tensors: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
  """The HubertModel tensors (a task model's `hubert.` prefix removed), and the task-head tensors to ignore."""
  if not any(name.startswith("hubert.") for name in tensors):
    return dict(tensors), []
  renamed = {name.removeprefix("hubert."): value for name, value in tensors.items()}
  heads = [name for name in tensors if name in TASK_HEAD_TENSORS]
  return renamed, heads


def convert(config: HubertConfig, tensors: Mapping[str, np.ndarray]) -> Params:
  """`HubertModel` (or task model) state dict (name → array) → the encoder's params."""
  tensors, heads = _encoder_tensors(tensors)
  t = TensorSet(tensors, "HuBERT")
  t.ignore(heads)  # a fine-tuned model's task head: not part of the encoder
  t.ignore(["masked_spec_embed"])  # the SpecAugment mask vector: replaces masked frames in training only
  params: dict[str, Any] = {"feature_encoder": _front_end(t, config)}
  if config.feat_proj_layer_norm:
    params["projection_norm"] = _norm(t, "feature_projection.layer_norm")
  params["projection"] = _dense(t, "feature_projection.projection")
  params["pos_conv"] = _positional_conv(t, config)
  params["encoder_norm"] = _norm(t, "encoder.layer_norm")
  for i in range(config.num_hidden_layers):
    prefix = f"encoder.layers.{i}"
    params[f"layers_{i}"] = {
        "attention": _attention(t, f"{prefix}.attention", config.num_attention_heads),
        "layer_norm": _norm(t, f"{prefix}.layer_norm"),
        "feed_forward": {"intermediate": _dense(t, f"{prefix}.feed_forward.intermediate_dense"),
                         "output": _dense(t, f"{prefix}.feed_forward.output_dense")},
        "final_layer_norm": _norm(t, f"{prefix}.final_layer_norm")}
  t.check_all_used()
  check_shapes(abstract_params(config), params, "HuBERT")
  return jax.tree.map(lambda x: np.ascontiguousarray(x, np.float32), params)


def read_preprocessor(directory: str) -> dict[str, Any] | None:
  """preprocessor_config.json of the directory as a dict, or None (with a warning) when there is none."""
  path = storage.join(directory, PREPROCESSOR_FILE)
  if not storage.is_file(path):
    log.warning("%s has no %s: using the Wav2Vec2FeatureExtractor defaults %s", directory, PREPROCESSOR_FILE,
                DEFAULT_PREPROCESSOR)
    return None
  return json.loads(storage.read_text(path))


def load_hubert(directory: str) -> HubertEncoder:
  """A `HubertEncoder` from a `transformers` HuBERT directory (config.json + weights + preprocessor_config.json)."""
  config = config_from_hf(read_config(directory), read_preprocessor(directory))
  return HubertEncoder(config, convert(config, read_tensors(directory)))
