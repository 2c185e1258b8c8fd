"""The codec behind the AudioTokenizer interface: shapes, lengths, identity, chunking, registry."""

import jax
import numpy as np
import pytest

from audiopalm.codec import checkpoint
from audiopalm.codec.model import Codec, init_variables
from audiopalm.codec.tokenizer import CodecTokenizer
from audiopalm.main.presets import codec_preset
from audiopalm.tokenizers import PAD_TOKEN, AudioTokenizer, load_tokenizer, registered

CFG = codec_preset("tiny")  # hop 8


def _codec(seed: int = 0) -> Codec:
  return Codec(CFG, init_variables(CFG, jax.random.key(seed)))


def test_interface_shapes_and_padding():
  tok = CodecTokenizer(_codec(), num_levels=3)
  assert isinstance(tok, AudioTokenizer)
  assert (tok.kind, tok.sample_rate, tok.num_codebooks, tok.vocab_size) == ("codec", CFG.sample_rate, 3, 16)
  assert tok.frame_rate == CFG.sample_rate / CFG.hop_length
  waves = np.random.default_rng(0).normal(size=(2, 100)).astype(np.float32) * 0.1
  tokens, lengths = tok.encode(waves, np.array([100, 41]))
  assert tokens.shape == (2, 13, 3) and tokens.dtype == np.int32
  np.testing.assert_array_equal(lengths, [13, 6])
  np.testing.assert_array_equal(tok.num_frames([100, 41]), [13, 6])
  assert (np.asarray(tokens[1, 6:]) == PAD_TOKEN).all() and (np.asarray(tokens[1, :6]) >= 0).all()
  alone, _ = tok.encode(waves[1:, :41], np.array([41]))
  np.testing.assert_array_equal(tokens[1, :6], alone[0])


def test_long_recordings_are_chunked_with_the_same_codes():
  waves = np.random.default_rng(1).normal(size=(1, 4000)).astype(np.float32) * 0.1
  whole = CodecTokenizer(_codec(), chunk_seconds=None).encode(waves, np.array([3999]))
  chunked = CodecTokenizer(_codec(), chunk_seconds=800 / CFG.sample_rate).encode(waves, np.array([3999]))
  np.testing.assert_array_equal(whole[0], chunked[0])
  np.testing.assert_array_equal(whole[1], chunked[1])


def test_identity_names_weights_and_levels():
  a, b = CodecTokenizer(_codec(0)), CodecTokenizer(_codec(0))
  assert a.identity == b.identity and a.identity.startswith("codec-")
  assert CodecTokenizer(_codec(1)).identity != a.identity
  assert CodecTokenizer(_codec(0), num_levels=2).identity != a.identity


def test_registry_loads_a_codec_checkpoint_by_path(tmp_path):
  checkpoint.save_codec(str(tmp_path / "codec"), CFG, init_variables(CFG, jax.random.key(0)))
  assert {"codec", "semantic"} <= set(registered())
  tok = load_tokenizer("codec", str(tmp_path / "codec"), num_levels=2)
  assert tok.num_codebooks == 2 and tok.identity == CodecTokenizer(_codec(0), num_levels=2).identity
  with pytest.raises(ValueError, match="unknown audio tokenizer kind 'nope'.*codec"):
    load_tokenizer("nope", str(tmp_path))
  with pytest.raises(ValueError, match="num_levels must be in 1..4"):
    load_tokenizer("codec", str(tmp_path / "codec"), num_levels=5)
