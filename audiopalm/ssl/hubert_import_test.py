"""Parity of the JAX HuBERT with `transformers`' torch HubertModel, from randomly initialised reference models.

Tolerance (stated once): every compared hidden state agrees with the reference to within
ATOL_REL × the reference's largest magnitude (max abs error). Both sides compute in float32; the differences
are float rounding in differently ordered sums (convolutions, matmuls, normalisation statistics), measured
at ≤ 7e-7 relative here, so 1e-4 leaves room for other CPUs/BLAS while catching any real mistake (a wrong
epsilon, an unmasked GroupNorm or waveform normalisation shows as 1e-2 or more).

The reference sees each example alone and unpadded (through `Wav2Vec2FeatureExtractor` for the waveform
normalisation); the JAX encoder sees them together in one padded batch.
"""

import json
import logging
import math

import jax
import numpy as np
import pytest

from audiopalm.ssl import encoder as encoder_lib
from audiopalm.ssl import hubert, hubert_import
from audiopalm.ssl.load import load_encoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL_REL = 1e-4

# Post-LN Transformer, GroupNorm front end, even positional kernel (one output frame trimmed), a layer_norm_eps far
# from the front end's fixed 1e-5 (so that using the wrong epsilon in either place shows).
POST_LN = dict(conv_dim=[16, 24, 32], conv_kernel=[10, 3, 2], conv_stride=[5, 2, 2], conv_bias=False,
               feat_extract_norm="group", hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
               intermediate_size=48, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, layer_norm_eps=1e-2,
               do_stable_layer_norm=False, feat_proj_layer_norm=True)
# Pre-LN ("stable layer norm") Transformer, LayerNorm front end with conv biases, odd positional kernel.
STABLE_LN = dict(conv_dim=[16, 16, 24], conv_kernel=[10, 3, 3], conv_stride=[5, 2, 2], conv_bias=True,
                 feat_extract_norm="layer", hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                 intermediate_size=64, num_conv_pos_embeddings=9, num_conv_pos_embedding_groups=2,
                 layer_norm_eps=1e-5, do_stable_layer_norm=True, feat_proj_layer_norm=False)
LENGTHS = (1203, 811, 437)  # samples: 59, 39 and 21 frames at hop 20


def _randomize(model, seed):
  """Non-trivial values where transformers initialises constants (norm weights 1, biases 0) or tiny weights."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1:  # biases and norm weights
        p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
      elif p.ndim == 2:  # linear layers: N(0, 0.02) would make attention nearly uniform, hiding attention bugs
        p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
      elif name.endswith(("original0", "weight_g")):  # positional conv weight-norm gains, one per kernel position
        p.mul_(0.5 + torch.rand(p.shape, generator=g))
  return model


def _reference(hf_kwargs, seed=0, cls=None):
  torch.manual_seed(seed)
  model = (cls or transformers.HubertModel)(transformers.HubertConfig(**hf_kwargs)).eval()
  return _randomize(model, seed)


def _save(model, directory, do_normalize):
  model.save_pretrained(directory)
  transformers.Wav2Vec2FeatureExtractor(do_normalize=do_normalize).save_pretrained(directory)
  return str(directory)


def _waveforms(lengths, seed=0):
  """A padded batch (with garbage in the padding) and the unpadded examples."""
  rng = np.random.default_rng(seed)
  examples = [(0.3 + 0.5 * rng.standard_normal(n)).astype(np.float32) for n in lengths]  # an offset: normalising shows
  batch = rng.standard_normal((len(lengths), max(lengths))).astype(np.float32) * 3.0
  for i, x in enumerate(examples):
    batch[i, :len(x)] = x
  return batch, examples


def _hf_alone(model, directory, example):
  """hidden_states tuple and last_hidden_state of transformers on one unpadded example."""
  extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(directory)
  inputs = extractor(example, sampling_rate=16000, return_tensors="pt")
  with torch.no_grad():
    out = model(inputs.input_values, output_hidden_states=True)
  return [h[0].numpy() for h in out.hidden_states], out.last_hidden_state[0].numpy()


def _assert_close(got, ref, what):
  assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
  err, scale = float(np.abs(got - ref).max()), float(np.abs(ref).max())
  assert err <= ATOL_REL * scale, f"{what}: max abs error {err:.3g} > {ATOL_REL} × {scale:.3g}"
  return err / scale


@pytest.mark.parametrize("hf_kwargs,do_normalize", [(POST_LN, False), (POST_LN, True), (STABLE_LN, False),
                                                    (STABLE_LN, True)],
                         ids=["post_ln-raw", "post_ln-normalized", "stable_ln-raw", "stable_ln-normalized"])
def test_parity_with_transformers_on_a_padded_batch(tmp_path, hf_kwargs, do_normalize):
  model = _reference(hf_kwargs)
  directory = _save(model, tmp_path, do_normalize)
  encoder = hubert_import.load_hubert(directory)
  assert encoder.config.do_normalize == do_normalize
  batch, examples = _waveforms(LENGTHS)
  num_layers = hf_kwargs["num_hidden_layers"]
  references = [_hf_alone(model, directory, x) for x in examples]

  worst = 0.0
  for layer in (0, num_layers // 2, num_layers):
    features, frames = encoder.features(batch, np.array(LENGTHS), layer)
    features = np.asarray(features)
    assert features.dtype == np.float32
    for b, (hidden_states, _) in enumerate(references):
      ref = hidden_states[layer]
      assert frames[b] == ref.shape[0]
      worst = max(worst, _assert_close(features[b, :frames[b]], ref, f"layer {layer}, example {b}"))
      assert not features[b, frames[b]:].any(), "features past frames must be zero"
  last, frames = encoder.last_hidden_state(batch, np.array(LENGTHS))
  for b, (_, ref) in enumerate(references):
    worst = max(worst, _assert_close(np.asarray(last)[b, :frames[b]], ref, f"last_hidden_state, example {b}"))
  print(f"worst max-abs error / reference max: {worst:.2e}")


def test_load_encoder_dispatches_to_hubert(tmp_path):
  directory = _save(_reference(POST_LN), tmp_path, False)
  enc = load_encoder(directory)
  assert isinstance(enc, hubert.HubertEncoder) and isinstance(enc, encoder_lib.SslEncoder)
  assert (enc.name, enc.num_layers, enc.dim, enc.sample_rate, enc.frame_rate) == ("hubert", 4, 32, 16000, 800.0)


def test_num_frames_matches_transformers():
  model = _reference(POST_LN)
  lengths = np.array([30, 31, 39, 40, 41, 437, 811, 1203, 16000, 16001])
  expected = model._get_feat_extract_output_lengths(torch.from_numpy(lengths)).numpy()
  encoder = hubert.HubertEncoder(hubert_import.config_from_hf(model.config.to_dict()), None)
  np.testing.assert_array_equal(encoder.num_frames(lengths), expected)
  base = transformers.HubertConfig()
  with torch.device("meta"):
    base_model = transformers.HubertModel(base)
  lengths = np.array([400, 401, 719, 720, 16000, 16001, 123457])
  expected = base_model._get_feat_extract_output_lengths(torch.from_numpy(lengths)).numpy()
  np.testing.assert_array_equal(hubert.conv_output_lengths(hubert.preset("hubert_base"), lengths), expected)


@pytest.mark.parametrize("name,hf_kwargs", [
    ("hubert_base", {}),
    ("hubert_large", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                          feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True))])
def test_presets_match_transformers_structure(name, hf_kwargs):
  hf = transformers.HubertConfig(**hf_kwargs)
  config = hubert.PRESETS[name]
  assert hubert_import.config_from_hf(hf.to_dict(), {"do_normalize": config.do_normalize}) == config
  with torch.device("meta"):
    model = transformers.HubertModel(hf)
  hf_count = sum(p.numel() for n, p in model.named_parameters() if n != "masked_spec_embed")
  ours = sum(math.prod(x.shape) for x in jax.tree.leaves(hubert.abstract_params(config)))
  assert ours == hf_count


@pytest.mark.parametrize("override,message", [
    (dict(feat_extract_activation="relu"), "feat_extract_activation"), (dict(hidden_act="gelu_new"), "hidden_act"),
    (dict(conv_pos_batch_norm=True), "conv_pos_batch_norm"), (dict(adapter_attn_dim=16), "adapter_attn_dim"),
    (dict(feat_extract_norm="batch"), "feat_extract_norm"), (dict(conv_kernel=[10, 3]), "same length"),
    (dict(model_type="wav2vec2"), "model_type"), (dict(num_attention_heads=5), "num_attention_heads")])
def test_unrepresentable_options_are_refused(override, message):
  hf = transformers.HubertConfig(**POST_LN).to_dict() | override
  with pytest.raises(ValueError, match=message):
    hubert_import.config_from_hf(hf)


def test_every_refusal_reason_is_listed():
  hf = transformers.HubertConfig().to_dict() | dict(hidden_act="relu", conv_pos_batch_norm=True)
  with pytest.raises(ValueError) as info:
    hubert_import.config_from_hf(hf, {"feature_extractor_type": "SeamlessM4TFeatureExtractor", "feature_size": 80})
  for reason in ("hidden_act", "conv_pos_batch_norm", "feature_extractor_type", "feature_size"):
    assert reason in str(info.value)


def test_missing_preprocessor_uses_the_feature_extractor_defaults(tmp_path, caplog):
  model = _reference(POST_LN)
  model.save_pretrained(tmp_path)
  with caplog.at_level(logging.WARNING):
    encoder = hubert_import.load_hubert(str(tmp_path))
  assert encoder.config.do_normalize and encoder.config.sample_rate == 16000
  assert "preprocessor_config.json" in caplog.text
  (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False, "sampling_rate": 8000}))
  encoder = hubert_import.load_hubert(str(tmp_path))
  assert not encoder.config.do_normalize and encoder.config.sample_rate == 8000 and encoder.frame_rate == 400.0


def test_both_weight_norm_spellings_and_tensor_errors():
  model = _reference(STABLE_LN)
  cfg = hubert_import.config_from_hf(model.config.to_dict())
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  assert "encoder.pos_conv_embed.conv.parametrizations.weight.original0" in state
  renamed = {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
  jax.tree.map(np.testing.assert_array_equal, hubert_import.convert(cfg, state), hubert_import.convert(cfg, renamed))

  with pytest.raises(ValueError, match="not used.*extra.weight"):
    hubert_import.convert(cfg, state | {"extra.weight": np.zeros(3)})
  missing = dict(state)
  missing.pop("encoder.layers.1.attention.k_proj.bias")
  with pytest.raises(KeyError, match="encoder.layers.1.attention.k_proj.bias"):
    hubert_import.convert(cfg, missing)
  wrong_gain = dict(renamed)  # a gain per output channel (weight_norm over dim=0) is a different model
  wrong_gain["encoder.pos_conv_embed.conv.weight_g"] = np.ones((32, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"weight-norm gain has shape \(32, 1, 1\)"):
    hubert_import.convert(cfg, wrong_gain)
  wrong_shape = dict(state)
  wrong_shape["feature_projection.projection.bias"] = np.zeros(31, np.float32)
  with pytest.raises(ValueError, match="projection"):
    hubert_import.convert(cfg, wrong_shape)


def test_a_ctc_model_directory_loads_its_encoder(tmp_path):
  ctc = _reference(POST_LN | dict(vocab_size=12), cls=transformers.HubertForCTC)
  directory = _save(ctc, tmp_path, False)
  assert any(k.startswith("lm_head.") for k in ctc.state_dict())
  encoder = hubert_import.load_hubert(directory)
  cfg = hubert_import.config_from_hf(ctc.config.to_dict())
  expected = hubert_import.convert(cfg, {k: v.numpy() for k, v in ctc.hubert.state_dict().items()})
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(encoder.params), expected)
