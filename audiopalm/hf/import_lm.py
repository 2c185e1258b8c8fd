"""Import of Hugging Face causal-LM checkpoints (Llama 3.x, Mistral, Qwen2/2.5, Qwen3, Gemma 1/2/3) into the
stack's Transformer.

    cfg = config_from_hf(read_config(directory))                  # TransformerConfig, or a ValueError naming
                                                                  # every option the model cannot represent
    params = load_hf_params(directory, cfg, shardings=None)       # the param tree (sharded if shardings given)

A multimodal Gemma 3 checkpoint (`model_type` 'gemma3') is imported as its text tower: `text_config`, the
`language_model` tensors; the vision tower and projector are left out.

Each process reads each tensor once (`SafetensorsReader.reads` counts it): a stacked [L, ...] parameter is
filled one layer at a time, and the embedding and output layer a block of rows at a time. Each piece is converted
once on the host, put on the devices with the parameter's sharding (each device keeps its shard) and written into
the parameter in place (a donated update), so host memory holds the parameters plus one piece. The tensor layout
is `audiopalm.hf.lm_layout`'s table.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from audiopalm.hf import lm_layout
from audiopalm.hf.tensors import SafetensorsReader
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.model.params import abstract_params
from audiopalm.sharding.params import unbox

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma3")
# What each family's transformers config class assumes when config.json leaves a field out (checkpoints saved by
# transformers 4 omit fields equal to the defaults; transformers 5.x's classes are the reference).
_GEMMA_2_3 = {"tie_word_embeddings": True, "hidden_activation": "gelu_pytorch_tanh", "head_dim": 256,
              "query_pre_attn_scalar": 256, "sliding_window": 4096, "rms_norm_eps": 1e-6}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"tie_word_embeddings": False, "hidden_act": "silu"},
    "mistral": {"tie_word_embeddings": False, "hidden_act": "silu", "sliding_window": 4096},
    "qwen2": {"tie_word_embeddings": False, "hidden_act": "silu", "max_window_layers": 28},
    "qwen3": {"tie_word_embeddings": False, "hidden_act": "silu", "max_window_layers": 28, "head_dim": 128},
    "gemma": {"tie_word_embeddings": True, "hidden_act": "gelu_pytorch_tanh"},
    "gemma2": {**_GEMMA_2_3, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
    "gemma3_text": {**_GEMMA_2_3, "vocab_size": 262_208, "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
                    "sliding_window_pattern": 6},
}
_GEMMAS = ("gemma", "gemma2", "gemma3_text")
_GELU = {"gelu_pytorch_tanh": "geglu", "gelu": "geglu"}  # transformers maps Gemma's legacy "gelu" to tanh GELU
_ACTIVATIONS = {family: ({"silu": "swiglu"} if family not in _GEMMAS else _GELU) for family in _DEFAULTS}
_MULTIMODAL_ONLY = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")
ROW_BLOCK = 16384  # rows of the embedding / output layer converted at a time


def text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
  """The text model's config: `text_config` of a multimodal Gemma 3 (its `tie_word_embeddings` is the top
  level's, and its final_logit_softcapping is dropped: transformers' Gemma3ForConditionalGeneration does not
  apply it), else the config itself."""
  if hf.get("model_type") != "gemma3":
    return dict(hf)
  text = dict(hf.get("text_config") or {})
  text.setdefault("model_type", "gemma3_text")
  text.setdefault("tie_word_embeddings", hf.get("tie_word_embeddings", True))
  text["final_logit_softcapping"] = None
  return text


def _rope_type(params: Mapping[str, Any], theta: float, where: str, problems: list[str]
               ) -> tuple[float, tuple[float, float, float, float] | None, float]:
  """(theta, Llama 3 scaling or None, linear factor) of one rope_parameters dict."""
  theta = float(params.get("rope_theta", theta))
  kind = params.get("rope_type", params.get("type", "default"))
  if kind in (None, "default"):
    return theta, None, 1.0
  if kind == "linear":
    return theta, None, float(params["factor"])
  if kind == "llama3":
    return theta, (float(params["factor"]), float(params["low_freq_factor"]), float(params["high_freq_factor"]),
                   float(params["original_max_position_embeddings"])), 1.0
  problems.append(f"rope type {kind!r}{where} (supported: default, linear, llama3)")
  return theta, None, 1.0


def _rope(hf: Mapping[str, Any], family: str, problems: list[str]) -> dict[str, Any]:
  """TransformerConfig's RoPE fields from `rope_parameters` (transformers 5; Gemma 3: one dict per layer type) or
  rope_theta + rope_scaling (+ rope_local_base_freq) (transformers 4)."""
  params = dict(hf.get("rope_parameters") or {})
  theta = float(hf.get("rope_theta", _DEFAULTS[family].get("rope_theta", 10000.0)))
  if family == "gemma3_text":
    full = params.get("full_attention", {} if "rope_type" not in params else params)
    if not params:
      full = dict(hf.get("rope_scaling") or {})
    local = params.get("sliding_attention", {"rope_theta": hf.get("rope_local_base_freq",
                                                                  _DEFAULTS[family]["rope_local_base_freq"])})
    theta, scaling, linear = _rope_type(full, theta, " (full attention)", problems)
    local_theta, local_scaling, local_linear = _rope_type(local, 10000.0, " (sliding attention)", problems)
    if local_scaling is not None or local_linear != 1.0:
      problems.append("scaled RoPE on the sliding-window layers (the model scales only the global layers')")
    return dict(rope_max_wavelength=theta, rope_scaling=scaling, rope_linear_factor=linear,
                rope_local_max_wavelength=local_theta)
  theta, scaling, linear = _rope_type(params or dict(hf.get("rope_scaling") or {}), theta, "", problems)
  return dict(rope_max_wavelength=theta, rope_scaling=scaling, rope_linear_factor=linear)


def _layer_kinds(hf: Mapping[str, Any], family: str, layers: int, window: int | None,
                 problems: list[str]) -> list[bool]:
  """Whether each layer is local (sliding window): `layer_types` when given (Mistral's model ignores them: its
  window is on every layer), else the family's rule."""
  types = hf.get("layer_types") if family != "mistral" else None
  if types is not None:
    unknown = sorted(set(types) - {"sliding_attention", "full_attention"})
    if unknown or len(types) != layers:
      problems.append(f"layer_types {unknown or ''} ({len(types)} for {layers} layers; supported: "
                      "sliding_attention, full_attention)")
      return [False] * layers
    return [t == "sliding_attention" for t in types]
  if window is None:
    return [False] * layers
  if family == "mistral":
    return [True] * layers
  if family in ("qwen2", "qwen3"):
    first = int(hf.get("max_window_layers", _DEFAULTS[family]["max_window_layers"]))
    return [i >= first for i in range(layers)]
  if family == "gemma2":
    return [i % 2 == 0 for i in range(layers)]
  if family == "gemma3_text":
    period = int(hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6)))
    return [(i + 1) % period != 0 for i in range(layers)]
  return [False] * layers


def layer_pattern(local: list[bool]) -> str:
  """The shortest string that, repeated, spells the layers' kinds ('L' local, 'G' global)."""
  kinds = "".join("L" if x else "G" for x in local)
  for period in range(1, len(kinds) + 1):
    if all(kinds[i] == kinds[i % period] for i in range(len(kinds))):
      return kinds[:period]
  return kinds


def config_from_hf(hf: Mapping[str, Any], *, dtype: str = "float32", param_dtype: str = "float32") -> TransformerConfig:
  """The TransformerConfig of a transformers config.json; refuses (ValueError, listing them all) any option this
  model cannot represent instead of approximating it."""
  hf = text_config(hf)
  family = hf.get("model_type")
  if family not in _DEFAULTS:
    raise ValueError(f"model_type {family!r} cannot be imported; supported: {list(FAMILIES)}")
  get = lambda key: hf.get(key, _DEFAULTS[family].get(key))  # noqa: E731
  problems: list[str] = []
  if family == "qwen3" and hf.get("attention_bias"):
    problems.append("attention_bias=true (Qwen3 then biases the output projection too; the model has q/k/v "
                    "biases only)")
  elif family not in ("qwen2",) and hf.get("attention_bias"):
    problems.append("attention_bias=true (the model has no output-projection bias)")
  if hf.get("mlp_bias"):
    problems.append("mlp_bias=true (the MLP has no biases)")
  if float(hf.get("partial_rotary_factor", 1.0)) != 1.0:
    problems.append(f"partial_rotary_factor={hf['partial_rotary_factor']}")
  for key in ("attention_dropout", "hidden_dropout"):
    if float(hf.get(key) or 0.0) != 0.0:
      problems.append(f"{key}={hf[key]} (no dropout here)")
  if hf.get("use_bidirectional_attention"):
    problems.append("use_bidirectional_attention=true (the model is causal)")
  act_key = "hidden_activation" if family in ("gemma2", "gemma3_text") else "hidden_act"
  activation = _ACTIVATIONS[family].get(get(act_key))
  if activation is None:
    problems.append(f"{act_key}={get(act_key)!r} (supported for {family}: {list(_ACTIVATIONS[family])})")
  if family == "gemma" and hf.get("hidden_activation") not in (None, "gelu_pytorch_tanh"):
    problems.append(f"hidden_activation={hf['hidden_activation']!r}")
  rope = _rope(hf, family, problems)
  layers, heads = int(hf["num_hidden_layers"]), int(hf["num_attention_heads"])
  window = get("sliding_window")
  if family in ("qwen2", "qwen3") and not hf.get("use_sliding_window", False):
    window = None  # as transformers' Qwen configs: the window applies only with use_sliding_window
  local = _layer_kinds(hf, family, layers, window, problems)
  if any(local) and window is None:
    problems.append("layer_types has sliding_attention layers but there is no sliding window")
  pattern = layer_pattern(local)
  if "L" not in pattern:
    window = None
    rope.pop("rope_local_max_wavelength", None)
  if problems:
    raise ValueError(f"this {family} checkpoint uses options the model cannot represent: " + "; ".join(problems))
  head_dim = int(get("head_dim") or int(hf["hidden_size"]) // heads)
  gemma_2_3 = family in ("gemma2", "gemma3_text")
  return TransformerConfig(
      vocab_size=int(get("vocab_size")), d_model=int(hf["hidden_size"]), num_layers=layers,
      num_heads=heads, num_kv_heads=int(hf.get("num_key_value_heads") or heads), head_dim=head_dim,
      d_ff=int(hf["intermediate_size"]), block="sequential", norm="rmsnorm",
      norm_eps=float(get("rms_norm_eps") or 1e-6), norm_scale_plus_one=family in _GEMMAS, activation=activation,
      tie_embeddings=bool(get("tie_word_embeddings")), embed_scale_by_sqrt_dim=family in _GEMMAS,
      logits_scale_by_inv_sqrt_dim=False,
      query_scale=float(get("query_pre_attn_scalar")) ** -0.5 if gemma_2_3 else None,
      # Gemma 3's transformers model ignores attn_logit_softcapping; so does the import.
      attn_logit_softcap=get("attn_logit_softcapping") if family == "gemma2" else None,
      final_logit_softcap=get("final_logit_softcapping") if gemma_2_3 else None,
      sliding_window=None if window is None else int(window), layer_pattern=pattern,
      post_norms=gemma_2_3, qk_norm=family in ("qwen3", "gemma3_text"), qkv_bias=family == "qwen2",
      hf_family=family, dtype=dtype, param_dtype=param_dtype, scan_layers=True, **rope)


class _Names:
  """The checkpoint's name of a text-model tensor: as is, or under a multimodal Gemma 3's language model
  (transformers 4 layout `language_model.model.*`, transformers 5 `model.language_model.*`)."""

  def __init__(self, names: set[str]):
    self.model, self.head = "model.", ""
    for model, head in (("language_model.model.", "language_model."), ("model.language_model.", "")):
      if f"{model}embed_tokens.weight" in names:
        self.model, self.head = model, head
    self.multimodal = self.model != "model."

  def __call__(self, name: str) -> str:
    return self.head + name if name == lm_layout.LM_HEAD else self.model + name[len("model."):]


def check_tensor_names(names: set[str], cfg: TransformerConfig) -> None:
  """Every tensor the config needs is in the checkpoint, and every tensor of the checkpoint is used (a
  multimodal Gemma 3's vision tower and projector aside)."""
  rename = _Names(names)
  needed = {rename(n) for n in lm_layout.tensor_names(cfg)}
  optional = {rename(lm_layout.LM_HEAD)} if cfg.tie_embeddings else set()
  ignored = {n for n in names if n.endswith("rotary_emb.inv_freq")}  # kept by some exports; not parameters
  if rename.multimodal:
    ignored |= {n for n in names if n.startswith(_MULTIMODAL_ONLY)}
  missing, unused = sorted(needed - names), sorted(names - needed - optional - ignored)
  if missing or unused:
    raise ValueError(f"the checkpoint does not fit the config: missing {missing[:8]} ({len(missing)}), "
                     f"unused {unused[:8]} ({len(unused)})")


@functools.partial(jax.jit, donate_argnums=0, static_argnums=3)
def _write(array: jax.Array, piece: jax.Array, start: jax.Array, axis: int) -> jax.Array:
  """array with `piece` written at `start` along `axis` (in place: `array` is donated)."""
  return jax.lax.dynamic_update_slice_in_dim(array, piece.astype(array.dtype), start, axis)


def _piece_sharding(sharding: Any, axis: int) -> Any:
  """The sharding of a piece of a parameter along `axis` (one layer, or a block of rows that need not divide
  evenly among the devices): the parameter's, with `axis` replicated."""
  if isinstance(sharding, SingleDeviceSharding):
    return sharding
  if not isinstance(sharding, NamedSharding):
    raise TypeError(f"load_hf_params takes NamedSharding or SingleDeviceSharding, got {type(sharding).__name__}")
  spec = list(sharding.spec) + [None] * (axis + 1 - len(sharding.spec))
  return NamedSharding(sharding.mesh, PartitionSpec(*spec[:axis], None, *spec[axis + 1:]))


def _assemble(shape: tuple[int, ...], dtype: Any, sharding: Any, axis: int, one_layer: bool,
              pieces: list[tuple[int, Callable[[], np.ndarray]]]) -> jax.Array:
  """A parameter filled piece by piece: each (start along `axis`, fetch) converted once on the host, placed on the
  devices with the parameter's sharding and written in place. `one_layer`: a piece lacks `axis` (one layer)."""
  array = jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)()
  piece_sharding = _piece_sharding(sharding, axis)
  for start, fetch in pieces:
    host = fetch().astype(dtype)
    piece = jax.device_put(np.expand_dims(host, axis) if one_layer else host, piece_sharding)
    del host
    array = _write(array, piece, jnp.int32(start), axis)
  return array


def load_hf_params(directory: str, cfg: TransformerConfig, shardings: Any = None,
                   reader: SafetensorsReader | None = None) -> Any:
  """The param tree of `Transformer(cfg)` from a transformers safetensors checkpoint. `shardings`: a tree of
  `jax.sharding.Sharding` like the params (default: all on the first device). Every tensor must be used and
  every parameter filled (`check_tensor_names`), before anything is read. `reader`: the checkpoint's reader
  (default: a new one), e.g. to count its reads."""
  reader = reader or SafetensorsReader(directory)
  names = set(reader.where)
  check_tensor_names(names, cfg)
  rename = _Names(names)
  d, v = cfg.d_model, cfg.vocab_size
  expected = unbox(abstract_params(Transformer(cfg)))
  if shardings is None:
    device = SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, expected)
  dtype = np.dtype(expected["embed"]["table"].dtype)
  embed_name = rename(lm_layout.EMBED)
  if reader.shape(embed_name) != (v, d):
    raise ValueError(f"{embed_name} is {reader.shape(embed_name)}, the config says ({v}, {d})")

  head_name = rename(lm_layout.LM_HEAD)
  # Some tied checkpoints store the shared matrix twice: each block of it is checked as it is read.
  duplicate = head_name if cfg.tie_embeddings and head_name in names else None

  def block(name: str, start: int) -> np.ndarray:
    rows = slice(start, min(start + ROW_BLOCK, v))
    out = reader.get(name, rows)
    if name == embed_name and duplicate and not np.array_equal(reader.get(duplicate, rows), out):
      raise ValueError(f"tie_word_embeddings is set but {duplicate} differs from {embed_name}")
    return out

  def rows(name: str) -> list[tuple[int, Callable[[], np.ndarray]]]:
    return [(start, functools.partial(block, name, start)) for start in range(0, v, ROW_BLOCK)]

  params: dict[str, Any] = {}
  params["embed"] = {"table": _assemble((v, d), dtype, shardings["embed"]["table"], 0, False, rows(embed_name))}
  by_param: dict[tuple[str, ...], list[lm_layout.LayerEntry]] = collections.defaultdict(list)
  for entry in lm_layout.layer_entries(cfg):
    by_param[entry.param].append(entry)
  layers: dict[str, Any] = {}
  for path, entries in by_param.items():
    shape = lm_layout.at_path(expected["layers"], path).shape

    def layer(i: int, entries=entries, shape=shape) -> np.ndarray:
      out = np.empty(shape[1:], np.float32)
      for e in entries:
        out[e.index] = e.to_param(reader.get(rename(f"model.layers.{i}.{e.suffix}")))
      return out

    node = layers
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = _assemble(shape, dtype, lm_layout.at_path(shardings["layers"], path), 0, True,
                               [(i, functools.partial(layer, i)) for i in range(cfg.num_layers)])
  params["layers"] = layers
  params["final_norm"] = {"scale": jax.device_put(reader.get(rename(lm_layout.FINAL_NORM)).astype(dtype),
                                                  shardings["final_norm"]["scale"])}
  if not cfg.tie_embeddings:
    params["unembed"] = _assemble((d, v), dtype, shardings["unembed"], 1, False,
                                  [(start, lambda fetch=fetch: fetch().T) for start, fetch in rows(head_name)])
  return params
