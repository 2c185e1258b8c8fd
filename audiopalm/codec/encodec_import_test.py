"""Parity of the JAX codec with `transformers`' torch EnCodec, from randomly initialised reference models.

Tolerances (stated once): latents and decoded audio agree to ATOL_REL × the reference's peak magnitude.
Codes are identical, except where the reference's residual is within TIE_REL of two codebook entries (a
near-tie that float rounding may break either way); the frame's later levels are then not compared.
"""

import json

import jax
import numpy as np
import pytest

from audiopalm.codec import checkpoint, encodec_import
from audiopalm.codec import model as model_lib
from audiopalm.main.presets import codec_preset

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL_REL = 1e-4
TIE_REL = 1e-4

SMALL = dict(num_filters=4, upsampling_ratios=[4, 2], hidden_size=8, codebook_size=16, sampling_rate=8000,
             target_bandwidths=[4.0], num_lstm_layers=2, num_residual_layers=2, dilation_growth_rate=3)


def _reference(hf_kwargs, seed=0):
  torch.manual_seed(seed)
  cfg = transformers.EncodecConfig(**hf_kwargs)
  model = transformers.EncodecModel(cfg).eval()
  with torch.no_grad():  # transformers zero-initialises codebooks: give them random entries
    for layer in model.quantizer.layers:
      embed = torch.randn_like(layer.codebook.embed) * 0.5
      layer.codebook.embed.copy_(embed)
      layer.codebook.embed_avg.copy_(embed)
      layer.codebook.cluster_size.fill_(1.0)
  return model


def _save(model, tmp_path):
  model.save_pretrained(tmp_path)
  return str(tmp_path)


def _check_codes(ref_codes, codes, ref_latents, embed):
  """Codes equal, except at demonstrable near-ties (then the frame's later levels are skipped)."""
  batch, frames, levels = ref_codes.shape
  ties = 0
  for b in range(batch):
    for t in range(frames):
      residual = ref_latents[b, t].astype(np.float64)
      for q in range(levels):
        a, c = ref_codes[b, t, q], codes[b, t, q]
        if a != c:
          dist = np.sum((embed[q] - residual) ** 2, axis=-1)
          gap = abs(dist[a] - dist[c])
          assert gap <= TIE_REL * max(dist[a], 1e-12), f"code mismatch at {(b, t, q)}: {a} vs {c}, gap {gap}"
          ties += 1
          break
        residual = residual - embed[q][a]
  return ties


def _torch_encode(model, audio, num_q):
  with torch.no_grad():
    x = torch.from_numpy(audio)[:, None]
    latents = model.encoder(x)  # [B, D, T]
    codes = model.quantizer.encode(latents, bandwidth=None)[:num_q]  # [Q, B, T]
  return latents.numpy().transpose(0, 2, 1), codes.numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("hf_kwargs,seconds", [(SMALL, 0.5), ({}, 0.4)], ids=["small", "default_24khz"])
def test_parity_with_transformers(tmp_path, hf_kwargs, seconds):
  model = _reference(hf_kwargs)
  codec = encodec_import.load_encodec(_save(model, tmp_path))
  cfg = codec.config
  hop = cfg.hop_length
  samples = int(seconds * cfg.sample_rate) // hop * hop
  audio = (np.random.default_rng(0).standard_normal((2, samples)) * 0.1).astype(np.float32)

  ref_latents, ref_codes = _torch_encode(model, audio, cfg.num_quantizers)
  latents, _ = model_lib.CodecNetwork(cfg).apply({"params": codec.variables["params"]}, audio,
                                                  method=model_lib.CodecNetwork.encode)
  np.testing.assert_allclose(np.asarray(latents), ref_latents, rtol=0, atol=ATOL_REL * np.abs(ref_latents).max())

  codes, code_lengths = codec.encode(audio)
  assert codes.shape == ref_codes.shape and list(code_lengths) == [samples // hop] * 2
  embed = np.asarray(codec.variables["codebooks"]["embed"], np.float64)
  _check_codes(ref_codes, np.asarray(codes), ref_latents, embed)

  with torch.no_grad():
    ref_audio = model.decode(torch.from_numpy(ref_codes.transpose(0, 2, 1))[None], [None])[0][:, 0].numpy()
  decoded, lengths = codec.decode(ref_codes)
  assert list(lengths) == [samples] * 2
  np.testing.assert_allclose(np.asarray(decoded), ref_audio, rtol=0, atol=ATOL_REL * np.abs(ref_audio).max())


def test_partial_last_frame_is_the_only_difference(tmp_path):
  model = _reference(SMALL)
  codec = encodec_import.load_encodec(_save(model, tmp_path))
  hop = codec.config.hop_length
  audio = (np.random.default_rng(1).standard_normal((2, 40 * hop - 3)) * 0.1).astype(np.float32)
  with torch.no_grad():
    ref = model.encode(torch.from_numpy(audio)[:, None], bandwidth=4.0).audio_codes[0].numpy()  # [B, Q, T]
  codes, code_lengths = codec.encode(audio)
  assert list(code_lengths) == [40, 40]
  np.testing.assert_array_equal(np.asarray(codes)[:, :-1], ref.transpose(0, 2, 1)[:, :-1])


def test_default_config_maps_to_the_preset():
  hf = transformers.EncodecConfig().to_dict()
  assert encodec_import.config_from_hf(hf) == codec_preset("encodec_24khz")


@pytest.mark.parametrize("override,message", [
    (dict(normalize=True), "normalize"), (dict(norm_type="time_group_norm"), "time_group_norm"),
    (dict(use_causal_conv=False), "causal"), (dict(audio_channels=2), "audio_channels"),
    (dict(chunk_length_s=1.0, overlap=0.01), "chunk_length_s"), (dict(pad_mode="replicate"), "pad_mode")])
def test_unrepresentable_options_are_refused(override, message):
  hf = transformers.EncodecConfig().to_dict() | override
  with pytest.raises(ValueError, match=message):
    encodec_import.config_from_hf(hf)


def test_old_weight_norm_names_and_unused_tensors(tmp_path):
  model = _reference(SMALL)
  cfg = encodec_import.config_from_hf(model.config.to_dict())
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  renamed = {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
  a, b = encodec_import.convert(cfg, state), encodec_import.convert(cfg, renamed)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  with pytest.raises(ValueError, match="not used"):
    encodec_import.convert(cfg, state | {"extra.weight": np.zeros(3)})
  state.pop("encoder.layers.0.conv.bias")
  with pytest.raises(KeyError, match="encoder.layers.0.conv.bias"):
    encodec_import.convert(cfg, state)


def test_load_codec_reads_both_formats(tmp_path):
  model = _reference(SMALL)
  hf_dir = _save(model, tmp_path / "hf")
  imported = checkpoint.load_codec(hf_dir)
  checkpoint.save_codec(str(tmp_path / "own"), imported.config, imported.variables)
  reloaded = checkpoint.load_codec(str(tmp_path / "own"))
  assert reloaded.config == imported.config
  jax.tree.map(np.testing.assert_array_equal, reloaded.variables, imported.variables)
  assert json.loads((tmp_path / "own" / checkpoint.CONFIG_FILE).read_text())["format_version"] == 1
  with pytest.raises(FileExistsError):
    checkpoint.save_codec(str(tmp_path / "own"), imported.config, imported.variables)
