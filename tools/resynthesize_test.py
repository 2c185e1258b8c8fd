"""Tests of the resynthesis tool with a randomly initialised 'tiny' codec (4 levels, 16 kHz, hop 8)."""

import pathlib
import shutil

import jax
import numpy as np
import pytest
import soundfile as sf

from audiopalm.codec import checkpoint
from audiopalm.codec import model as codec_model
from audiopalm.main.presets import codec_preset
from tools import resynthesize

DEMO = pathlib.Path(__file__).resolve().parents[1] / "audiopalm" / "data" / "assets" / "demo_speech"


def _random_variables(cfg, seed=0):
  """Random weights of the codec's shapes, from numpy (compiling `init_variables` takes ~10 s on CPU)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "embed" or len(leaf.shape) >= 2:
      scale = 1.0 if name == "embed" else np.prod(leaf.shape[:-1]) ** -0.5
      return (rng.standard_normal(leaf.shape) * scale).astype(np.float32)
    return np.full(leaf.shape, 0.0 if name == "bias" else 1.0, np.float32)

  shapes = jax.eval_shape(lambda: codec_model.init_variables(cfg, jax.random.key(0)))
  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("codec") / "tiny"
  cfg = codec_preset("tiny")
  checkpoint.save_codec(str(path), cfg, _random_variables(cfg))
  return str(path)


@pytest.fixture(scope="module")
def flac():
  return sorted(DEMO.glob("test/*/*/*.flac"))[0]


def test_one_file(codec_dir, flac, tmp_path, capsys):
  out, codes_out = tmp_path / "out.wav", tmp_path / "codes.npy"
  status = resynthesize.main(["--codec", codec_dir, "--input", str(flac), "--output", str(out), "--num_levels", "2",
                              "--codes_out", str(codes_out)])
  text = capsys.readouterr().out
  assert status == 0
  audio, rate = sf.read(out)
  assert rate == 16000 and len(audio) == sf.info(flac).frames  # the bundled FLACs are 16 kHz already
  codes = np.load(codes_out)
  assert codes.shape == (-(-len(audio) // 8), 2) and codes.min() >= 0 and codes.max() < 16
  for needle in ("16000 Hz", "frame rate 2000 Hz", "levels: 2 of 4", "bitrate 16 kbps",
                 f"{codes.size} codes", "mel distance:", "SI-SNR:"):
    assert needle in text, (needle, text)


def test_directory_with_a_corrupt_file(codec_dir, flac, tmp_path, capsys):
  src = tmp_path / "in"
  (src / "sub").mkdir(parents=True)
  shutil.copy(flac, src / "sub" / flac.name)
  (src / "broken.flac").write_bytes(b"this is not a FLAC file")
  (src / "notes.txt").write_text("ignored")
  status = resynthesize.main(["--codec", codec_dir, "--input", str(src), "--output", str(tmp_path / "out")])
  captured = capsys.readouterr()
  assert status != 0
  good = tmp_path / "out" / "sub" / (flac.stem + ".wav")
  audio, rate = sf.read(good)
  assert rate == 16000 and len(audio) == sf.info(flac).frames
  assert not (tmp_path / "out" / "broken.wav").exists()
  assert "broken.flac" in captured.err and "FAILED" in captured.out
  assert "1 resynthesized" in captured.out and "1 failed" in captured.out and "| mel distance |" in captured.out


def test_chunked_equals_whole_without_lstm(codec_dir, flac):
  codec = checkpoint.load_codec(codec_dir)
  waveform = sf.read(flac, dtype="float32")[0][:4000]
  codes, audio = resynthesize.resynthesize(codec, waveform, None, None)
  codes_c, audio_c = resynthesize.resynthesize(codec, waveform, None, chunk_seconds=0.05, context_seconds=0.0)
  np.testing.assert_array_equal(codes, codes_c)
  np.testing.assert_allclose(audio, audio_c, atol=1e-5 * max(np.abs(audio).max(), 1e-3))


def test_bad_codec_and_missing_input(codec_dir, tmp_path, capsys):
  assert resynthesize.main(["--codec", str(tmp_path), "--input", "x.flac", "--output", str(tmp_path / "o.wav")]) == 2
  assert "neither a codec checkpoint" in capsys.readouterr().err
  status = resynthesize.main(["--codec", codec_dir, "--input", str(tmp_path / "missing.flac"),
                              "--output", str(tmp_path / "o.wav")])
  assert status == 1 and "Cannot decode audio file" in capsys.readouterr().err
