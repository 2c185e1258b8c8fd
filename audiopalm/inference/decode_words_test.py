"""Word-interleaved generation with a tiny random decoder: the words come in order between sampled audio, the
cached loop equals a naive one, and the TTS prompt is the training format's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.formats.audiopalm_tasks import TtsConfig, tts, tts_word_prompt
from audiopalm.inference.decode_words import generate_words
from audiopalm.inference.models import load_model
from audiopalm.inference.sampling import SamplingConfig
from audiopalm.inference.speech import SpeechConfig, SpeechTasks
from audiopalm.inference.tiny_models import export_tiny
from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer

TEXTS = ["turn right", "push the red box", "stop"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  return load_model(export_tiny(tmp_path_factory.mktemp("words") / "main", "speech_text", model_preset("tiny"), seed=5))


def _words(model, texts):
  return [tts_word_prompt(model.vocab, t, "English") for t in texts]


def _forward(model, ids):
  return jax.jit(lambda p, x: Transformer(model.cfg).apply({"params": p}, x, jnp.arange(x.shape[1])[None],
                                                           jnp.ones_like(x)))(model.params, jnp.asarray(ids))


def _naive(model, prompt, words, allowed, max_new, max_word):
  """Greedy, the whole sequence through the model at every step, the rule of the module docstring by hand."""
  semantic, eos = model.spec.semantic, model.eos_id
  queue = [w for word in words for w in word]
  starts = np.cumsum([0] + [len(w) for w in words])[:len(words)].tolist()
  seq, out, ptr, forcing, run = list(prompt), [], 0, False, 0
  width = len(prompt) + max_new  # a causal model: what follows a position does not change its logits
  for _ in range(max_new):
    ids = np.zeros((1, width), np.int32)
    ids[0, :len(seq)] = seq
    logits = np.asarray(_forward(model, ids))[0, len(seq) - 1]
    sampled = int(np.argmax(np.where(allowed, logits, -np.inf)))
    if forcing or not semantic.offset <= sampled < semantic.end or run >= max_word:
      run = 0
      if ptr == len(queue):
        out.append(eos)
        return out
      token, ptr = queue[ptr], ptr + 1
      forcing = ptr < len(queue) and ptr not in starts
    else:
      token, run = sampled, run + 1
    out.append(token)
    seq.append(token)
  return out


def test_the_words_come_in_order_and_the_cached_loop_is_the_naive_one(model):
  pairs = _words(model, TEXTS)
  prompts, words = [p for p, _ in pairs], [w for _, w in pairs]
  semantic, eos = model.spec.semantic, model.eos_id
  # A random model prefers text tokens; allowing only audio and EOS makes it speak, and max_word_tokens (or EOS)
  # end its words.
  allowed = model.mask("semantic")
  out = generate_words(model.params, model.cfg, prompts, words, audio_range=(semantic.offset, semantic.end),
                       eos_id=eos, max_new_tokens=40, allowed=allowed, max_word_tokens=3)
  for row, ws, prompt in zip(out, words, prompts):
    assert row[-1] == eos and ((row >= semantic.offset) & (row < semantic.end)).sum() > len(ws)
    text = row[(row < semantic.offset) | (row >= semantic.end)]
    np.testing.assert_array_equal(text[:-1], np.concatenate(ws) if ws else [])  # the later words, in order
    assert (np.diff(np.flatnonzero((row < semantic.offset) | (row >= semantic.end))) > 0).all()
    assert row.tolist() == _naive(model, prompt.tolist(), [w.tolist() for w in ws], allowed, 40, 3)
  # Batch composition changes nothing (greedy).
  alone = generate_words(model.params, model.cfg, prompts[1:2], words[1:2], audio_range=(semantic.offset, semantic.end),
                         eos_id=eos, max_new_tokens=40, allowed=allowed, max_word_tokens=3)
  np.testing.assert_array_equal(alone[0], out[1])
  with pytest.raises(ValueError, match="word lists"):
    generate_words(model.params, model.cfg, prompts, words[:1], audio_range=(semantic.offset, semantic.end),
                   eos_id=eos, max_new_tokens=4, allowed=allowed)
  with pytest.raises(ValueError, match="allow audio"):
    generate_words(model.params, model.cfg, prompts, words, audio_range=(semantic.offset, semantic.end),
                   eos_id=eos, max_new_tokens=4, allowed=model.mask("text"))


def test_speech_tasks_synthesize_word_by_word_with_the_training_prompt(model):
  config = TtsConfig(word_interleaved=True)
  speech = SpeechTasks(model, SpeechConfig(tts=config, max_speech_seconds=1.0, batch_size=2,
                                           speech_sampling=SamplingConfig(temperature=0.8)))
  codes = speech.synthesize(TEXTS + [" "])
  assert len(codes) == 4 and codes[3].size == 0
  for c in codes[:3]:  # a random model prefers text: it may end every word at once
    assert c.dtype == np.int32 and c.size <= 25 + 12 and (c.size == 0 or (c.min() >= 0 and c.max() < 256))
  # The prompt is the unweighted head of the training sequence, up to the first word's audio.
  example = {"semantic": np.arange(20) % 7, "transcript": "push the red box", "language": "English",
             "alignments": np.array([[0.0, 0.2], [0.24, 0.3], [0.34, 0.5], [0.56, 0.8]])}
  sequence = next(tts(example, model.vocab, np.random.default_rng(0), config))
  prompt, _ = tts_word_prompt(model.vocab, "push the red box", "English", config)
  np.testing.assert_array_equal(sequence.tokens[:prompt.size], prompt)
  assert not sequence.weights[:prompt.size].any() and sequence.weights[prompt.size] > 0
