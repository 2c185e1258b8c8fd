"""Export of the stack's Transformer as a Hugging Face `transformers` causal-LM checkpoint (the reverse of
`import_lm`).

    family = family_of(cfg)                                  # 'llama' | 'gemma' | 'cohere', or a ValueError
                                                             # listing every option no architecture represents
    config = hf_config(cfg, torch_dtype="bfloat16")          # the config.json dict
    tensors = export_tensors(params, cfg)                    # HF name -> numpy array, the whole state dict
    files = save_hf_checkpoint(params, cfg, "/out/model", dtype="bfloat16", eos_token_id=spec.text.eos_id)
    # then: transformers.AutoModelForCausalLM.from_pretrained("/out/model")

The architecture is the one that computes exactly what `Transformer(cfg)` computes; nothing is approximated:
    llama   LlamaForCausalLM   sequential block, RMSNorm, SwiGLU; tied or untied; MHA/GQA/MQA
    gemma   GemmaForCausalLM   sequential block, RMSNorm with (1 + w) scales, GeGLU, embeddings x sqrt(d_model)
    cohere  CohereForCausalLM  PaLM's parallel block x + attn(ln(x)) + mlp(ln(x)) with one LayerNorm without bias,
                               SwiGLU; tied output scaled by 1/sqrt(d_model) written as logit_scale
Every family takes Llama 3 RoPE scaling (`rope_parameters` rope_type 'llama3'), queries scaled by 1/sqrt(head_dim)
only, and no logits scale with a tied output except Cohere's.

Mapping (HF linear weights are [out, in]; layer i of the [L, ...] stack, or of `layer_{i}` when not scanned):
    embed.table [V, D]               model.embed_tokens.weight
    layers.attn.q [L, D, N, H]       q_proj.weight = q[i].reshape(D, N*H).T
    layers.attn.kv [L, D, 2, K, H]   k_proj.weight = kv[i, :, 0].reshape(D, K*H).T, v_proj.weight from kv[i, :, 1]
    layers.attn.o [L, N, H, D]       o_proj.weight = o[i].reshape(N*H, D).T
    layers.mlp.wi [L, D, 2, F]       gate_proj.weight = wi[i, :, 0].T, up_proj.weight = wi[i, :, 1].T
    layers.mlp.wo [L, F, D]          down_proj.weight = wo[i].T
    layers.attn_norm.scale [L, D]    input_layernorm.weight (sequential)
    layers.mlp_norm.scale [L, D]     post_attention_layernorm.weight (sequential)
    layers.norm.scale [L, D]         input_layernorm.weight (parallel: Cohere's one norm per layer)
    final_norm.scale [D]             model.norm.weight
    unembed [D, V]                   lm_head.weight = unembed.T (untied models only)
Gemma's norm weights are w in both (scale = 1 + w) and are copied as they are. Cohere rotates interleaved pairs
(2i, 2i+1) where this model rotates (i, i + H/2): the columns of each q and k head are permuted to
[0, H/2, 1, H/2 + 1, ...], which leaves every q.k product, and so the attention, unchanged (v and o keep theirs).

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

from audiopalm.hf.tensors import check_shapes
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.model.params import abstract_params
from audiopalm.sharding.params import unbox

ARCHITECTURES = {"llama": "LlamaForCausalLM", "gemma": "GemmaForCausalLM", "cohere": "CohereForCausalLM"}
# The choices each family hard-wires.
_FIXED = {
    "llama": dict(block="sequential", norm="rmsnorm", activation="swiglu", norm_scale_plus_one=False,
                  embed_scale_by_sqrt_dim=False),
    "gemma": dict(block="sequential", norm="rmsnorm", activation="geglu", norm_scale_plus_one=True,
                  embed_scale_by_sqrt_dim=True),
    "cohere": dict(block="parallel", norm="layernorm", activation="swiglu", norm_scale_plus_one=False,
                   embed_scale_by_sqrt_dim=False),
}
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}
DEFAULT_MAX_POSITIONS = 8192
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9

Tensor = tuple[str, tuple[int, ...], Callable[[], np.ndarray]]  # (HF name, shape, fetch)


def _problems(cfg: TransformerConfig, family: str) -> list[str]:
  """What `family`'s transformers model cannot compute of `cfg` (empty if it represents cfg exactly)."""
  problems = [f"{field}={getattr(cfg, field)!r} ({family} has {want!r})"
              for field, want in _FIXED[family].items() if getattr(cfg, field) != want]
  if cfg.query_scale is not None and not math.isclose(cfg.query_scale, cfg.head_dim ** -0.5, rel_tol=1e-12):
    problems.append(f"query_scale={cfg.query_scale} (transformers scales queries by head_dim**-0.5 = "
                    f"{cfg.head_dim ** -0.5})")
  if family != "cohere" and cfg.tie_embeddings and cfg.logits_scale_by_inv_sqrt_dim:
    problems.append(f"logits_scale_by_inv_sqrt_dim=True with tie_embeddings=True ({family} has no logits scale)")
  if family == "llama" and cfg.d_model % cfg.num_heads:
    problems.append(f"d_model={cfg.d_model} is not a multiple of num_heads={cfg.num_heads} (LlamaConfig refuses it)")
  return problems


def family_of(cfg: TransformerConfig) -> str:
  """The transformers family that computes exactly what `Transformer(cfg)` does; a ValueError listing, for every
  family, each option it cannot represent when there is none."""
  problems = {family: _problems(cfg, family) for family in _FIXED}
  for family, found in problems.items():
    if not found:
      return family
  reasons = "; ".join(f"as {family} ({ARCHITECTURES[family]}): " + ", ".join(found)
                      for family, found in sorted(problems.items(), key=lambda item: len(item[1])))
  raise ValueError(f"no transformers architecture represents this TransformerConfig exactly: {reasons}")


def _rope_parameters(cfg: TransformerConfig) -> dict[str, Any]:
  if cfg.rope_scaling is None:
    return {"rope_type": "default", "rope_theta": float(cfg.rope_max_wavelength)}
  factor, low, high, original = cfg.rope_scaling
  original = int(original) if float(original).is_integer() else original  # transformers expects an int
  return {"rope_type": "llama3", "rope_theta": float(cfg.rope_max_wavelength), "factor": factor,
          "low_freq_factor": low, "high_freq_factor": high, "original_max_position_embeddings": original}


def hf_config(cfg: TransformerConfig, *, torch_dtype: str, max_position_embeddings: int | None = None,
              bos_token_id: int | None = None, eos_token_id: int | None = None,
              pad_token_id: int | None = None) -> dict[str, Any]:
  """The config.json of the transformers model that represents `cfg` exactly (see `family_of`).

  Args:
    torch_dtype: the weights' dtype ('float32', 'bfloat16' or 'float16'), written as `dtype` (transformers 5).
    max_position_embeddings: the longest context the model is declared for; default 8192, or under Llama 3
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
  rope = _rope_parameters(cfg)
  if max_position_embeddings is None:
    max_position_embeddings = max(DEFAULT_MAX_POSITIONS, int(cfg.rope_scaling[0] * cfg.rope_scaling[3])
                                  if cfg.rope_scaling else 0)
  config = {
      "architectures": [ARCHITECTURES[family]], "model_type": family, "dtype": torch_dtype,
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
      "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
      "hidden_act": "gelu_pytorch_tanh" if family == "gemma" else "silu",
      "max_position_embeddings": int(max_position_embeddings), "tie_word_embeddings": cfg.tie_embeddings,
      "rope_parameters": rope,
      # transformers 4 (and tools that read its keys) take RoPE from these; transformers 5 folds them into
      # rope_parameters, which they restate.
      "rope_theta": rope["rope_theta"],
      "rope_scaling": {key: value for key, value in rope.items() if key != "rope_theta"} if cfg.rope_scaling else None,
      "attention_bias": False, "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True, **ids,
  }
  if family == "llama":
    config.update(rms_norm_eps=cfg.norm_eps, mlp_bias=False, pretraining_tp=1)
  elif family == "gemma":
    # Some transformers 4 releases read Gemma's activation from hidden_activation first: pin the tanh GELU there.
    config.update(rms_norm_eps=cfg.norm_eps, hidden_activation="gelu_pytorch_tanh")
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
  d, n, k, h, f, v = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size
  # Cohere: column 2j of a head is this model's j, column 2j + 1 its j + H/2.
  rope_order = np.stack([np.arange(h // 2), np.arange(h // 2) + h // 2], axis=1).reshape(-1)
  rotate = (lambda x: x[..., rope_order]) if family == "cohere" else (lambda x: x)  # noqa: E731

  def leaf(i: int, group: str, name: str, *index: Any) -> np.ndarray:
    if cfg.scan_layers:
      return _fetch(params["layers"][group][name], (i, *index))
    return _fetch(params[f"layer_{i}"][group][name], index)

  plan: list[Tensor] = [("model.embed_tokens.weight", (v, d), lambda: _fetch(params["embed"]["table"]))]
  for i in range(cfg.num_layers):
    prefix = f"model.layers.{i}"
    norms = ({"input_layernorm": "norm"} if cfg.block == "parallel"
             else {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm"})
    plan += [
        (f"{prefix}.self_attn.q_proj.weight", (n * h, d),
         lambda i=i: rotate(leaf(i, "attn", "q")).reshape(d, n * h).T),
        (f"{prefix}.self_attn.k_proj.weight", (k * h, d),
         lambda i=i: rotate(leaf(i, "attn", "kv", slice(None), 0)).reshape(d, k * h).T),
        (f"{prefix}.self_attn.v_proj.weight", (k * h, d),
         lambda i=i: leaf(i, "attn", "kv", slice(None), 1).reshape(d, k * h).T),
        (f"{prefix}.self_attn.o_proj.weight", (d, n * h), lambda i=i: leaf(i, "attn", "o").reshape(n * h, d).T),
        (f"{prefix}.mlp.gate_proj.weight", (f, d), lambda i=i: leaf(i, "mlp", "wi", slice(None), 0).T),
        (f"{prefix}.mlp.up_proj.weight", (f, d), lambda i=i: leaf(i, "mlp", "wi", slice(None), 1).T),
        (f"{prefix}.mlp.down_proj.weight", (d, f), lambda i=i: leaf(i, "mlp", "wo").T),
    ]
    plan += [(f"{prefix}.{hf_name}.weight", (d,), lambda i=i, group=group: leaf(i, group, "scale"))
             for hf_name, group in norms.items()]
  plan.append(("model.norm.weight", (d,), lambda: _fetch(params["final_norm"]["scale"])))
  if not cfg.tie_embeddings:
    plan.append(("lm_head.weight", (v, d), lambda: _fetch(params["unembed"]).T))
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
