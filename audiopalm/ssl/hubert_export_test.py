"""A JAX HuBERT written by `save_hubert` is a transformers HubertModel directory with the same network.

Tolerance as hubert_import_test (stated there): ATOL_REL × the reference's largest magnitude.
"""

import numpy as np
import pytest

import jax

from audiopalm.ssl import hubert, hubert_export, hubert_import
from audiopalm.ssl.load import load_encoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL_REL = 1e-4
LENGTHS = (1203, 437)


@pytest.mark.parametrize("overrides", [{}, dict(conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
                                                  feat_proj_layer_norm=False, do_normalize=True)],
                         ids=["post_ln", "stable_ln"])
def test_transformers_loads_the_export_and_computes_the_same_features(tmp_path, overrides):
  config = hubert.preset("tiny", **overrides)
  params = hubert.init_params(config, jax.random.key(3))
  embed = np.linspace(-1, 1, config.hidden_size).astype(np.float32)
  hubert_export.save_hubert(str(tmp_path), config, params, masked_spec_embed=embed)

  model, info = transformers.HubertModel.from_pretrained(str(tmp_path), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
  np.testing.assert_array_equal(model.masked_spec_embed.detach().numpy(), embed)
  extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(str(tmp_path))
  assert extractor.do_normalize == config.do_normalize

  encoder = load_encoder(str(tmp_path))
  assert encoder.config == config
  rng = np.random.default_rng(0)
  examples = [rng.standard_normal(n).astype(np.float32) for n in LENGTHS]
  batch = np.zeros((len(LENGTHS), max(LENGTHS)), np.float32)
  for i, x in enumerate(examples):
    batch[i, :len(x)] = x
  layer = config.num_hidden_layers
  features, frames = encoder.features(batch, np.array(LENGTHS), layer)
  for b, x in enumerate(examples):
    inputs = extractor(x, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
      ref = model.eval()(inputs.input_values, output_hidden_states=True).hidden_states[layer][0].numpy()
    got = np.asarray(features)[b, :frames[b]]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= ATOL_REL * np.abs(ref).max()


def test_export_inverts_the_import_tensor_for_tensor(tmp_path):
  hf_kwargs = dict(conv_dim=[16, 24], conv_kernel=[10, 3], conv_stride=[5, 2], hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=4, intermediate_size=48, num_conv_pos_embeddings=8,
                   num_conv_pos_embedding_groups=4)
  torch.manual_seed(0)
  model = transformers.HubertModel(transformers.HubertConfig(**hf_kwargs))
  reference = {name: t.detach().numpy() for name, t in model.state_dict().items()}
  config = hubert_import.config_from_hf(hf_kwargs, {"do_normalize": False})
  params = hubert_import.convert(config, reference)
  exported = hubert_export.to_state_dict(config, params, reference["masked_spec_embed"])
  assert set(exported) == set(reference)
  for name, value in reference.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_wrong_shapes_are_refused():
  config = hubert.preset("tiny")
  params = hubert.init_params(config, jax.random.key(0))
  with pytest.raises(ValueError, match="masked_spec_embed has shape"):
    hubert_export.to_state_dict(config, params, np.zeros(3, np.float32))
  with pytest.raises(ValueError):
    hubert_export.to_state_dict(hubert.preset("tiny", hidden_size=64, intermediate_size=64), params)
