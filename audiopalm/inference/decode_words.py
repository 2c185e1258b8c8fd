"""Generation that interleaves given words with sampled audio: word-interleaved TTS with a KV cache.

    out = generate_words(params, cfg, prompts, words, audio_range=(start, end), eos_id=eos, max_new_tokens=N)

A word-interleaved TTS model (`formats.audiopalm_tasks`, `TtsConfig.word_interleaved`) was trained on

    [TTS <lang>] ␣ transcript ␣w_1 audio(w_1) ␣w_2 audio(w_2) ... ␣w_W audio(w_W) EOS

where only the first token of each later word is an output: the model ends a word's audio by starting the next
word, and the rest of that word is given. Generation does the same, per row, in one compiled loop: each step
samples from the audio range, the text tokens and EOS (`allowed`); an audio token is kept; any other token (or the
`max_word_tokens`-th audio token of one word in a row) ends the word: the next word's tokens are written in its
place, one per step, and sampling resumes after them. Once every word has been written, a non-audio token ends
the row with EOS. So the text is said in order, word by word, and the model decides only how long each word lasts
and what it sounds like.

One prefill of the right-padded prompts [batch, P] (each ends with its first word), then a `lax.while_loop` of
single-token steps (as `inference.decode`) until every row has ended or after `max_new_tokens`. Shapes are fixed
(batch, longest prompt, longest word list, `max_new_tokens`): one compilation serves every call with them.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from audiopalm.inference.decode import batch_multiple, constrain_tree, cut_at_stop, run_on_mesh
from audiopalm.inference.sampling import SamplingConfig, sample
from audiopalm.model import KVCache, Transformer, TransformerConfig, init_cache
from audiopalm.sharding.rules import ShardingRules


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "max_word_tokens", "audio_range", "eos_id",
                                             "sampling", "cache_sharding", "logical_rules"))
def _generate_words(params: Any, tokens: jax.Array, prompt_lengths: jax.Array, queue: jax.Array,
                    queue_lengths: jax.Array, word_start: jax.Array, allowed: jax.Array, rng: jax.Array, *,
                    cfg: TransformerConfig, max_new_tokens: int, max_word_tokens: int, audio_range: tuple[int, int],
                    eos_id: int, sampling: SamplingConfig, cache_sharding: KVCache | None,
                    logical_rules: Any) -> tuple[jax.Array, jax.Array]:
  """tokens [batch, P] right-padded, prompt_lengths [batch]; queue [batch, Q] the later words' tokens end to end,
  queue_lengths [batch], word_start [batch, Q] (True at each word's first token); allowed [vocab] bool.
  Returns (new tokens [batch, max_new_tokens] int32, valid up to each row's EOS; steps)."""
  del logical_rules  # keys the compilation cache only
  model = Transformer(cfg)
  variables = {"params": params}
  batch, prompt_len = tokens.shape
  rows = jnp.arange(batch)
  start, end = audio_range

  def pick(logits, rng, ptr, forcing, run, done):
    sampled = sample(logits, rng, sampling, allowed)  # [batch]
    audio = (sampled >= start) & (sampled < end)
    ends_word = forcing | ~audio | (run >= max_word_tokens)
    more = ptr < queue_lengths
    queued = queue[rows, jnp.minimum(ptr, queue.shape[1] - 1)]
    token = jnp.where(ends_word, jnp.where(more, queued, eos_id), sampled)
    token = jnp.where(done, eos_id, token)
    next_ptr = jnp.where(ends_word & more & ~done, ptr + 1, ptr)
    following = word_start[rows, jnp.minimum(next_ptr, queue.shape[1] - 1)]
    forcing = ends_word & more & ~done & (next_ptr < queue_lengths) & ~following
    run = jnp.where(ends_word, 0, run + 1)
    done = done | (ends_word & ~more)
    return token.astype(jnp.int32), next_ptr, forcing, run, done

  cache = constrain_tree(init_cache(cfg, batch, prompt_len + max_new_tokens), cache_sharding)
  logits, cache = model.apply(variables, tokens, cache, prompt_lengths, prompt_lengths - 1,
                              method=Transformer.decode)  # [batch, 1, vocab]
  zeros, false = jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), bool)
  rng, key = jax.random.split(rng)
  token, ptr, forcing, run, done = pick(logits[:, 0], key, zeros, false, zeros, false)
  out = jnp.zeros((batch, max_new_tokens), jnp.int32).at[:, 0].set(token)

  def cond(state):
    step, *_, done, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(state):
    step, token, cache, out, ptr, forcing, run, done, rng = state
    logits, cache = model.apply(variables, token[:, None], cache, method=Transformer.decode)  # [batch, 1, vocab]
    rng, key = jax.random.split(rng)
    token, ptr, forcing, run, done = pick(logits[:, 0], key, ptr, forcing, run, done)
    return (step + 1, token, constrain_tree(cache, cache_sharding), out.at[:, step].set(token), ptr, forcing, run,
            done, rng)

  steps, *_ = state = jax.lax.while_loop(cond, body, (jnp.int32(1), token, cache, out, ptr, forcing, run, done, rng))
  return state[3], steps


def generate_words(params: Any, cfg: TransformerConfig, prompts: Sequence[np.ndarray],
                   words: Sequence[Sequence[np.ndarray]], *, audio_range: tuple[int, int], eos_id: int,
                   max_new_tokens: int, allowed: np.ndarray, max_word_tokens: int = 64,
                   sampling: SamplingConfig = SamplingConfig(), rng: jax.Array | None = None, pad_prompts_to: int = 1,
                   mesh: Mesh | None = None, rules: ShardingRules | None = None) -> list[np.ndarray]:
  """Continues each prompt (ending with its first word) with audio, giving its later `words` in turn (module
  docstring).

  Args:
    params, cfg: the model.
    prompts: int arrays [P_i >= 1].
    words: per prompt, the token ids of each later word (each non-empty).
    audio_range: [start, end) of the audio tokens (the semantic range).
    eos_id: ends a row.
    max_new_tokens: steps at most (words included).
    allowed: [vocab] bool, what may be sampled: the audio range, and the tokens that may end a word.
    max_word_tokens: audio tokens of one word in a row at most (then the next word is given).
    sampling, rng: temperature etc.; rng a `jax.random.key` (default key 0).
    pad_prompts_to: the prefill is the longest prompt rounded up to a multiple of this (fewer compilations).
    mesh, rules: lay the model and the batch out on `mesh` (as `decode.generate`).
  Returns:
    per prompt, its new tokens up to and including EOS (or `max_new_tokens` of them).
  """
  if len(words) != len(prompts):
    raise ValueError(f"generate_words: {len(prompts)} prompts but {len(words)} word lists")
  if max_new_tokens < 1 or max_word_tokens < 1 or pad_prompts_to < 1:
    raise ValueError("generate_words: max_new_tokens, max_word_tokens and pad_prompts_to must be >= 1")
  allowed = np.asarray(allowed, bool)
  if allowed.shape != (cfg.vocab_size,) or not allowed[audio_range[0]:audio_range[1]].any():
    raise ValueError(f"generate_words: allowed must be [{cfg.vocab_size}] bool and allow audio tokens")
  rows = [np.asarray(p, np.int32).reshape(-1) for p in prompts]
  if not rows:
    return []
  if any(r.size < 1 or r.min() < 0 or r.max() >= cfg.vocab_size for r in rows):
    raise ValueError(f"generate_words: prompts must be non-empty ids in [0, {cfg.vocab_size})")
  lists = [[np.asarray(w, np.int32).reshape(-1) for w in ws] for ws in words]
  if any(w.size < 1 for ws in lists for w in ws):
    raise ValueError("generate_words: every word needs at least one token")
  shards = batch_multiple(mesh, rules)
  batch = -(-len(rows) // shards) * shards  # copies of the first prompt fill the last shard
  rows, lists = rows + [rows[0]] * (batch - len(rows)), lists + [lists[0]] * (batch - len(lists))
  prompt_len = -(-max(r.size for r in rows) // pad_prompts_to) * pad_prompts_to
  queue_len = max(1, max(sum(w.size for w in ws) for ws in lists))
  tokens = np.zeros((batch, prompt_len), np.int32)
  lengths = np.array([r.size for r in rows], np.int32)
  queue = np.zeros((batch, queue_len), np.int32)
  queue_lengths = np.zeros((batch,), np.int32)
  starts = np.zeros((batch, queue_len), bool)
  for i, (row, ws) in enumerate(zip(rows, lists)):
    tokens[i, :row.size] = row
    flat = np.concatenate(ws) if ws else np.zeros(0, np.int32)
    queue[i, :flat.size], queue_lengths[i] = flat, flat.size
    starts[i, np.cumsum([0] + [w.size for w in ws[:-1]])[:len(ws)]] = True
  rng = jax.random.key(0) if rng is None else rng
  run = lambda p, tokens, lengths, queue, queue_lengths, starts, **layout: _generate_words(  # noqa: E731
      p, tokens, lengths, queue, queue_lengths, starts, jnp.asarray(allowed), rng, cfg=cfg,
      max_new_tokens=max_new_tokens, max_word_tokens=max_word_tokens, audio_range=tuple(int(x) for x in audio_range),
      eos_id=int(eos_id), sampling=sampling, **layout)
  out, _ = run_on_mesh(run, params, cfg, (tokens, lengths, queue, queue_lengths, starts), prompt_len + max_new_tokens,
                       mesh, rules)
  out = np.asarray(out)
  return [cut_at_stop(out[i], (int(eos_id),)) for i in range(len(prompts))]
