"""Import of Hugging Face causal-LM checkpoints (Llama family, Mistral, Gemma) into the stack's Transformer.

    cfg = config_from_hf(read_config(directory))                  # TransformerConfig, or a ValueError naming
                                                                  # every option the model cannot represent
    params = load_hf_params(directory, cfg, shardings=None)       # the param tree (sharded if shardings given)

Weights are read tensor by tensor from the safetensors files (`safe_open`), and each parameter is assembled
with `jax.make_array_from_callback`: a process reads only the layers (and, for the embedding and output
layer, the rows) of the shards its devices hold, so no host needs the whole model in memory at once.

Mapping (HF linear weights are [out, in]; L layers stacked first, as `nn.scan` lays them out):
    embed.table [V, D]              model.embed_tokens.weight
    layers.attn.q [L, D, N, H]      q_proj.weight.T
    layers.attn.kv [L, D, 2, K, H]  k_proj.weight.T, v_proj.weight.T
    layers.attn.o [L, N, H, D]      o_proj.weight.T
    layers.mlp.wi [L, D, 2, F]      gate_proj.weight.T, up_proj.weight.T
    layers.mlp.wo [L, F, D]         down_proj.weight.T
    layers.{attn,mlp}_norm.scale    input_layernorm / post_attention_layernorm
    final_norm.scale [D]            model.norm.weight
    unembed [D, V]                  lm_head.weight.T (untied models)
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Mapping

import jax
import numpy as np

from audiopalm.hf.tensors import SafetensorsReader
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.model.params import abstract_params
from audiopalm.sharding.params import unbox

FAMILIES = ("llama", "mistral", "gemma")
# What each family's transformers config class assumes when config.json leaves a field out.
_DEFAULTS = {"llama": {"tie_word_embeddings": False, "hidden_act": "silu"},
             "mistral": {"tie_word_embeddings": False, "hidden_act": "silu"},
             "gemma": {"tie_word_embeddings": True, "hidden_act": "gelu_pytorch_tanh"}}
_ACTIVATIONS = {"llama": {"silu": "swiglu"}, "mistral": {"silu": "swiglu"},
                # transformers maps Gemma's legacy "gelu" to the tanh approximation, as the releases intend.
                "gemma": {"gelu_pytorch_tanh": "geglu", "gelu": "geglu"}}


def _rope(hf: Mapping[str, Any], problems: list[str]) -> tuple[float, tuple[float, float, float, float] | None]:
  """(theta, Llama 3 scaling or None) from `rope_parameters` (transformers 5) or rope_theta + rope_scaling (4)."""
  params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
  kind = params.get("rope_type", params.get("type", "default"))
  if kind in (None, "default"):
    return theta, None
  if kind == "llama3":
    return theta, (float(params["factor"]), float(params["low_freq_factor"]), float(params["high_freq_factor"]),
                   float(params["original_max_position_embeddings"]))
  problems.append(f"rope type {kind!r} (supported: default, llama3)")
  return theta, None


def config_from_hf(hf: Mapping[str, Any], *, dtype: str = "float32", param_dtype: str = "float32") -> TransformerConfig:
  """The TransformerConfig of a transformers config.json; refuses (ValueError, listing them all) any option this
  model cannot represent instead of approximating it."""
  family = hf.get("model_type")
  if family not in FAMILIES:
    hint = " (Qwen2 has q/k/v biases, which this model has not)" if family == "qwen2" else ""
    raise ValueError(f"model_type {family!r} cannot be imported{hint}; supported: {list(FAMILIES)}")
  get = lambda key: hf.get(key, _DEFAULTS[family].get(key))  # noqa: E731
  problems: list[str] = []
  for flag in ("attention_bias", "mlp_bias"):
    if hf.get(flag):
      problems.append(f"{flag}=true (the model has no biases)")
  if family == "mistral" and hf.get("sliding_window") is not None:
    problems.append(f"sliding_window={hf['sliding_window']} (attention here is full causal)")
  if float(hf.get("partial_rotary_factor", 1.0)) != 1.0:
    problems.append(f"partial_rotary_factor={hf['partial_rotary_factor']}")
  for key in ("attention_dropout", "hidden_dropout"):
    if float(hf.get(key) or 0.0) != 0.0:
      problems.append(f"{key}={hf[key]} (no dropout here)")
  activation = _ACTIVATIONS[family].get(get("hidden_act"))
  if activation is None:
    problems.append(f"hidden_act={get('hidden_act')!r} (supported for {family}: {list(_ACTIVATIONS[family])})")
  if family == "gemma" and hf.get("hidden_activation") not in (None, "gelu_pytorch_tanh"):
    problems.append(f"hidden_activation={hf['hidden_activation']!r}")
  theta, scaling = _rope(hf, problems)
  if problems:
    raise ValueError(f"this {family} checkpoint uses options the model cannot represent: " + "; ".join(problems))
  heads = int(hf["num_attention_heads"])
  return TransformerConfig(
      vocab_size=int(hf["vocab_size"]), d_model=int(hf["hidden_size"]), num_layers=int(hf["num_hidden_layers"]),
      num_heads=heads, num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=int(hf.get("head_dim") or int(hf["hidden_size"]) // heads), d_ff=int(hf["intermediate_size"]),
      block="sequential", norm="rmsnorm", norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      norm_scale_plus_one=family == "gemma", activation=activation, tie_embeddings=bool(get("tie_word_embeddings")),
      embed_scale_by_sqrt_dim=family == "gemma", logits_scale_by_inv_sqrt_dim=False, rope_max_wavelength=theta,
      rope_scaling=scaling, dtype=dtype, param_dtype=param_dtype, scan_layers=True)


def _layer_param(num_layers: int, convert: Callable[[int], np.ndarray]) -> Callable:
  """A make_array_from_callback block function for a [L, ...] parameter: converts only the index's layers."""
  def block(index: tuple[slice, ...]) -> np.ndarray:
    return np.stack([convert(i)[index[1:]] for i in range(*index[0].indices(num_layers))])
  return block


_LAYER_TENSORS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                  "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")


def check_tensor_names(names: set[str], cfg: TransformerConfig) -> None:
  """Every tensor the config needs is in the checkpoint, and every tensor of the checkpoint is used."""
  needed = {"model.embed_tokens.weight", "model.norm.weight"}
  needed |= {f"model.layers.{i}.{t}.weight" for i in range(cfg.num_layers) for t in _LAYER_TENSORS}
  optional = {"lm_head.weight"} if cfg.tie_embeddings else set()
  if not cfg.tie_embeddings:
    needed.add("lm_head.weight")
  buffers = {n for n in names if n.endswith("rotary_emb.inv_freq")}  # kept by some exports; not parameters
  missing, unused = sorted(needed - names), sorted(names - needed - optional - buffers)
  if missing or unused:
    raise ValueError(f"the checkpoint does not fit the config: missing {missing[:8]} ({len(missing)}), "
                     f"unused {unused[:8]} ({len(unused)})")


def load_hf_params(directory: str, cfg: TransformerConfig, shardings: Any = None) -> Any:
  """The param tree of `Transformer(cfg)` from a Llama/Mistral/Gemma safetensors checkpoint. `shardings`: a tree
  of `jax.sharding.Sharding` like the params (default: all on the first device). Every tensor must be used and
  every parameter filled (`check_tensor_names`), before anything is read."""
  reader = SafetensorsReader(directory)
  d, n, k, h, v = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size
  layer = lambda i, name: reader.get(f"model.layers.{i}.{name}.weight")  # noqa: E731
  per_layer = {
      ("attn", "q"): lambda i: layer(i, "self_attn.q_proj").T.reshape(d, n, h),
      ("attn", "kv"): lambda i: np.stack([layer(i, "self_attn.k_proj").T.reshape(d, k, h),
                                          layer(i, "self_attn.v_proj").T.reshape(d, k, h)], axis=1),
      ("attn", "o"): lambda i: layer(i, "self_attn.o_proj").T.reshape(n, h, d),
      ("mlp", "wi"): lambda i: np.stack([layer(i, "mlp.gate_proj").T, layer(i, "mlp.up_proj").T], axis=1),
      ("mlp", "wo"): lambda i: layer(i, "mlp.down_proj").T,
      ("attn_norm", "scale"): lambda i: layer(i, "input_layernorm"),
      ("mlp_norm", "scale"): lambda i: layer(i, "post_attention_layernorm"),
  }
  check_tensor_names(set(reader.where), cfg)
  expected = unbox(abstract_params(Transformer(cfg)))
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, expected)
  dtype = np.dtype(expected["embed"]["table"].dtype)

  def make(shape: tuple[int, ...], sharding: Any, block: Callable) -> jax.Array:
    return jax.make_array_from_callback(shape, sharding, lambda index: block(index).astype(dtype))

  params: dict[str, Any] = collections.defaultdict(dict)
  embed_rows = reader.shape("model.embed_tokens.weight")
  if embed_rows != (v, d):
    raise ValueError(f"model.embed_tokens.weight is {embed_rows}, the config says ({v}, {d})")
  params["embed"]["table"] = make((v, d), shardings["embed"]["table"],
                                  lambda ix: reader.get("model.embed_tokens.weight", ix[0])[:, ix[1]])
  params["final_norm"]["scale"] = make((d,), shardings["final_norm"]["scale"],
                                       lambda ix: reader.get("model.norm.weight")[ix])
  layers: dict[str, Any] = collections.defaultdict(dict)
  for (group, name), convert in per_layer.items():
    shape = expected["layers"][group][name].shape
    layers[group][name] = make(shape, shardings["layers"][group][name], _layer_param(cfg.num_layers, convert))
  params["layers"] = dict(layers)
  if not cfg.tie_embeddings:
    params["unembed"] = make((d, v), shardings["unembed"],
                             lambda ix: reader.get("lm_head.weight", ix[1])[:, ix[0]].T)
  elif "lm_head.weight" in reader.where:  # some tied checkpoints store the shared matrix twice
    if not np.array_equal(reader.get("lm_head.weight"), reader.get("model.embed_tokens.weight")):
      raise ValueError("tie_word_embeddings is set but lm_head.weight differs from model.embed_tokens.weight")
  return dict(params)
