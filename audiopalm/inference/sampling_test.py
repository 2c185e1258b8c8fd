"""Logit filters on hand-made logits, the sampling order, and modality masks built from a vocabulary spec."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.inference.sampling import SamplingConfig, allowed_mask, sample, top_k_filter, top_p_filter
from audiopalm.vocab.spec import TextVocab, make_spec

BYTE_TEXT = TextVocab(kind="byte", size=258, identity="byte", pad_id=0, eos_id=1)
SPEC = make_spec(BYTE_TEXT, semantic=(100, "semantic-test"), acoustic=[(64, "codec-test")] * 2, specials=("<sep>",))


def _kept(logits) -> list[list[int]]:
  return [np.flatnonzero(np.isfinite(row)).tolist() for row in np.asarray(logits)]


def test_top_k_keeps_exactly_the_k_largest():
  logits = jnp.asarray([[1.0, 5.0, 3.0, 4.0, 0.0],
                        [4.0, 2.0, 2.0, 2.0, -1.0]])  # row 1: a three-way tie at the boundary -> lower ids
  assert _kept(top_k_filter(logits, 2)) == [[1, 3], [0, 1]]
  assert _kept(top_k_filter(logits, 3)) == [[1, 2, 3], [0, 1, 2]]
  kept = np.asarray(top_k_filter(logits, 2))
  np.testing.assert_array_equal(kept[0, [1, 3]], [5.0, 4.0])  # kept logits unchanged
  assert _kept(top_k_filter(logits, 5)) == [[0, 1, 2, 3, 4]] * 2


def test_top_p_keeps_the_smallest_set_reaching_p():
  probs = np.array([[0.5, 0.1, 0.25, 0.15],  # ranked 0, 2, 3, 1: mass before each 0, .5, .75, .9
                    [0.05, 0.05, 0.1, 0.8]])
  logits = jnp.log(jnp.asarray(probs))
  assert _kept(top_p_filter(logits, 0.3)) == [[0], [3]]  # the most likely token always stays
  assert _kept(top_p_filter(logits, 0.7)) == [[0, 2], [3]]
  assert _kept(top_p_filter(logits, 0.85)) == [[0, 2, 3], [2, 3]]
  assert _kept(top_p_filter(logits, 1.0)) == [[0, 1, 2, 3], [0, 1, 2, 3]]
  masked = logits.at[0, 0].set(-jnp.inf)  # already filtered tokens stay filtered; the rest renormalise
  assert _kept(top_p_filter(masked, 0.6)) == [[2, 3], [3]]


def test_sample_greedy_respects_the_allowed_mask():
  logits = jnp.asarray([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 1.0, 0.5]])
  greedy = SamplingConfig()
  np.testing.assert_array_equal(sample(logits, jax.random.key(0), greedy), [1, 0])
  allowed = jnp.asarray([True, False, True, False])
  np.testing.assert_array_equal(sample(logits, jax.random.key(0), greedy, allowed), [2, 0])


def test_sampling_draws_only_filtered_tokens_with_the_right_frequencies():
  logits = jnp.log(jnp.asarray([[0.4, 0.3, 0.2, 0.1]] * 4000))
  draws = np.asarray(sample(logits, jax.random.key(1), SamplingConfig(temperature=1.0, top_k=2)))
  assert set(np.unique(draws)) == {0, 1}
  assert abs((draws == 0).mean() - 0.4 / 0.7) < 0.03
  draws = np.asarray(sample(logits, jax.random.key(2), SamplingConfig(temperature=1.0, top_p=0.8)))
  assert set(np.unique(draws)) == {0, 1, 2}
  cold = np.asarray(sample(logits, jax.random.key(3), SamplingConfig(temperature=0.05)))
  assert (cold == 0).mean() > 0.99  # low temperature approaches argmax


def test_allowed_mask_per_modality():
  eos, sep = SPEC.text.eos_id, SPEC.special_id("<sep>")
  text = allowed_mask(SPEC, "text")
  assert text.shape == (SPEC.size,)
  assert np.flatnonzero(text).tolist() == list(range(1, 258))  # text ids without padding (EOS included)
  semantic = allowed_mask(SPEC, "semantic", stop_tokens=[eos], specials=["<sep>"])
  assert np.flatnonzero(semantic).tolist() == [eos, sep, *range(SPEC.semantic.offset, SPEC.semantic.end)]
  acoustic = allowed_mask(SPEC, "acoustic_1", vocab_size=SPEC.size + 128)
  assert acoustic.shape == (SPEC.size + 128,)
  assert np.flatnonzero(acoustic).tolist() == list(range(SPEC.acoustic[1].offset, SPEC.acoustic[1].end))
  with pytest.raises(ValueError, match="unknown modality 'speech'"):
    allowed_mask(SPEC, "speech")
  with pytest.raises(ValueError, match="smaller than"):
    allowed_mask(SPEC, "text", vocab_size=SPEC.size - 1)


def test_sampling_config_fails_naming_the_field():
  for kwargs, field in [({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 0.0}, "top_p"),
                        ({"top_p": 1.5}, "top_p")]:
    with pytest.raises(ValueError, match=field):
      SamplingConfig(**kwargs)
