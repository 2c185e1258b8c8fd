import jax
import numpy as np
import pytest

from audiopalm.codec import config as config_lib
from audiopalm.codec import model as model_lib
from audiopalm.main.presets import codec_preset

# The tiny preset (zero padding, no LSTM) and an EnCodec-like one (reflect padding, LSTM, weight norm).
CONFIGS = {
    "tiny": codec_preset("tiny"),
    "encodec_like": codec_preset("tiny", lstm_layers=2, weight_norm=True, pad_mode="reflect",
                                      residual_conv_shortcut=True, residual_compress=2, residual_kernel_size=3,
                                      encoder_last_kernel_size=7),
}


def _codec(name, seed=0):
  cfg = CONFIGS[name]
  return model_lib.Codec(cfg, model_lib.init_variables(cfg, jax.random.key(seed)))


def _audio(batch, samples, seed=0):
  return (np.random.default_rng(seed).standard_normal((batch, samples)) * 0.3).astype(np.float32)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_chunked_encoding_equals_whole(name):
  codec = _codec(name)
  hop = codec.config.hop_length
  audio, lengths = _audio(2, 101 * hop + 5), np.array([101 * hop + 5, 60 * hop + 1])
  whole, whole_lengths = codec.encode(audio, lengths)
  for frames in (model_lib.min_stream_frames(codec.config), 16, 33):
    chunked, chunked_lengths = codec.encode_chunked(audio, lengths, chunk_seconds=frames * hop / codec.sample_rate)
    np.testing.assert_array_equal(chunked, np.asarray(whole))
    np.testing.assert_array_equal(chunked_lengths, np.asarray(whole_lengths))


def test_reflect_padding_refuses_too_short_chunks():
  codec = _codec("encodec_like")
  hop, need = codec.config.hop_length, model_lib.min_stream_frames(codec.config)
  assert need > 1
  chunks = [_audio(1, (need - 1) * hop)] * 2
  with pytest.raises(ValueError, match="too short"):
    list(codec.encode_stream(chunks))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_padding_never_leaks_into_real_frames(name):
  codec = _codec(name)
  hop = codec.config.hop_length
  short = _audio(1, 23 * hop + 7, seed=1)
  alone, alone_lengths = codec.encode(short)
  batch = np.concatenate([np.pad(short, ((0, 0), (0, 30 * hop))), _audio(1, 53 * hop + 7, seed=2)])
  batch[0, short.shape[1]:] = 5.0  # garbage after the end must not matter
  codes, code_lengths = codec.encode(batch, np.array([short.shape[1], batch.shape[1]]))
  assert int(code_lengths[0]) == int(alone_lengths[0]) == 24
  np.testing.assert_array_equal(np.asarray(codes)[0, :24], np.asarray(alone)[0])
  assert np.all(np.asarray(codes)[0, 24:] == model_lib.PAD_CODE)

  audio, audio_lengths = codec.decode(codes, code_lengths)
  solo_audio, _ = codec.decode(alone, alone_lengths)
  assert int(audio_lengths[0]) == 24 * hop and audio.shape == (2, codes.shape[1] * hop)
  np.testing.assert_allclose(np.asarray(audio)[0, :24 * hop], np.asarray(solo_audio)[0], atol=1e-5)
  assert np.all(np.asarray(audio)[0, 24 * hop:] == 0)


def test_fewer_levels_and_bitrate():
  codec = _codec("tiny")
  audio = _audio(1, 40 * codec.config.hop_length)
  all_codes, _ = codec.encode(audio)
  two, _ = codec.encode(audio, num_levels=2)
  np.testing.assert_array_equal(np.asarray(two), np.asarray(all_codes)[..., :2])
  assert codec.decode(two)[0].shape == (1, audio.shape[1])
  with pytest.raises(ValueError, match="num_levels"):
    codec.encode(audio, num_levels=5)
  assert codec_preset("soundstream_16khz").bitrate() == 6000.0
  assert codec_preset("encodec_24khz").bitrate(8) == 6000.0


@pytest.mark.parametrize("name,params_millions", [("soundstream_16khz", None), ("soundstream_24khz", None),
                                                  ("encodec_24khz", 14.85)])
def test_presets_build_abstractly(name, params_millions):
  cfg = codec_preset(name)
  variables = jax.eval_shape(lambda: model_lib.init_variables(cfg, jax.random.key(0)))
  assert variables["codebooks"]["embed"].shape == (cfg.num_quantizers, cfg.codebook_size, cfg.latent_dim)
  latents = jax.eval_shape(
      lambda p, x: model_lib.CodecNetwork(cfg).apply({"params": p}, x, method=model_lib.CodecNetwork.encode)[0],
      variables["params"], jax.ShapeDtypeStruct((2, cfg.sample_rate), np.float32))
  assert latents.shape == (2, round(cfg.frame_rate), cfg.latent_dim)
  if params_millions:
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert abs(count / 1e6 - params_millions) < 0.01


def test_bad_config_is_named():
  with pytest.raises(ValueError, match="pad_mode"):
    config_lib.CodecConfig(pad_mode="edge")
  with pytest.raises(ValueError, match="unknown codec preset"):
    codec_preset("nope")
