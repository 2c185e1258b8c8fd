import jax.numpy as jnp
import numpy as np

from audiopalm.model import cross_entropy_with_z_loss


def test_matches_numpy_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 11)).astype(np.float32) * 3
  targets = rng.integers(0, 11, (2, 5))
  weights = rng.integers(0, 2, (2, 5)).astype(np.float32)
  ce, zl, w = cross_entropy_with_z_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), 1e-4)
  log_z = np.log(np.exp(logits.astype(np.float64)).sum(-1))
  ref_ce = ((log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0]) * weights).sum()
  np.testing.assert_allclose(float(ce), ref_ce, rtol=1e-5)
  np.testing.assert_allclose(float(zl), (1e-4 * log_z**2 * weights).sum(), rtol=1e-5)
  assert float(w) == weights.sum()


def test_zero_weights_contribute_nothing():
  logits = jnp.zeros((1, 3, 4)).at[0, 2].set(100.0)
  ce, zl, w = cross_entropy_with_z_loss(logits, jnp.zeros((1, 3), jnp.int32), jnp.asarray([[1.0, 1.0, 0.0]]), 1e-4)
  np.testing.assert_allclose(float(ce), 2 * np.log(4), rtol=1e-6)
  assert float(w) == 2.0


def test_nonfinite_logits_at_untrained_positions_do_not_leak():
  logits = jnp.zeros((1, 2, 4)).at[0, 1].set(jnp.nan)
  ce, zl, _ = cross_entropy_with_z_loss(logits, jnp.zeros((1, 2), jnp.int32), jnp.asarray([[1.0, 0.0]]), 1e-4)
  assert np.isfinite(float(ce)) and np.isfinite(float(zl))


def test_multi_stream_loss_is_each_stream_a_softmax_over_its_own_range():
  """Stream s of [batch, length, streams] targets is scored against the logits of its range only."""
  rng = np.random.default_rng(1)
  ranges = ((3, 7), (7, 12), (12, 14))
  logits = rng.normal(size=(2, 4, 16)).astype(np.float32) * 2
  targets = np.stack([rng.integers(a, b, (2, 4)) for a, b in ranges], axis=-1)
  weights = rng.integers(0, 2, (2, 4, 3)).astype(np.float32)
  ce, zl, w = cross_entropy_with_z_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), 1e-4,
                                        stream_vocab=ranges)
  ref_ce = ref_zl = 0.0
  for b in range(2):  # the naive loop: every position, every stream
    for t in range(4):
      for s, (lo, hi) in enumerate(ranges):
        log_z = np.log(np.exp(logits[b, t, lo:hi].astype(np.float64)).sum())
        ref_ce += weights[b, t, s] * (log_z - logits[b, t, targets[b, t, s]])
        ref_zl += weights[b, t, s] * 1e-4 * log_z ** 2
  np.testing.assert_allclose(float(ce), ref_ce, rtol=1e-5)
  np.testing.assert_allclose(float(zl), ref_zl, rtol=1e-5)
  assert float(w) == weights.sum()
