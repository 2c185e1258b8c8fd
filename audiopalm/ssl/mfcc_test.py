"""MFCC encoder: the DCT, deltas and normalisation against numpy/scipy, batch invariance, save/load."""

import numpy as np
import pytest
import scipy.fft

from audiopalm.ssl import encoder as encoder_lib
from audiopalm.ssl import fbank as fbank_lib
from audiopalm.ssl import mfcc as mfcc_lib
from audiopalm.ssl.load import load_encoder

CFG = mfcc_lib.MfccConfig()
# Features are unit-variance; float32 log-mel/FFT rounding (which varies with the batch shape XLA vectorises
# over) moves them by ~1e-5, a real mistake (a wrong delta, an unmasked mean) by far more than 1e-2.
ATOL = 1e-4


def _numpy_reference(waveform: np.ndarray, cfg: mfcc_lib.MfccConfig) -> np.ndarray:
  """MFCC + Δ + ΔΔ, CMVN, stacking, in float64 numpy from the (separately tested) JAX log mel."""
  fb = fbank_lib.FbankConfig(sample_rate=cfg.sample_rate, num_mel_bins=cfg.num_mel_bins, stride=1)
  log_mel = np.asarray(fbank_lib.log_mel(fb, waveform[None]), np.float64)[0]  # [n, mels]
  ceps = scipy.fft.dct(log_mel, type=2, norm="ortho", axis=-1)[:, :cfg.num_ceps]
  parts = [ceps]
  for _ in range(cfg.delta_order):
    x, n = parts[-1], parts[-1].shape[0]
    padded = np.concatenate([np.repeat(x[:1], cfg.delta_window, 0), x, np.repeat(x[-1:], cfg.delta_window, 0)])
    w = cfg.delta_window
    parts.append(sum(k * (padded[w + k:w + k + n] - padded[w - k:w - k + n]) for k in range(1, w + 1))
                 / (2 * sum(k * k for k in range(1, w + 1))))
  x = np.concatenate(parts, -1)
  x = (x - x.mean(0)) / np.sqrt(x.var(0) + mfcc_lib.VARIANCE_EPS)
  stacked = x.shape[0] // cfg.stride
  return x[:stacked * cfg.stride].reshape(stacked, -1)


def _waves(lengths, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(max(lengths)) / 16000
  batch = np.stack([0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) for i in range(len(lengths))])
  batch = (batch + 0.05 * rng.standard_normal(batch.shape)).astype(np.float32)
  for i, n in enumerate(lengths):
    batch[i, n:] = rng.standard_normal(batch.shape[1] - n)  # garbage past the length must not matter
  return batch


def test_matches_a_numpy_reference_and_is_batch_invariant():
  lengths = [16000, 9123, 2001]
  batch = _waves(lengths)
  encoder = mfcc_lib.MfccEncoder(CFG)
  features, frames = encoder.features(batch, lengths, 0)
  np.testing.assert_array_equal(frames, encoder.num_frames(lengths))
  assert features.shape == (3, 49, CFG.dim) and CFG.dim == 78 and encoder.frame_rate == 50
  for i, n in enumerate(lengths):
    ref = _numpy_reference(batch[i, :n], CFG)
    assert ref.shape[0] == frames[i]
    np.testing.assert_allclose(features[i, :frames[i]], ref, atol=ATOL)
    assert not np.asarray(features[i, frames[i]:]).any()
    alone, _ = encoder.features(batch[i:i + 1, :n], [n], 0)
    np.testing.assert_allclose(features[i, :frames[i]], alone[0], atol=ATOL)


def test_saved_directory_loads_through_load_encoder(tmp_path):
  cfg = mfcc_lib.MfccConfig(num_ceps=10, delta_order=1, stride=1)
  mfcc_lib.save_mfcc_encoder(str(tmp_path), cfg)
  encoder = load_encoder(str(tmp_path))
  assert isinstance(encoder, encoder_lib.SslEncoder) and encoder.config == cfg and encoder.dim == 20
  with pytest.raises(ValueError, match="only layer 0"):
    encoder.features(np.zeros((1, 800), np.float32), [800], 1)
  (tmp_path / "config.json").write_text('{"model_type": "audiopalm-mfcc", "num_cepz": 3}')
  with pytest.raises(ValueError, match="unknown MFCC settings.*num_cepz"):
    load_encoder(str(tmp_path))
  with pytest.raises(ValueError, match="num_ceps=50 must be in 1..num_mel_bins=40"):
    mfcc_lib.MfccConfig(num_ceps=50)
