"""Autoregressive generation with a KV cache: one prefill, then a compiled `lax.while_loop` of single-token steps.

Prompts of different lengths are right-padded into one [batch, prompt_len] prefill whose per-row lengths make
the padding invisible (`audiopalm.model.kv_cache`); every row then decodes in lockstep, one token per step, and
the loop exits as soon as every row has produced a stop token (or after `max_new_tokens`). Shapes are fixed:
one compilation serves every call with the same batch, longest prompt, `max_new_tokens`, sampling config,
number of stop tokens and mask shape (prompts, keys, stop ids and the mask itself are arguments).

Constrained decoding takes one mask for every step, or a periodic one: `allowed_mask` [period, vocab] with
`mask_phase` [batch], so that row b's k-th new token (k = 0, 1, ...) may only be a token of mask row
(mask_phase[b] + k) % period. A flattened multi-level acoustic stream (level 0, 1, .., L-1 of each frame)
decodes with one mask row per level, each allowing only its level's range.

With a mesh, parameters, prompts and the cache are laid out by the training rules (`sharding_context`): batch
over data/fsdp, kv heads over tensor where they divide, weights as in training. The batch is padded with
dummy rows to a multiple of the batch shards.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from audiopalm.inference.sampling import SamplingConfig, sample
from audiopalm.model import KVCache, Transformer, TransformerConfig, cache_logical_axes, init_cache
from audiopalm.model.params import abstract_params
from audiopalm.sharding import axes
from audiopalm.sharding.params import fit_sharding, sharding_context
from audiopalm.sharding.rules import ShardingRules, logical_to_mesh_spec, logical_to_sharding, params_shardings


def cache_shardings(cfg: TransformerConfig, batch: int, max_len: int, mesh: Mesh, rules: ShardingRules) -> KVCache:
  """A KVCache of NamedShardings for `init_cache(cfg, batch, max_len)`: the cache's logical axes under `rules`,
  each dimension left whole where the mesh axes do not divide it (e.g. one multi-query kv head)."""
  abstract = jax.eval_shape(lambda: init_cache(cfg, batch, max_len))
  logical = logical_to_sharding(cache_logical_axes(), mesh, rules)
  return jax.tree.map(lambda s, a: fit_sharding(s, a.shape), logical, abstract)


def constrain_tree(tree: Any, shardings: Any) -> Any:
  return tree if shardings is None else jax.tree.map(jax.lax.with_sharding_constraint, tree, shardings)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "sampling", "cache_sharding", "logical_rules"))
def _generate(params: Any, tokens: jax.Array, prompt_lengths: jax.Array, done: jax.Array, rng: jax.Array,
              stops: jax.Array, allowed: jax.Array | None, phase: jax.Array, *, cfg: TransformerConfig,
              max_new_tokens: int,
              sampling: SamplingConfig, cache_sharding: KVCache | None,
              logical_rules: Any) -> tuple[jax.Array, jax.Array]:
  """tokens: [batch, prompt_len] right-padded; prompt_lengths: [batch]; done: [batch] rows not to wait for;
  stops: [num_stop_tokens] int32; allowed: [period, vocab] bool or None; phase: [batch] int32, the mask row of
  each row's first new token.

  Returns (new tokens [batch, max_new_tokens] int32, valid in the first `steps` columns; steps).
  `logical_rules` only keys the compilation cache (the rules in effect while tracing shape the program).
  """
  del logical_rules
  model = Transformer(cfg)
  variables = {"params": params}
  batch, prompt_len = tokens.shape

  def pick(logits: jax.Array, rng: jax.Array, done: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    mask = None if allowed is None else allowed[(phase + step) % allowed.shape[0]]  # [batch, vocab]
    token = sample(logits, rng, sampling, mask)  # [batch]
    return token, done | jnp.isin(token, stops)

  cache = constrain_tree(init_cache(cfg, batch, prompt_len + max_new_tokens), cache_sharding)
  logits, cache = model.apply(variables, tokens, cache, prompt_lengths, prompt_lengths - 1,
                              method=Transformer.decode)  # [batch, 1, vocab]
  rng, step_rng = jax.random.split(rng)
  token, done = pick(logits[:, 0], step_rng, done, jnp.int32(0))
  out = jnp.zeros((batch, max_new_tokens), jnp.int32).at[:, 0].set(token)

  def cond(state):
    step, _, _, _, done, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(state):
    step, token, cache, out, done, rng = state
    logits, cache = model.apply(variables, token[:, None], cache, method=Transformer.decode)  # [batch, 1, vocab]
    rng, step_rng = jax.random.split(rng)
    token, done = pick(logits[:, 0], step_rng, done, step)
    return step + 1, token, constrain_tree(cache, cache_sharding), out.at[:, step].set(token), done, rng

  steps, _, _, out, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), token, cache, out, done, rng))
  return out, steps


def _batch_shards(mesh: Mesh, rules: ShardingRules) -> int:
  """How many ways the batch is split (the mesh axes of `activation_batch`)."""
  spec = logical_to_mesh_spec((axes.ACT_BATCH,), rules)[0]
  names = () if spec is None else ((spec,) if isinstance(spec, str) else tuple(spec))
  return math.prod(mesh.shape[n] for n in names)


def batch_multiple(mesh: Mesh | None, rules: ShardingRules | None) -> int:
  """Decoding batches are padded to a multiple of this: the batch shards of `mesh` under `rules` (1 off a mesh)."""
  if mesh is None:
    if rules is not None:
      raise ValueError("generate: sharding `rules` need a `mesh`")
    return 1
  rules = rules or ShardingRules()
  rules.validate(mesh.axis_names)
  return _batch_shards(mesh, rules)


def run_on_mesh(fn: Any, params: Any, cfg: TransformerConfig, batch: tuple[np.ndarray, ...], max_len: int,
                mesh: Mesh | None, rules: ShardingRules | None) -> Any:
  """fn(params, *batch, cache_sharding=..., logical_rules=...) with the parameters and the batch arrays (batch
  first; rows of the training layout) placed on `mesh` by `rules` and traced in their sharding context; off a
  mesh, as they are."""
  if mesh is None:
    return fn(params, *batch, cache_sharding=None, logical_rules=None)
  rules = rules or ShardingRules()
  with sharding_context(mesh, rules):
    param_shardings = params_shardings(abstract_params(Transformer(cfg)), mesh, rules)
    params = jax.device_put(params, jax.tree.map(lambda s, p: fit_sharding(s, p.shape), param_shardings, params))
    rows_sharding = NamedSharding(mesh, logical_to_mesh_spec((axes.ACT_BATCH, axes.ACT_LENGTH), rules))
    batch = tuple(jax.device_put(x, fit_sharding(rows_sharding, x.shape)) for x in batch)
    return fn(params, *batch, cache_sharding=cache_shardings(cfg, batch[0].shape[0], max_len, mesh, rules),
              logical_rules=rules.as_flax())


def cut_at_stop(row: np.ndarray, stop_tokens: tuple[int, ...]) -> np.ndarray:
  """The tokens up to and including the first stop token."""
  hits = np.flatnonzero(np.isin(row, stop_tokens))
  return row[:hits[0] + 1] if hits.size else row


def generate(params: Any, cfg: TransformerConfig, prompts: Sequence[np.ndarray | Sequence[int]], max_new_tokens: int,
             *, sampling: SamplingConfig = SamplingConfig(), rng: jax.Array | None = None,
             stop_tokens: Sequence[int] = (), allowed_mask: np.ndarray | jax.Array | None = None,
             mask_phase: int | Sequence[int] = 0, pad_prompts_to: int = 1, mesh: Mesh | None = None,
             rules: ShardingRules | None = None) -> list[np.ndarray]:
  """Continues each prompt with up to `max_new_tokens` tokens.

  Args:
    params: the model's parameter tree (unboxed, e.g. `TrainState.params`), on any devices.
    cfg: its configuration (`attention='xla'/'cudnn'` decodes with the einsum path, the same function).
    prompts: 1-D int token arrays, one per row, of any (nonzero) lengths.
    max_new_tokens: the most tokens generated per row.
    sampling: greedy (the default) or temperature / top-k / top-p sampling.
    rng: a `jax.random.key`, for sampling (default key 0).
    stop_tokens: ids that end a row (e.g. the text EOS).
    allowed_mask: [vocab] bool, the only tokens that may be generated (constrained decoding, e.g.
      `sampling.allowed_mask(spec, 'semantic', stop_tokens=...)`), or [period, vocab]: a periodic constraint
      (see the module docstring); None = any.
    mask_phase: with a periodic mask, the mask row of each row's first new token (one int for every row).
    pad_prompts_to: the prefill length is the longest prompt rounded up to a multiple of this, so that calls
      with prompts of similar lengths share one compilation (the padding is invisible to the result).
    mesh, rules: lay parameters, prompts and cache out on `mesh` by `rules` (default `ShardingRules()`).
  Returns:
    per prompt, the new tokens only (int32): cut after the first stop token, which is included (so a row
    that stopped can be told from one that ran out of `max_new_tokens`).
  """
  if max_new_tokens < 1:
    raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
  rows = [np.asarray(p, np.int32).reshape(-1) for p in prompts]
  if not rows:
    return []
  for i, row in enumerate(rows):
    if row.size == 0:
      raise ValueError(f"generate: prompt {i} is empty (decoding needs at least one token to condition on)")
    if row.min() < 0 or row.max() >= cfg.vocab_size:
      raise ValueError(f"generate: prompt {i} has ids outside the vocabulary of {cfg.vocab_size}")
  stops = tuple(int(t) for t in stop_tokens)
  if any(not 0 <= t < cfg.vocab_size for t in stops):
    raise ValueError(f"generate: stop tokens {list(stops)} must be ids of the vocabulary of {cfg.vocab_size}")
  allowed = None
  if allowed_mask is not None:
    allowed = jnp.asarray(allowed_mask, jnp.bool_)
    allowed = allowed[None] if allowed.ndim == 1 else allowed  # [period, vocab]
    if allowed.ndim != 2 or allowed.shape[1] != cfg.vocab_size or not bool(allowed.any(axis=1).all()):
      raise ValueError(f"generate: allowed_mask must be a [{cfg.vocab_size}] or [period, {cfg.vocab_size}] bool "
                       f"mask allowing some token in every row, got shape {allowed.shape}")
  rng = jax.random.key(0) if rng is None else rng
  shards = batch_multiple(mesh, rules)
  batch = -(-len(rows) // shards) * shards  # dummy rows (one token, already done) fill the last shard
  if pad_prompts_to < 1:
    raise ValueError(f"generate: pad_prompts_to must be >= 1, got {pad_prompts_to}")
  prompt_len = -(-max(row.size for row in rows) // pad_prompts_to) * pad_prompts_to
  tokens = np.zeros((batch, prompt_len), np.int32)
  lengths = np.ones((batch,), np.int32)
  for i, row in enumerate(rows):
    tokens[i, :row.size] = row
    lengths[i] = row.size
  done = np.arange(batch) >= len(rows)
  phase = np.zeros((batch,), np.int32)
  phase[:len(rows)] = np.broadcast_to(np.asarray(mask_phase, np.int32), (len(rows),))
  static = dict(cfg=cfg, max_new_tokens=max_new_tokens, sampling=sampling)
  stop_ids = jnp.asarray(stops, jnp.int32).reshape(-1)

  run = lambda p, tokens, lengths, done, phase, **layout: _generate(  # noqa: E731
      p, tokens, lengths, done, rng, stop_ids, allowed, phase, **layout, **static)
  out, steps = run_on_mesh(run, params, cfg, (tokens, lengths, done, phase), prompt_len + max_new_tokens, mesh, rules)
  out, steps = np.asarray(out), int(steps)
  return [cut_at_stop(out[i, :steps], stops) for i in range(len(rows))]
