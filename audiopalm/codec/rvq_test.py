import jax
import jax.numpy as jnp
import numpy as np

from audiopalm.codec import rvq
from audiopalm.main.presets import codec_preset

CFG = codec_preset("tiny")  # 4 levels × 16 codes × 8 dims


def _clusters(key, n=400, k=5, d=8, spread=0.01):
  """n points around k well-separated centres."""
  key_c, key_a, key_n = jax.random.split(key, 3)
  centres = jax.random.normal(key_c, (k, d)) * 3.0
  assign = jax.random.randint(key_a, (n,), 0, k)
  return centres[assign] + spread * jax.random.normal(key_n, (n, d)), centres


def test_kmeans_finds_separated_clusters():
  x, centres = _clusters(jax.random.key(0))
  found, counts = rvq.kmeans(jax.random.key(1), x, jnp.ones(x.shape[0]), 5, 20)
  dist = jnp.min(jnp.sum((centres[:, None] - found[None]) ** 2, -1), axis=1)
  assert float(jnp.max(dist)) < 1e-2 and float(jnp.sum(counts)) == x.shape[0]


def test_kmeans_ignores_zero_weight_rows_and_handles_fewer_points_than_codes():
  x, _ = _clusters(jax.random.key(0), n=6, k=2)
  x = jnp.concatenate([x, jnp.full((4, 8), 100.0)])  # padding rows far away, weight 0
  weights = jnp.concatenate([jnp.ones(6), jnp.zeros(4)])
  found, counts = rvq.kmeans(jax.random.key(1), x, weights, 16, 5)
  assert float(jnp.max(jnp.abs(found))) < 50 and float(jnp.sum(counts)) == 6.0


def test_kmeans_init_quantizes_the_first_batch_well():
  z = jax.random.normal(jax.random.key(0), (4, 50, CFG.latent_dim))
  mask = jnp.arange(50)[None] < jnp.array([50, 50, 30, 10])[:, None]
  books = rvq.kmeans_init(CFG, z, mask, jax.random.key(1))
  assert books["embed"].shape == (4, 16, 8)
  np.testing.assert_allclose(books["cluster_size"].sum(-1), float(mask.sum()))
  # Each extra level lowers the error on the batch.
  errors = [float(jnp.mean(((z - rvq.quantize(books["embed"], z, n)[1]) ** 2)[mask])) for n in range(1, 5)]
  assert all(a > b for a, b in zip(errors, errors[1:])), errors
  np.testing.assert_allclose(books["embed_avg"], books["embed"] * books["cluster_size"][..., None], rtol=1e-6)


def test_quantize_is_residual_and_dequantize_inverts():
  books = rvq.init_codebooks(CFG, jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (2, 7, 8))
  codes, quantized = rvq.quantize(books["embed"], z)
  assert codes.shape == (2, 7, 4) and codes.dtype == jnp.int32
  np.testing.assert_allclose(rvq.dequantize(books["embed"], codes), quantized, atol=1e-5)
  first = rvq.nearest(books["embed"][0], z)
  np.testing.assert_array_equal(codes[..., 0], first)
  second = rvq.nearest(books["embed"][1], z - books["embed"][0][first])
  np.testing.assert_array_equal(codes[..., 1], second)


def test_quantizer_dropout_uses_the_sampled_number_of_levels():
  books = rvq.init_codebooks(CFG, jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (3, 5, 8))
  num_levels = jnp.array([1, 2, 4])
  out = rvq.quantize_train(books, z, jnp.ones((3, 5), bool), num_levels)
  for b, n in enumerate([1, 2, 4]):
    expected = rvq.quantize(books["embed"], z[b:b + 1], n)[1]
    np.testing.assert_allclose(out.quantized[b:b + 1], expected, atol=1e-5)
  np.testing.assert_array_equal(out.active[:, :, 0], [[True] * 3, [False, True, True], [False, False, True],
                                                      [False, False, True]])
  np.testing.assert_allclose(out.counts.sum(-1), [15, 10, 5, 5])
  levels = rvq.sample_num_levels(jax.random.key(2), 10000, 4)
  assert set(np.unique(levels)) == {1, 2, 3, 4} and abs(float(levels.mean()) - 2.5) < 0.05


def test_straight_through_gradient_and_commitment():
  books = rvq.init_codebooks(CFG, jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (2, 5, 8))
  mask, levels = jnp.ones((2, 5), bool), jnp.array([4, 4])
  grad = jax.grad(lambda z: jnp.sum(rvq.quantize_train(books, z, mask, levels).quantized * 3.0))(z)
  np.testing.assert_allclose(grad, 3.0 * jnp.ones_like(z))
  out = rvq.quantize_train(books, z, mask, levels)
  residual, total = z, 0.0
  for q in range(4):
    chosen = books["embed"][q][out.codes[..., q]]
    total += float(jnp.sum((residual - chosen) ** 2))
    residual = residual - chosen
  np.testing.assert_allclose(float(out.commitment_loss), total / (4 * 10 * 8), rtol=1e-5)


def test_padding_frames_contribute_nothing():
  books = rvq.init_codebooks(CFG, jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (2, 6, 8))
  mask = jnp.array([[True] * 6, [True] * 3 + [False] * 3])
  out = rvq.quantize_train(books, z, mask, jnp.array([4, 4]))
  garbage = z.at[1, 3:].set(1e3)
  out2 = rvq.quantize_train(books, garbage, mask, jnp.array([4, 4]))
  for a, b in [(out.counts, out2.counts), (out.sums, out2.sums), (out.commitment_loss, out2.commitment_loss)]:
    np.testing.assert_allclose(a, b, rtol=1e-6)
  np.testing.assert_allclose(out2.quantized[1, 3:], 0.0)  # padding quantizes to silence


def test_ema_update_moves_codes_to_the_mean_of_their_frames():
  books = rvq.init_codebooks(CFG, jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (1, 64, 8))
  out = rvq.quantize_train(books, z, jnp.ones((1, 64), bool), jnp.array([1]))
  new = books
  for _ in range(2000):  # the same batch over and over: codes converge to their cluster means
    new = rvq.ema_update(new, out.counts, out.sums, 0.99, 1e-5)
  used = out.counts[0] > 0
  means = out.sums[0][used] / out.counts[0][used][:, None]
  np.testing.assert_allclose(new["embed"][0][used], means, atol=1e-3)
  np.testing.assert_allclose(new["cluster_size"][0], out.counts[0], atol=1e-3)
  np.testing.assert_allclose(new["embed"][1], books["embed"][1] * 1.0, atol=0.5)  # level 1 unused: decays


def test_dead_codes_are_replaced_by_batch_frames():
  books = rvq.init_codebooks(CFG, jax.random.key(0))
  books["cluster_size"] = books["cluster_size"].at[:2].set(10.0).at[0, :5].set(0.1)
  z = jax.random.normal(jax.random.key(1), (2, 10, 8)) + 50.0  # far from every current code
  mask = jnp.arange(10)[None] < jnp.array([10, 4])[:, None]
  out = rvq.quantize_train(books, z, mask, jnp.array([4, 4]))
  new, replaced = rvq.replace_dead_codes(books, out.residuals, out.active, jax.random.key(2), threshold=2.0)
  np.testing.assert_array_equal(replaced, [5, 0, 16, 16])  # cluster sizes start at 1 < 2 on levels 2, 3
  real_frames = np.asarray(z)[np.asarray(mask)]
  for row in np.asarray(new["embed"][0, :5]):
    assert np.min(np.abs(real_frames - row).sum(-1)) < 1e-5  # a real (not padded) frame of the batch
  np.testing.assert_array_equal(new["embed"][0, 5:], books["embed"][0, 5:])
  np.testing.assert_array_equal(new["embed"][1], books["embed"][1])
  np.testing.assert_allclose(new["cluster_size"][0, :5], 2.0)
  # After replacement the frames find the new codes.
  assert float(rvq.quantize_train(new, z, mask, jnp.array([1, 1])).commitment_loss) < \
      float(out.commitment_loss)


def test_codebook_stats():
  counts = jnp.array([[5.0, 5.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
  perplexity, usage = rvq.codebook_stats(counts)
  np.testing.assert_allclose(perplexity, [2.0, 4.0], rtol=1e-6)
  np.testing.assert_allclose(usage, [0.5, 1.0])
