"""Multi-stream generation with a KV cache: S tokens per position, each stream from its own output head.

    rows = generate_streams(params, cfg, prompts, forced, new_rows=N)   # cfg.stream_vocab: S (start, end) ranges

A model with `TransformerConfig.stream_vocab` reads and writes positions of S tokens (e.g. the codebook levels
of one audio frame, `formats.audiolm_stages`' 'streams' layout). Each new position's token of stream s is
sampled from the logits [start_s, end_s) only (its head), the S streams independently given the hidden state
(MusicGen). Which cells of the new positions are already known is the caller's: `forced` gives, per prompt,
values [N, S] and a mask [N, S]; a masked cell takes its value instead of a sample (the empty cells of a delay
pattern, the voice prompt's codes in a partly known row, the coarse levels a fine stage is conditioned on).
Exactly `new_rows` positions are generated (no stop token: a stage knows how many frames it makes).

One prefill of the right-padded prompts [batch, P, S], then a compiled `lax.fori_loop` of one-position steps
(`audiopalm.inference.decode` does the same for one stream); shapes are fixed, so one compilation serves every
call with the same batch, longest prompt, `new_rows` and sampling config. On a mesh, parameters, prompts and
cache are laid out as `decode.generate` lays them out.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from audiopalm.inference.decode import constrain_tree, batch_multiple, run_on_mesh
from audiopalm.inference.sampling import SamplingConfig, sample
from audiopalm.model import KVCache, Transformer, TransformerConfig, init_cache
from audiopalm.sharding.rules import ShardingRules


@functools.partial(jax.jit, static_argnames=("cfg", "new_rows", "sampling", "cache_sharding", "logical_rules"))
def _generate_streams(params: Any, tokens: jax.Array, prompt_lengths: jax.Array, forced: jax.Array,
                      is_forced: jax.Array, rng: jax.Array, *, cfg: TransformerConfig, new_rows: int,
                      sampling: SamplingConfig, cache_sharding: KVCache | None, logical_rules: Any) -> jax.Array:
  """tokens: [batch, P, S] right-padded; prompt_lengths: [batch]; forced, is_forced: [batch, new_rows, S].
  Returns the new positions [batch, new_rows, S] int32."""
  del logical_rules  # keys the compilation cache only
  model = Transformer(cfg)
  variables = {"params": params}
  batch, prompt_len, streams = tokens.shape

  def pick(logits: jax.Array, rng: jax.Array, i: jax.Array) -> jax.Array:  # logits [batch, vocab] -> [batch, S]
    keys = jax.random.split(rng, streams)
    row = jnp.stack([sample(logits[:, start:end], keys[s], sampling) + start
                     for s, (start, end) in enumerate(cfg.stream_vocab)], axis=-1)
    return jnp.where(is_forced[:, i], forced[:, i], row).astype(jnp.int32)

  cache = constrain_tree(init_cache(cfg, batch, prompt_len + new_rows), cache_sharding)
  logits, cache = model.apply(variables, tokens, cache, prompt_lengths, prompt_lengths - 1,
                              method=Transformer.decode)  # [batch, 1, vocab]
  rng, key = jax.random.split(rng)
  row = pick(logits[:, 0], key, jnp.int32(0))
  out = jnp.zeros((batch, new_rows, streams), jnp.int32).at[:, 0].set(row)

  def body(i, state):
    row, cache, out, rng = state
    logits, cache = model.apply(variables, row[:, None, :], cache, method=Transformer.decode)  # [batch, 1, vocab]
    rng, key = jax.random.split(rng)
    row = pick(logits[:, 0], key, i)
    return row, constrain_tree(cache, cache_sharding), out.at[:, i].set(row), rng

  _, _, out, _ = jax.lax.fori_loop(1, new_rows, body, (row, cache, out, rng))
  return out


def generate_streams(params: Any, cfg: TransformerConfig, prompts: Sequence[np.ndarray],
                     forced: Sequence[tuple[np.ndarray, np.ndarray]], new_rows: int, *,
                     sampling: SamplingConfig = SamplingConfig(), rng: jax.Array | None = None,
                     pad_prompts_to: int = 1, mesh: Mesh | None = None,
                     rules: ShardingRules | None = None) -> list[np.ndarray]:
  """Continues each prompt [P_i, S] with `new_rows` positions of S tokens (module docstring).

  Args:
    params, cfg: the model (cfg.stream_vocab: S streams).
    prompts: int arrays [P_i, S], P_i >= 1 (the first row is the segment's BOS row as in training).
    forced: per prompt, (values [N_i, S] int, mask [N_i, S] bool) with N_i <= new_rows: the known cells of the new
      positions (rows past N_i are free).
    new_rows: positions generated per prompt.
    sampling, rng: greedy by default; rng a `jax.random.key` (default key 0).
    pad_prompts_to: the prefill is the longest prompt rounded up to a multiple of this (fewer compilations).
    mesh, rules: lay the model and the batch out on `mesh` (as `decode.generate`).
  Returns:
    per prompt, the new positions [new_rows, S] int32 (forced cells hold their values).
  """
  streams = cfg.token_streams
  if not cfg.stream_vocab:
    raise ValueError("generate_streams: the model has one token stream (TransformerConfig.stream_vocab is empty); "
                     "use decode.generate")
  if new_rows < 1 or pad_prompts_to < 1:
    raise ValueError(f"generate_streams: need new_rows >= 1 and pad_prompts_to >= 1, got {new_rows}, {pad_prompts_to}")
  rows = [np.asarray(p, np.int32) for p in prompts]
  if len(forced) != len(rows):
    raise ValueError(f"generate_streams: {len(rows)} prompts but {len(forced)} forced patterns")
  if not rows:
    return []
  for i, row in enumerate(rows):
    if row.ndim != 2 or row.shape[0] < 1 or row.shape[1] != streams:
      raise ValueError(f"generate_streams: prompt {i} must be [P >= 1, {streams}], got {row.shape}")
    if row.min() < 0 or row.max() >= cfg.vocab_size:
      raise ValueError(f"generate_streams: prompt {i} has ids outside the vocabulary of {cfg.vocab_size}")
  prompt_len = -(-max(row.shape[0] for row in rows) // pad_prompts_to) * pad_prompts_to
  shards = batch_multiple(mesh, rules)
  batch = -(-len(rows) // shards) * shards  # copies of the first prompt fill the last shard
  rows, forced = rows + [rows[0]] * (batch - len(rows)), list(forced) + [forced[0]] * (batch - len(rows))
  tokens = np.zeros((batch, prompt_len, streams), np.int32)
  lengths = np.zeros((batch,), np.int32)
  values = np.zeros((batch, new_rows, streams), np.int32)
  masks = np.zeros((batch, new_rows, streams), bool)
  for i, (row, (value, mask)) in enumerate(zip(rows, forced)):
    value, mask = np.asarray(value, np.int32), np.asarray(mask, bool)
    if value.shape != mask.shape or value.ndim != 2 or value.shape[0] > new_rows or value.shape[1] != streams:
      raise ValueError(f"generate_streams: forced pattern {i} must be values and mask [<= {new_rows}, {streams}], "
                       f"got {value.shape} and {mask.shape}")
    tokens[i, :row.shape[0]] = row
    lengths[i] = row.shape[0]
    values[i, :value.shape[0]], masks[i, :mask.shape[0]] = value, mask
  rng = jax.random.key(0) if rng is None else rng
  run = lambda p, tokens, lengths, values, masks, **layout: _generate_streams(  # noqa: E731
      p, tokens, lengths, values, masks, rng, cfg=cfg, new_rows=new_rows, sampling=sampling, **layout)
  out = np.asarray(run_on_mesh(run, params, cfg, (tokens, lengths, values, masks), prompt_len + new_rows, mesh, rules))
  return [out[i] for i in range(len(prompts))]
