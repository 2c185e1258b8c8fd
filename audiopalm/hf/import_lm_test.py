"""Logit parity of imported Llama / Mistral / Gemma checkpoints with `transformers`' torch models (random small
configs), refusals of what the model cannot represent, and sharded import equal to the unsharded one.

Tolerance: logits within 1e-4 of the reference's largest |logit| (float32 on CPU), never loosened.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402

from audiopalm.hf.import_lm import config_from_hf, load_hf_params  # noqa: E402
from audiopalm.hf.tensors import read_config  # noqa: E402
from audiopalm.model import Transformer  # noqa: E402
from audiopalm.model.params import abstract_params  # noqa: E402
from audiopalm.sharding.mesh import MeshConfig, make_mesh  # noqa: E402
from audiopalm.sharding.params import unbox  # noqa: E402
from audiopalm.sharding.rules import ShardingRules, params_shardings  # noqa: E402

TOLERANCE = 1e-4
SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=301,
             max_position_embeddings=256)
CASES = {
    "llama_gqa_untied": (transformers.LlamaConfig, dict(num_key_value_heads=2, tie_word_embeddings=False,
                                                         rope_theta=500000.0)),
    "llama3_rope_tied": (transformers.LlamaConfig, dict(
        num_key_value_heads=1, tie_word_embeddings=True, max_position_embeddings=1024,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64})),
    "mistral_mha": (transformers.MistralConfig, dict(num_key_value_heads=4, sliding_window=None, head_dim=16)),
    "gemma_mqa_tied": (transformers.GemmaConfig, dict(num_key_value_heads=1, head_dim=32)),
}


def _save(tmp_path, config_cls, options, seed=0):
  torch.manual_seed(seed)
  model_cls = {"llama": transformers.LlamaForCausalLM, "mistral": transformers.MistralForCausalLM,
               "gemma": transformers.GemmaForCausalLM}[config_cls.model_type]
  model = model_cls(config_cls(**{**SMALL, **options})).eval()
  with torch.no_grad():  # norms start at 1 (or 0 for Gemma): make them non-trivial so the mapping is tested
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.3 * torch.randn_like(p))
  model.save_pretrained(tmp_path, safe_serialization=True)
  return model


def _tokens():
  rng = np.random.default_rng(0)
  return rng.integers(0, SMALL["vocab_size"], size=(2, 40))


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(tmp_path, case):
  config_cls, options = CASES[case]
  reference = _save(tmp_path, config_cls, options)
  tokens = _tokens()
  with torch.no_grad():
    want = reference(torch.tensor(tokens)).logits.numpy()
  cfg = config_from_hf(read_config(str(tmp_path)))
  params = load_hf_params(str(tmp_path), cfg)
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  got = Transformer(cfg).apply({"params": params}, tokens, positions, np.ones_like(tokens))
  err = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
  assert err <= TOLERANCE, err


def test_llama3_scaling_beyond_the_original_context(tmp_path):
  # Positions past original_max_position_embeddings (64) exercise the Llama 3 frequency scaling.
  config_cls, options = CASES["llama3_rope_tied"]
  reference = _save(tmp_path, config_cls, options, seed=1)
  tokens = np.random.default_rng(1).integers(0, SMALL["vocab_size"], size=(1, 300))
  with torch.no_grad():
    want = reference(torch.tensor(tokens)).logits.numpy()
  cfg = config_from_hf(read_config(str(tmp_path)))
  assert cfg.rope_scaling == (8.0, 1.0, 4.0, 64.0)
  got = Transformer(cfg).apply({"params": load_hf_params(str(tmp_path), cfg)}, tokens,
                               np.arange(300)[None], np.ones_like(tokens))
  assert np.abs(np.asarray(got) - want).max() / np.abs(want).max() <= TOLERANCE


def test_sharded_import_equals_unsharded(tmp_path):
  config_cls, options = CASES["llama_gqa_untied"]
  _save(tmp_path, config_cls, {**options, "vocab_size": 320})  # a vocabulary the tensor axis divides
  cfg = config_from_hf(read_config(str(tmp_path)))
  mesh = make_mesh(MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2}))
  logical = abstract_params(Transformer(cfg))
  shardings = params_shardings(logical, mesh, ShardingRules())
  sharded = load_hf_params(str(tmp_path), cfg, shardings)
  plain = load_hf_params(str(tmp_path), cfg)
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(plain)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
             for x in jax.tree.leaves(sharded))
  assert jax.tree.structure(sharded) == jax.tree.structure(unbox(logical))


@pytest.mark.parametrize("change,message", [
    (dict(model_type="qwen2"), "Qwen2 has q/k/v biases"),
    (dict(attention_bias=True), "attention_bias=true"),
    (dict(model_type="mistral", sliding_window=4096), "sliding_window=4096"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope type 'yarn'"),
    (dict(hidden_act="relu"), "hidden_act='relu'"),
])
def test_unsupported_options_are_refused(change, message):
  hf = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 301, **change}
  with pytest.raises(ValueError, match=message):
    config_from_hf(hf)
