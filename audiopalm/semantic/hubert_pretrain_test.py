"""HuBERT's masked-prediction run at a tiny size: it trains, writes a transformers directory, refuses a rerun."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from audiopalm.semantic import hubert_pretrain
from audiopalm.ssl import hubert
from audiopalm.ssl.load import load_encoder

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGETS = str(ROOT / "audiopalm/data/assets/demo_semantic")
SPEAKER = ROOT / "audiopalm/data/assets/demo_speech/train/101"
# Base HuBERT's 50 Hz front end at 16 channels, one Transformer layer of width 32.
ENCODER = hubert.HubertConfig(conv_dim=(16,) * 7, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                              intermediate_size=64, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
                              do_normalize=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Eight bundled recordings and a corrupt file."""
  directory = tmp_path_factory.mktemp("audio")
  for f in sorted(SPEAKER.rglob("*.flac"))[:8]:
    shutil.copy(f, directory / f.name)
  (directory / "broken.flac").write_bytes(b"not audio")
  return str(directory)


def test_span_mask_covers_spans_of_valid_frames_only():
  rng = np.random.default_rng(0)
  mask = hubert_pretrain.span_mask(rng, np.array([100, 7, 0]), 100, 0.08, 10)
  assert mask.shape == (3, 100)
  assert 0.3 < mask[0].mean() < 0.8  # about half, as HuBERT's 0.08 × 10
  assert mask[1].any() and not mask[1, 7:].any()  # at least one span, cut at the end
  assert not mask[2].any()


def test_config_refusals_list_every_problem():
  with pytest.raises(ValueError, match="steps must be >= 1.*mask_prob must be in"):
    hubert_pretrain.HubertPretrainConfig(steps=0, mask_prob=1.5)
  with pytest.raises(ValueError, match="masked_weight must be in"):
    hubert_pretrain.HubertPretrainConfig(masked_weight=2.0)


def test_training_learns_and_writes_a_transformers_hubert(tmp_path, corpus):
  out = str(tmp_path / "hubert")
  config = hubert_pretrain.HubertPretrainConfig(steps=40, batch_size=8, crop_seconds=1.0, learning_rate=3e-3,
                                                warmup_steps=5, log_every=10)
  summary = hubert_pretrain.pretrain_hubert(audio_paths=[corpus], targets=TARGETS, output_dir=out, encoder=ENCODER,
                                            config=config)
  assert summary["recordings"] == 8
  assert [path.endswith("broken.flac") for path, _ in summary["skipped"]] == [True]
  history = summary["history"]
  assert [h["step"] for h in history] == [10, 20, 30, 40]
  # It learns: the masked loss falls well below where it starts (above ln 256 = 5.55 at initialisation).
  assert history[-1]["masked_loss"] < history[0]["masked_loss"] - 0.3, history
  assert json.loads((tmp_path / "hubert" / "pretrain.json").read_text())["history"] == history

  encoder = load_encoder(out)  # a HuBERT directory as any other: the next iteration's encoder
  assert encoder.config == ENCODER
  features, frames = encoder.features(np.zeros((1, 16000), np.float32), None, 1)
  assert features.shape == (1, 49, 32) and int(frames[0]) == 49
  transformers = pytest.importorskip("transformers")
  _, info = transformers.HubertModel.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]

  with pytest.raises(FileExistsError, match="already trained"):
    hubert_pretrain.pretrain_hubert(audio_paths=[corpus], targets=TARGETS, output_dir=out, encoder=ENCODER,
                                    config=config)
