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
    (dict(model_type="phi3"), "model_type 'phi3' cannot be imported"),
    (dict(attention_bias=True), "attention_bias=true"),
    (dict(model_type="qwen3", attention_bias=True), "output projection too"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope type 'yarn'"),
    (dict(hidden_act="relu"), "hidden_act='relu'"),
    (dict(model_type="gemma3_text", use_bidirectional_attention=True), "use_bidirectional_attention"),
    (dict(model_type="gemma3_text", rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}), "sliding-window layers"),
    (dict(model_type="qwen2", layer_types=["sliding_attention", "chunked_attention"]), "chunked_attention"),
    (dict(model_type="qwen2", layer_types=["sliding_attention", "full_attention"]), "no sliding window"),
])
def test_unsupported_options_are_refused(change, message):
  hf = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 301, **change}
  with pytest.raises(ValueError, match=message):
    config_from_hf(hf)


def test_all_reasons_are_listed_at_once():
  hf = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 301, "mlp_bias": True, "hidden_act": "relu",
        "partial_rotary_factor": 0.5}
  with pytest.raises(ValueError, match="mlp_bias.*partial_rotary_factor.*hidden_act"):
    config_from_hf(hf)


def test_transformers_4_configs_take_the_family_defaults():
  # google/gemma-3-4b-pt's config.json (transformers 4): the text config spells out only what differs.
  hf = {"model_type": "gemma3", "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
                                                "model_type": "gemma3_text", "num_hidden_layers": 34,
                                                "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                                                "sliding_window": 1024, "num_attention_heads": 8,
                                                "num_key_value_heads": 4},
        "vision_config": {}}
  cfg = config_from_hf(hf)
  assert (cfg.vocab_size, cfg.head_dim, cfg.query_scale, cfg.layer_pattern, cfg.sliding_window) == (
      262208, 256, 256 ** -0.5, "LLLLLG", 1024)
  assert (cfg.rope_max_wavelength, cfg.rope_linear_factor, cfg.rope_local_max_wavelength) == (1e6, 8.0, 1e4)
  assert cfg.qk_norm and cfg.post_norms and cfg.tie_embeddings and cfg.final_logit_softcap is None
  # Qwen2.5-7B: use_sliding_window false, so its sliding_window and max_window_layers mean nothing.
  qwen = config_from_hf({"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
                         "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                         "vocab_size": 152064, "rope_theta": 1e6, "sliding_window": 131072,
                         "use_sliding_window": False, "max_window_layers": 28, "tie_word_embeddings": False})
  assert qwen.qkv_bias and qwen.sliding_window is None and qwen.layer_pattern == "G" and qwen.head_dim == 128


def test_a_tied_checkpoint_storing_the_output_layer_too_is_read_once_and_checked(tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  from audiopalm.hf.tensors import SafetensorsReader  # pylint: disable=import-outside-toplevel
  config_cls, options = CASES["gemma_mqa_tied"]
  _save(tmp_path, config_cls, options)
  embed = SafetensorsReader(str(tmp_path)).get("model.embed_tokens.weight")
  save_file({"lm_head.weight": embed}, str(tmp_path / "z_head.safetensors"))
  cfg = config_from_hf(read_config(str(tmp_path)))
  reader = SafetensorsReader(str(tmp_path))
  load_hf_params(str(tmp_path), cfg, reader=reader)
  assert reader.reads("lm_head.weight") == reader.reads("model.embed_tokens.weight") == 1.0
  save_file({"lm_head.weight": embed + 1.0}, str(tmp_path / "z_head.safetensors"))
  with pytest.raises(ValueError, match="tie_word_embeddings is set but lm_head.weight differs"):
    load_hf_params(str(tmp_path), cfg)
