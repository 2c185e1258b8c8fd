"""`generate`: greedy tokens equal a naive full-recompute loop, batching changes nothing, stop tokens cut rows,
constrained decoding stays in its modality (sharding: decode_sharded_test.py)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.inference import SamplingConfig, allowed_mask, generate
from audiopalm.inference.decode import _generate
from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer
from audiopalm.vocab.spec import TextVocab, make_spec

TINY = model_preset("tiny")
CONFIGS = {
    "palm": TINY,
    "llama_gqa": TINY.replace(block="sequential", norm="rmsnorm", tie_embeddings=False, num_kv_heads=2,
                              logits_scale_by_inv_sqrt_dim=False),
}
PROMPTS = [np.array([5, 17, 99]), np.array([300, 2, 2, 41, 7, 250, 8]), np.array([64, 65, 66, 67, 68])]
NEW = 8


@functools.cache
def _params(cfg, seed=0):
  """Random weights with the layers' output kernels x10: at init a tied model's residual stream is mostly the
  current token's embedding, so greedy decoding would only repeat the last prompt token."""
  tokens = jnp.zeros((1, 8), jnp.int32)
  params = nn.unbox(Transformer(cfg).init(jax.random.key(seed), tokens, tokens, tokens))["params"]
  return jax.tree_util.tree_map_with_path(lambda path, x: x * 10 if path[-1].key in ("o", "wo") else x, params)


def _naive_greedy(params, cfg, prompt, new):
  """Recomputes the full forward over the whole sequence for every new token (causal: the zeros after the
  current position cannot change its logits)."""
  total = prompt.size + new
  positions = jnp.arange(total, dtype=jnp.int32)[None]
  forward = jax.jit(lambda seq: Transformer(cfg).apply({"params": params}, seq, positions, jnp.ones_like(seq)))
  seq = np.zeros((1, total), np.int32)
  seq[0, :prompt.size] = prompt
  for i in range(prompt.size, total):
    seq[0, i] = int(np.argmax(np.asarray(forward(jnp.asarray(seq)))[0, i - 1]))
  return seq[0, prompt.size:]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_greedy_equals_naive_recomputation(name):
  cfg = CONFIGS[name]
  params = _params(cfg)
  got = generate(params, cfg, PROMPTS[1:2], NEW)
  assert len(set(got[0].tolist())) > 2  # not a degenerate repetition
  np.testing.assert_array_equal(got[0], _naive_greedy(params, cfg, PROMPTS[1], NEW))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batched_prompts_of_different_lengths_equal_each_alone(name):
  cfg = CONFIGS[name]
  params = _params(cfg)
  batched = generate(params, cfg, PROMPTS, NEW)
  assert [row.shape for row in batched] == [(NEW,)] * len(PROMPTS)
  for prompt, row in zip(PROMPTS, batched):
    np.testing.assert_array_equal(row, generate(params, cfg, [prompt], NEW)[0])


def test_stop_token_cuts_its_row_and_ends_the_loop_early():
  cfg = TINY
  params = _params(cfg)
  free = generate(params, cfg, PROMPTS, NEW)
  first = free[0]
  cut = next(i for i in range(1, NEW) if first[i] not in first[:i] and first[i] not in free[1])
  got = generate(params, cfg, PROMPTS, NEW, stop_tokens=[int(first[cut])])
  np.testing.assert_array_equal(got[0], first[:cut + 1])  # stop token included
  np.testing.assert_array_equal(got[1], free[1])
  stop = int(first[1])  # alone, the row stops at its second token (or first): the loop runs no further
  out, steps = _generate(params, jnp.asarray(PROMPTS[0][None], jnp.int32), jnp.asarray([3], jnp.int32),
                         jnp.asarray([False]), jax.random.key(0), jnp.asarray([stop], jnp.int32), None,
                         jnp.zeros((1,), jnp.int32), cfg=cfg,
                         max_new_tokens=NEW, sampling=SamplingConfig(), cache_sharding=None, logical_rules=None)
  assert int(steps) == (1 if first[0] == stop else 2)
  np.testing.assert_array_equal(np.asarray(out)[0, :int(steps)], first[:int(steps)])


def test_one_compilation_serves_every_step_and_prompt():
  """Prompts, keys and stop tokens are arguments: same shapes, no new compilation."""
  cfg = TINY
  params = _params(cfg)
  generate(params, cfg, [np.array([1, 2, 3])], NEW, stop_tokens=[2])
  before = _generate._cache_size()
  generate(params, cfg, [np.array([7, 8, 9])], NEW, stop_tokens=[2])
  generate(params, cfg, [np.array([4, 5, 6])], NEW, rng=jax.random.key(3), stop_tokens=[7])
  assert _generate._cache_size() == before


def test_constrained_sampling_stays_in_the_modality():
  text_vocab = TextVocab(kind="byte", size=258, identity="byte", pad_id=0, eos_id=1)
  spec = make_spec(text_vocab, semantic=(100, "semantic-test"), acoustic=[(64, "codec-test")], specials=("<sep>",))
  cfg = TINY.replace(vocab_size=spec.size)
  params = _params(cfg, seed=1)
  prompts = [np.array([5, 6, 7]), np.array([spec.semantic.offset + 3, 9])] * 4
  stops = [spec.special_id("<sep>")]

  def sampled(mask):  # temperature 1: every allowed token has a fair chance
    out = generate(params, cfg, prompts, 24, sampling=SamplingConfig(temperature=1.0), rng=jax.random.key(7),
                   stop_tokens=stops, allowed_mask=mask)
    return np.concatenate(out)

  for modality in ("text", "semantic"):
    mask = allowed_mask(spec, modality, stop_tokens=stops)
    tokens = sampled(mask)
    assert tokens.size >= 24 and mask[tokens].all(), modality
    assert len(np.unique(tokens)) > 20  # really sampling, not stuck on one token
    unconstrained = sampled(np.ones(cfg.vocab_size, bool))
    assert not mask[unconstrained].all()  # the random model does leave the modality when allowed to


def test_periodic_mask_constrains_each_step_by_its_phase():
  """A [period, vocab] mask: row b's k-th new token comes from mask row (phase[b] + k) % period."""
  text_vocab = TextVocab(kind="byte", size=258, identity="byte", pad_id=0, eos_id=1)
  spec = make_spec(text_vocab, acoustic=[(64, "codec-test")] * 3)
  cfg = TINY.replace(vocab_size=spec.size)
  params = _params(cfg, seed=2)
  levels = np.stack([allowed_mask(spec, f"acoustic_{q}") for q in range(3)])  # [3, vocab]
  phases = [0, 2, 1, 0]
  prompts = [np.array([5, 6, 7]), np.array([9]), np.array([spec.acoustic[0].offset, 3]), np.array([1, 2])]
  out = generate(params, cfg, prompts, 10, sampling=SamplingConfig(temperature=1.0), rng=jax.random.key(1),
                 allowed_mask=levels, mask_phase=phases)
  for row, phase in zip(out, phases):
    assert row.shape == (10,)
    for k, token in enumerate(row):
      assert spec.acoustic[(phase + k) % 3].offset <= token < spec.acoustic[(phase + k) % 3].end
  with pytest.raises(ValueError, match="allowing some token in every row"):
    generate(params, cfg, prompts, 2, allowed_mask=np.concatenate([levels, np.zeros_like(levels[:1])]))
