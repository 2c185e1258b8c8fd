"""Write a JAX HuBERT as a `transformers` HubertModel directory (the inverse of `hubert_import`).

    save_hubert("runs/hubert_it2", config, params, masked_spec_embed=embed)
    # → config.json, preprocessor_config.json, model.safetensors: HubertModel.from_pretrained loads it, and
    #   load_encoder / fit_kmeans / the semantic tokenizer read it like any downloaded HuBERT

It is how an encoder trained by this project (`audiopalm.semantic.hubert_pretrain`: HuBERT's second iteration
on the project's own units) becomes a semantic tokenizer's encoder that anyone can also load in `transformers`.
Every parameter of the JAX encoder becomes exactly one tensor of transformers' names and layouts (the
positional convolution's weight norm as `parametrizations.weight.original0/1`, as current torch saves it);
`masked_spec_embed` (the vector that replaces masked frames in training) is written when given.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import jax
import numpy as np

from audiopalm.files import storage
from audiopalm.hf.tensors import check_shapes
from audiopalm.ssl.hubert import HubertConfig, Params, abstract_params
from audiopalm.ssl.hubert_import import PREPROCESSOR_FILE

WEIGHTS_FILE = "model.safetensors"


def hf_config(config: HubertConfig) -> dict[str, Any]:
  """transformers' HubertConfig (config.json) of the architecture."""
  return {
      "model_type": "hubert", "architectures": ["HubertModel"],
      "conv_dim": list(config.conv_dim), "conv_kernel": list(config.conv_kernel),
      "conv_stride": list(config.conv_stride), "conv_bias": config.conv_bias,
      "feat_extract_norm": config.feat_extract_norm, "feat_extract_activation": "gelu",
      "hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
      "num_attention_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
      "hidden_act": "gelu", "layer_norm_eps": config.layer_norm_eps,
      "do_stable_layer_norm": config.do_stable_layer_norm,
      "num_conv_pos_embeddings": config.num_conv_pos_embeddings,
      "num_conv_pos_embedding_groups": config.num_conv_pos_embedding_groups,
      "feat_proj_layer_norm": config.feat_proj_layer_norm, "conv_pos_batch_norm": False,
  }


def preprocessor_config(config: HubertConfig) -> dict[str, Any]:
  """The Wav2Vec2FeatureExtractor settings (preprocessor_config.json) the encoder expects."""
  return {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "padding_side": "right",
          "padding_value": 0.0, "return_attention_mask": True, "do_normalize": config.do_normalize,
          "sampling_rate": config.sample_rate}


def _dense(p: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
  return {f"{prefix}.weight": np.asarray(p["kernel"]).T, f"{prefix}.bias": np.asarray(p["bias"])}


def _norm(p: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
  return {f"{prefix}.weight": np.asarray(p["scale"]), f"{prefix}.bias": np.asarray(p["bias"])}


def _attention(p: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
  out = {}
  for name, torch_name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    kernel = np.asarray(p[name]["kernel"])  # [dim, heads, head_dim]
    out[f"{prefix}.{torch_name}.weight"] = kernel.reshape(kernel.shape[0], -1).T  # [heads · head_dim, dim]
    out[f"{prefix}.{torch_name}.bias"] = np.asarray(p[name]["bias"]).reshape(-1)
  kernel = np.asarray(p["out"]["kernel"])  # [heads, head_dim, dim]
  out[f"{prefix}.out_proj.weight"] = kernel.reshape(-1, kernel.shape[-1]).T  # [dim, heads · head_dim]
  out[f"{prefix}.out_proj.bias"] = np.asarray(p["out"]["bias"])
  return out


def to_state_dict(config: HubertConfig, params: Params, masked_spec_embed: Any = None) -> dict[str, np.ndarray]:
  """The encoder's params → HubertModel's state dict (name → float32 array)."""
  check_shapes(abstract_params(config), params, "HuBERT")
  params = jax.tree.map(np.asarray, params)
  out: dict[str, np.ndarray] = {}
  front = params["feature_encoder"]
  for i in range(len(config.conv_dim)):
    prefix = f"feature_extractor.conv_layers.{i}"
    out[f"{prefix}.conv.weight"] = front[f"conv_{i}"]["kernel"].transpose(2, 1, 0)  # [k, in, out] → [out, in, k]
    if config.conv_bias:
      out[f"{prefix}.conv.bias"] = front[f"conv_{i}"]["bias"]
    if config.feat_extract_norm == "layer" or i == 0:
      out.update(_norm(front[f"norm_{i}"], f"{prefix}.layer_norm"))
  if config.feat_proj_layer_norm:
    out.update(_norm(params["projection_norm"], "feature_projection.layer_norm"))
  out.update(_dense(params["projection"], "feature_projection.projection"))
  pos = params["pos_conv"]
  kernel = config.num_conv_pos_embeddings
  out["encoder.pos_conv_embed.conv.parametrizations.weight.original0"] = pos["kernel_g"].reshape(1, 1, kernel)
  out["encoder.pos_conv_embed.conv.parametrizations.weight.original1"] = pos["kernel_v"].transpose(2, 1, 0)
  out["encoder.pos_conv_embed.conv.bias"] = pos["bias"]
  out.update(_norm(params["encoder_norm"], "encoder.layer_norm"))
  for i in range(config.num_hidden_layers):
    prefix, layer = f"encoder.layers.{i}", params[f"layers_{i}"]
    out.update(_attention(layer["attention"], f"{prefix}.attention"))
    out.update(_norm(layer["layer_norm"], f"{prefix}.layer_norm"))
    out.update(_dense(layer["feed_forward"]["intermediate"], f"{prefix}.feed_forward.intermediate_dense"))
    out.update(_dense(layer["feed_forward"]["output"], f"{prefix}.feed_forward.output_dense"))
    out.update(_norm(layer["final_layer_norm"], f"{prefix}.final_layer_norm"))
  if masked_spec_embed is not None:
    embed = np.asarray(masked_spec_embed)
    if embed.shape != (config.hidden_size,):
      raise ValueError(f"masked_spec_embed has shape {embed.shape}, expected ({config.hidden_size},)")
    out["masked_spec_embed"] = embed
  return {name: np.ascontiguousarray(value, np.float32) for name, value in out.items()}


def save_hubert(directory: str, config: HubertConfig, params: Params, masked_spec_embed: Any = None) -> list[str]:
  """Writes config.json, preprocessor_config.json and model.safetensors under `directory` (local or gs://).

  The weights are written first and config.json last, so a directory with a config.json is complete (each file
  is written whole, via a temporary name). Returns the written paths.
  """
  from safetensors.numpy import save  # pylint: disable=import-outside-toplevel

  tensors = to_state_dict(config, params, masked_spec_embed)
  storage.makedirs(directory)
  written = [storage.write_bytes(storage.join(directory, WEIGHTS_FILE), save(tensors, metadata={"format": "pt"})),
             storage.write_text(storage.join(directory, PREPROCESSOR_FILE),
                                json.dumps(preprocessor_config(config), indent=2) + "\n")]
  written.append(storage.write_text(storage.join(directory, "config.json"),
                                    json.dumps(hf_config(config), indent=2) + "\n"))
  return written
