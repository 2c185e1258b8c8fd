"""Parity of the JAX w2v-BERT encoder with `transformers.Wav2Vec2BertModel`, from small random reference models.

Tolerance (stated once): hidden states agree within ATOL_REL = 1e-4 × the reference's peak magnitude (max |x|
over the compared frames), end to end: our waveform → fbank → network against the reference's
`SeamlessM4TFeatureExtractor` → `Wav2Vec2BertModel` (eager attention). Why this size: the network alone,
fed the reference's own features, agrees to ~5e-7 of the peak (float32 rounding over a few layers); the
front end adds the float32-FFT error that `fbank_test.py` bounds (~1e-4 on unit-variance features), which
the random layers carry through at ~1e-5 of the peak. 1e-4 leaves room for that, and is far below what
any wrong position, mask or layer-order would give (checked: dropping the positions is > 100× off).

Reference models get random values everywhere (`_randomise`): `transformers` initialises LayerNorms to
(1, 0), biases and Transformer-XL biases to ~0, and q/k with std 0.02 (attention ~uniform, positions
almost irrelevant), which would hide bugs.
"""

import jax
import numpy as np
import pytest

from audiopalm.hf import tensors as tensors_lib
from audiopalm.ssl import encoder as encoder_lib
from audiopalm.ssl import fbank, w2v_bert, w2v_bert_import
from audiopalm.ssl.load import load_encoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL_REL = 1e-4
TINY_HF = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
               conv_depthwise_kernel_size=5, left_max_position_embeddings=8, right_max_position_embeddings=4)
POSITIONS = ["relative_key", "relative", "rotary", None]
LAYERS = (0, 2, 3)  # the projected input, a middle layer, the last layer


def _randomise(model) -> None:
  """Every parameter random at its natural scale (see the module docstring)."""
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if p.ndim >= 2 and "pos_bias" not in name:  # weights: unit-variance outputs; embeddings: std 1
        fan_in = 1 if "distance_embedding" in name else int(np.prod(p.shape[1:]))
        p.copy_(noise / fan_in ** 0.5)
      elif "layer_norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.3 * noise)
      else:  # biases, LayerNorm biases, pos_bias_u/v, masked_spec_embed
        p.copy_(0.3 * noise)


def _reference(position="relative_key", **overrides):
  torch.manual_seed(0)
  cfg = transformers.Wav2Vec2BertConfig(**(TINY_HF | overrides), position_embeddings_type=position,
                                        attn_implementation="eager")
  model = transformers.Wav2Vec2BertModel(cfg).eval()
  _randomise(model)
  return model


def _state(model) -> dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in model.state_dict().items()}


def _import(model):
  config = w2v_bert_import.config_from_hf(model.config.to_dict())
  return config, w2v_bert_import.convert(config, _state(model))


def speech_like(rng: np.random.Generator, samples: int) -> np.ndarray:
  """Three tones over white noise under a slow envelope (as in fbank_test)."""
  t = np.arange(samples) / 16000
  x = 0.05 * rng.standard_normal(samples)
  for _ in range(3):
    x += rng.uniform(0.02, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 4000) * t + rng.uniform(0, 6))
  return (x * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t) ** 2)).astype(np.float32)


def _hf_inputs(waveforms):
  extractor = transformers.SeamlessM4TFeatureExtractor()
  return extractor(list(waveforms), sampling_rate=16000, return_tensors="pt")


def _hf_hidden_states(model, inputs) -> list[np.ndarray]:
  """The reference's hidden states [B, T, D] per layer (0..L)."""
  with torch.no_grad():
    out = model(**inputs, output_hidden_states=True)
  assert len(out.hidden_states) == model.config.num_hidden_layers + 1
  return [h.numpy() for h in out.hidden_states]


def _close(got, ref) -> None:
  np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL_REL * np.abs(ref).max())


@pytest.mark.parametrize("position", POSITIONS, ids=str)
def test_parity_with_transformers(position):
  model = _reference(position)
  config, params = _import(model)
  assert config == w2v_bert.preset("tiny", position_embeddings_type=position)
  rng = np.random.default_rng(0)
  waveforms = np.stack([speech_like(rng, 16000) for _ in range(2)])
  inputs = _hf_inputs(waveforms)
  ref = _hf_hidden_states(model, inputs)
  encoder = w2v_bert.W2vBertEncoder(config, params)
  hf_features, hf_frames = inputs["input_features"].numpy(), inputs["attention_mask"].numpy().sum(-1)
  for layer in LAYERS:
    features, frames = encoder.features(waveforms, np.array([16000, 16000]), layer)
    assert list(frames) == list(hf_frames) == [49, 49]
    _close(np.asarray(features), ref[layer])
    alone = w2v_bert.hidden_states(config, params, hf_features, hf_frames, layer)  # the network alone
    _close(np.asarray(alone), ref[layer])

  if position is not None:  # the test sees positions: without them the last layer is far outside tolerance
    no_positions = w2v_bert.preset("tiny", position_embeddings_type=None)
    stripped = jax.tree.map(lambda x: x, params)
    for i in range(config.num_hidden_layers):
      for name in ("distance_embedding", "linear_pos", "pos_bias_u", "pos_bias_v"):
        stripped[f"layers_{i}"]["self_attn"].pop(name, None)
    wrong = np.asarray(w2v_bert.hidden_states(no_positions, stripped, hf_features, hf_frames, 3))
    assert np.abs(wrong - ref[3]).max() > 100 * ATOL_REL * np.abs(ref[3]).max()


@pytest.mark.parametrize("position", POSITIONS, ids=str)
def test_batch_equals_each_recording_alone(position):
  """Variable lengths padded with loud noise: each example = itself alone = the reference on it alone."""
  model = _reference(position)
  config, params = _import(model)
  encoder = w2v_bert.W2vBertEncoder(config, params)
  rng = np.random.default_rng(1)
  lengths = np.array([16000, 11111, 4567, 560])  # 49, 33, 13, 1 frames; 11111 has an odd fbank frame count
  batch = rng.standard_normal((len(lengths), lengths.max())).astype(np.float32)
  for i, n in enumerate(lengths):
    batch[i, :n] = speech_like(rng, n)
  layer = config.num_hidden_layers
  features, frames = encoder.features(batch, lengths, layer)
  features = np.asarray(features)
  assert list(frames) == list(encoder.num_frames(lengths)) == [49, 33, 13, 1]
  for i, n in enumerate(lengths):
    f = int(frames[i])
    assert not features[i, f:].any(), "frames past the end must be zero"
    inputs = _hf_inputs(batch[i:i + 1, :n])
    valid = inputs["attention_mask"][0].numpy().astype(bool)
    ref = _hf_hidden_states(model, inputs)[layer][0][valid]
    _close(features[i, :f], ref)
    alone, _ = encoder.features(batch[i:i + 1, :n], np.array([n]), layer)
    _close(features[i, :f], np.asarray(alone)[0])


def test_full_size_preset_matches_the_default_transformers_structure():
  """w2v-BERT 2.0's shapes, without allocating it: torch on the meta device, jax.eval_shape, and a
  conversion of zero-stride arrays of the checkpoint's shapes (which checks every converted shape)."""
  with torch.device("meta"):
    model = transformers.Wav2Vec2BertModel(transformers.Wav2Vec2BertConfig())
  shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  config = w2v_bert_import.config_from_hf(model.config.to_dict())
  assert config == w2v_bert.preset("w2v_bert_2_0")
  abstract = w2v_bert.abstract_params(config)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
  torch_count = sum(int(np.prod(s)) for k, s in shapes.items() if k != "masked_spec_embed")
  print(f"w2v_bert_2_0: {count:,} parameters (transformers' default Wav2Vec2BertModel: {torch_count:,} "
        f"+ {int(np.prod(shapes['masked_spec_embed'])):,} for masked_spec_embed)")
  assert count == torch_count and 580e6 < count < 600e6
  params = w2v_bert_import.convert(config, {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()})
  tensors_lib.check_shapes(abstract, params, "w2v-BERT 2.0")
  assert (config.num_hidden_layers, config.hidden_size, config.frame_rate, config.fbank.sample_rate) == (
      24, 1024, 50.0, 16000)
  out = jax.eval_shape(lambda p, w, n: w2v_bert.encode(config, p, w, n, 17), abstract,
                       jax.ShapeDtypeStruct((2, 32000), np.float32), jax.ShapeDtypeStruct((2,), np.int32))
  assert out[0].shape == (2, 99, 1024) and out[1].shape == (2,)


def test_presets_and_config_validation():
  assert w2v_bert.preset("tiny", num_hidden_layers=1).num_hidden_layers == 1
  with pytest.raises(ValueError, match="w2v_bert_2_0"):
    w2v_bert.preset("w2v_bert_3")
  with pytest.raises(ValueError) as e:
    w2v_bert.preset("tiny", num_attention_heads=5, conv_depthwise_kernel_size=4, position_embeddings_type="alibi",
                    feature_projection_input_dim=80, hidden_act="tanh")
  for reason in ("num_attention_heads=5", "must be odd", "alibi", "feature_projection_input_dim=80", "tanh"):
    assert reason in str(e.value)


def test_load_encoder_meets_the_contract(tmp_path):
  model = _reference()
  model.save_pretrained(tmp_path)
  transformers.SeamlessM4TFeatureExtractor().save_pretrained(tmp_path)
  encoder = load_encoder(str(tmp_path))
  assert isinstance(encoder, encoder_lib.SslEncoder) and isinstance(encoder, w2v_bert.W2vBertEncoder)
  assert (encoder.name, encoder.sample_rate, encoder.frame_rate, encoder.num_layers, encoder.dim) == (
      "w2v_bert", 16000, 50.0, 3, 32)
  assert encoder.config == w2v_bert.preset("tiny")
  lengths = np.array([0, 559, 560, 720, 16000])
  assert list(encoder.num_frames(lengths)) == list(fbank.num_frames(fbank.FbankConfig(), lengths)) == [0, 0, 1, 1, 49]
  waveform = speech_like(np.random.default_rng(2), 8000)
  features, frames = encoder.features(waveform[None], np.array([8000]), 1)
  assert features.dtype == np.float32 and frames.dtype == np.int32 and features.shape == (1, 24, 32)
  _close(np.asarray(features)[0], _hf_hidden_states(model, _hf_inputs(waveform[None]))[1][0])
  with pytest.raises(ValueError, match="0..3"):
    encoder.features(waveform[None], np.array([8000]), 4)


@pytest.mark.parametrize("override,message", [
    (dict(position_embeddings_type="alibi"), "position_embeddings_type='alibi'"),
    (dict(hidden_act="tanh"), "hidden_act='tanh'"),
    (dict(model_type="hubert"), "model_type"),
    (dict(hidden_size=1000), "not a multiple"),
    (dict(conv_depthwise_kernel_size=30), "even"),
    (dict(feature_projection_input_dim=80), "feature_projection_input_dim=80"),
])
def test_unrepresentable_configs_are_refused(override, message):
  hf = transformers.Wav2Vec2BertConfig().to_dict() | override
  with pytest.raises(ValueError, match=message):
    w2v_bert_import.config_from_hf(hf)


def test_every_reason_is_listed_and_preprocessors_are_checked():
  hf = transformers.Wav2Vec2BertConfig().to_dict() | dict(hidden_act="tanh", position_embeddings_type="alibi")
  pre = dict(feature_extractor_type="Wav2Vec2FeatureExtractor", padding_side="left")
  with pytest.raises(ValueError) as e:
    w2v_bert_import.config_from_hf(hf, pre)
  for reason in ("hidden_act", "alibi", "Wav2Vec2FeatureExtractor", "padding_side"):
    assert reason in str(e.value)
  pre = transformers.SeamlessM4TFeatureExtractor(num_mel_bins=40).to_dict()
  assert w2v_bert_import.config_from_hf(TINY_HF | dict(feature_projection_input_dim=80), pre).fbank.num_mel_bins == 40
  with pytest.raises(ValueError, match="num_mel_bins · stride = 80"):
    w2v_bert_import.config_from_hf(TINY_HF, pre)


def test_missing_unused_and_skipped_tensors():
  model = _reference()
  config, params = _import(model)
  state = _state(model)
  with pytest.raises(ValueError, match="not used.*extra.weight"):
    w2v_bert_import.convert(config, state | {"extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match="not used.*encoder.layers.3"):  # a layer beyond the config
    w2v_bert_import.convert(config, state | {"encoder.layers.3.final_layer_norm.bias": np.zeros(32, np.float32)})
  missing = dict(state)
  missing.pop("encoder.layers.1.self_attn.distance_embedding.weight")
  with pytest.raises(KeyError, match="encoder.layers.1.self_attn.distance_embedding.weight"):
    w2v_bert_import.convert(config, missing)
  with pytest.raises(ValueError, match="do not fit"):
    w2v_bert_import.convert(config, state | {"feature_projection.projection.bias": np.zeros(31, np.float32)})
  # A task model's checkpoint: the encoder under `wav2vec2_bert.`, its head skipped.
  task = {f"wav2vec2_bert.{k}": v for k, v in state.items()} | {"lm_head.weight": np.zeros((5, 32), np.float32)}
  jax.tree.map(np.testing.assert_array_equal, w2v_bert_import.convert(config, task), params)


def test_adapter_checkpoints_load_with_the_adapter_skipped(tmp_path):
  """The adapter only changes last_hidden_state; every Conformer hidden state is still matched."""
  model = _reference(add_adapter=True, use_intermediate_ffn_before_adapter=True, output_hidden_size=16)
  state = _state(model)
  assert any(k.startswith("adapter.") for k in state) and any(k.startswith("intermediate_ffn.") for k in state)
  model.save_pretrained(tmp_path)
  encoder = w2v_bert_import.load_w2v_bert(str(tmp_path))
  waveform = speech_like(np.random.default_rng(3), 8000)
  ref = _hf_hidden_states(model, _hf_inputs(waveform[None]))
  features, _ = encoder.features(waveform[None], np.array([8000]), 3)
  _close(np.asarray(features)[0], ref[3][0])
