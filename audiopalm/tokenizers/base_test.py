"""Both tokenizer kinds are selected by name and path from gin, and meet the same interface."""

import gin
import jax
import numpy as np
import pytest

from audiopalm.codec import checkpoint
from audiopalm.codec.model import init_variables
from audiopalm.main import configurables
from audiopalm.main.presets import codec_preset
from audiopalm.tokenizers import PAD_TOKEN, AudioTokenizer, register

SEMANTIC = "audiopalm/data/assets/demo_semantic"


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _from_gin(kind: str, path: str):
  gin.parse_config([f"load_tokenizer.kind = '{kind}'", f"load_tokenizer.path = '{path}'"])
  return configurables.load_tokenizer()


def test_gin_selects_either_kind_and_both_meet_the_interface(tmp_path):
  cfg = codec_preset("tiny", sample_rate=16000)
  checkpoint.save_codec(str(tmp_path / "codec"), cfg, init_variables(cfg, jax.random.key(0)))
  lengths = np.array([8000, 5000])
  waves = (0.1 * np.random.default_rng(0).standard_normal((2, 8000))).astype(np.float32)
  for kind, path, codebooks in (("semantic", SEMANTIC, 1), ("codec", str(tmp_path / "codec"), cfg.num_quantizers)):
    tok = _from_gin(kind, path)
    gin.clear_config()
    assert isinstance(tok, AudioTokenizer) and tok.kind == kind and tok.num_codebooks == codebooks
    tokens, token_lengths = tok.encode(waves, lengths)
    assert tokens.shape == (2, int(token_lengths[0]), codebooks) and tokens.dtype == np.int32
    np.testing.assert_array_equal(token_lengths, tok.num_frames(lengths))
    np.testing.assert_allclose(np.asarray(token_lengths) / tok.frame_rate, lengths / 16000, atol=2.5 / tok.frame_rate)
    valid = np.arange(tokens.shape[1])[None, :] < np.asarray(token_lengths)[:, None]
    assert ((np.asarray(tokens) >= 0) & (np.asarray(tokens) < tok.vocab_size))[valid].all()
    assert (np.asarray(tokens)[~valid] == PAD_TOKEN).all()


def test_a_kind_registers_once():
  loader = register("test_kind_once")(lambda path: None)
  assert register("test_kind_once")(loader) is loader  # the same loader again is fine (module reloads)
  with pytest.raises(ValueError, match="already registered"):
    register("test_kind_once")(lambda path: None)
