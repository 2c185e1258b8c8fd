"""AudioLM's three stages (Borsos et al. 2022) as training-sequence formats: semantic, coarse and fine acoustic.

Each format turns one token-shard example (`audiopalm.tokens.schema.parse_example`: `semantic` [T_s] codes at
`semantic_frame_rate` Hz, `acoustic` [T_a, Q] RVQ codes at `acoustic_frame_rate` Hz) into one sequence of
combined-vocabulary ids (`base.TokenSequence`). Notation: sem(x) = `vocab.semantic`, a_q(t) = the id of
acoustic level q at frame t (`vocab.acoustic`: each level in its own range, AudioLM's per-level offsets),
EOS = the text vocabulary's EOS, [w] = the loss weight of every token of that part:

    semantic_lm      sem(crop)[1] EOS[1]                                   crop <= 30 s, rng offset
    coarse_acoustic  sem(window)[0] A(levels 0..Q'-1 of window)[1] EOS[1]  window <= 10 s, rng offset, aligned
    fine_acoustic    F(levels 0..Q'-1 of chunk)[0] A(levels Q'..Q-1 of chunk)[1] EOS[1]   3 s chunk, no semantic

F(levels l_0..l_{L-1} of frames 0..T-1) is always the per-frame flattening (AudioLM's row-major order):

    a_{l_0}(0) a_{l_1}(0) .. a_{l_{L-1}}(0) a_{l_0}(1) ..                  T·L tokens

A(...), the generated acoustic part, is F with `layout='flatten'`. With `layout='delay'` it is MusicGen's delay
pattern serialised for a single-stream decoder: the grid G [T + L - 1, L] with

    G[s, i] = a_{l_i}(s - i)  if 0 <= s - i < T,  else '<delay_pad>'

(level l_i delayed by i steps), flattened per step: G[0, 0] .. G[0, L-1] G[1, 0] ..  ((T + L - 1)·L tokens).
The filler is the special token '<delay_pad>', which the vocabulary spec must list in `specials` (the format
refuses otherwise). Filler cells are part of the output and weighted like it: the trailing ones in column 0
tell the decoder where the audio ends, so generation needs no knowledge of the pattern; `undo_delay_pattern`
inverts the grid. a_{l_i}(t) sits at step t + i, so it comes after a_{l_j}(t') whenever t' + j < t + i (or
t' + j = t + i and j < i): in particular after the lower levels of its own frame and of every earlier frame.

With `layout='streams'` a sequence is multi-stream, tokens and weights [L, S] (a model with
`TransformerConfig.stream_vocab = stream_vocab(config, vocab)`: one position per frame carrying every level,
the sum of their embeddings in, one output head per level). Empty cells hold the text vocabulary's pad id at
weight 0 (generation knows the pattern, so nothing predicts them), and there is no EOS (the frame count is
known: aligned to the semantic tokens in stage 2, the chunk's in stage 3):

    coarse_acoustic  S = 1 + Q' streams, time-aligned. Row r holds the semantic token of acoustic frame r in
                     stream 0 [0] (r < T; each semantic frame repeated over the n_a / n_s acoustic frames it
                     covers) and level q of frame r - 1 - k - q in stream 1 + q [1], k = `semantic_lookahead`
                                                                                      (T + k + Q' rows)
    fine_acoustic    S = Q streams. Row r holds the coarse levels of frame r in streams 0..Q'-1 [0] (r < T) and
                     fine level Q'+j of frame r - 1 - j in stream Q'+j [1]                    (T + Q - Q' rows)

Both are one pattern (`fine_streams`: C conditioning streams given for frame r at row r, each generated level j
delayed by d + j rows, d = 1 + k): a position predicts generated level j of frame t after seeing the
conditioning of frames <= t + k + j, the levels < j of frame t and every level of the frames before (MusicGen's
delay pattern, 4 to 8 times fewer positions than flattening). Stage 2's conditioning sits at the position of the
audio it describes, so the model maps semantic to acoustic tokens locally instead of finding its place in a
semantic prefix; the semantic tokens are therefore not deduplicated (`dedupe` must be False). Its lookahead k
(acoustic frames, 0 for stage 3) lets level 0 of a frame see the semantic tokens that follow it, as a sound
depends on the next one (coarticulation; Moshi delays its acoustic tokens behind the semantic ones the same way).

`dedupe` (stages 1–2, on by default as in AudioLM) removes consecutive repeats of semantic tokens inside the
crop / window (after cropping: the crop limit is one of time).

Time alignment (coarse_acoustic): both frame grids coincide every 1/g seconds, g = gcd(semantic rate, acoustic
rate) (25 Hz and 50 Hz: every semantic frame = 2 acoustic frames; 25 and 75: 1 = 3; 50 and 75: 2 = 3). A window
is a whole number of these blocks, starting at a block boundary: semantic frames [b·n_s, (b + B)·n_s) and
acoustic frames [b·n_a, (b + B)·n_a) cover the same time. B = min(blocks both streams cover, window blocks):
frames of one stream past the end of the other, and a trailing partial block (< 1/g s), are left out (the two
tokenizers' lengths may differ by rounding).

Fine chunks: the acoustic frames are cut into non-overlapping chunks of `chunk_seconds` from frame 0 (the last
one may be shorter); the rng picks the chunk of a uniformly drawn frame, so every frame is equally likely to be
trained on (a short last chunk is picked in proportion to its length).

Lengths (flatten, no dedupe): stage 1 <= 30·25 + 1; stage 2 <= 10·(25 + 50·Q') + 1; stage 3 <= 3·50·Q + 1.
The delay layout adds (L - 1)·L filler tokens to the generated part (L = Q' in stage 2, Q - Q' in stage 3).

Registered names: 'semantic_lm', 'coarse_acoustic', 'fine_acoustic' (each with its default config; bind another
config with functools.partial(fn, config=...)).
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import math
from typing import Any, Iterator, Mapping

import numpy as np

from audiopalm.formats.base import TokenSequence, concat, register_format

DELAY_PAD = "<delay_pad>"
LAYOUTS = ("flatten", "delay", "streams")


@dataclasses.dataclass(frozen=True)
class SemanticLMConfig:
  """Stage 1: p(semantic tokens).

  Attributes:
    crop_seconds: the longest stretch of audio (semantic frames <= crop_seconds × rate) per sequence; longer
      examples are cropped at an offset the rng draws uniformly.
    dedupe: remove consecutive repeated semantic tokens (after cropping), as AudioLM does.
  """

  crop_seconds: float = 30.0
  dedupe: bool = True

  def __post_init__(self):
    _check_seconds("crop_seconds", self.crop_seconds)


@dataclasses.dataclass(frozen=True)
class CoarseAcousticConfig:
  """Stage 2: p(coarse acoustic tokens | semantic tokens of the same time window).

  Attributes:
    crop_seconds: the longest window; longer examples are cropped at a block-aligned offset the rng draws.
    coarse_levels: Q', the RVQ levels 0..Q'-1 that are generated (AudioLM: 4 of 12).
    dedupe: remove consecutive repeated semantic tokens of the window (the conditioning).
    layout: 'flatten' (per frame), 'delay' (delay pattern, needs '<delay_pad>') or 'streams' (one position per
      frame, multi-stream), see the module docstring.
    semantic_lookahead: with 'streams', k: every acoustic level is delayed k more rows, so the level 0 of frame t
      is predicted after the semantic tokens of frames <= t + 1 + k (k acoustic frames ahead of the default).
  """

  crop_seconds: float = 10.0
  coarse_levels: int = 4
  dedupe: bool = True
  layout: str = "flatten"
  semantic_lookahead: int = 0

  def __post_init__(self):
    _check_seconds("crop_seconds", self.crop_seconds)
    if self.coarse_levels < 1:
      raise ValueError(f"coarse_levels must be >= 1, got {self.coarse_levels}")
    _check_layout(self.layout)
    if self.layout == "streams" and self.dedupe:
      raise ValueError("CoarseAcousticConfig: layout 'streams' puts each semantic token beside the acoustic frames "
                       "it covers, so it cannot deduplicate them: set dedupe=False")
    if self.semantic_lookahead < 0 or (self.semantic_lookahead and self.layout != "streams"):
      raise ValueError(f"CoarseAcousticConfig.semantic_lookahead must be >= 0 and is a delay of the 'streams' layout "
                       f"(layout {self.layout!r}), got {self.semantic_lookahead}")

  @property
  def stream_delay(self) -> int:
    """Rows between a frame's semantic token and its level 0 in the 'streams' layout (`fine_streams`' delay)."""
    return 1 + self.semantic_lookahead


@dataclasses.dataclass(frozen=True)
class FineAcousticConfig:
  """Stage 3: p(fine acoustic tokens | coarse acoustic tokens of the same chunk); no semantic tokens.

  Attributes:
    chunk_seconds: the length of the non-overlapping chunks one of which makes a sequence.
    coarse_levels: Q', the conditioning levels 0..Q'-1.
    num_levels: Q, the levels used (the fine ones are Q'..Q-1); None: all of the example's levels. An example
      with more levels is truncated to the first Q (a lower bitrate of the same codec); one with fewer is refused.
    layout: 'flatten' or 'delay', for the fine (generated) levels, the coarse levels always flattened; or
      'streams', every level of a frame at one position (module docstring).
  """

  chunk_seconds: float = 3.0
  coarse_levels: int = 4
  num_levels: int | None = None
  layout: str = "flatten"

  def __post_init__(self):
    _check_seconds("chunk_seconds", self.chunk_seconds)
    if self.coarse_levels < 1:
      raise ValueError(f"coarse_levels must be >= 1, got {self.coarse_levels}")
    if self.num_levels is not None and self.num_levels <= self.coarse_levels:
      raise ValueError(f"num_levels ({self.num_levels}) must exceed coarse_levels ({self.coarse_levels}): the fine "
                       "levels are coarse_levels..num_levels-1")
    _check_layout(self.layout)


def _check_seconds(name: str, value: float) -> None:
  if not value > 0:
    raise ValueError(f"{name} must be > 0, got {value}")


def _check_layout(layout: str) -> None:
  if layout not in LAYOUTS:
    raise ValueError(f"layout {layout!r}; choose one of {LAYOUTS}")


# ---------------------------------------------------------------------------------------------------------------
# Layout helpers.


def dedupe_consecutive(ids: np.ndarray) -> np.ndarray:
  """ids [T] without consecutive repeats ([5, 5, 6, 6, 5] → [5, 6, 5])."""
  ids = np.asarray(ids)
  if ids.size == 0:
    return ids
  keep = np.concatenate([[True], ids[1:] != ids[:-1]])
  return ids[keep]


def delay_pattern(ids: np.ndarray, pad_id: int) -> np.ndarray:
  """ids [T, L] → the delay grid [T + L - 1, L]: column i shifted down by i steps, empty cells `pad_id`."""
  ids = np.asarray(ids, np.int32)
  frames, levels = ids.shape
  grid = np.full((frames + levels - 1, levels) if levels else (frames, 0), pad_id, np.int32)
  for i in range(levels):
    grid[i:i + frames, i] = ids[:, i]
  return grid


def undo_delay_pattern(grid: np.ndarray) -> np.ndarray:
  """The delay grid [T + L - 1, L] → ids [T, L] (inverse of `delay_pattern`; filler cells are dropped)."""
  grid = np.asarray(grid)
  steps, levels = grid.shape
  frames = steps - levels + 1
  if frames < 0:
    raise ValueError(f"a delay grid of {levels} levels has at least {levels - 1} steps, got {steps}")
  return np.stack([grid[i:i + frames, i] for i in range(levels)], axis=1) if levels else grid


def _serialize(ids: np.ndarray, layout: str, pad_id: int | None) -> np.ndarray:
  """ids [T, L] → [T·L] ('flatten', per frame) or [(T + L - 1)·L] ('delay', per step of the delay grid)."""
  if layout == "flatten":
    return np.asarray(ids, np.int32).reshape(-1)
  assert pad_id is not None
  return delay_pattern(ids, pad_id).reshape(-1)


def _delay_pad_id(vocab: Any, layout: str, name: str) -> int | None:
  if layout != "delay":
    return None
  if DELAY_PAD not in vocab.spec.specials:
    raise ValueError(f"{name}: layout 'delay' needs the special token {DELAY_PAD!r} in the vocabulary (its specials: "
                     f"{list(vocab.spec.specials)}); make the spec with specials=(..., {DELAY_PAD!r}) or use "
                     "layout 'flatten'")
  return vocab.spec.special_id(DELAY_PAD)


def stream_vocab(config: "CoarseAcousticConfig | FineAcousticConfig", vocab: Any,
                 levels: int | None = None) -> tuple[tuple[int, int], ...]:
  """The vocabulary range [start, end) of each stream of a 'streams' layout: stage 2: the semantic range, then
  acoustic levels 0..Q'-1; stage 3: levels 0..Q-1, Q = `config.num_levels`, else `levels`, else every acoustic
  level of the vocabulary."""
  ranges = {r.level: r for r in vocab.spec.acoustic}
  coarse = isinstance(config, CoarseAcousticConfig)
  count = config.coarse_levels if coarse else config.num_levels or levels or len(ranges)
  missing = [q for q in range(count) if q not in ranges]
  if missing:
    raise ValueError(f"layout 'streams' over acoustic levels 0..{count - 1}: the vocabulary has no range for levels "
                     f"{missing} (it has {sorted(ranges)})")
  if coarse and vocab.spec.semantic is None:
    raise ValueError("layout 'streams' of coarse_acoustic: the vocabulary has no semantic range")
  semantic = ((vocab.spec.semantic.offset, vocab.spec.semantic.end),) if coarse else ()
  return semantic + tuple((ranges[q].offset, ranges[q].end) for q in range(count))


def frame_semantic(semantic: np.ndarray, n_s: int, n_a: int, frames: int) -> np.ndarray:
  """Semantic codes of whole aligned blocks [blocks · n_s] → the one covering each acoustic frame [frames]: frame
  t of block b is the semantic frame b · n_s + (t mod n_a) · n_s // n_a."""
  t = np.arange(frames)
  return np.asarray(semantic)[(t // n_a) * n_s + (t % n_a) * n_s // n_a]


def fine_streams(ids: np.ndarray, coarse_levels: int, pad_id: int,
                 delay: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """ids [T, Q] → (tokens, weights) [T + delay - 1 + Q - Q', Q] (module docstring: the first Q' columns are
  conditioning, given for frame r at row r; generated column Q'+j of frame t at row t + delay + j). Stage 2 uses it
  with one conditioning column, the semantic token of each frame, and `CoarseAcousticConfig.stream_delay`."""
  if delay < 1:
    raise ValueError(f"fine_streams: delay must be >= 1, got {delay}")
  frames, levels = ids.shape
  rows = frames + delay - 1 + levels - coarse_levels
  tokens = np.full((rows, levels), pad_id, np.int32)
  weights = np.zeros((rows, levels), np.float32)
  tokens[:frames, :coarse_levels] = ids[:, :coarse_levels]
  for j, q in enumerate(range(coarse_levels, levels)):
    tokens[delay + j:delay + j + frames, q] = ids[:, q]
    weights[delay + j:delay + j + frames, q] = 1.0
  return tokens, weights


def undo_fine_streams(tokens: np.ndarray, coarse_levels: int, frames: int, delay: int = 1) -> np.ndarray:
  """Tokens [>= T + delay - 1 + Q - Q', Q] of a 'streams' sequence → ids [T, Q] (the inverse of `fine_streams`)."""
  tokens = np.asarray(tokens)
  levels = tokens.shape[1]
  out = np.empty((frames, levels), tokens.dtype)
  out[:, :coarse_levels] = tokens[:frames, :coarse_levels]
  for j, q in enumerate(range(coarse_levels, levels)):
    out[:, q] = tokens[delay + j:delay + j + frames, q]
  return out


# ---------------------------------------------------------------------------------------------------------------
# Checks and time arithmetic.


def _example_id(example: Mapping[str, Any]) -> str:
  return str(example.get("id", "<no id>"))


def _check_semantic(example: Mapping[str, Any], vocab: Any, name: str) -> np.ndarray:
  """The example's semantic codes [T_s], after checking the vocabulary has a semantic range for them."""
  if vocab.spec.semantic is None:
    raise ValueError(f"{name}: the vocabulary has no semantic range")
  tokenizer = example.get("semantic_tokenizer")
  if tokenizer and tokenizer != vocab.spec.semantic.tokenizer:
    raise ValueError(f"{name}: example {_example_id(example)!r} has semantic tokens of {tokenizer!r}, the "
                     f"vocabulary's semantic range holds those of {vocab.spec.semantic.tokenizer!r}")
  return np.asarray(example["semantic"]).reshape(-1)


def _acoustic_codes(example: Mapping[str, Any], name: str) -> np.ndarray:
  """The example's acoustic codes [T_a, Q]."""
  acoustic = np.asarray(example["acoustic"])
  if acoustic.ndim != 2:
    raise ValueError(f"{name}: example {_example_id(example)!r}: acoustic codes must be [T_a, Q], got shape "
                     f"{acoustic.shape}")
  return acoustic


def _check_acoustic(example: Mapping[str, Any], vocab: Any, levels: int, name: str, what: str) -> np.ndarray:
  """The example's acoustic codes [T_a, levels] (its first `levels` levels), after checking it has them and the
  vocabulary has a range for each."""
  ranges = {r.level: r for r in vocab.spec.acoustic}
  missing = [q for q in range(levels) if q not in ranges]
  if missing:
    raise ValueError(f"{name}: {what} needs acoustic levels 0..{levels - 1}; the vocabulary has no range for "
                     f"levels {missing} (it has {sorted(ranges)})")
  acoustic = _acoustic_codes(example, name)
  if acoustic.shape[1] < levels:
    raise ValueError(f"{name}: {what} needs acoustic levels 0..{levels - 1}; example {_example_id(example)!r} has "
                     f"only {acoustic.shape[1]} levels")
  tokenizer = example.get("acoustic_tokenizer")
  wrong = sorted({ranges[q].tokenizer for q in range(levels)} - {tokenizer}) if tokenizer else []
  if wrong:
    raise ValueError(f"{name}: example {_example_id(example)!r} has acoustic tokens of {tokenizer!r}, the "
                     f"vocabulary's acoustic ranges hold those of {wrong}")
  return acoustic[:, :levels]


def _rate(example: Mapping[str, Any], key: str, name: str) -> fractions.Fraction:
  """A frame rate of the example as an exact fraction (float32 storage rounded away: 16000/3 stays 16000/3)."""
  if key not in example:
    raise ValueError(f"{name}: example {_example_id(example)!r} has no {key!r} (token-shard examples have it)")
  rate = float(example[key])
  if not rate > 0:
    raise ValueError(f"{name}: example {_example_id(example)!r}: {key} must be > 0, got {rate}")
  return fractions.Fraction(rate).limit_denominator(1000)


def _max_frames(seconds: float, rate: fractions.Fraction) -> int:
  """Frames at `rate` that fit in `seconds` (a tolerance so that 10 s × 25 Hz is 250, not 249)."""
  return int(math.floor(seconds * float(rate) + 1e-6))


def aligned_block(semantic_rate: fractions.Fraction,
                  acoustic_rate: fractions.Fraction) -> tuple[int, int, fractions.Fraction]:
  """(n_s, n_a, g): the two frame grids coincide every 1/g s = n_s semantic frames = n_a acoustic frames."""
  a, b = semantic_rate, acoustic_rate
  g = fractions.Fraction(math.gcd(a.numerator * b.denominator, b.numerator * a.denominator),
                         a.denominator * b.denominator)
  return int(a / g), int(b / g), g


# ---------------------------------------------------------------------------------------------------------------
# The formats.


def semantic_lm(example: Mapping[str, Any], vocab: Any, rng: np.random.Generator,
                config: SemanticLMConfig) -> Iterator[TokenSequence]:
  """Stage 1: sem(crop)[1] EOS[1]; the crop is at most `crop_seconds` at an rng offset (nothing if no tokens)."""
  name = "semantic_lm"
  codes = _check_semantic(example, vocab, name)
  rate = _rate(example, "semantic_frame_rate", name)
  limit = _max_frames(config.crop_seconds, rate)
  if limit < 1:
    raise ValueError(f"{name}: crop_seconds {config.crop_seconds} holds no frame at {float(rate)} Hz")
  if codes.size == 0:
    return
  start = int(rng.integers(0, codes.size - limit + 1)) if codes.size > limit else 0
  ids = vocab.semantic(codes[start:start + limit])  # [T] with T <= limit
  if config.dedupe:
    ids = dedupe_consecutive(ids)
  yield concat([(ids, 1.0), ([vocab.spec.text.eos_id], 1.0)], task=name)


def coarse_acoustic(example: Mapping[str, Any], vocab: Any, rng: np.random.Generator,
                    config: CoarseAcousticConfig) -> Iterator[TokenSequence]:
  """Stage 2: sem(window)[0] A(levels 0..Q'-1 of the window)[1] EOS[1]; the window is at most `crop_seconds`,
  time-aligned between the two streams, at an rng offset (nothing if the example has no whole aligned block)."""
  name = "coarse_acoustic"
  pad_id = _delay_pad_id(vocab, config.layout, name)
  semantic = _check_semantic(example, vocab, name)
  acoustic = _check_acoustic(example, vocab, config.coarse_levels, name, f"coarse_levels={config.coarse_levels}")
  n_s, n_a, g = aligned_block(_rate(example, "semantic_frame_rate", name),
                              _rate(example, "acoustic_frame_rate", name))
  limit = _max_frames(config.crop_seconds, g)  # whole blocks in a window
  if limit < 1:
    raise ValueError(f"{name}: crop_seconds {config.crop_seconds} is shorter than one aligned block of {n_s} "
                     f"semantic and {n_a} acoustic frames ({float(1 / g)} s)")
  blocks = min(semantic.size // n_s, acoustic.shape[0] // n_a)
  if blocks == 0:
    return
  start = int(rng.integers(0, blocks - limit + 1)) if blocks > limit else 0
  count = min(blocks, limit)
  sem_ids = vocab.semantic(semantic[start * n_s:(start + count) * n_s])  # [count·n_s]
  if config.dedupe:
    sem_ids = dedupe_consecutive(sem_ids)
  coarse = vocab.acoustic(acoustic[start * n_a:(start + count) * n_a], range(config.coarse_levels))  # [count·n_a, Q']
  if config.layout == "streams":  # sem_ids are not deduplicated (the config refuses it)
    aligned = frame_semantic(sem_ids, n_s, n_a, coarse.shape[0])[:, None]  # [count·n_a, 1]
    yield TokenSequence(*fine_streams(np.concatenate([aligned, coarse], axis=1), 1, vocab.spec.text.pad_id,
                                      config.stream_delay), task=name)
    return
  yield concat([(sem_ids, 0.0), (_serialize(coarse, config.layout, pad_id), 1.0),
                ([vocab.spec.text.eos_id], 1.0)], task=name)


def fine_acoustic(example: Mapping[str, Any], vocab: Any, rng: np.random.Generator,
                  config: FineAcousticConfig) -> Iterator[TokenSequence]:
  """Stage 3: F(levels 0..Q'-1 of the chunk)[0] A(levels Q'..Q-1 of the chunk)[1] EOS[1] for one non-overlapping
  chunk of `chunk_seconds` the rng picks (nothing if the example has no acoustic frames)."""
  name = "fine_acoustic"
  pad_id = _delay_pad_id(vocab, config.layout, name)
  available = _acoustic_codes(example, name).shape[1]
  levels = available if config.num_levels is None else config.num_levels
  what = f"coarse_levels={config.coarse_levels}, num_levels={config.num_levels}"
  if levels <= config.coarse_levels:
    raise ValueError(f"{name}: {what} leaves no fine levels: example {_example_id(example)!r} has {available} "
                     f"acoustic levels, the fine ones are {config.coarse_levels}..Q-1")
  acoustic = _check_acoustic(example, vocab, levels, name, what)
  chunk = _max_frames(config.chunk_seconds, _rate(example, "acoustic_frame_rate", name))
  if chunk < 1:
    raise ValueError(f"{name}: chunk_seconds {config.chunk_seconds} holds no acoustic frame")
  frames = acoustic.shape[0]
  if frames == 0:
    return
  start = (int(rng.integers(0, frames)) // chunk) * chunk if frames > chunk else 0
  ids = vocab.acoustic(acoustic[start:start + chunk], range(levels))  # [T, Q], T <= chunk
  if config.layout == "streams":
    yield TokenSequence(*fine_streams(ids, config.coarse_levels, vocab.spec.text.pad_id), task=name)
    return
  coarse, fine = ids[:, :config.coarse_levels], ids[:, config.coarse_levels:]
  yield concat([(_serialize(coarse, "flatten", None), 0.0), (_serialize(fine, config.layout, pad_id), 1.0),
                ([vocab.spec.text.eos_id], 1.0)], task=name)


register_format("semantic_lm")(functools.partial(semantic_lm, config=SemanticLMConfig()))
register_format("coarse_acoustic")(functools.partial(coarse_acoustic, config=CoarseAcousticConfig()))
register_format("fine_acoustic")(functools.partial(fine_acoustic, config=FineAcousticConfig()))
