"""The decoder configuration, parameter count and FLOPs per token.

PaLM's architecture is the defaults (parallel block, SwiGLU, multi-query attention,
RoPE, no biases, tied embeddings, logits scaled by 1/sqrt(d_model)); the other
switches are what today's text checkpoints need (all off by default):
    Llama 3.x      sequential block, RMSNorm, GQA, untied, Llama 3 RoPE scaling
    Mistral        + a sliding window on every layer (layer_pattern "L")
    Qwen2/2.5      + q/k/v biases (qkv_bias), optionally windows on the top layers
    Qwen3          + RMSNorm on queries and keys per head (qk_norm)
    Gemma          (1 + w) norm scales, GeGLU, embeddings x sqrt(d_model), tied
    Gemma 2        + sandwich norms (post_norms), attention and final logit soft-caps, local:global layers 1:1
    Gemma 3        + qk_norm, local:global 5:1, local RoPE base, linear RoPE scaling on global layers The sizes have no
defaults: named sizes are gin files, `gin_configs/models/*.gin` (tiny, demo, palm_1b,
palm_8b; `audiopalm.main.presets.model_preset` reads them in Python).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Literal

from audiopalm.files import storage

BlockType = Literal["parallel", "sequential"]
NormType = Literal["layernorm", "rmsnorm"]
Activation = Literal["swiglu", "geglu"]
AttentionImpl = Literal["einsum", "xla", "cudnn"]
RematPolicy = Literal["none", "full", "dots", "dots_no_batch"]
DType = Literal["float32", "bfloat16", "float16"]

# none: keep all activations; full: recompute the whole block; dots: save matmul outputs;
# dots_no_batch: save only matmuls without batch dimensions (weights-side), recompute the rest.
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Architecture and numerics of the decoder-only Transformer.

  Attributes:
    vocab_size: rows of the embedding (pad to a multiple that shards well).
    d_model: model width.
    num_layers: number of Transformer blocks.
    num_heads: query heads.
    num_kv_heads: key/value heads: 1 = multi-query (PaLM), num_heads = multi-head,
      anything dividing num_heads = grouped-query.
    head_dim: per-head width (PaLM: 256).
    d_ff: hidden width of the gated MLP.
    block: "parallel" (PaLM: x + attn(ln(x)) + mlp(ln(x))) or "sequential" (Llama/Gemma).
    norm: "layernorm" (PaLM: no bias) or "rmsnorm" (Llama/Gemma).
    norm_eps: epsilon of the normalisation.
    norm_scale_plus_one: scale parameterised as (1 + w) (Gemma), w initialised to 0.
    activation: "swiglu" (PaLM/Llama) or "geglu" (Gemma, tanh-approximate GELU).
    tie_embeddings: output layer shares the input embedding (PaLM/Gemma).
    embed_scale_by_sqrt_dim: multiply input embeddings by sqrt(d_model) (Gemma).
    logits_scale_by_inv_sqrt_dim: scale tied-output logits by 1/sqrt(d_model) (PaLM).
    rope_max_wavelength: RoPE base (theta).
    rope_scaling: Llama 3.1+ frequency scaling (factor, low_freq_factor, high_freq_factor,
      original_max_position_embeddings), or None (plain RoPE).
    query_scale: attention query scale; None = 1/sqrt(head_dim).
    attention: "einsum" (explicit softmax(QK^T)V), "xla" (`jax.nn.dot_product_attention`, XLA
      implementation) or "cudnn" (its cuDNN flash attention: GPU only, bfloat16/float16 compute).
    dtype: compute dtype of activations and matmuls.
    param_dtype: storage dtype of parameters.
    remat: rematerialisation policy of each block (see REMAT_POLICIES).
    scan_layers: stack layers with `nn.scan` (fast compile at depth).
    attn_logit_softcap: c: attention logits become c * tanh(logits / c) before the mask (Gemma 2: 50), or None.
    final_logit_softcap: c: output logits become c * tanh(logits / c) (Gemma 2: 30), or None.
    sliding_window: W: a local layer's query attends to the W latest tokens of its segment, itself included
      (Mistral, Gemma 2/3, Qwen's option), or None (every layer global).
    layer_pattern: the kind of each layer, repeated over the depth (and cut where longer): layer i is
      layer_pattern[i % len] with 'G' = global (full causal) and 'L' = local (sliding_window). "G": all global;
      "L": Mistral; "LG": Gemma 2; "LLLLLG": Gemma 3; a string of num_layers characters spells out any other order
      (Qwen: "GG..LL").
    rope_local_max_wavelength: RoPE base of the local layers (Gemma 3: 10k), which then take no scaling; None =
      local layers rotate as global ones.
    rope_linear_factor: positions divided by this factor in the global layers' RoPE (transformers' 'linear'
      rope type; Gemma 3: 8); 1 = none. Not combined with rope_scaling.
    post_norms: normalise the attention and MLP branch outputs before each residual add ("sandwich" norms,
      Gemma 2/3); sequential block only.
    qk_norm: normalise each query and key head over head_dim (one scale of [head_dim] each, shared by the
      heads) before RoPE (Qwen3, Gemma 3).
    qkv_bias: biases on the query, key and value projections (Qwen2/2.5); the output projection has none.
    hf_family: the transformers model_type this architecture was imported from; the export writes that
      family back when it represents the config (e.g. 'mistral' rather than the equivalent 'llama').
    stream_vocab: multi-stream decoding (MusicGen / Moshi style): each position carries S tokens, one per stream
      (e.g. the S codebook levels of one audio frame), given as the vocabulary range [start, end) of each
      stream's output. The input embedding of a position is the sum of its S tokens' embeddings; stream s is
      predicted by its own output head, the rows [start, end) of the output layer (a softmax over that range
      only). Inputs, targets and loss weights are then [batch, length, S]. () = one stream (plain tokens
      [batch, length], a softmax over the whole vocabulary). Set by the trainer from its input (the formats'
      'streams' layouts), saved with the model for decoding.
    dropout_rate: dropout on the input embeddings and on each residual branch (attention and MLP outputs), T5
      style. Active only when the model is applied with a 'dropout' rng, as the train step does; evaluation and
      decoding never drop. 0 = off (PaLM pretraining); a regulariser for small data.
  """

  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  d_ff: int
  block: BlockType = "parallel"
  norm: NormType = "layernorm"
  norm_eps: float = 1e-6
  norm_scale_plus_one: bool = False
  activation: Activation = "swiglu"
  tie_embeddings: bool = True
  embed_scale_by_sqrt_dim: bool = False
  logits_scale_by_inv_sqrt_dim: bool = True
  rope_max_wavelength: float = 10_000.0
  rope_scaling: tuple[float, float, float, float] | None = None
  query_scale: float | None = None
  attention: AttentionImpl = "einsum"
  dtype: DType = "float32"
  param_dtype: DType = "float32"
  remat: RematPolicy = "none"
  scan_layers: bool = True
  dropout_rate: float = 0.0
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  sliding_window: int | None = None
  layer_pattern: str = "G"
  rope_local_max_wavelength: float | None = None
  rope_linear_factor: float = 1.0
  post_norms: bool = False
  qk_norm: bool = False
  qkv_bias: bool = False
  hf_family: str | None = None
  stream_vocab: tuple[tuple[int, int], ...] = ()

  def __post_init__(self):
    if self.rope_scaling is not None:  # (a list when read back from JSON)
      object.__setattr__(self, "rope_scaling", tuple(float(v) for v in self.rope_scaling))
    object.__setattr__(self, "stream_vocab", tuple(tuple(int(v) for v in r) for r in self.stream_vocab))
    self.validate()

  def validate(self) -> None:
    """Fails with a message naming the offending field."""
    def check(ok: bool, msg: str):
      if not ok:
        raise ValueError(f"TransformerConfig: {msg}")
    for name in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "d_ff"):
      check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
    check(self.num_heads % self.num_kv_heads == 0,
          f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
    check(0.0 <= self.dropout_rate < 1.0, f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
    check(self.head_dim % 2 == 0, f"head_dim must be even for RoPE, got {self.head_dim}")
    if self.rope_scaling is not None:
      check(len(self.rope_scaling) == 4, f"rope_scaling needs 4 values, got {self.rope_scaling}")
      factor, low, high, original = self.rope_scaling
      check(factor > 0 and 0 < low < high and original > 0,
            f"rope_scaling must be (factor > 0, 0 < low_freq_factor < high_freq_factor, original_max_position > 0), "
            f"got {self.rope_scaling}")
    for name in ("attn_logit_softcap", "final_logit_softcap"):
      value = getattr(self, name)
      check(value is None or value > 0, f"{name} must be positive or None, got {value}")
    check(bool(self.layer_pattern) and set(self.layer_pattern) <= {"G", "L"},
          f"layer_pattern must be a non-empty string of 'G' (global) and 'L' (local), got {self.layer_pattern!r}")
    has_local = "L" in self.layer_pattern
    check(has_local == (self.sliding_window is not None),
          f"sliding_window={self.sliding_window} with layer_pattern={self.layer_pattern!r}: local layers ('L') "
          "need a sliding_window, and a sliding_window needs local layers")
    check(self.sliding_window is None or self.sliding_window >= 1,
          f"sliding_window must be at least 1, got {self.sliding_window}")
    check(self.rope_local_max_wavelength is None or (has_local and self.rope_local_max_wavelength > 0),
          f"rope_local_max_wavelength={self.rope_local_max_wavelength} needs local layers and a positive value")
    check(self.rope_linear_factor > 0, f"rope_linear_factor must be positive, got {self.rope_linear_factor}")
    check(self.rope_linear_factor == 1.0 or self.rope_scaling is None,
          "rope_linear_factor and rope_scaling (Llama 3) cannot be combined")
    check(not self.post_norms or self.block == "sequential", "post_norms needs block='sequential'")
    check(self.attention != "cudnn" or self.attn_logit_softcap is None,
          "attention='cudnn' has no attention-logit soft-capping; use 'einsum' or 'xla' with attn_logit_softcap")
    check(len(self.stream_vocab) != 1, "stream_vocab: give two or more streams, or () for one")
    for start, end in self.stream_vocab:
      check(0 <= start < end <= self.vocab_size,
            f"stream_vocab: each stream's range [start, end) must lie in the vocabulary of {self.vocab_size}, got "
            f"{list(self.stream_vocab)}")
    ranges = sorted(self.stream_vocab)
    check(all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:])),
          f"stream_vocab: the streams' ranges must not overlap, got {list(self.stream_vocab)}")
    check(not self.stream_vocab or self.final_logit_softcap is None,
          "stream_vocab with final_logit_softcap is not supported")
    choices = {"block": ("parallel", "sequential"), "norm": ("layernorm", "rmsnorm"),
               "activation": ("swiglu", "geglu"), "remat": REMAT_POLICIES,
               "attention": ("einsum", "xla", "cudnn"),
               "dtype": ("float32", "bfloat16", "float16"), "param_dtype": ("float32", "bfloat16", "float16")}
    for name, allowed in choices.items():
      check(getattr(self, name) in allowed, f"{name}={getattr(self, name)!r}, allowed: {list(allowed)}")
    check(self.attention != "cudnn" or self.dtype in ("bfloat16", "float16"),
          f"attention='cudnn' needs dtype bfloat16 or float16, got {self.dtype!r}")

  @property
  def token_streams(self) -> int:
    """Tokens per position: len(stream_vocab), or 1 (not the input's `streams`, independent data streams)."""
    return len(self.stream_vocab) or 1

  def replace(self, **changes) -> "TransformerConfig":
    return dataclasses.replace(self, **changes)

  def layer_is_local(self) -> tuple[bool, ...]:
    """Whether each layer (0 .. num_layers - 1) is local (sliding window), from layer_pattern."""
    pattern = self.layer_pattern
    return tuple(pattern[i % len(pattern)] == "L" for i in range(self.num_layers))


def param_count(cfg: TransformerConfig, include_embedding: bool = True) -> int:
  """Exact number of parameters of `Transformer(cfg)`."""
  norm = cfg.d_model  # scale only, no bias
  attn = cfg.d_model * cfg.head_dim * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
  if cfg.qkv_bias:
    attn += cfg.head_dim * (cfg.num_heads + 2 * cfg.num_kv_heads)
  if cfg.qk_norm:
    attn += 2 * cfg.head_dim
  mlp = 3 * cfg.d_model * cfg.d_ff
  norms_per_layer = 1 if cfg.block == "parallel" else (4 if cfg.post_norms else 2)
  per_layer = attn + mlp + norms_per_layer * norm
  total = cfg.num_layers * per_layer + norm  # + final norm
  if include_embedding:
    total += cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
  return total


def flops_per_token(cfg: TransformerConfig, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward), as in PaLM's appendix B.

  6 * N for the matmuls over non-embedding parameters plus the output layer,
  plus 12 * L * H * Q * T for attention (H heads of width Q over T tokens; a local layer's T is at most its
  sliding window). Rematerialisation is not counted (this is *model* FLOPs, for MFU).
  """
  n = param_count(cfg, include_embedding=False) + cfg.vocab_size * cfg.d_model  # output layer matmul
  context = sum(min(seq_len, cfg.sliding_window) if local else seq_len for local in cfg.layer_is_local())
  attention = 12 * cfg.num_heads * cfg.head_dim * context
  return 6.0 * n + attention


# TransformerConfig fields a run continuing from a checkpoint may change (`config_from`'s keywords): they do not
# change what the parameters mean.
FREE_FIELDS = ("vocab_size", "dtype", "param_dtype", "remat", "attention", "dropout_rate")


def config_from(path: str, *, vocab_size: int | None = None, dtype: DType | None = None,
                param_dtype: DType | None = None, remat: RematPolicy | None = None,
                attention: AttentionImpl | None = None, dropout_rate: float | None = None) -> TransformerConfig:
  """The TransformerConfig saved in `path` (a `model_config.json`, or a directory holding one: an import, an
  export or a run), with the fields given replaced: the vocabulary size (extended with audio tokens) and the
  numerics / memory / regularisation options that do not change what the parameters mean (a run saved with
  dropout keeps its rate unless `dropout_rate` is given)."""
  path = os.fspath(path)
  target = path if path.endswith(".json") else storage.join(path, "model_config.json")
  if not storage.is_file(target):
    raise FileNotFoundError(f"no model config at {target}")
  changes = dict(vocab_size=vocab_size, dtype=dtype, param_dtype=param_dtype, remat=remat, attention=attention,
                 dropout_rate=dropout_rate)
  return dataclasses.replace(TransformerConfig(**json.loads(storage.read_text(target))),
                             **{k: v for k, v in changes.items() if v is not None})
