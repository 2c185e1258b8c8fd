"""AudioPaLM task formats: speech–text sequences over the combined vocabulary, semantic tokens as the audio.

Each format is a function `(example, vocab, rng, config) -> Iterator[TokenSequence]`, registered under its name
with its default config (`functools.partial`), so a mixture names it and may bind another config. An example is a
`audiopalm.tokens.schema.parse_example` dict (transcript None = no transcript, language None = unknown, `semantic`
[T_s] codes, `semantic_frame_rate`); the translation tasks also read `translation_text`, `translation_language`
and `translation_semantic` [T'] codes, and `interleaved` reads `alignments` when present. Layouts ('|' separates
the unweighted prompt, weight `prompt_weight`, from the output, weight `output_weight`; EOS is the text
vocabulary's and belongs to the output):

    asr           [ASR <lang>] ␣ audio                       | transcript EOS
    tts           [TTS <lang>] ␣ transcript                  | audio EOS
    tts (words)   [TTS <lang>] ␣ transcript ␣w_1             | audio(w_1) ␣[w_2] audio(w_2) ... audio(w_W) EOS
    continuation  (tag ␣) audio[:prefix]                     | audio[prefix:] EOS
    text_lm                                                  | transcript EOS
    interleaved   (tag ␣) (first `unweighted_prefix` tokens) | text_1 audio_2 text_3 ... EOS   (or audio_1 text_2 ...)
    ast           [AST <src> <tgt>] ␣ audio                  | translation EOS
    s2st          [S2ST <src> <tgt>] ␣ audio                 | translated audio EOS
    asr_ast_s2st  [ASR AST S2ST <src> <tgt>] ␣ audio         | transcript ' | ' translation, translated audio EOS

Tags are plain text encoded by the text vocabulary, as AudioPaLM does, followed by one space ('␣'). 'audio' is
the example's semantic tokens, with consecutive repeats removed when `dedupe_semantic` (off by default: AudioLM
removes them, AudioPaLM does not say).

`tts` with `TtsConfig.word_interleaved` repeats the transcript word by word, each word (' ' + word, encoded on
its own) followed by the audio the example's `alignments` give it (cut in the middle of the gap between two
words; the first word's audio starts at frame 0, the last one's ends at the end). Of each later word only its
first token is output (the model says when a word's audio ends by starting the next word); its other tokens,
written '[w_i]', are weighted like the prompt, because generation writes them itself. The audio of a word then
sits right after that word's text, so the model maps text to speech locally instead of finding its place in the
transcript (decoder-only TTS must learn that monotonic alignment from data; with little data it does not:
docs/benchmarks.md, "Word-interleaved TTS"). ELLA-V (Song et al. 2024) interleaves phonemes and codec tokens
the same way.

Skipped examples (the format yields nothing): no transcript (asr, tts, text_lm, interleaved, the combined task
with ASR), an empty transcript (tts, text_lm, interleaved: nothing to say or to learn; asr keeps it: silence →
EOS), no language and no `default_language`, no audio, no translation fields (ast, s2st, combined).

`max_length`: a sequence longer than it is dropped (yields nothing) by every format except `continuation`, which
keeps its prefix and crops the continuation to fit; its EOS then marks the end of the crop, not of the
utterance (said again in `continuation`). Dropping is the honest choice for the paired tasks: without word
alignments a crop of the audio cannot be matched to a crop of the text, and a cropped output would teach EOS
mid-sentence. Segments of ≤ 30 s (750 semantic tokens at 25 Hz) fit in common context lengths, so few drop.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from audiopalm.formats.base import TokenSequence, concat, register_format
from audiopalm.vocab.combined import CombinedVocabulary

_TASKS = ("ASR", "AST", "S2ST")  # the parts of a combined task, in the order their outputs come


# ---------------------------------------------------------------------------------------------------------------
# Configs: one per format; the shared fields live in two private bases.


def _check_tag(tag: str, names: Sequence[str], what: str) -> None:
  """Fails unless `tag` formats with exactly the placeholders `names` available."""
  try:
    tag.format(**{n: "x" for n in names})
  except (KeyError, IndexError, ValueError) as e:
    allowed = ", ".join("{" + n + "}" for n in names) or "none"
    raise ValueError(f"{what}.tag {tag!r} does not format ({e!r}); allowed placeholders: {allowed}") from None


@dataclasses.dataclass(frozen=True)
class _Weights:
  """Fields every format has.

  Attributes:
    output_weight: loss weight of the output tokens (EOS included).
    max_length: sequences longer than this are dropped (continuation: cropped); None: no limit.
  """

  output_weight: float = 1.0
  max_length: int | None = None

  def __post_init__(self):
    name = type(self).__name__
    for field in ("output_weight", "prompt_weight"):
      value = getattr(self, field, 0.0)
      if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}.{field} must be finite and >= 0, got {value}")
    if self.max_length is not None and self.max_length < 2:
      raise ValueError(f"{name}.max_length must be None or >= 2, got {self.max_length}")


@dataclasses.dataclass(frozen=True)
class _AudioTask(_Weights):
  """Fields of the formats with audio and a prompt.

  Attributes:
    prompt_weight: loss weight of the prompt (tag and inputs); 0 in AudioPaLM ("loss only on the output").
    default_language: the language of examples that give none; None: skip them.
    dedupe_semantic: remove consecutive repeated semantic tokens (AudioLM's option; off for AudioPaLM).
    frame_rate: semantic frames per second when the example has no `semantic_frame_rate`.
  """

  prompt_weight: float = 0.0
  default_language: str | None = None
  dedupe_semantic: bool = False
  frame_rate: float = 25.0

  def __post_init__(self):
    super().__post_init__()
    if not self.frame_rate > 0:
      raise ValueError(f"{type(self).__name__}.frame_rate must be > 0, got {self.frame_rate}")


@dataclasses.dataclass(frozen=True)
class AsrConfig(_AudioTask):
  """`asr`: tag + audio → transcript. `tag` may use {language}.

  Attributes:
    semantic_noise: training-time augmentation: each input semantic token is replaced by a unit drawn uniformly
      with the rng with this probability (masking for discrete units; 0 = off). Inference prompts never have it.
  """

  tag: str = "[ASR {language}]"
  semantic_noise: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    _check_tag(self.tag, ("language",), "AsrConfig")
    if not 0.0 <= self.semantic_noise < 1.0:
      raise ValueError(f"AsrConfig.semantic_noise must be in [0, 1), got {self.semantic_noise}")

  def for_evaluation(self) -> "AsrConfig":
    """Without the training-time input noise (held-out evaluation reads clean input)."""
    return dataclasses.replace(self, semantic_noise=0.0)


@dataclasses.dataclass(frozen=True)
class TtsConfig(_AudioTask):
  """`tts`: tag + transcript → audio. `tag` may use {language}.

  Attributes:
    word_interleaved: after the transcript, each word again and then its audio (the module docstring's
      `tts (words)`), cut at the example's word `alignments`; examples without them are skipped. Generation
      (`inference.speech`) gives each next word when the model ends the audio of the one before.
  """

  tag: str = "[TTS {language}]"
  word_interleaved: bool = False

  def __post_init__(self):
    super().__post_init__()
    _check_tag(self.tag, ("language",), "TtsConfig")


@dataclasses.dataclass(frozen=True)
class ContinuationConfig(_AudioTask):
  """`continuation`: an audio prefix → the rest of the audio.

  Attributes:
    tag: "" (default: AudioPaLM names no tag for it) or a tag such as "[Continue {language}]".
    prefix_seconds: the prefix is the audio's first `prefix_seconds` (AudioLM and AudioPaLM prompt with 3 s).
    prefix_fraction: (low, high): instead, a fraction drawn uniformly from [low, high) with the rng.
  """

  tag: str = ""
  prefix_seconds: float = 3.0
  prefix_fraction: tuple[float, float] | None = None

  def __post_init__(self):
    super().__post_init__()
    _check_tag(self.tag, ("language",), "ContinuationConfig")
    if not self.prefix_seconds > 0:
      raise ValueError(f"ContinuationConfig.prefix_seconds must be > 0, got {self.prefix_seconds}")
    if self.prefix_fraction is not None:
      low, high = self.prefix_fraction
      if not 0 < low <= high < 1:
        raise ValueError(f"ContinuationConfig.prefix_fraction must be (low, high) with 0 < low <= high < 1, got "
                         f"{self.prefix_fraction}")


@dataclasses.dataclass(frozen=True)
class TextLmConfig(_Weights):
  """`text_lm`: transcript + EOS, all weighted (a text-only LM task on the transcripts)."""


@dataclasses.dataclass(frozen=True)
class InterleavedConfig(_AudioTask):
  """`interleaved`: alternating text and audio spans of one utterance (see `interleaved`).

  Attributes:
    tag: "" (default) or a tag, which may use {language}.
    min_spans, max_spans: the number of spans k is drawn uniformly from [min_spans, max_spans] (then capped by
      the words and audio tokens there are).
    first: the modality of the first span: 'random' (drawn with the rng), 'text' or 'audio'.
    unweighted_prefix: this many first tokens after the tag get `prompt_weight` (EOS is always weighted).
  """

  tag: str = ""
  min_spans: int = 2
  max_spans: int = 4
  first: str = "random"
  unweighted_prefix: int = 0

  def __post_init__(self):
    super().__post_init__()
    _check_tag(self.tag, ("language",), "InterleavedConfig")
    if not 2 <= self.min_spans <= self.max_spans:
      raise ValueError(f"InterleavedConfig: need 2 <= min_spans <= max_spans, got {self.min_spans}, "
                       f"{self.max_spans}")
    if self.first not in ("random", "text", "audio"):
      raise ValueError(f"InterleavedConfig.first {self.first!r}; choose 'random', 'text' or 'audio'")
    if self.unweighted_prefix < 0:
      raise ValueError(f"InterleavedConfig.unweighted_prefix must be >= 0, got {self.unweighted_prefix}")


@dataclasses.dataclass(frozen=True)
class AstConfig(_AudioTask):
  """`ast`: tag + audio → translated text. `tag` may use {source} and {target}."""

  tag: str = "[AST {source} {target}]"

  def __post_init__(self):
    super().__post_init__()
    _check_tag(self.tag, ("source", "target"), "AstConfig")


@dataclasses.dataclass(frozen=True)
class S2stConfig(_AudioTask):
  """`s2st`: tag + audio → translated audio (`translation_semantic`). `tag` may use {source} and {target}."""

  tag: str = "[S2ST {source} {target}]"

  def __post_init__(self):
    super().__post_init__()
    _check_tag(self.tag, ("source", "target"), "S2stConfig")


@dataclasses.dataclass(frozen=True)
class CombinedConfig(_AudioTask):
  """`asr_ast_s2st`: one tag, one audio input, the outputs of several tasks in one decode.

  Attributes:
    parts: the tasks, a subsequence of ('ASR', 'AST', 'S2ST') of length >= 2; outputs come in this order.
    text_separator: between two text outputs (transcript, translation); text and audio need none. Not a
      newline: SentencePiece's default normalization turns it into nothing.
    tag: None: "[<parts> {source} {target}]", e.g. "[ASR AST S2ST English French]"; or a tag using them.
  """

  parts: tuple[str, ...] = _TASKS
  text_separator: str = " | "
  tag: str | None = None

  def __post_init__(self):
    super().__post_init__()
    parts = tuple(self.parts)
    object.__setattr__(self, "parts", parts)
    if len(parts) < 2 or len(set(parts)) != len(parts) or [p for p in _TASKS if p in parts] != list(parts):
      raise ValueError(f"CombinedConfig.parts {parts}: need >= 2 of {_TASKS}, each once, in that order")
    _check_tag(self.full_tag, ("source", "target"), "CombinedConfig")

  @property
  def full_tag(self) -> str:
    return self.tag if self.tag is not None else "[" + " ".join(self.parts) + " {source} {target}]"


# ---------------------------------------------------------------------------------------------------------------
# Helpers.


def _tag(vocab: CombinedVocabulary, tag: str, **names: str) -> np.ndarray:
  """The tag's text ids, followed by a single space ("" → no ids)."""
  if not tag:
    return np.zeros(0, np.int32)
  return vocab.encode_text(tag.format(**names).rstrip() + " ")


def _needs_language(tag: str) -> bool:
  return "{language" in tag


def _language(example: Mapping[str, Any], config: _AudioTask) -> str | None:
  return example.get("language") or config.default_language


def _audio(vocab: CombinedVocabulary, codes: Any, dedupe: bool) -> tuple[np.ndarray, np.ndarray]:
  """Semantic codes [T] → (ids [T'], starts [T']): T' = T, or fewer with `dedupe` (consecutive repeats
  removed); starts[i] is the first original frame of token i (to cut at times)."""
  codes = np.asarray(codes).reshape(-1)
  starts = np.arange(codes.shape[0])
  if dedupe and codes.size:
    keep = np.ones(codes.shape[0], bool)
    keep[1:] = codes[1:] != codes[:-1]
    codes, starts = codes[keep], starts[keep]
  return vocab.semantic(codes), starts


def _noisy(codes: Any, p: float, num_units: int, rng: np.random.Generator) -> np.ndarray:
  """Codes [T] with each replaced, with probability p, by a unit drawn uniformly from [0, num_units)."""
  codes = np.asarray(codes).reshape(-1)
  replace = rng.random(codes.shape[0]) < p
  return np.where(replace, rng.integers(0, num_units, codes.shape[0]), codes).astype(codes.dtype)


def _frame_rate(example: Mapping[str, Any], config: _AudioTask) -> float:
  rate = example.get("semantic_frame_rate")
  return float(rate) if rate else config.frame_rate


def _eos(vocab: CombinedVocabulary) -> np.ndarray:
  return np.array([vocab.spec.text.eos_id], np.int32)


def _emit(parts: list[tuple[np.ndarray, float]], task: str, max_length: int | None) -> Iterator[TokenSequence]:
  """The sequence of `parts`, unless it is longer than max_length (then nothing: see the module docstring)."""
  seq = concat(parts, task)
  if max_length is None or len(seq) <= max_length:
    yield seq


# ---------------------------------------------------------------------------------------------------------------
# Prompts: the unweighted part of a sequence, which is all that inference has (`audiopalm.inference.speech`).


def _prompt_language(language: str | None, config: _AudioTask, tag: str) -> str:
  language = language or config.default_language
  if language is None and _needs_language(tag):
    raise ValueError(f"the tag {tag!r} needs a language: give one (or set the config's default_language)")
  return language or ""


def _audio_prompt(vocab: CombinedVocabulary, semantic: Any, language: str | None, config: _AudioTask,
                  tag: str) -> np.ndarray | None:
  audio, _ = _audio(vocab, semantic, config.dedupe_semantic)
  if not audio.size:
    return None
  return np.concatenate([_tag(vocab, tag, language=_prompt_language(language, config, tag)), audio]).astype(np.int32)


def asr_prompt(vocab: CombinedVocabulary, semantic: Any, language: str | None,
               config: AsrConfig = AsrConfig()) -> np.ndarray | None:
  """`[ASR <lang>] ` audio: the ids [P] before the transcript (None when there is no audio); semantic: codes [T]."""
  return _audio_prompt(vocab, semantic, language, config, config.tag)


def tts_prompt(vocab: CombinedVocabulary, text: str, language: str | None,
               config: TtsConfig = TtsConfig()) -> np.ndarray:
  """`[TTS <lang>] ` transcript: the ids [P] before the audio."""
  language = _prompt_language(language, config, config.tag)
  return np.concatenate([_tag(vocab, config.tag, language=language), vocab.encode_text(text)]).astype(np.int32)


def tts_word_prompt(vocab: CombinedVocabulary, text: str, language: str | None,
                    config: TtsConfig = TtsConfig()) -> tuple[np.ndarray, list[np.ndarray]]:
  """Word-interleaved TTS: (`[TTS <lang>] ` transcript ␣w_1: the ids [P] before the first word's audio, the ids
  of each later word ␣w_i that generation gives when the model ends the audio of the one before)."""
  words = text.split()
  if not words:
    raise ValueError("word-interleaved TTS needs a transcript with at least one word")
  first, *rest = [vocab.encode_text(" " + w).astype(np.int32) for w in words]
  return np.concatenate([tts_prompt(vocab, text, language, config), first]).astype(np.int32), rest


def continuation_prompt(vocab: CombinedVocabulary, semantic: Any, language: str | None = None,
                        config: ContinuationConfig = ContinuationConfig()) -> np.ndarray | None:
  """(tag ␣) audio: every given semantic code [T] is the prefix to continue (None when there is none)."""
  return _audio_prompt(vocab, semantic, language, config, config.tag)


# ---------------------------------------------------------------------------------------------------------------
# Monolingual tasks.


def asr(example: Mapping[str, Any], vocab: CombinedVocabulary, rng: np.random.Generator,
        config: AsrConfig = AsrConfig()) -> Iterator[TokenSequence]:
  """`[ASR <lang>] ` audio | transcript EOS. Skips no transcript, unknown language, no audio, too long.
  Deterministic unless `semantic_noise` (drawn with the rng)."""
  language, transcript = _language(example, config), example.get("transcript")
  if transcript is None or (language is None and _needs_language(config.tag)):
    return
  semantic = example["semantic"]
  if config.semantic_noise:
    semantic = _noisy(semantic, config.semantic_noise, vocab.spec.semantic.size, rng)
  prompt = asr_prompt(vocab, semantic, language, config)
  if prompt is None:
    return
  yield from _emit([(prompt, config.prompt_weight), (vocab.encode_text(transcript), config.output_weight),
                    (_eos(vocab), config.output_weight)], "asr", config.max_length)


def tts(example: Mapping[str, Any], vocab: CombinedVocabulary, rng: np.random.Generator,
        config: TtsConfig = TtsConfig()) -> Iterator[TokenSequence]:
  """`[TTS <lang>] ` transcript | audio EOS, or word-interleaved (`TtsConfig.word_interleaved`, module docstring).
  Skips no or empty transcript, unknown language, no audio, too long; word-interleaved also no `alignments` or
  fewer audio tokens than words."""
  del rng
  language, transcript = _language(example, config), example.get("transcript")
  if not transcript or (language is None and _needs_language(config.tag)):
    return
  audio, starts = _audio(vocab, example["semantic"], config.dedupe_semantic)
  if not audio.size:
    return
  if not config.word_interleaved:
    yield from _emit([(tts_prompt(vocab, transcript, language, config), config.prompt_weight),
                      (audio, config.output_weight), (_eos(vocab), config.output_weight)], "tts", config.max_length)
    return
  words = transcript.split()
  if example.get("alignments") is None or audio.size < len(words):
    return
  frame_cuts = _audio_cut_frames(example, words, range(1, len(words)), int(np.asarray(example["semantic"]).size),
                                 _frame_rate(example, config))
  bounds = [0, *_strictly_inside([int(np.searchsorted(starts, f, side="left")) for f in frame_cuts], audio.size),
            audio.size]
  prompt, later = tts_word_prompt(vocab, transcript, language, config)
  parts = [(prompt, config.prompt_weight), (audio[bounds[0]:bounds[1]], config.output_weight)]
  for i, word in enumerate(later, start=1):
    parts += [(word[:1], config.output_weight), (word[1:], config.prompt_weight),
              (audio[bounds[i]:bounds[i + 1]], config.output_weight)]
  yield from _emit(parts + [(_eos(vocab), config.output_weight)], "tts", config.max_length)


def text_lm(example: Mapping[str, Any], vocab: CombinedVocabulary, rng: np.random.Generator,
            config: TextLmConfig = TextLmConfig()) -> Iterator[TokenSequence]:
  """transcript EOS, all weighted. Skips no or empty transcript, too long."""
  del rng
  transcript = example.get("transcript")
  if not transcript:
    return
  yield from _emit([(vocab.encode_text(transcript), config.output_weight), (_eos(vocab), config.output_weight)],
                   "text_lm", config.max_length)


def continuation(example: Mapping[str, Any], vocab: CombinedVocabulary, rng: np.random.Generator,
                 config: ContinuationConfig = ContinuationConfig()) -> Iterator[TokenSequence]:
  """(tag ␣) audio[:p] | audio[p:] EOS: continue speech from a prompt. Needs no transcript.

  p covers the first `prefix_seconds` of the audio (frames at the example's `semantic_frame_rate`), or a
  fraction drawn with the rng (`prefix_fraction`), counted in original frames: with `dedupe_semantic` a token
  belongs to the prefix when its run starts in it. Skipped when the prefix or the rest would be empty (audio
  no longer than the prefix), or with a {language} tag and no language.

  `max_length`: the continuation is cropped to fit (the prefix is kept whole; skipped if the prefix alone does
  not leave room for a token and EOS). The EOS of a cropped sequence marks the end of the crop, not the end of
  the utterance.
  """
  language = _language(example, config)
  if language is None and _needs_language(config.tag):
    return
  audio, starts = _audio(vocab, example["semantic"], config.dedupe_semantic)
  frames = int(np.asarray(example["semantic"]).size)
  if config.prefix_fraction is not None:
    cut_frame = int(math.floor(rng.uniform(*config.prefix_fraction) * frames + 0.5))
  else:
    cut_frame = int(math.floor(config.prefix_seconds * _frame_rate(example, config) + 0.5))
  cut = int(np.searchsorted(starts, cut_frame, side="left"))  # tokens whose run starts before cut_frame
  tag = _tag(vocab, config.tag, language=language or "")
  prefix, rest = audio[:cut], audio[cut:]
  if config.max_length is not None:
    rest = rest[:max(0, config.max_length - len(tag) - len(prefix) - 1)]
  if not prefix.size or not rest.size:
    return
  yield concat([(tag, config.prompt_weight), (prefix, config.prompt_weight), (rest, config.output_weight),
                (_eos(vocab), config.output_weight)], "continuation")


# ---------------------------------------------------------------------------------------------------------------
# Interleaved text and audio.


def _word_cuts(words: Sequence[str], k: int) -> list[int]:
  """Word indices j_1 < ... < j_{k-1} (span i = words[j_i:j_{i+1}]) nearest to i·W/k (needs k <= W)."""
  n = len(words)
  return [(2 * i * n + k) // (2 * k) for i in range(1, k)]  # floor(i·n/k + 1/2): strictly increasing for k <= n


def _audio_cut_frames(example: Mapping[str, Any], words: Sequence[str], word_cuts: Sequence[int], frames: int,
                      rate: float) -> list[int]:
  """The original frame where the audio is cut at each word cut.

  With `alignments` ([W] (start, end) seconds from the example's start, one per whitespace-separated word of
  the transcript): the middle of the gap between the previous word's end and the next word's start. Without
  (our shards have none): the approximation that speech is spread evenly over the characters: a cut before
  the word at character c of the text (words joined by single spaces, length C) goes to frame c / C · T.
  This ignores leading/trailing silence and speaking-rate changes, so a span's audio and the neighbouring
  text may overlap or miss a syllable.
  """
  alignments = example.get("alignments")
  if alignments is not None:
    times = np.asarray(alignments, np.float64).reshape(-1, 2) if len(alignments) else np.zeros((0, 2))
    if times.shape[0] != len(words):
      raise ValueError(f"example {example.get('id')!r}: {times.shape[0]} word alignments for {len(words)} words "
                       "of the transcript")
    return [int(math.floor((times[j - 1, 1] + times[j, 0]) / 2 * rate + 0.5)) for j in word_cuts]
  offsets = np.cumsum([0] + [len(w) + 1 for w in words])  # offsets[j]: character where word j starts
  total = offsets[-1] - 1
  return [int(math.floor(offsets[j] / total * frames + 0.5)) for j in word_cuts]


def _strictly_inside(cuts: list[int], size: int) -> list[int]:
  """cuts made strictly increasing within [1, size - 1] (so no span is empty), moving each as little as needed."""
  out = [min(max(c, 1), size - 1) for c in cuts]
  for i in range(1, len(out)):
    out[i] = max(out[i], out[i - 1] + 1)
  for i in range(len(out) - 1, -1, -1):
    out[i] = min(out[i], size - (len(out) - i))
  return out


def interleaved(example: Mapping[str, Any], vocab: CombinedVocabulary, rng: np.random.Generator,
                config: InterleavedConfig = InterleavedConfig()) -> Iterator[TokenSequence]:
  """(tag ␣) span_1 span_2 ... span_k EOS: one utterance cut into k spans, alternately as text and as audio.

  k ~ U[min_spans, max_spans] and the first span's modality (config.first 'random') are drawn with the rng, in
  that order. The text is cut at the word boundaries nearest to i/k of the words; the audio where those
  boundaries fall in time (`_audio_cut_frames`: word alignments when the example has `alignments`, else the
  even-speaking-rate approximation). Text spans are their words joined by single spaces (no space at the
  border with audio). k is capped by the words and audio tokens there are; an utterance with fewer than 2 of
  either is skipped, as are examples without a transcript, too long ones, and {language} tags without one.
  All tokens after the tag get `output_weight` except the first `unweighted_prefix` (EOS always weighted).
  """
  transcript = example.get("transcript")
  language = _language(example, config)
  if not transcript or (language is None and _needs_language(config.tag)):
    return
  words = transcript.split()
  audio, starts = _audio(vocab, example["semantic"], config.dedupe_semantic)
  k = min(int(rng.integers(config.min_spans, config.max_spans + 1)), len(words), audio.size)
  first_text = bool(rng.integers(2) == 0) if config.first == "random" else config.first == "text"
  if k < 2:
    return
  word_cuts = _word_cuts(words, k)
  frames = int(np.asarray(example["semantic"]).size)
  frame_cuts = _audio_cut_frames(example, words, word_cuts, frames, _frame_rate(example, config))
  audio_cuts = _strictly_inside([int(np.searchsorted(starts, f, side="left")) for f in frame_cuts], audio.size)
  word_bounds, audio_bounds = [0, *word_cuts, len(words)], [0, *audio_cuts, audio.size]
  spans = []
  for i in range(k):
    if (i % 2 == 0) == first_text:
      spans.append(vocab.encode_text(" ".join(words[word_bounds[i]:word_bounds[i + 1]])))
    else:
      spans.append(audio[audio_bounds[i]:audio_bounds[i + 1]])
  content = np.concatenate(spans)
  weights = np.full(content.size + 1, config.output_weight, np.float32)
  weights[:min(config.unweighted_prefix, content.size)] = config.prompt_weight
  tag = _tag(vocab, config.tag, language=language or "")
  seq = TokenSequence(np.concatenate([tag, content, _eos(vocab)]).astype(np.int32),
                      np.concatenate([np.full(tag.size, config.prompt_weight, np.float32), weights]), "interleaved")
  if config.max_length is None or len(seq) <= config.max_length:
    yield seq


# ---------------------------------------------------------------------------------------------------------------
# Translation tasks (examples with `translation_text`, `translation_language`, `translation_semantic`).


def _translation(example: Mapping[str, Any], config: _AudioTask) -> tuple[str, str] | None:
  """(source, target) languages, or None when either is unknown."""
  source, target = _language(example, config), example.get("translation_language")
  return (source, target) if source and target else None


def ast(example: Mapping[str, Any], vocab: CombinedVocabulary, rng: np.random.Generator,
        config: AstConfig = AstConfig()) -> Iterator[TokenSequence]:
  """`[AST <src> <tgt>] ` audio | translation EOS. Skips no translation_text or languages, no audio, too long."""
  del rng
  languages, text = _translation(example, config), example.get("translation_text")
  if languages is None or text is None:
    return
  audio, _ = _audio(vocab, example["semantic"], config.dedupe_semantic)
  if not audio.size:
    return
  yield from _emit([(_tag(vocab, config.tag, source=languages[0], target=languages[1]), config.prompt_weight),
                    (audio, config.prompt_weight), (vocab.encode_text(text), config.output_weight),
                    (_eos(vocab), config.output_weight)], "ast", config.max_length)


def s2st(example: Mapping[str, Any], vocab: CombinedVocabulary, rng: np.random.Generator,
         config: S2stConfig = S2stConfig()) -> Iterator[TokenSequence]:
  """`[S2ST <src> <tgt>] ` audio | translated audio EOS. Skips no translation_semantic or languages, too long."""
  del rng
  languages, target_codes = _translation(example, config), example.get("translation_semantic")
  if languages is None or target_codes is None:
    return
  audio, _ = _audio(vocab, example["semantic"], config.dedupe_semantic)
  target, _ = _audio(vocab, target_codes, config.dedupe_semantic)
  if not audio.size or not target.size:
    return
  yield from _emit([(_tag(vocab, config.tag, source=languages[0], target=languages[1]), config.prompt_weight),
                    (audio, config.prompt_weight), (target, config.output_weight),
                    (_eos(vocab), config.output_weight)], "s2st", config.max_length)


def asr_ast_s2st(example: Mapping[str, Any], vocab: CombinedVocabulary, rng: np.random.Generator,
                 config: CombinedConfig = CombinedConfig()) -> Iterator[TokenSequence]:
  """`[ASR AST S2ST <src> <tgt>] ` audio | transcript ' | ' translation, translated audio EOS.

  The outputs of `config.parts` in that order, all weighted; the text outputs are encoded together, joined by
  `text_separator`. Skipped unless the example has every field its parts need (transcript, translation_text,
  translation_semantic) and both languages; no audio, too long.
  """
  del rng
  languages = _translation(example, config)
  if languages is None:
    return
  needs = {"ASR": "transcript", "AST": "translation_text", "S2ST": "translation_semantic"}
  if any(example.get(needs[p]) is None for p in config.parts):
    return
  audio, _ = _audio(vocab, example["semantic"], config.dedupe_semantic)
  texts = [example[needs[p]] for p in config.parts if p != "S2ST"]
  outputs = [vocab.encode_text(config.text_separator.join(texts))] if texts else []
  if "S2ST" in config.parts:
    target, _ = _audio(vocab, example["translation_semantic"], config.dedupe_semantic)
    if not target.size:
      return
    outputs.append(target)
  if not audio.size:
    return
  tag = _tag(vocab, config.full_tag, source=languages[0], target=languages[1])
  yield from _emit([(tag, config.prompt_weight), (audio, config.prompt_weight),
                    *[(ids, config.output_weight) for ids in outputs], (_eos(vocab), config.output_weight)],
                   "asr_ast_s2st", config.max_length)


# ---------------------------------------------------------------------------------------------------------------
# Registration (each with its default config; a mixture may bind another with functools.partial).

FORMATS = {
    "asr": (asr, AsrConfig()),
    "tts": (tts, TtsConfig()),
    "continuation": (continuation, ContinuationConfig()),
    "text_lm": (text_lm, TextLmConfig()),
    "interleaved": (interleaved, InterleavedConfig()),
    "ast": (ast, AstConfig()),
    "s2st": (s2st, S2stConfig()),
    "asr_ast_s2st": (asr_ast_s2st, CombinedConfig()),
}


def _register() -> None:
  for name, (fn, config) in FORMATS.items():
    register_format(name)(functools.partial(fn, config=config))


_register()
