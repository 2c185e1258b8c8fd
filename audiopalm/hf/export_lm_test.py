"""Exported checkpoints load in `transformers` and give the stack's logits (random small configs of every family),
round-trip through `import_lm` unchanged, and what no architecture represents is refused, every option named.

Tolerance: logits within 1e-4 of the reference's largest |logit| (float32 on CPU), never loosened.
"""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors import safe_open  # noqa: E402

from audiopalm.hf import export_lm  # noqa: E402
from audiopalm.hf.export_lm import export_tensors, family_of, hf_config, save_hf_checkpoint  # noqa: E402
from audiopalm.hf.import_lm import config_from_hf, load_hf_params  # noqa: E402
from audiopalm.hf.tensors import read_config  # noqa: E402
from audiopalm.main.presets import model_preset, model_presets  # noqa: E402
from audiopalm.model import Transformer, TransformerConfig  # noqa: E402
from audiopalm.model.params import abstract_params  # noqa: E402
from audiopalm.sharding.mesh import MeshConfig, make_mesh  # noqa: E402
from audiopalm.sharding.params import unbox  # noqa: E402
from audiopalm.sharding.rules import ShardingRules, params_shardings  # noqa: E402

TOLERANCE = 1e-4
LLAMA = TransformerConfig(vocab_size=301, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, d_ff=96,
                          block="sequential", norm="rmsnorm", norm_eps=1e-5, tie_embeddings=False,
                          logits_scale_by_inv_sqrt_dim=False, rope_max_wavelength=500000.0)
GEMMA = LLAMA.replace(num_kv_heads=1, head_dim=32, norm_scale_plus_one=True, activation="geglu",
                      embed_scale_by_sqrt_dim=True, tie_embeddings=True, rope_max_wavelength=10000.0)
LLAMA3_ROPE = (8.0, 1.0, 4.0, 64.0)  # positions past 64 exercise the scaling
CASES = {
    "llama_gqa_untied": (LLAMA, "llama"),
    "llama_mqa_tied_llama3_rope": (LLAMA.replace(num_kv_heads=1, tie_embeddings=True, rope_scaling=LLAMA3_ROPE),
                                   "llama"),
    "gemma_mqa_unscanned": (GEMMA.replace(scan_layers=False), "gemma"),
    "gemma_untied_llama3_rope": (GEMMA.replace(tie_embeddings=False, rope_scaling=LLAMA3_ROPE), "gemma"),
    "cohere_palm_default": (model_preset("tiny"), "cohere"),  # MQA, tied, logits scaled by 1/sqrt(d_model)
    # head_dim * num_heads != d_model; untied output (no logits scale), GQA, Llama 3 RoPE
    "cohere_gqa_untied_llama3_rope": (model_preset("tiny", vocab_size=301, d_model=64, num_kv_heads=2, head_dim=8,
                                                   d_ff=96, tie_embeddings=False, rope_scaling=LLAMA3_ROPE), "cohere"),
}
ROUND_TRIP = [name for name, (_, family) in CASES.items() if family != "cohere"]  # import_lm has no Cohere


def _inputs(cfg, length=96):
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(2, length))
  return tokens, np.broadcast_to(np.arange(length), tokens.shape), np.ones_like(tokens)


def _params(cfg, seed=0):
  """Random params (numpy, drawn from the abstract shapes: no init to compile): kernels ~ N(0, 0.1^2), the
  embedding ~ N(0, 1), norm scales 1 + N(0, 0.3^2) (Gemma's w: N(0, 0.3^2)) so the norm mapping is tested."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "norm" in name:
      return np.float32(0.0 if cfg.norm_scale_plus_one else 1.0) + 0.3 * rng.standard_normal(leaf.shape, np.float32)
    return (1.0 if "table" in name else 0.1) * rng.standard_normal(leaf.shape, np.float32)

  return jax.tree_util.tree_map_with_path(draw, unbox(abstract_params(Transformer(cfg))))


def _load(directory, **options):
  model, info = transformers.AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True, **options)
  assert not any(info.values()), info  # no missing, unexpected or mismatched tensors
  return model.eval()


def _check_logits(model, cfg, params):
  tokens, positions, segments = _inputs(cfg)
  with torch.no_grad():
    want = model(torch.tensor(tokens)).logits.numpy()
  got = np.asarray(Transformer(cfg).apply({"params": params}, tokens, positions, segments))
  err = np.abs(got - want).max() / np.abs(want).max()
  assert err <= TOLERANCE, err


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(tmp_path, case):
  cfg, family = CASES[case]
  assert family_of(cfg) == family
  params = _params(cfg)
  save_hf_checkpoint(params, cfg, str(tmp_path / "hf"))
  model = _load(str(tmp_path / "hf"), dtype=torch.float32)
  assert type(model).__name__ == export_lm.ARCHITECTURES[family]
  _check_logits(model, cfg, params)


def _stacked(params, cfg):
  if cfg.scan_layers:
    return params
  layers = [params.pop(f"layer_{i}") for i in range(cfg.num_layers)]
  return {**params, "layers": jax.tree.map(lambda *xs: np.stack(xs), *layers)}


@pytest.mark.parametrize("case", ROUND_TRIP)
def test_import_of_the_export_is_identical(tmp_path, case):
  cfg, family = CASES[case]
  params = _params(cfg)
  save_hf_checkpoint(params, cfg, str(tmp_path))
  imported = config_from_hf(read_config(str(tmp_path)))
  assert imported == cfg.replace(scan_layers=True, hf_family=family)
  back = load_hf_params(str(tmp_path), imported)
  want = _stacked(dict(params), cfg)
  assert jax.tree.structure(back) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sharded_params_export_like_unsharded():
  cfg = LLAMA.replace(vocab_size=320)  # a vocabulary the tensor axis divides
  params = _params(cfg)
  mesh = make_mesh(MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2}))
  shardings = params_shardings(abstract_params(Transformer(cfg)), mesh, ShardingRules())
  sharded = jax.device_put(params, shardings)
  assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(sharded))
  a, b = export_tensors(sharded, cfg), export_tensors(params, cfg)
  assert list(a) == list(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name])


def test_bfloat16_export_loads_as_bfloat16(tmp_path):
  cfg, _ = CASES["cohere_palm_default"]
  params = _params(cfg)
  save_hf_checkpoint(params, cfg, str(tmp_path), dtype="bfloat16")
  model = _load(str(tmp_path))  # the config's dtype decides
  state = model.state_dict()
  with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
    assert f.metadata() == {"format": "pt"}
    for name in f.keys():
      assert f.get_tensor(name).dtype == state[name].dtype == torch.bfloat16
      torch.testing.assert_close(state[name], f.get_tensor(name), rtol=0, atol=0)
  want = export_tensors(params, cfg)
  for name, value in want.items():  # the float32 export rounded to bfloat16, as torch rounds
    torch.testing.assert_close(state[name], torch.tensor(value).to(torch.bfloat16), rtol=0, atol=0)


def test_multi_file_export_loads(tmp_path):
  cfg = LLAMA
  params = _params(cfg)
  files = save_hf_checkpoint(params, cfg, str(tmp_path / "hf"), max_shard_bytes=40_000)
  shards = [f for f in files if f.endswith(".safetensors")]
  assert len(shards) > 3 and shards[0].endswith("model-00001-of-%05d.safetensors" % len(shards))
  index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
  assert set(index["weight_map"]) == set(export_tensors(params, cfg))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary directory left
  _check_logits(_load(str(tmp_path / "hf"), dtype=torch.float32), cfg, params)


def test_interrupted_export_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
  import safetensors.numpy  # pylint: disable=import-outside-toplevel
  save = safetensors.numpy.save_file
  calls = []

  def failing(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise OSError("disk full")
    return save(*args, **kwargs)

  monkeypatch.setattr(safetensors.numpy, "save_file", failing)
  with pytest.raises(OSError, match="disk full"):
    save_hf_checkpoint(_params(LLAMA), LLAMA, str(tmp_path / "hf"), max_shard_bytes=40_000)
  assert list(tmp_path.iterdir()) == []


def test_existing_directory_and_wrong_params_are_refused(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileExistsError, match="not an empty directory"):
    save_hf_checkpoint(_params(LLAMA), LLAMA, str(tmp_path))
  with pytest.raises(ValueError, match="do not fit the config"):
    export_tensors(_params(LLAMA), LLAMA.replace(d_ff=128))


def test_config_fields():
  families = {name: family_of(model_preset(name)) for name in model_presets()}
  assert families == {"demo": "cohere", "tiny": "cohere", "palm_1b": "cohere", "palm_8b": "cohere",  # PaLM
                      "gemma2_9b": "gemma2", "gemma3_4b": "gemma3_text", "llama3_1_8b": "llama",
                      "qwen2_5_7b": "qwen2", "qwen3_8b": "qwen3"}
  config = hf_config(CASES["cohere_palm_default"][0], torch_dtype="bfloat16", eos_token_id=1, pad_token_id=0)
  assert config["logit_scale"] == 128 ** -0.5 and config["dtype"] == "bfloat16" and config["head_dim"] == 32
  assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (None, 1, 0)
  config = hf_config(CASES["cohere_gqa_untied_llama3_rope"][0], torch_dtype="float32")
  assert config["logit_scale"] == 1.0 and config["max_position_embeddings"] == 8192
  assert config["rope_parameters"] == {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 64}
  long = LLAMA.replace(rope_scaling=(8.0, 1.0, 4.0, 8192.0))
  assert hf_config(long, torch_dtype="float32")["max_position_embeddings"] == 65536
  with pytest.raises(ValueError, match=r"torch_dtype='int8'.*eos_token_id=301 outside the vocabulary \[0, 301\)"):
    hf_config(LLAMA, torch_dtype="int8", eos_token_id=301)


@pytest.mark.parametrize("change,messages", [
    # parallel + RMSNorm: Cohere's parallel block has a LayerNorm; Llama and Gemma are sequential
    (dict(block="parallel"), ["as cohere (CohereForCausalLM): norm='rmsnorm'", "as llama (LlamaForCausalLM): "
                                                                                "block='parallel'"]),
    (dict(activation="geglu"), ["as llama (LlamaForCausalLM): activation='geglu'",
                                "as gemma (GemmaForCausalLM): norm_scale_plus_one=False",
                                "embed_scale_by_sqrt_dim=False"]),
    (dict(tie_embeddings=True, logits_scale_by_inv_sqrt_dim=True),
     ["as llama (LlamaForCausalLM): logits_scale_by_inv_sqrt_dim=True with tie_embeddings=True (llama has no "
      "logits scale)"]),
    (dict(query_scale=0.1), ["as llama (LlamaForCausalLM): query_scale=0.1 (not head_dim**-0.5 = 0.25) (llama has no "
                             "such option)"]),
    (dict(query_scale=0.3, activation="geglu", norm_scale_plus_one=True, embed_scale_by_sqrt_dim=True,
          post_norms=True), ["as gemma2 (Gemma2ForCausalLM): query_scale=0.3 (query_pre_attn_scalar = "
                             "query_scale**-2 = 11.1"]),
    (dict(sliding_window=4, layer_pattern="LG", attn_logit_softcap=50.0, qk_norm=True),
     ["as qwen3 (Qwen3ForCausalLM): attn_logit_softcap=50.0 (qwen3 has no such option)",
      "as mistral (MistralForCausalLM): qk_norm=True (mistral has False), sliding_window=4 with layer_pattern='LG' "
      "(mistral has no such option)"]),
    (dict(d_model=66, num_heads=4, qkv_bias=True), ["d_model=66 is not a multiple of num_heads=4",
                                                     "head_dim=16 is not d_model / num_heads"]),
    # every bad option at once, for the nearest family and the others
    (dict(norm_scale_plus_one=True, query_scale=0.5, tie_embeddings=True, logits_scale_by_inv_sqrt_dim=True),
     ["as llama (LlamaForCausalLM): norm_scale_plus_one=True (llama has False), query_scale=0.5",
      "logits_scale_by_inv_sqrt_dim=True with tie_embeddings=True (llama", "as gemma (GemmaForCausalLM): "
      "activation='swiglu' (gemma has 'geglu'), embed_scale_by_sqrt_dim=False (gemma has True), query_scale=0.5",
      "as cohere (CohereForCausalLM): block='sequential' (cohere has 'parallel'), norm='rmsnorm'"]),
])
def test_unrepresentable_options_are_refused(tmp_path, change, messages):
  cfg = LLAMA.replace(**change)
  for call in (lambda: hf_config(cfg, torch_dtype="float32"), lambda: save_hf_checkpoint({}, cfg, str(tmp_path))):
    with pytest.raises(ValueError) as error:
      call()
    for message in messages:
      assert message in str(error.value), (message, str(error.value))
  assert list(tmp_path.iterdir()) == []
