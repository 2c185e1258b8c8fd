"""Load w2v-BERT 2.0 weights in `transformers` format (`Wav2Vec2BertModel`) into the JAX encoder.

    encoder = load_w2v_bert("/path/to/w2v-bert-2.0")   # config.json + model.safetensors
                                                       # (+ preprocessor_config.json), no download

The directory is what `Wav2Vec2BertModel.save_pretrained` writes (or a snapshot of facebook/w2v-bert-2.0); the
front end comes from its `preprocessor_config.json` (a `SeamlessM4TFeatureExtractor`; its defaults if absent).
Options the encoder cannot reproduce exactly are refused with every reason at once, never approximated.

Every tensor must be used and every parameter filled with its shape, except these, skipped on purpose:
  - `masked_spec_embed`: the SpecAugment vector, used only in training;
  - `adapter.*` and `intermediate_ffn.*` (`add_adapter=True`): they transform `last_hidden_state` after the
    Conformer stack, while features are the Conformer layers' hidden states (`output_hidden_states`), which
    they never change;
  - the heads of task models (`Wav2Vec2BertFor*`: `lm_head`, `projector`, `classifier`, `layer_weights`,
    `tdnn`, `feature_extractor`, `objective`); their encoder is read from the `wav2vec2_bert.` prefix.
Any other tensor, or a missing one, is an error naming it.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import jax
import numpy as np

from audiopalm.files import storage
from audiopalm.hf.tensors import TensorSet, check_shapes, read_config, read_tensors
from audiopalm.ssl import fbank as fbank_lib
from audiopalm.ssl.w2v_bert import ACTIVATIONS, POSITION_TYPES, W2vBertConfig, W2vBertEncoder, abstract_params

TASK_MODEL_PREFIX = "wav2vec2_bert."
SKIPPED_PREFIXES = ("masked_spec_embed", "adapter.", "intermediate_ffn.")
HEAD_PREFIXES = ("lm_head.", "projector.", "classifier.", "layer_weights", "tdnn.", "feature_extractor.",
                 "objective.")


def config_from_hf(hf: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None) -> W2vBertConfig:
  """W2vBertConfig equal to a `Wav2Vec2BertConfig` (config.json as a dict) and its feature extractor's
  `preprocessor_config.json` (None: `SeamlessM4TFeatureExtractor`'s defaults)."""
  get = lambda key, default: hf.get(key, default) if hf.get(key) is not None else default  # noqa: E731
  problems = []
  if hf.get("model_type", "wav2vec2-bert") != "wav2vec2-bert":
    problems.append(f"model_type is {hf.get('model_type')!r}, not 'wav2vec2-bert'")
  position = hf.get("position_embeddings_type", "relative_key")
  if position not in POSITION_TYPES:
    problems.append(f"position_embeddings_type={position!r} is not supported (one of {POSITION_TYPES})")
  act = get("hidden_act", "swish")
  if act not in ACTIVATIONS:
    problems.append(f"hidden_act={act!r} is not supported (one of {sorted(ACTIVATIONS)})")
  hidden, heads = get("hidden_size", 1024), get("num_attention_heads", 16)
  if hidden % heads:
    problems.append(f"hidden_size={hidden} is not a multiple of num_attention_heads={heads}")
  if get("conv_depthwise_kernel_size", 31) % 2 == 0:
    problems.append(f"conv_depthwise_kernel_size={hf.get('conv_depthwise_kernel_size')} is even")
  fbank = fbank_lib.FbankConfig()
  if preprocessor is not None:
    fbank_problems = fbank_lib.preprocessor_problems(preprocessor)
    problems += fbank_problems
    if not fbank_problems:
      fbank = fbank_lib.from_preprocessor_config(preprocessor)
  input_dim = get("feature_projection_input_dim", 160)
  if input_dim != fbank.dim:
    problems.append(f"feature_projection_input_dim={input_dim} differs from the feature extractor's "
                    f"num_mel_bins · stride = {fbank.dim}")
  if problems:
    raise ValueError("cannot represent this w2v-BERT config exactly: " + "; ".join(problems))
  return W2vBertConfig(
      hidden_size=hidden, num_hidden_layers=get("num_hidden_layers", 24), num_attention_heads=heads,
      intermediate_size=get("intermediate_size", 4096), feature_projection_input_dim=input_dim, hidden_act=act,
      layer_norm_eps=float(get("layer_norm_eps", 1e-5)),
      conv_depthwise_kernel_size=get("conv_depthwise_kernel_size", 31), position_embeddings_type=position,
      left_max_position_embeddings=get("left_max_position_embeddings", 64),
      right_max_position_embeddings=get("right_max_position_embeddings", 8),
      rotary_embedding_base=float(get("rotary_embedding_base", 10000)), fbank=fbank)


def _base_model_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The `Wav2Vec2BertModel` tensors: a task model's `wav2vec2_bert.` prefix removed, its head dropped."""
  if not any(name.startswith(TASK_MODEL_PREFIX) for name in tensors):
    return dict(tensors)
  out = {}
  for name, value in tensors.items():
    if name.startswith(TASK_MODEL_PREFIX):
      out[name[len(TASK_MODEL_PREFIX):]] = value
    elif not name.startswith(HEAD_PREFIXES):
      out[name] = value  # left for check_all_used to report
  return out


def _dense(t: TensorSet, prefix: str, bias: bool = True) -> dict[str, np.ndarray]:
  out = {"kernel": t.take(f"{prefix}.weight").T}  # torch [out, in] → [in, out]
  if bias:
    out["bias"] = t.take(f"{prefix}.bias")
  return out


def _layer_norm(t: TensorSet, prefix: str) -> dict[str, np.ndarray]:
  return {"scale": t.take(f"{prefix}.weight"), "bias": t.take(f"{prefix}.bias")}


def _attention(config: W2vBertConfig, t: TensorSet, prefix: str) -> dict[str, Any]:
  out: dict[str, Any] = {name: _dense(t, f"{prefix}.{name}")
                         for name in ("linear_q", "linear_k", "linear_v", "linear_out")}
  if config.position_embeddings_type == "relative_key":
    out["distance_embedding"] = t.take(f"{prefix}.distance_embedding.weight")  # [left + right + 1, head_dim]
  elif config.position_embeddings_type == "relative":
    out["linear_pos"] = _dense(t, f"{prefix}.linear_pos", bias=False)
    out["pos_bias_u"] = t.take(f"{prefix}.pos_bias_u")  # [heads, head_dim]
    out["pos_bias_v"] = t.take(f"{prefix}.pos_bias_v")
  return out


def _conv_module(t: TensorSet, prefix: str) -> dict[str, Any]:
  return {
      "layer_norm": _layer_norm(t, f"{prefix}.layer_norm"),
      "pointwise_conv1": {"kernel": t.take(f"{prefix}.pointwise_conv1.weight")[:, :, 0].T},  # [2D, D, 1] → [D, 2D]
      "depthwise_conv": t.take(f"{prefix}.depthwise_conv.weight")[:, 0, :].T,  # [D, 1, K] → [K, D]
      "depthwise_layer_norm": _layer_norm(t, f"{prefix}.depthwise_layer_norm"),
      "pointwise_conv2": {"kernel": t.take(f"{prefix}.pointwise_conv2.weight")[:, :, 0].T},  # [D, D, 1] → [D, D]
  }


def _feed_forward(t: TensorSet, prefix: str) -> dict[str, Any]:
  return {"intermediate_dense": _dense(t, f"{prefix}.intermediate_dense"),
          "output_dense": _dense(t, f"{prefix}.output_dense")}


def convert(config: W2vBertConfig, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """`Wav2Vec2BertModel` (or `Wav2Vec2BertFor*`) state dict (name → array) → the encoder's params."""
  t = TensorSet(_base_model_tensors(tensors), "w2v-BERT")
  params: dict[str, Any] = {"feature_projection": {
      "layer_norm": _layer_norm(t, "feature_projection.layer_norm"),
      "projection": _dense(t, "feature_projection.projection")}}
  for i in range(config.num_hidden_layers):
    prefix = f"encoder.layers.{i}"
    params[f"layers_{i}"] = {
        "ffn1_layer_norm": _layer_norm(t, f"{prefix}.ffn1_layer_norm"),
        "ffn1": _feed_forward(t, f"{prefix}.ffn1"),
        "self_attn_layer_norm": _layer_norm(t, f"{prefix}.self_attn_layer_norm"),
        "self_attn": _attention(config, t, f"{prefix}.self_attn"),
        "conv_module": _conv_module(t, f"{prefix}.conv_module"),
        "ffn2_layer_norm": _layer_norm(t, f"{prefix}.ffn2_layer_norm"),
        "ffn2": _feed_forward(t, f"{prefix}.ffn2"),
        "final_layer_norm": _layer_norm(t, f"{prefix}.final_layer_norm"),
    }
  t.ignore(name for name in t.tensors if name.startswith(SKIPPED_PREFIXES))  # see the module docstring
  t.check_all_used()
  check_shapes(abstract_params(config), params, "w2v-BERT")
  return jax.tree.map(np.asarray, params)


def _read_preprocessor(directory: str) -> dict[str, Any] | None:
  path = storage.join(directory, "preprocessor_config.json")
  return json.loads(storage.read_text(path)) if storage.is_file(path) else None


def load_w2v_bert(directory: str) -> W2vBertEncoder:
  """A `W2vBertEncoder` from a `transformers` directory (config.json + weights [+ preprocessor_config.json])."""
  config = config_from_hf(read_config(directory), _read_preprocessor(directory))
  return W2vBertEncoder(config, convert(config, read_tensors(directory)))
