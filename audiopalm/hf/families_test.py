"""Today's checkpoint families against `transformers`: Llama 3.x, Mistral (sliding window), Qwen2.5 (q/k/v biases,
windows on the top layers), Qwen3 (q/k norms), Gemma 2 (sandwich norms, soft-caps, local:global 1:1), Gemma 3
(q/k norms, local:global 2:1 here, local RoPE base, linear scaling on the global layers) and a multimodal Gemma 3's
text tower.

Each case is a randomly initialised transformers model from a small config of its family, every switch exercised
and made to matter: norm weights and biases perturbed, the query projections scaled up (the attention soft-cap
bites), sequences longer than the window (5). Checked, in float32:
  - a packed row (three segments) gives each segment the logits transformers gives it alone;
  - KV-cache decoding past the window gives transformers' logits at every position;
  - import -> export -> transformers load gives the same logits, as the same architecture;
  - each tensor is read once, on an 8-device mesh.

Tolerance: logits within 1e-4 of the reference's largest |logit|, never loosened.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from audiopalm.files import storage  # noqa: E402
from audiopalm.hf.export_lm import family_of, save_hf_checkpoint  # noqa: E402
from audiopalm.hf.import_lm import config_from_hf, load_hf_params  # noqa: E402
from audiopalm.hf.tensors import SafetensorsReader, read_config  # noqa: E402
from audiopalm.model import Transformer  # noqa: E402
from audiopalm.model.kv_cache import init_cache  # noqa: E402
from audiopalm.model.params import abstract_params  # noqa: E402
from audiopalm.sharding.mesh import MeshConfig, make_mesh  # noqa: E402
from audiopalm.sharding.rules import ShardingRules, params_shardings  # noqa: E402

TOLERANCE = 1e-4
WINDOW = 5
SMALL = dict(vocab_size=132, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, attn_implementation="eager")
CASES = {
    "llama3_1": (transformers.LlamaConfig, dict(
        tie_word_embeddings=False, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 16}),
                 "llama", dict(layer_pattern="G")),
    "mistral_window": (transformers.MistralConfig, dict(sliding_window=WINDOW, head_dim=24), "mistral",
                       dict(layer_pattern="L", sliding_window=WINDOW)),
    "qwen2_5_bias_window": (transformers.Qwen2Config, dict(use_sliding_window=True, sliding_window=WINDOW,
                                                           max_window_layers=2, tie_word_embeddings=True),
                            "qwen2", dict(layer_pattern="GGLL", qkv_bias=True)),
    "qwen3_qk_norm": (transformers.Qwen3Config, dict(head_dim=24, use_sliding_window=True, sliding_window=WINDOW,
                                                     max_window_layers=1), "qwen3", dict(qk_norm=True)),
    "gemma2": (transformers.Gemma2Config, dict(head_dim=24, sliding_window=WINDOW, query_pre_attn_scalar=20,
                                               attn_logit_softcapping=5.0, final_logit_softcapping=3.0),
               "gemma2", dict(layer_pattern="LG", post_norms=True, attn_logit_softcap=5.0)),
    "gemma3_text": (transformers.Gemma3TextConfig, dict(
        head_dim=24, sliding_window=WINDOW, query_pre_attn_scalar=20, final_logit_softcapping=3.0,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],  # "LLG" repeated
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}),
                    "gemma3_text", dict(layer_pattern="LLG", qk_norm=True, rope_linear_factor=8.0,
                                        rope_local_max_wavelength=1e4)),
}


def perturb(model) -> None:
  """Norm weights and biases away from their initial values; queries scaled up so the logits are large."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or name.endswith("bias"):
        p.add_(0.3 * torch.randn_like(p))
      if "q_proj.weight" in name:
        p.mul_(4.0)


def _reference(tmp_path, case, seed=0):
  config_cls, options, _, _ = CASES[case]
  torch.manual_seed(seed)
  config = config_cls(**{**SMALL, **options})
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  perturb(model)
  model.save_pretrained(tmp_path, safe_serialization=True)
  return model


def _hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens)[None])).logits.numpy()[0]


def _close(got, want):
  err = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
  assert err <= TOLERANCE, err


@pytest.fixture(scope="module", params=sorted(CASES))
def imported(request, tmp_path_factory):
  """(case, transformers model, directory, TransformerConfig, params) per family."""
  directory = tmp_path_factory.mktemp(request.param)
  model = _reference(directory, request.param)
  cfg = config_from_hf(read_config(str(directory)))
  return request.param, model, directory, cfg, load_hf_params(str(directory), cfg)


def test_the_config_has_every_switch(imported):
  case, _, _, cfg, _ = imported
  _, _, family, switches = CASES[case]
  assert cfg.hf_family == family
  for field, value in switches.items():
    assert getattr(cfg, field) == value, field


def test_packed_segments_give_each_its_own_logits(imported):
  _, model, _, cfg, params = imported
  rng = np.random.default_rng(1)
  lengths = (17, 3, 20)  # longer and shorter than the window; the row is padded to 48
  segments = [rng.integers(0, cfg.vocab_size, size=n) for n in lengths]
  tokens = np.zeros((1, 48), np.int32)
  positions, segment_ids = np.zeros_like(tokens), np.zeros_like(tokens)
  start = 0
  for k, seg in enumerate(segments):
    tokens[0, start:start + len(seg)] = seg
    positions[0, start:start + len(seg)] = np.arange(len(seg))
    segment_ids[0, start:start + len(seg)] = k + 1
    start += len(seg)
  got = np.asarray(Transformer(cfg).apply({"params": params}, tokens, positions, segment_ids))[0]
  start = 0
  for seg in segments:
    _close(got[start:start + len(seg)], _hf_logits(model, seg))
    start += len(seg)


def test_cached_decoding_past_the_window(imported):
  _, model, _, cfg, params = imported
  tokens = np.random.default_rng(2).integers(0, cfg.vocab_size, size=24)
  want = _hf_logits(model, tokens)
  net = Transformer(cfg)
  cache = init_cache(cfg, batch=1, max_len=32)
  prompt = 7  # a prefill longer than the window, then one token at a time
  logits, cache = net.apply({"params": params}, jnp.asarray(tokens[None, :prompt]), cache, method=Transformer.decode)
  got = [np.asarray(logits)[0]]
  step = jax.jit(lambda p, t, c: net.apply({"params": p}, t, c, method=Transformer.decode))
  for t in range(prompt, len(tokens)):
    logits, cache = step(params, jnp.asarray(tokens[None, t:t + 1]), cache)
    got.append(np.asarray(logits)[0])
  _close(np.concatenate(got), want)


def test_import_export_load_gives_the_same_logits_as_the_same_architecture(imported, tmp_path):
  case, model, _, cfg, params = imported
  assert family_of(cfg) == CASES[case][2]
  save_hf_checkpoint(params, cfg, str(tmp_path / "export"))
  reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / "export"), output_loading_info=True, attn_implementation="eager")
  assert not any(info.values()), info
  assert type(reloaded) is type(model)
  tokens = np.random.default_rng(3).integers(0, cfg.vocab_size, size=30)
  _close(_hf_logits(reloaded.eval(), tokens), _hf_logits(model, tokens))
  assert config_from_hf(read_config(str(tmp_path / "export"))) == cfg


def test_each_tensor_is_read_once_on_eight_devices(imported):
  _, _, directory, cfg, params = imported
  mesh = make_mesh(MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2}))
  shardings = params_shardings(abstract_params(Transformer(cfg)), mesh, ShardingRules())
  reader = SafetensorsReader(str(directory))
  sharded = load_hf_params(str(directory), cfg, shardings, reader=reader)
  reads = {name: reader.reads(name) for name in reader.where}
  assert set(reads.values()) == {1.0}, {n: r for n, r in reads.items() if r != 1.0}
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
             for x in jax.tree.leaves(sharded))


def test_multimodal_gemma3_imports_its_text_tower(tmp_path):
  _, options, _, _ = CASES["gemma3_text"]
  torch.manual_seed(0)
  text = {key: value for key, value in {**SMALL, **options}.items() if key != "attn_implementation"}
  config = transformers.Gemma3Config(
      text_config=text, vision_config=dict(hidden_size=32, num_hidden_layers=1, intermediate_size=32,
                                           num_attention_heads=2, image_size=28, patch_size=14),
      mm_tokens_per_image=4, attn_implementation="eager")
  model = transformers.Gemma3ForConditionalGeneration(config).eval()
  perturb(model)
  model.save_pretrained(tmp_path, safe_serialization=True)
  cfg = config_from_hf(read_config(str(tmp_path)))
  assert cfg.hf_family == "gemma3_text" and cfg.qk_norm and cfg.layer_pattern == "LLG"
  params = load_hf_params(str(tmp_path), cfg)
  tokens = np.random.default_rng(4).integers(0, 100, size=30)
  got = Transformer(cfg).apply({"params": params}, tokens[None], np.arange(30)[None], np.ones((1, 30), np.int32))
  _close(np.asarray(got)[0], _hf_logits(model, tokens))
  assert family_of(cfg) == "gemma3_text"


def test_import_from_gcs_reads_the_same_tensors(tmp_path, gcs_bucket):
  """A checkpoint on gs:// (the emulator) imports as from local disk: each tensor one ranged read of its bytes."""
  _reference(tmp_path, "gemma2")
  cfg = config_from_hf(read_config(str(tmp_path)))
  params = load_hf_params(str(tmp_path), cfg)
  remote = f"{gcs_bucket}/hf/gemma2"
  for path in tmp_path.iterdir():
    storage.upload(path, storage.join(remote, path.name))
  assert config_from_hf(read_config(remote)) == cfg
  reader = SafetensorsReader(remote)
  for a, b in zip(jax.tree.leaves(load_hf_params(remote, cfg, reader=reader)), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert {reader.reads(name) for name in reader.entries} == {1.0}
