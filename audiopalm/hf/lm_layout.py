"""Where each tensor of a `transformers` causal LM lives in the stack's Transformer, and how it is reshaped: the one
table that both `import_lm` and `export_lm` read.

    for entry in layer_entries(cfg):      # per layer: HF suffix, stack param, index into its layer, converters
      hf = entry.to_hf(param_layer[entry.index])         # export
      param_layer[entry.index] = entry.to_param(hf)     # import

HF linear weights are [out, in]; the stack's layers are stacked first ([L, ...], as `nn.scan` lays them out):
    layers.attn.q [L, D, N, H]        self_attn.q_proj.weight [N*H, D]
    layers.attn.kv [L, D, 2, K, H]    self_attn.k_proj.weight, self_attn.v_proj.weight [K*H, D]
    layers.attn.o [L, N, H, D]        self_attn.o_proj.weight [D, N*H]
    layers.attn.q_bias [L, N, H]      self_attn.q_proj.bias [N*H]                (qkv_bias: Qwen2)
    layers.attn.kv_bias [L, 2, K, H]  self_attn.k_proj.bias, self_attn.v_proj.bias [K*H]
    layers.attn.q_norm.scale [L, H]   self_attn.q_norm.weight [H]                (qk_norm: Qwen3, Gemma 3)
    layers.attn.k_norm.scale [L, H]   self_attn.k_norm.weight [H]
    layers.mlp.wi [L, D, 2, F]        mlp.gate_proj.weight, mlp.up_proj.weight [F, D]
    layers.mlp.wo [L, F, D]           mlp.down_proj.weight [D, F]
    layers.attn_norm.scale [L, D]     input_layernorm.weight
    layers.mlp_norm.scale [L, D]      post_attention_layernorm.weight, or with post_norms (Gemma 2/3)
                                      pre_feedforward_layernorm.weight
    layers.attn_post_norm.scale       post_attention_layernorm.weight            (post_norms)
    layers.mlp_post_norm.scale        post_feedforward_layernorm.weight          (post_norms)
    layers.norm.scale [L, D]          input_layernorm.weight                     (parallel block: Cohere)
    embed.table [V, D]                model.embed_tokens.weight
    final_norm.scale [D]              model.norm.weight
    unembed [D, V]                    lm_head.weight [V, D] (untied models)
Norm weights are copied as they are (Gemma's are w of the (1 + w) scale in both).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from audiopalm.model import TransformerConfig

EMBED, FINAL_NORM, LM_HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"


@dataclasses.dataclass(frozen=True)
class LayerEntry:
  """One HF tensor of layer i (`model.layers.{i}.{suffix}`) and the part of a stack parameter's layer it fills.

  Attributes:
    suffix: the HF name after `model.layers.{i}.`.
    param: the parameter's path under the stack's `layers`, e.g. ("attn", "kv"), ("attn_norm", "scale").
    index: the part of the parameter's layer ([...] without L) this tensor is, e.g. (slice(None), 0) for k in kv.
    shape: the HF tensor's shape.
    to_param: HF tensor -> that part; to_hf: that part -> HF tensor.
  """

  suffix: str
  param: tuple[str, ...]
  index: tuple[Any, ...]
  shape: tuple[int, ...]
  to_param: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
  return x


def layer_entries(cfg: TransformerConfig) -> list[LayerEntry]:
  """Every HF tensor of one layer of `Transformer(cfg)`, in the order transformers' state dict lists them."""
  d, n, k, h, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_ff
  every = slice(None)

  def linear(suffix: str, param: tuple[str, ...], index: tuple, part: tuple[int, ...], rows: int) -> LayerEntry:
    """A linear weight [rows, in] whose transpose, reshaped to `part`, is the parameter's part."""
    return LayerEntry(suffix, param, index, (rows, int(np.prod(part)) // rows),
                      lambda w: w.T.reshape(part), lambda x: x.reshape(-1, rows).T)

  entries = [linear("self_attn.q_proj.weight", ("attn", "q"), (), (d, n, h), n * h),
             linear("self_attn.k_proj.weight", ("attn", "kv"), (every, 0), (d, k, h), k * h),
             linear("self_attn.v_proj.weight", ("attn", "kv"), (every, 1), (d, k, h), k * h)]
  if cfg.qkv_bias:
    entries += [LayerEntry("self_attn.q_proj.bias", ("attn", "q_bias"), (), (n * h,),
                           lambda b: b.reshape(n, h), lambda x: x.reshape(-1)),
                LayerEntry("self_attn.k_proj.bias", ("attn", "kv_bias"), (0,), (k * h,),
                           lambda b: b.reshape(k, h), lambda x: x.reshape(-1)),
                LayerEntry("self_attn.v_proj.bias", ("attn", "kv_bias"), (1,), (k * h,),
                           lambda b: b.reshape(k, h), lambda x: x.reshape(-1))]
  entries.append(LayerEntry("self_attn.o_proj.weight", ("attn", "o"), (), (d, n * h),
                            lambda w: w.T.reshape(n, h, d), lambda x: x.reshape(n * h, d).T))
  if cfg.qk_norm:
    entries += [LayerEntry(f"self_attn.{which}_norm.weight", ("attn", f"{which}_norm", "scale"), (), (h,), _identity,
                           _identity) for which in ("q", "k")]
  entries += [LayerEntry("mlp.gate_proj.weight", ("mlp", "wi"), (every, 0), (f, d), lambda w: w.T, lambda x: x.T),
              LayerEntry("mlp.up_proj.weight", ("mlp", "wi"), (every, 1), (f, d), lambda w: w.T, lambda x: x.T),
              LayerEntry("mlp.down_proj.weight", ("mlp", "wo"), (), (d, f), lambda w: w.T, lambda x: x.T)]
  if cfg.block == "parallel":
    norms = {"input_layernorm": "norm"}
  elif cfg.post_norms:
    norms = {"input_layernorm": "attn_norm", "post_attention_layernorm": "attn_post_norm",
             "pre_feedforward_layernorm": "mlp_norm", "post_feedforward_layernorm": "mlp_post_norm"}
  else:
    norms = {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm"}
  entries += [LayerEntry(f"{hf}.weight", (group, "scale"), (), (d,), _identity, _identity)
              for hf, group in norms.items()]
  return entries


def at_path(tree: Any, path: tuple[str, ...]) -> Any:
  """tree[path[0]][path[1]]..."""
  for key in path:
    tree = tree[key]
  return tree


def tensor_names(cfg: TransformerConfig) -> list[str]:
  """Every HF tensor name of `Transformer(cfg)` (lm_head only when untied)."""
  names = [EMBED] + [f"model.layers.{i}.{e.suffix}" for i in range(cfg.num_layers) for e in layer_entries(cfg)]
  return names + [FINAL_NORM] + ([] if cfg.tie_embeddings else [LM_HEAD])
