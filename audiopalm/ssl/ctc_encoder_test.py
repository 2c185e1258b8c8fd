"""The CTC unit encoder: batch invariance, locality, layers, save/load through load_encoder, refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.ssl import ctc_encoder as ctc_lib
from audiopalm.ssl import encoder as encoder_lib
from audiopalm.ssl.load import load_encoder

CFG = ctc_lib.CtcEncoderConfig(width=16, num_layers=2, kernel_size=3, alphabet=" AB")
# Features are layer-normalised (unit scale); float32 rounding that varies with the batch shape moves them by
# ~1e-5, reading a padding frame or another recording by far more.
ATOL = 1e-4


def _encoder(cfg=CFG, seed=0):
  x = jnp.zeros((1, 4, cfg.mfcc.dim))
  params = ctc_lib.CtcNetwork(cfg).init(jax.random.key(seed), x, jnp.array([4]), cfg.num_layers, True)["params"]
  return ctc_lib.CtcEncoder(cfg, params)


def _waves(lengths, seed=0):
  rng = np.random.default_rng(seed)
  batch = (0.1 * rng.standard_normal((len(lengths), max(lengths)))).astype(np.float32)
  for i, n in enumerate(lengths):
    batch[i, n:] = rng.standard_normal(batch.shape[1] - n)  # garbage past the length must not matter
  return batch


def test_features_are_batch_invariant_at_every_layer():
  lengths = [16000, 7100, 3300]
  batch = _waves(lengths)
  encoder = _encoder()
  assert encoder.frame_rate == 25 and encoder.dim == 16 and encoder.num_layers == 2
  for layer in (0, 1, 2):
    features, frames = encoder.features(batch, lengths, layer)
    np.testing.assert_array_equal(frames, encoder.num_frames(lengths))
    assert features.shape == (3, 24, 16)
    for i, n in enumerate(lengths):
      alone, _ = encoder.features(batch[i:i + 1, :n], [n], layer)
      np.testing.assert_allclose(features[i, :frames[i]], alone[0], atol=ATOL)
      assert not np.asarray(features[i, frames[i]:]).any()


def test_a_frame_reads_only_its_receptive_field():
  """The network's output frame t reads input frames t ± (receptive_field − 1) / 2 only (the MFCC front end's
  per-utterance normalisation is its one global read, tested in mfcc_test)."""
  net = ctc_lib.CtcNetwork(CFG)
  x = np.random.default_rng(1).standard_normal((1, 30, CFG.mfcc.dim)).astype(np.float32)
  params = net.init(jax.random.key(0), x, jnp.array([30]), CFG.num_layers)["params"]
  changed = x.copy()
  changed[0, 20:] += 5.0
  a = net.apply({"params": params}, x, jnp.array([30]), CFG.num_layers)
  b = net.apply({"params": params}, changed, jnp.array([30]), CFG.num_layers)
  reach = (CFG.receptive_field - 1) // 2  # 2 frames on each side
  np.testing.assert_allclose(a[0, :20 - reach], b[0, :20 - reach], atol=1e-6)
  assert not np.allclose(a[0, 20 - reach], b[0, 20 - reach], atol=1e-3)


def test_saved_directory_loads_through_load_encoder(tmp_path):
  encoder = _encoder()
  ctc_lib.save_ctc_encoder(str(tmp_path), CFG, encoder.params)
  loaded = load_encoder(str(tmp_path))
  assert isinstance(loaded, encoder_lib.SslEncoder) and loaded.config == CFG
  wave = _waves([8000])
  np.testing.assert_array_equal(loaded.features(wave, [8000], 2)[0], encoder.features(wave, [8000], 2)[0])
  with pytest.raises(ValueError, match=r"layer must be in 0..2, got 3"):
    loaded.features(wave, [8000], 3)


def test_mismatched_or_unknown_settings_are_refused(tmp_path):
  ctc_lib.save_ctc_encoder(str(tmp_path), CFG, _encoder().params)
  config = (tmp_path / "config.json").read_text()
  (tmp_path / "config.json").write_text(config.replace('"width": 16', '"width": 8'))
  with pytest.raises(ValueError, match=r"weights do not fit the config: .*\(16,\) != \(8,\)"):
    load_encoder(str(tmp_path))
  (tmp_path / "config.json").write_text(config.replace('"width": 16', '"widht": 16'))
  with pytest.raises(ValueError, match=r"unknown CTC encoder settings \['widht'\]"):
    load_encoder(str(tmp_path))
  with pytest.raises(ValueError, match="kernel_size must be odd"):
    ctc_lib.CtcEncoderConfig(kernel_size=4)
  with pytest.raises(ValueError, match="repeated characters"):
    ctc_lib.CtcEncoderConfig(alphabet="ABA")
