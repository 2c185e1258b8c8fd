"""Export of the stack's Transformer as a Hugging Face `transformers` causal-LM checkpoint (the reverse of
`import_lm`).

    family = family_of(cfg)                                  # 'llama' | 'mistral' | ... | 'cohere', or a ValueError
                                                             # listing every option no architecture represents
    config = hf_config(cfg, torch_dtype="bfloat16")          # the config.json dict
    tensors = export_tensors(params, cfg)                    # HF name -> numpy array, the whole state dict
    files = save_hf_checkpoint(params, cfg, "/out/model", dtype="bfloat16", eos_token_id=spec.text.eos_id)
    # then: transformers.AutoModelForCausalLM.from_pretrained("/out/model")

The architecture is one that computes exactly what `Transformer(cfg)` computes; nothing is approximated. The
family the model was imported from (`cfg.hf_family`) comes first when it represents the config, so a continued
model loads as what it came from; otherwise the first family of this list that does:
    llama        LlamaForCausalLM    sequential block, RMSNorm, SwiGLU; tied or untied; MHA/GQA/MQA
    mistral      MistralForCausalLM  as llama, with a sliding window on every layer
    qwen2        Qwen2ForCausalLM    as llama, with q/k/v biases; local/global layers (layer_types)
    qwen3        Qwen3ForCausalLM    as llama, with per-head q/k RMSNorm; local/global layers
    gemma        GemmaForCausalLM    RMSNorm with (1 + w) scales, GeGLU, embeddings x sqrt(d_model)
    gemma2       Gemma2ForCausalLM   gemma + sandwich norms, attention/final logit soft-caps, query_pre_attn_scalar,
                                     local/global layers
    gemma3_text  Gemma3ForCausalLM   gemma2 + (1 + w) q/k norms, a local RoPE base, no attention soft-cap
    cohere       CohereForCausalLM   PaLM's parallel block x + attn(ln(x)) + mlp(ln(x)) with one LayerNorm without
                                     bias, SwiGLU; tied output scaled by 1/sqrt(d_model) written as logit_scale
Every family takes Llama 3 or linear RoPE scaling; queries are scaled by 1/sqrt(head_dim) except in Gemma 2/3
(query_pre_attn_scalar); no logits scale with a tied output except Cohere's. The tensor layout is
`audiopalm.hf.lm_layout`'s table. Cohere rotates interleaved pairs (2i, 2i+1) where this model rotates
(i, i + H/2): the columns of each q and k head are permuted to [0, H/2, 1, H/2 + 1, ...], which leaves every q.k
product, and so the attention, unchanged (v and o keep theirs).

Arrays are fetched one layer of one parameter at a time (sharded arrays must be fully addressable: export from
one process); `save_hf_checkpoint` holds at most one safetensors file's tensors in host memory.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
from typing import Any, Callable

import jax
import ml_dtypes
import numpy as np

from audiopalm.hf import lm_layout
from audiopalm.hf.tensors import check_shapes
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.model.params import abstract_params
from audiopalm.sharding.params import unbox

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
                 "gemma3_text": "Gemma3ForCausalLM", "cohere": "CohereForCausalLM"}
_LLAMA_LIKE = dict(block="sequential", norm="rmsnorm", activation="swiglu", norm_scale_plus_one=False,
                   embed_scale_by_sqrt_dim=False)
_GEMMA_LIKE = dict(block="sequential", norm="rmsnorm", activation="geglu", norm_scale_plus_one=True,
                   embed_scale_by_sqrt_dim=True)
# The choices each family hard-wires.
_FIXED = {
    "llama": _LLAMA_LIKE, "mistral": _LLAMA_LIKE, "qwen2": {**_LLAMA_LIKE, "qkv_bias": True},
    "qwen3": {**_LLAMA_LIKE, "qk_norm": True}, "gemma": _GEMMA_LIKE, "gemma2": {**_GEMMA_LIKE, "post_norms": True},
    "gemma3_text": {**_GEMMA_LIKE, "post_norms": True, "qk_norm": True},
    "cohere": dict(block="parallel", norm="layernorm", activation="swiglu", norm_scale_plus_one=False,
                   embed_scale_by_sqrt_dim=False),
}
# The optional features each family can express (anything else of the list must be off).
_OPTIONAL = {"llama": set(), "mistral": {"window on every layer"}, "qwen2": {"local layers"},
             "qwen3": {"local layers"}, "gemma": set(),
             "gemma2": {"local layers", "query scale", "attention soft-cap", "final soft-cap"},
             "gemma3_text": {"local layers", "query scale", "final soft-cap", "local RoPE base"}, "cohere": set()}
_GEMMA_2_3 = ("gemma2", "gemma3_text")
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}
DEFAULT_MAX_POSITIONS = 8192
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9

Tensor = tuple[str, tuple[int, ...], Callable[[], np.ndarray]]  # (HF name, shape, fetch)


def _features(cfg: TransformerConfig) -> dict[str, str]:
  """The optional features `cfg` uses, each with its description."""
  found = {}
  if "L" in cfg.layer_pattern:
    key = "window on every layer" if set(cfg.layer_pattern) == {"L"} else "local layers"
    found[key] = f"sliding_window={cfg.sliding_window} with layer_pattern={cfg.layer_pattern!r}"
  if cfg.query_scale is not None and not math.isclose(cfg.query_scale, cfg.head_dim ** -0.5, rel_tol=1e-12):
    found["query scale"] = f"query_scale={cfg.query_scale} (not head_dim**-0.5 = {cfg.head_dim ** -0.5})"
  if cfg.attn_logit_softcap is not None:
    found["attention soft-cap"] = f"attn_logit_softcap={cfg.attn_logit_softcap}"
  if cfg.final_logit_softcap is not None:
    found["final soft-cap"] = f"final_logit_softcap={cfg.final_logit_softcap}"
  if cfg.rope_local_max_wavelength is not None:
    found["local RoPE base"] = f"rope_local_max_wavelength={cfg.rope_local_max_wavelength}"
  return found


def _problems(cfg: TransformerConfig, family: str) -> list[str]:
  """What `family`'s transformers model cannot compute of `cfg` (empty if it represents cfg exactly)."""
  fixed = {"post_norms": False, "qk_norm": False, "qkv_bias": False, "stream_vocab": (), **_FIXED[family]}
  problems = [f"{field}={getattr(cfg, field)!r} ({family} has {want!r})"
              for field, want in fixed.items() if getattr(cfg, field) != want]
  features = _features(cfg)
  allowed = set(_OPTIONAL[family])
  if "local layers" in allowed:
    allowed.add("window on every layer")
  problems += [f"{text} ({family} has no such option)" for key, text in features.items() if key not in allowed]
  if family in _GEMMA_2_3 and "query scale" in features:
    scalar = cfg.query_scale ** -2
    if not math.isclose(scalar, round(scalar), rel_tol=1e-9):
      problems.append(f"query_scale={cfg.query_scale} (query_pre_attn_scalar = query_scale**-2 = {scalar} is not "
                      "an integer)")
  if family != "cohere" and cfg.tie_embeddings and cfg.logits_scale_by_inv_sqrt_dim:
    problems.append(f"logits_scale_by_inv_sqrt_dim=True with tie_embeddings=True ({family} has no logits scale)")
  if family in ("llama", "gemma2", "gemma3_text") and cfg.d_model % cfg.num_heads:
    problems.append(f"d_model={cfg.d_model} is not a multiple of num_heads={cfg.num_heads} ({family} refuses it)")
  if family == "qwen2" and cfg.head_dim * cfg.num_heads != cfg.d_model:
    problems.append(f"head_dim={cfg.head_dim} is not d_model / num_heads (qwen2 has no head_dim option)")
  return problems


def family_of(cfg: TransformerConfig) -> str:
  """The transformers family that computes exactly what `Transformer(cfg)` does (`cfg.hf_family` first); a
  ValueError listing, for every family, each option it cannot represent when there is none."""
  order = list(_FIXED)
  source = "gemma3_text" if cfg.hf_family == "gemma3" else cfg.hf_family  # a multimodal Gemma 3's text tower
  if source in order:
    order.remove(source)
    order.insert(0, source)
  problems = {family: _problems(cfg, family) for family in order}
  for family, found in problems.items():
    if not found:
      return family
  reasons = "; ".join(f"as {family} ({ARCHITECTURES[family]}): " + ", ".join(found)
                      for family, found in sorted(problems.items(), key=lambda item: len(item[1])))
  raise ValueError(f"no transformers architecture represents this TransformerConfig exactly: {reasons}")


def _rope_parameters(theta: float, scaling: tuple[float, float, float, float] | None,
                     linear: float = 1.0) -> dict[str, Any]:
  if linear != 1.0:
    return {"rope_type": "linear", "rope_theta": float(theta), "factor": float(linear)}
  if scaling is None:
    return {"rope_type": "default", "rope_theta": float(theta)}
  factor, low, high, original = scaling
  original = int(original) if float(original).is_integer() else original  # transformers expects an int
  return {"rope_type": "llama3", "rope_theta": float(theta), "factor": factor,
          "low_freq_factor": low, "high_freq_factor": high, "original_max_position_embeddings": original}


def hf_config(cfg: TransformerConfig, *, torch_dtype: str, max_position_embeddings: int | None = None,
              bos_token_id: int | None = None, eos_token_id: int | None = None,
              pad_token_id: int | None = None) -> dict[str, Any]:
  """The config.json of the transformers model that represents `cfg` exactly (see `family_of`).

  Args:
    torch_dtype: the weights' dtype ('float32', 'bfloat16' or 'float16'), written as `dtype` (transformers 5).
    max_position_embeddings: the longest context the model is declared for; default 8192, or under RoPE
      scaling the original context times the factor when that is longer.
    bos_token_id, eos_token_id, pad_token_id: the vocabulary's special ids (e.g. the vocabulary spec's
      `text.eos_id` / `text.pad_id`), written as given; None is written as null rather than a family's default
      (Cohere's would be eos 255001), which would be wrong for this vocabulary.
  """
  family = family_of(cfg)
  problems = []
  if torch_dtype not in DTYPES:
    problems.append(f"torch_dtype={torch_dtype!r} (choose one of {list(DTYPES)})")
  ids = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
  problems += [f"{name}={value} outside the vocabulary [0, {cfg.vocab_size})" for name, value in ids.items()
               if value is not None and not 0 <= value < cfg.vocab_size]
  if problems:
    raise ValueError("hf_config: " + "; ".join(problems))
  rope = _rope_parameters(cfg.rope_max_wavelength, cfg.rope_scaling, cfg.rope_linear_factor)
  if max_position_embeddings is None:
    longest = DEFAULT_MAX_POSITIONS * cfg.rope_linear_factor
    if cfg.rope_scaling:
      longest = max(longest, cfg.rope_scaling[0] * cfg.rope_scaling[3])
    max_position_embeddings = int(max(DEFAULT_MAX_POSITIONS, longest))
  local = cfg.layer_is_local()
  config = {
      "architectures": [ARCHITECTURES[family]], "model_type": family, "dtype": torch_dtype,
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
      "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
      "hidden_act": "gelu_pytorch_tanh" if cfg.activation == "geglu" else "silu",
      "max_position_embeddings": int(max_position_embeddings), "tie_word_embeddings": cfg.tie_embeddings,
      "rope_parameters": rope,
      # transformers 4 (and tools that read its keys) take RoPE from these; transformers 5 folds them into
      # rope_parameters, which they restate.
      "rope_theta": rope["rope_theta"],
      "rope_scaling": {key: value for key, value in rope.items() if key != "rope_theta"} if len(rope) > 2 else None,
      "attention_bias": False, "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True, **ids,
  }
  if family != "cohere":
    config["rms_norm_eps"] = cfg.norm_eps
  if family == "llama":
    config.update(mlp_bias=False, pretraining_tp=1)
  elif family == "mistral":
    config.update(sliding_window=cfg.sliding_window)
  elif family in ("qwen2", "qwen3"):
    config.update(use_sliding_window=any(local), sliding_window=cfg.sliding_window,
                  max_window_layers=local.index(True) if any(local) else cfg.num_layers,
                  layer_types=["sliding_attention" if x else "full_attention" for x in local])
    if family == "qwen2":
      del config["attention_bias"], config["head_dim"]  # Qwen2 always biases q/k/v; its head_dim is D / N
  elif family == "gemma":
    # Some transformers 4 releases read Gemma's activation from hidden_activation first: pin the tanh GELU there.
    config.update(hidden_activation="gelu_pytorch_tanh")
  elif family in _GEMMA_2_3:
    scale = cfg.query_scale if cfg.query_scale is not None else cfg.head_dim ** -0.5
    config.update(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=int(round(scale ** -2)),
                  sliding_window=cfg.sliding_window, final_logit_softcapping=cfg.final_logit_softcap,
                  attn_logit_softcapping=cfg.attn_logit_softcap,
                  layer_types=["sliding_attention" if x else "full_attention" for x in local])
    del config["hidden_act"]
    if family == "gemma3_text":
      local_rope = (rope if cfg.rope_local_max_wavelength is None
                    else _rope_parameters(cfg.rope_local_max_wavelength, None))
      config.update(rope_parameters={"full_attention": rope, "sliding_attention": local_rope},
                    use_bidirectional_attention=False)
      del config["rope_theta"], config["rope_scaling"]
  else:
    scaled = cfg.tie_embeddings and cfg.logits_scale_by_inv_sqrt_dim
    config.update(layer_norm_eps=cfg.norm_eps, logit_scale=cfg.d_model ** -0.5 if scaled else 1.0, use_qk_norm=False)
  return config


def _fetch(array: Any, index: tuple = ()) -> np.ndarray:
  """One slice of a (possibly sharded) parameter on the host: only that slice is transferred."""
  return np.asarray(jax.device_get(array[index] if index else array))


def _tensor_plan(params: Any, cfg: TransformerConfig) -> list[Tensor]:
  """(name, shape, fetch) of every HF tensor in state-dict order; nothing is read until a fetch is called."""
  params = unbox(params)
  check_shapes(unbox(abstract_params(Transformer(cfg))), params, "stack")
  family = family_of(cfg)
  d, h, v = cfg.d_model, cfg.head_dim, cfg.vocab_size
  # Cohere: column 2j of a head is this model's j, column 2j + 1 its j + H/2.
  rope_order = np.stack([np.arange(h // 2), np.arange(h // 2) + h // 2], axis=1).reshape(-1)
  rotated = ("self_attn.q_proj.weight", "self_attn.k_proj.weight") if family == "cohere" else ()

  def fetch(i: int, entry: lm_layout.LayerEntry) -> np.ndarray:
    if cfg.scan_layers:
      part = _fetch(lm_layout.at_path(params["layers"], entry.param), (i, *entry.index))
    else:
      part = _fetch(lm_layout.at_path(params[f"layer_{i}"], entry.param), entry.index)
    return entry.to_hf(part[..., rope_order] if entry.suffix in rotated else part)

  plan: list[Tensor] = [(lm_layout.EMBED, (v, d), lambda: _fetch(params["embed"]["table"]))]
  for i in range(cfg.num_layers):
    plan += [(f"model.layers.{i}.{entry.suffix}", entry.shape, lambda i=i, entry=entry: fetch(i, entry))
             for entry in lm_layout.layer_entries(cfg)]
  plan.append((lm_layout.FINAL_NORM, (d,), lambda: _fetch(params["final_norm"]["scale"])))
  if not cfg.tie_embeddings:
    plan.append((lm_layout.LM_HEAD, (v, d), lambda: _fetch(params["unembed"]).T))
  return plan


def _convert(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """C-contiguous in `dtype` (round to nearest even, as torch's casts), as safetensors stores it."""
  return np.ascontiguousarray(array.astype(dtype, copy=False))


def _check_dtype(dtype: str) -> np.dtype:
  if dtype not in DTYPES:
    raise ValueError(f"dtype={dtype!r}; choose one of {list(DTYPES)}")
  return DTYPES[dtype]


def export_tensors(params: Any, cfg: TransformerConfig, *, dtype: str = "float32") -> dict[str, np.ndarray]:
  """The transformers state dict of `Transformer(cfg)`'s params (boxed or not, scanned or not, sharded or not),
  in `dtype` ('bfloat16' arrays are ml_dtypes.bfloat16). Refuses params whose shapes do not fit `cfg`."""
  target = _check_dtype(dtype)
  return {name: np.array(fetch(), target, order="C") for name, _, fetch in _tensor_plan(params, cfg)}  # copies


def _split(plan: list[Tensor], max_bytes: int, itemsize: int) -> list[list[Tensor]]:
  """Consecutive groups of tensors of at most `max_bytes` each (a larger tensor gets a file of its own)."""
  shards: list[list[Tensor]] = [[]]
  size = 0
  for tensor in plan:
    nbytes = math.prod(tensor[1]) * itemsize
    if shards[-1] and size + nbytes > max_bytes:
      shards.append([])
      size = 0
    shards[-1].append(tensor)
    size += nbytes
  return shards


def save_hf_checkpoint(params: Any, cfg: TransformerConfig, directory: str, *, dtype: str = "float32",
                       max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, **config_options: Any) -> list[str]:
  """Writes a transformers checkpoint of `params` into the local `directory` (absent or empty): config.json and
  model.safetensors, or model-0000k-of-0000n.safetensors files of at most `max_shard_bytes` each plus
  model.safetensors.index.json. `config_options`: hf_config's keywords (max_position_embeddings, token ids).

  Everything is written into a hidden sibling directory that is renamed into place at the end, so an
  interrupted export never leaves a directory that looks complete. Returns the paths of the files written.
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  target = _check_dtype(dtype)
  config = hf_config(cfg, torch_dtype=dtype, **config_options)
  plan = _tensor_plan(params, cfg)  # checks the params before anything is written
  final = pathlib.Path(directory)
  if final.exists() and (not final.is_dir() or any(final.iterdir())):
    raise FileExistsError(f"{final} exists and is not an empty directory; export into a new one")
  shards = _split(plan, max_shard_bytes, target.itemsize)
  names = (["model.safetensors"] if len(shards) == 1
           else [f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors" for j in range(len(shards))])
  temp = final.parent / f".{final.name}.tmp-{os.getpid()}"
  shutil.rmtree(temp, ignore_errors=True)
  temp.mkdir(parents=True)
  try:
    for name, shard in zip(names, shards):
      save_file({tensor: _convert(fetch(), target) for tensor, _, fetch in shard}, str(temp / name),
                metadata={"format": "pt"})
    files = list(names)
    if len(shards) > 1:
      index = {"metadata": {"total_parameters": sum(math.prod(shape) for _, shape, _ in plan),
                            "total_size": sum(math.prod(shape) for _, shape, _ in plan) * target.itemsize},
               "weight_map": {tensor: name for name, shard in zip(names, shards) for tensor, _, _ in shard}}
      (temp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
      files.append("model.safetensors.index.json")
    (temp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    files.append("config.json")
    if final.exists():
      final.rmdir()
    temp.rename(final)
  except BaseException:
    shutil.rmtree(temp, ignore_errors=True)
    raise
  return [str(final / name) for name in files]
