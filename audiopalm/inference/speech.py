"""The AudioPaLM tasks at inference: ASR (semantic tokens → text), TTS (text → semantic tokens) and speech
continuation (semantic tokens → more semantic tokens), with the decoder the speech-text mixture trained.

    speech = SpeechTasks(load_model("runs/speech_text_from_text"))
    texts = speech.transcribe([codes_1, codes_2], language="English")    # semantic codes [T] each
    codes = speech.synthesize(["turn left twice"], language="English")   # → semantic codes [T'] each

Prompts are built by the same functions the training formats use (`formats.audiopalm_tasks.asr_prompt`, ...),
so they match what the model saw: `[ASR English] ` + audio ids, `[TTS English] ` + text ids, (tag) + audio ids.
A word-interleaved TTS model (`TtsConfig.word_interleaved`) is given each next word when it ends the audio of
the one before (`inference.decode_words`). Decoding is constrained to the output's modality (text ids for ASR,
semantic ids for TTS and continuation) and stops at the text vocabulary's EOS, which ends every output in
training. The `SpeechConfig`'s format configs
must be those of the training mixture (tags, `dedupe_semantic`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import numpy as np

from audiopalm.formats.audiopalm_tasks import (AsrConfig, ContinuationConfig, TtsConfig, asr_prompt,
                                               continuation_prompt, tts_prompt, tts_word_prompt)
from audiopalm.inference.models import LoadedModel, audio_codes
from audiopalm.inference.sampling import SamplingConfig

SEMANTIC = "semantic"


@dataclasses.dataclass(frozen=True)
class SpeechConfig:
  """How the AudioPaLM tasks are prompted and decoded.

  Attributes:
    asr, tts, continuation: the training mixture's format configs (tags, dedupe_semantic).
    text_sampling: how text is decoded (default greedy).
    speech_sampling: how semantic tokens are decoded (default: temperature 0.6, AudioLM's for its semantic
      stage; greedy decoding of speech tends to loop on one unit and never reach EOS).
    max_text_tokens: the longest transcript, in text tokens (EOS included).
    max_speech_seconds: the longest generated speech (semantic frames at the tokenizer's rate).
    semantic_frame_rate: semantic tokens per second (the semantic tokenizer's).
    batch_size: prompts decoded at once.
    seed: sampling seed.
  """

  asr: AsrConfig = AsrConfig()
  tts: TtsConfig = TtsConfig()
  continuation: ContinuationConfig = ContinuationConfig()
  text_sampling: SamplingConfig = SamplingConfig()
  speech_sampling: SamplingConfig = SamplingConfig(temperature=0.6)
  max_text_tokens: int = 256
  max_speech_seconds: float = 20.0
  semantic_frame_rate: float = 25.0
  batch_size: int = 16
  seed: int = 0

  def __post_init__(self):
    if self.max_text_tokens < 1 or self.batch_size < 1:
      raise ValueError(f"SpeechConfig: max_text_tokens ({self.max_text_tokens}) and batch_size ({self.batch_size}) "
                       "must be >= 1")
    if not (self.max_speech_seconds > 0 and self.semantic_frame_rate > 0):
      raise ValueError(f"SpeechConfig: max_speech_seconds ({self.max_speech_seconds}) and semantic_frame_rate "
                       f"({self.semantic_frame_rate}) must be > 0")

  @property
  def max_speech_tokens(self) -> int:
    return max(1, math.ceil(self.max_speech_seconds * self.semantic_frame_rate))


def _per_item(language: str | Sequence[str | None] | None, count: int) -> list[str | None]:
  """One language for every item, or a list of them (one per item)."""
  return [language] * count if language is None or isinstance(language, str) else list(language)


class SpeechTasks:
  """ASR, TTS and continuation with one speech-text decoder (see the module docstring)."""

  def __init__(self, model: LoadedModel, config: SpeechConfig = SpeechConfig()):
    if model.spec.semantic is None:
      raise ValueError(f"{model.path}: its vocabulary has no semantic range; it was not trained on speech")
    self.model, self.config = model, config

  def _decode_text(self, ids: np.ndarray) -> str:
    ids = np.asarray(ids)
    stop = np.flatnonzero(ids == self.model.eos_id)
    return self.model.vocab.text.decode(ids[:stop[0]] if stop.size else ids)

  def transcribe(self, semantic: Sequence[np.ndarray], language: str | Sequence[str] | None = "English",
                 ) -> list[str]:
    """Semantic codes [T] per utterance → its transcript ("" for an utterance without tokens)."""
    prompts = [asr_prompt(self.model.vocab, codes, lang, self.config.asr)
               for codes, lang in zip(semantic, _per_item(language, len(semantic)), strict=True)]
    todo = [i for i, p in enumerate(prompts) if p is not None]
    texts = [""] * len(prompts)
    out = self.model.generate([prompts[i] for i in todo], self.config.max_text_tokens,
                              sampling=self.config.text_sampling, rng=jax.random.key(self.config.seed),
                              stop_tokens=[self.model.eos_id], allowed_mask=self.model.mask("text"),
                              batch_size=self.config.batch_size)
    for i, ids in zip(todo, out):
      texts[i] = self._decode_text(ids)
    return texts

  def _speech(self, prompts: Sequence[np.ndarray], max_tokens: int | None, seed_offset: int) -> list[np.ndarray]:
    out = self.model.generate(prompts, max_tokens or self.config.max_speech_tokens,
                              sampling=self.config.speech_sampling,
                              rng=jax.random.key(self.config.seed + seed_offset), stop_tokens=[self.model.eos_id],
                              allowed_mask=self.model.mask(SEMANTIC), batch_size=self.config.batch_size)
    return [audio_codes(self.model, ids, SEMANTIC) for ids in out]

  def synthesize(self, texts: Sequence[str], language: str | Sequence[str] | None = "English") -> list[np.ndarray]:
    """Text per utterance → semantic codes [T] (until EOS, at most `max_speech_seconds`; word-interleaved when the
    model was trained so, `TtsConfig.word_interleaved`: each word's audio after it, the words given in turn)."""
    languages = _per_item(language, len(texts))
    if not self.config.tts.word_interleaved:
      prompts = [tts_prompt(self.model.vocab, text, lang, self.config.tts)
                 for text, lang in zip(texts, languages, strict=True)]
      return self._speech(prompts, None, 1)
    todo = [i for i, text in enumerate(texts) if text.split()]
    pairs = [tts_word_prompt(self.model.vocab, texts[i], languages[i], self.config.tts) for i in todo]
    words = [later for _, later in pairs]
    out = self.model.generate_words([prompt for prompt, _ in pairs], words,
                                    self.config.max_speech_tokens + max((sum(w.size for w in ws) for ws in words),
                                                                        default=0),
                                    sampling=self.config.speech_sampling, rng=jax.random.key(self.config.seed + 1),
                                    batch_size=self.config.batch_size)
    codes = [np.zeros(0, np.int32) for _ in texts]
    semantic = self.model.spec.semantic
    for i, ids in zip(todo, out):
      ids = ids[(ids >= semantic.offset) & (ids < semantic.end)]
      codes[i] = (ids - semantic.offset).astype(np.int32)
    return codes

  def continue_speech(self, semantic: Sequence[np.ndarray], max_seconds: float | None = None,
                      language: str | None = None) -> list[np.ndarray]:
    """Semantic codes [T] of a prompt per utterance → the codes that follow it (the prompt not included)."""
    prompts = [continuation_prompt(self.model.vocab, codes, language, self.config.continuation) for codes in semantic]
    if any(p is None for p in prompts):
      raise ValueError("continue_speech: a prompt has no semantic tokens")
    limit = None if max_seconds is None else max(1, math.ceil(max_seconds * self.config.semantic_frame_rate))
    return self._speech(prompts, limit, 2)
