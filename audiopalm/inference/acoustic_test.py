"""AcousticStages with tiny random models and the bundled codec: prompts laid out as the stage formats lay out
training sequences, codes in range, and waveforms of the length the semantic tokens imply."""

import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.codec.checkpoint import load_codec
from audiopalm.data.packing import to_batch
from audiopalm.formats.audiolm_stages import CoarseAcousticConfig, FineAcousticConfig, coarse_acoustic, fine_acoustic
from audiopalm.inference.acoustic import AcousticConfig, AcousticStages, VoicePrompt
from audiopalm.inference.audio_tokens import BUNDLED
from audiopalm.inference.models import load_model
from audiopalm.inference.sampling import SamplingConfig
from audiopalm.inference.tiny_models import export_tiny
from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer

HOP = 320  # the bundled codec: 16 kHz, 50 Hz frames; semantic tokens at 25 Hz: 2 acoustic frames each


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("acoustic_models")
  return (load_model(export_tiny(root / "coarse", "acoustic", model_preset("tiny"), seed=1)),
          load_model(export_tiny(root / "fine", "acoustic", model_preset("tiny"), seed=2)))


def _stages(models, **kwargs):
  coarse, fine = models
  config = AcousticConfig(coarse=CoarseAcousticConfig(crop_seconds=kwargs.pop("window", 10.0)),
                          fine=FineAcousticConfig(chunk_seconds=kwargs.pop("chunk", 3.0)), **kwargs)
  return AcousticStages(coarse, fine, load_codec(str(BUNDLED["acoustic"])), 25.0, config)


def test_synthesized_waveforms_last_as_long_as_their_semantic_tokens(models):
  # A 1 s window (25 blocks, 0.4 s of it voice prompt) and 0.3 s fine chunks: several windows and chunks each.
  stages = _stages(models, window=1.0, chunk=0.3, voice_prompt_seconds=0.4)
  rng = np.random.default_rng(0)
  semantic = [rng.integers(0, 256, n) for n in (37, 5, 60)]
  prompt = stages.voice_prompt(rng.integers(0, 256, 40), rng.integers(0, 256, (81, 8)))
  assert prompt.semantic.shape == (10,) and prompt.acoustic.shape == (20, 4)  # 0.4 s = 10 blocks
  coarse = stages.coarse(semantic, prompt)
  assert [c.shape for c in coarse] == [(74, 4), (10, 4), (120, 4)]
  full = stages.fine(coarse)
  assert [c.shape for c in full] == [(74, 8), (10, 8), (120, 8)]
  for c, f in zip(coarse, full):
    np.testing.assert_array_equal(f[:, :4], c)
    assert f.min() >= 0 and f.max() < 256
  waves = stages.decode(full)
  assert [w.shape for w in waves] == [(n * 2 * HOP,) for n in (37, 5, 60)]
  assert all(np.isfinite(w).all() and np.abs(w).max() > 0 for w in waves)
  unprompted = stages.synthesize(semantic)
  assert [w.shape for w in unprompted] == [(n * 2 * HOP,) for n in (37, 5, 60)]


def test_prompts_are_the_training_layouts(models):
  """The coarse prompt (voice prompt + target) is the prefix of the coarse_acoustic format's sequence of the
  whole recording; the fine prompt is the fine_acoustic format's conditioning part."""
  stages = _stages(models)
  coarse_model = stages.coarse_model
  rng = np.random.default_rng(1)
  semantic = np.repeat(rng.integers(0, 256, 20), 2)  # repeats, so deduplication matters
  acoustic = rng.integers(0, 256, (80, 8))
  example = {"semantic": semantic, "acoustic": acoustic, "semantic_frame_rate": 25.0, "acoustic_frame_rate": 50.0}
  sequence = next(coarse_acoustic(example, coarse_model.vocab, rng, CoarseAcousticConfig()))
  prompt = stages.voice_prompt(semantic[:12], acoustic[:24])
  built = stages.coarse_prompt(semantic[12:], prompt)
  np.testing.assert_array_equal(built, sequence.tokens[:built.size])
  assert built.size == sequence.tokens.size - 1 - (80 - 24) * 4  # the rest: target frames and EOS

  chunk = next(fine_acoustic(example, stages.fine_model.vocab, np.random.default_rng(0),
                             FineAcousticConfig(chunk_seconds=2.0)))
  built = stages.fine_prompt(acoustic[:, :4])
  np.testing.assert_array_equal(built, chunk.tokens[:built.size])
  assert built.size == 80 * 4


def test_refusals(models):
  coarse, fine = models
  with pytest.raises(ValueError, match="'flatten' and 'streams' layouts"):
    AcousticConfig(coarse=CoarseAcousticConfig(layout="delay"))
  with pytest.raises(ValueError, match="conditioned on 3"):
    AcousticConfig(fine=FineAcousticConfig(coarse_levels=3))
  other = load_codec(str(BUNDLED["acoustic"]))
  other.variables["codebooks"]["embed"] = other.variables["codebooks"]["embed"] + 1.0
  with pytest.raises(ValueError, match="trained on acoustic tokens of"):
    AcousticStages(coarse, fine, other, 25.0)


def test_semantic_tokens_and_voice_prompts_that_do_not_fit_are_refused(models):
  stages = _stages(models, window=1.0)
  stages.check_semantic(stages.coarse_model.spec.semantic.tokenizer)
  with pytest.raises(ValueError, match="was trained on semantic tokens of"):
    stages.check_semantic("semantic-other")
  rng = np.random.default_rng(2)
  too_long = VoicePrompt(rng.integers(0, 256, 25), rng.integers(0, 256, (50, 4)))  # the whole 1 s window
  with pytest.raises(ValueError, match="fewer than the window's 25"):
    stages.coarse([rng.integers(0, 256, 5)], too_long)
  uneven = VoicePrompt(rng.integers(0, 256, 5), rng.integers(0, 256, (9, 4)))
  with pytest.raises(ValueError, match="whole aligned blocks"):
    stages.coarse([rng.integers(0, 256, 5)], uneven)


@pytest.fixture(scope="module")
def stream_models(tmp_path_factory):
  root = tmp_path_factory.mktemp("acoustic_stream_models")
  return (load_model(export_tiny(root / "coarse", "acoustic", model_preset("tiny"), seed=1, streams=4, semantic=True)),
          load_model(export_tiny(root / "fine", "acoustic", model_preset("tiny"), seed=2, streams=8)))


def test_streams_layout_synthesizes_with_one_position_per_frame(stream_models, models):
  """Multi-stream stage models decode frames + Q' and T + Q - Q' positions; the result has the same shapes and the
  voice prompt's levels are kept as given."""
  config = dict(coarse=CoarseAcousticConfig(crop_seconds=1.0, layout="streams", dedupe=False),
                fine=FineAcousticConfig(chunk_seconds=0.3, layout="streams"), voice_prompt_seconds=0.4)
  stages = AcousticStages(*stream_models, load_codec(str(BUNDLED["acoustic"])), 25.0, AcousticConfig(**config))
  rng = np.random.default_rng(0)
  semantic = [rng.integers(0, 256, n) for n in (37, 5)]
  prompt = stages.voice_prompt(rng.integers(0, 256, 40), rng.integers(0, 256, (81, 8)))
  coarse = stages.coarse(semantic, prompt)
  assert [c.shape for c in coarse] == [(74, 4), (10, 4)]
  full = stages.fine(coarse)
  assert [c.shape for c in full] == [(74, 8), (10, 8)]
  for c, f in zip(coarse, full):
    np.testing.assert_array_equal(f[:, :4], c)
    assert c.min() >= 0 and f.max() < 256
  waves = stages.synthesize(semantic, prompt)
  assert [w.shape for w in waves] == [(n * 2 * HOP,) for n in (37, 5)]
  # A stage config whose layout does not match the model is refused before anything is decoded.
  with pytest.raises(ValueError, match="does not match the model"):
    AcousticStages(*models, load_codec(str(BUNDLED["acoustic"])), 25.0, AcousticConfig(**config))


@pytest.mark.parametrize("lookahead", [0, 3])
def test_greedy_streams_coarse_is_the_training_layouts_argmax(stream_models, lookahead):
  """Greedy coarse codes, laid out by the training format (`coarse_acoustic`) and run through the model in one
  pass, are the argmax of every trained cell: inference and training lay a window out alike (with and without
  semantic lookahead)."""
  coarse_model = stream_models[0]
  config = AcousticConfig(coarse=CoarseAcousticConfig(crop_seconds=1.0, layout="streams", dedupe=False,
                                                      semantic_lookahead=lookahead),
                          fine=FineAcousticConfig(chunk_seconds=0.3, layout="streams"),
                          coarse_sampling=SamplingConfig(temperature=0.0))
  stages = AcousticStages(*stream_models, load_codec(str(BUNDLED["acoustic"])), 25.0, config)
  semantic = np.random.default_rng(1).integers(0, 256, 12)
  codes = stages.coarse([semantic])[0]  # [24, 4], greedy
  example = {"id": "x", "semantic": semantic, "acoustic": np.pad(codes, ((0, 0), (0, 4))), "semantic_frame_rate": 25.0,
             "acoustic_frame_rate": 50.0, "duration": 0.48}
  vocab = coarse_model.vocab
  seq = next(coarse_acoustic(example, vocab, np.random.default_rng(0), config.coarse))
  length = len(seq)
  batch = to_batch({"targets": seq.tokens[None], "weights": seq.weights[None],  # one row, as the trainer shifts it
                    "targets_segment_ids": np.ones((1, length), np.int32),
                    "targets_positions": np.arange(length)[None]},
                   bos_id=vocab.spec.text.eos_id, pad_id=vocab.spec.text.pad_id)
  logits = Transformer(coarse_model.cfg).apply({"params": coarse_model.params}, jnp.asarray(batch["inputs"]),
                                               jnp.asarray(batch["positions"]), jnp.asarray(batch["segment_ids"]))[0]
  for s, (start, end) in enumerate(coarse_model.cfg.stream_vocab):
    trained = seq.weights[:, s] > 0
    if s == 0:
      assert not trained.any()
      continue
    assert trained.sum() == 24
    np.testing.assert_array_equal(np.argmax(np.asarray(logits)[trained, start:end], -1) + start, seq.tokens[trained, s])
