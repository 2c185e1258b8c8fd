"""Fitting a semantic tokenizer end to end on a few files: statistics, k-means, directory, refusals."""

import numpy as np
import pytest

from audiopalm.audio.io import write_audio
from audiopalm.semantic import fit as fit_lib
from audiopalm.semantic import tokenizer as tok_lib
from audiopalm.semantic.kmeans import KMeansConfig
from audiopalm.semantic.standardize import FeatureStats
from audiopalm.ssl import mfcc
from audiopalm.tokenizers import load_tokenizer


@pytest.fixture(name="corpus")
def _corpus(tmp_path):
  rng = np.random.default_rng(0)
  t = np.arange(48000) / 16000
  for i in range(6):  # tones gliding in pitch: varied spectra
    pitch = 150 + 60 * i + 100 * np.sin(2 * np.pi * 0.5 * t)
    wave = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / 16000) + 0.02 * rng.standard_normal(t.size)
    write_audio(str(tmp_path / "audio" / f"s{i}.flac"), wave[: 16000 + 6000 * i].astype(np.float32), 16000)
  (tmp_path / "audio" / "broken.flac").write_bytes(b"not audio at all")
  mfcc.save_mfcc_encoder(str(tmp_path / "mfcc"), mfcc.MfccConfig())
  return tmp_path


def test_segments_and_buckets():
  pieces = fit_lib.segments(np.zeros(100), 10, 3.0)  # 10 s at 10 Hz, at most 3 s → 4 pieces of 2.5 s
  assert [len(p) for p in pieces] == [25, 25, 25, 25]
  cfg = fit_lib.FeatureDumpConfig(segment_seconds=30.0, bucket_seconds=1.0)
  assert [cfg.bucket(n, 100) for n in (1, 100, 101, 350, 1700, 3000)] == [100, 100, 200, 400, 3000, 3000]


def test_fit_writes_a_tokenizer_that_loads(corpus):
  out = corpus / "tok"
  kmeans = KMeansConfig(num_clusters=8, batch_size=64, max_iters=20, seed=3)
  summary = fit_lib.fit_semantic_tokenizer(
      encoder_path=str(corpus / "mfcc"), layer=0, audio_paths=[str(corpus / "audio")], output_dir=str(out),
      kmeans=kmeans, features=fit_lib.FeatureDumpConfig(segment_seconds=2.0, batch_seconds=8.0),
      copy_encoder=True)
  assert summary["files"] == 6 and summary["failed"] == 1  # the broken file is skipped, with its reason logged
  assert summary["audio_hours"] == pytest.approx((6 * 16000 + 6000 * 15) / 16000 / 3600)
  assert summary["kmeans_steps"] == 20 and not (corpus / "tok.features").exists()
  skipped = (out / fit_lib.SKIPPED_FILE).read_text()
  assert skipped.startswith(str(corpus / "audio" / "broken.flac") + "\t") and "Cannot decode" in skipped
  tok = load_tokenizer("semantic", str(out))  # the copied encoder is found inside the tokenizer directory
  assert tok.identity == summary["identity"] and tok.spec.encoder_path == "encoder"
  assert tok.spec.kmeans["frames"] == summary["frames"] == tok.stats.count
  # The statistics are those of every 25 Hz frame of the corpus, as the tokenizer computes them.
  from audiopalm.audio.io import list_audio_files, load_audio  # pylint: disable=import-outside-toplevel
  rows = []
  for path in list_audio_files([str(corpus / "audio")]):
    if path.endswith("broken.flac"):
      continue
    wave = load_audio(path, 16000)
    for piece in fit_lib.segments(wave, 16000, 2.0):
      features, frames = tok.features(piece[None], [len(piece)])
      rows.append(np.asarray(features[0, :frames[0]]))
  expected = FeatureStats.from_features(np.concatenate(rows))
  assert expected.count == tok.stats.count
  np.testing.assert_allclose(tok.stats.mean, expected.mean, atol=1e-5)
  tokens, lengths = tok.encode(load_audio(str(corpus / "audio" / "s5.flac"), 16000)[None])
  assert len(set(np.asarray(tokens[0, :lengths[0], 0]).tolist())) >= 3  # varied audio → varied tokens
  with pytest.raises(FileExistsError, match="already fitted"):
    fit_lib.fit_semantic_tokenizer(encoder_path=str(corpus / "mfcc"), layer=0, audio_paths=[str(corpus / "audio")],
                                   output_dir=str(out), kmeans=kmeans)


def test_clear_errors(corpus):
  common = dict(encoder_path=str(corpus / "mfcc"), audio_paths=[str(corpus / "audio")],
                output_dir=str(corpus / "x"))
  with pytest.raises(ValueError, match="layer=2 is not in 0..0"):
    fit_lib.fit_semantic_tokenizer(layer=2, **common)
  with pytest.raises(ValueError, match="fewer than num_clusters=100000"):
    fit_lib.fit_semantic_tokenizer(layer=0, kmeans=KMeansConfig(num_clusters=100000), **common)
  with pytest.raises(ValueError, match="fit on local disk"):
    fit_lib.fit_semantic_tokenizer(layer=0, **{**common, "output_dir": "gs://bucket/semantic"})
  with pytest.raises(ValueError, match="sample_fraction must be in"):
    fit_lib.FeatureDumpConfig(sample_fraction=0)
  assert not (corpus / "x" / tok_lib.SPEC_FILE).exists() and not (corpus / "x.features").exists()
