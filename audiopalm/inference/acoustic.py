"""Semantic tokens → waveform: AudioLM's coarse (stage 2) and fine (stage 3) acoustic models, then the codec.

    stages = AcousticStages(load_model(coarse_dir), load_model(fine_dir), load_codec(codec_dir),
                            semantic_frame_rate=25.0)
    prompt = stages.voice_prompt(semantic_codes, acoustic_codes)     # a 3 s recording of the target voice
    waves = stages.synthesize([codes_1, codes_2], prompt)            # float32 [S] each, at the codec's rate

Each stage is prompted exactly as its training format (`formats.audiolm_stages`) lays a sequence out:

    coarse   sem(voice prompt ⧺ window) A(levels 0..Q'-1 of the voice prompt) | levels 0..Q'-1 of the window
    fine     F(levels 0..Q'-1 of a chunk)                                     | levels Q'..Q-1 of the chunk

The coarse stage is time-aligned with the semantic tokens (`aligned_block`: n_s semantic frames cover the time
of n_a acoustic frames), so the number of frames to generate is known: exactly blocks × n_a frames × Q' tokens
are decoded per window, each token constrained to its level's range (a periodic mask, level 0..Q'-1 per frame),
with no EOS. Utterances longer than one training window (`CoarseAcousticConfig.crop_seconds`, voice prompt
included) are cut into consecutive windows, each prompted with the same voice prompt and decoded independently
(AudioLM slides a window over its own output; independent windows keep the voice but may click at a seam).
The fine stage decodes the non-overlapping `chunk_seconds` chunks it was trained on, all in one batch. The codec
decodes the codes [T, Q] to T · hop samples: the waveform of N semantic frames lasts N / semantic rate seconds
(rounded to whole blocks).

The 'flatten' and 'streams' layouts are generated (models trained with the single-stream delay pattern are
refused). With 'streams' (`formats.audiolm_stages`: one position per frame carrying its conditioning and every
level, delayed) a window decodes frames + Q' positions and a fine chunk T + Q - Q', instead of frames · Q' and
T · (Q - Q') tokens: `inference.decode_streams` samples each level from its own head and takes the known cells
(the semantic token of every frame, the voice prompt's levels, the coarse levels of a fine chunk, the
delay pattern's gaps) as given.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
from typing import Sequence

import jax
import numpy as np

from audiopalm.audio.io import load_audio
from audiopalm.codec.model import PAD_CODE, Codec
from audiopalm.codec.tokenizer import CodecTokenizer
from audiopalm.formats.audiolm_stages import (CoarseAcousticConfig, FineAcousticConfig, aligned_block, dedupe_consecutive,
                                              fine_streams, frame_semantic, stream_vocab, undo_fine_streams)
from audiopalm.inference.audio_tokens import tokenize
from audiopalm.inference.models import LoadedModel
from audiopalm.inference.sampling import SamplingConfig, allowed_mask
from audiopalm.tokenizers.base import AudioTokenizer


@dataclasses.dataclass(frozen=True)
class AcousticConfig:
  """How the acoustic stages are prompted and decoded.

  Attributes:
    coarse, fine: the stage models' training format configs (levels, window / chunk length, dedupe).
    coarse_sampling, fine_sampling: AudioLM's temperatures (0.8, 0.6) by default.
    voice_prompt_seconds: the longest voice prompt used (AudioLM prompts with 3 s); longer ones are cut.
    batch_size: windows / chunks decoded at once.
    decode_bucket_seconds: codes are padded to a multiple of this before the codec decodes them (few
      compilations; the padding is silence and cut off).
    seed: sampling seed.
  """

  coarse: CoarseAcousticConfig = CoarseAcousticConfig()
  fine: FineAcousticConfig = FineAcousticConfig()
  coarse_sampling: SamplingConfig = SamplingConfig(temperature=0.8)
  fine_sampling: SamplingConfig = SamplingConfig(temperature=0.6)
  voice_prompt_seconds: float = 3.0
  batch_size: int = 16
  decode_bucket_seconds: float = 1.0
  seed: int = 0

  def __post_init__(self):
    if "delay" in (self.coarse.layout, self.fine.layout):
      raise ValueError("AcousticConfig: generation supports the 'flatten' and 'streams' layouts (the stage models "
                       "were trained with layout='delay')")
    if self.coarse.coarse_levels != self.fine.coarse_levels:
      raise ValueError(f"AcousticConfig: the coarse stage generates {self.coarse.coarse_levels} levels, the fine "
                       f"stage is conditioned on {self.fine.coarse_levels}")
    if self.voice_prompt_seconds < 0 or self.batch_size < 1 or self.decode_bucket_seconds <= 0:
      raise ValueError("AcousticConfig: need voice_prompt_seconds >= 0, batch_size >= 1, decode_bucket_seconds > 0")


@dataclasses.dataclass(frozen=True)
class VoicePrompt:
  """A recording of the voice to speak with: its semantic codes [T_s] and acoustic codes [T_a, >= Q'] (whole
  aligned blocks, see `AcousticStages.voice_prompt`)."""

  semantic: np.ndarray
  acoustic: np.ndarray


def decode_codes(codec: Codec, codes: np.ndarray, bucket_seconds: float = 1.0) -> np.ndarray:
  """Codes [T, L] → waveform float32 [T · hop]; padded to a multiple of `bucket_seconds` before decoding (one
  compilation per length in buckets; the padding is silence and cut off)."""
  bucket = max(1, round(bucket_seconds * codec.frame_rate))
  frames = codes.shape[0]
  padded = np.pad(codes, ((0, -(-max(frames, 1) // bucket) * bucket - frames), (0, 0)), constant_values=PAD_CODE)
  audio, _ = codec.decode(padded[None], np.array([frames], np.int32))
  return np.asarray(audio[0, :frames * codec.config.hop_length], np.float32)


def _fraction(rate: float) -> fractions.Fraction:
  return fractions.Fraction(float(rate)).limit_denominator(1000)


def _level_masks(model: LoadedModel, levels: Sequence[int]) -> np.ndarray:
  """[len(levels), vocab] bool: row i allows only acoustic level levels[i] (no EOS)."""
  return np.stack([allowed_mask(model.spec, f"acoustic_{q}", vocab_size=model.cfg.vocab_size) for q in levels])


def _offsets(model: LoadedModel, levels: Sequence[int]) -> np.ndarray:
  """[len(levels)]: the first id of each acoustic level's range."""
  by_level = {r.level: r.offset for r in model.spec.acoustic}
  return np.array([by_level[q] for q in levels], np.int32)


def _check_stage(model: LoadedModel, levels: int, what: str, semantic: bool) -> str:
  """Checks the stage model's vocabulary has levels 0..levels-1 (and semantic tokens); returns the identity of
  the acoustic tokenizer it was trained on."""
  present = {r.level for r in model.spec.acoustic}
  missing = sorted(set(range(levels)) - present)
  if missing:
    raise ValueError(f"{model.path}: the {what} model's vocabulary has no range for acoustic levels {missing}")
  if semantic and model.spec.semantic is None:
    raise ValueError(f"{model.path}: the {what} model's vocabulary has no semantic range")
  identities = {r.tokenizer for r in model.spec.acoustic}
  if len(identities) != 1:
    raise ValueError(f"{model.path}: the {what} model's acoustic ranges name several tokenizers: {sorted(identities)}")
  return identities.pop()


class AcousticStages:
  """Coarse model + fine model + codec (see the module docstring)."""

  def __init__(self, coarse: LoadedModel, fine: LoadedModel, codec: Codec, semantic_frame_rate: float,
               config: AcousticConfig = AcousticConfig()):
    self.coarse_model, self.fine_model, self.codec, self.config = coarse, fine, codec, config
    q_coarse = config.coarse.coarse_levels
    self.num_levels = config.fine.num_levels or len(fine.spec.acoustic)
    if self.num_levels <= q_coarse:
      raise ValueError(f"{fine.path}: {self.num_levels} acoustic levels leave no fine levels above {q_coarse}")
    identities = {_check_stage(coarse, q_coarse, "coarse", semantic=True),
                  _check_stage(fine, self.num_levels, "fine", semantic=False)}
    for model, stage in ((coarse, config.coarse), (fine, config.fine)):
      wanted = stream_vocab(stage, model.vocab, self.num_levels) if stage.layout == "streams" else ()
      if model.cfg.stream_vocab != wanted:
        raise ValueError(f"{model.path}: its format's layout is {stage.layout!r} ({len(wanted) or 1} token "
                         f"stream(s)) but the model has {model.cfg.token_streams}: the stage config does not match "
                         "the model")
    # The spec names the dataset's tokenizer: the codec at all the levels the dataset holds.
    expected = CodecTokenizer(codec, len(fine.spec.acoustic)).identity
    if identities != {expected}:
      raise ValueError(f"the stage models were trained on acoustic tokens of {sorted(identities)}; this codec's "
                       f"first {len(fine.spec.acoustic)} levels are {expected!r}")
    self.semantic_frame_rate = semantic_frame_rate
    self.n_s, self.n_a, self.block_rate = aligned_block(_fraction(semantic_frame_rate), _fraction(codec.frame_rate))
    self.window_blocks = int(math.floor(config.coarse.crop_seconds * float(self.block_rate) + 1e-6))
    self.chunk_frames = int(math.floor(config.fine.chunk_seconds * codec.frame_rate + 1e-6))
    if self.window_blocks < 2 or self.chunk_frames < 1:
      raise ValueError("AcousticConfig: the coarse window must hold at least two aligned blocks and the fine chunk "
                       "one frame")

  def check_semantic(self, identity: str) -> None:
    """Refuses semantic tokens of another tokenizer than the coarse stage was trained on."""
    trained = self.coarse_model.spec.semantic.tokenizer
    if identity != trained:
      raise ValueError(f"{self.coarse_model.path} was trained on semantic tokens of {trained!r}, not {identity!r}")

  @property
  def coarse_levels(self) -> int:
    return self.config.coarse.coarse_levels

  def voice_prompt(self, semantic: np.ndarray, acoustic: np.ndarray) -> VoicePrompt:
    """A voice prompt from a recording's codes: its first whole aligned blocks, at most `voice_prompt_seconds`
    and leaving at least one block of each coarse window for the target."""
    acoustic = np.asarray(acoustic)
    if acoustic.ndim != 2 or acoustic.shape[1] < self.coarse_levels:
      raise ValueError(f"voice prompt: acoustic codes must be [T, >= {self.coarse_levels}], got {acoustic.shape}")
    limit = int(math.floor(self.config.voice_prompt_seconds * float(self.block_rate) + 1e-6))
    blocks = min(np.size(semantic) // self.n_s, acoustic.shape[0] // self.n_a, limit, self.window_blocks - 1)
    return VoicePrompt(np.asarray(semantic).reshape(-1)[:blocks * self.n_s].astype(np.int32),
                       acoustic[:blocks * self.n_a, :self.coarse_levels].astype(np.int32))

  def voice_prompt_from_recording(self, path: str, semantic_tokenizer: AudioTokenizer) -> VoicePrompt:
    """A voice prompt from a recording (a file, local or gs://): its first `voice_prompt_seconds` tokenized by
    the semantic tokenizer and the codec (AudioDecodeError / OSError when it cannot be read)."""
    self.check_semantic(semantic_tokenizer.identity)
    seconds = self.config.voice_prompt_seconds
    semantic = tokenize(semantic_tokenizer, [load_audio(path, semantic_tokenizer.sample_rate, end=seconds)])[0]
    codec = CodecTokenizer(self.codec, len(self.fine_model.spec.acoustic))
    acoustic = tokenize(codec, [load_audio(path, codec.sample_rate, end=seconds)])[0]
    return self.voice_prompt(semantic[:, 0], acoustic)

  def coarse_prompt(self, window: np.ndarray, prompt: VoicePrompt | None) -> np.ndarray:
    """sem(voice prompt ⧺ window) A(levels 0..Q'-1 of the voice prompt): ids [P] (window: semantic codes)."""
    vocab, q = self.coarse_model.vocab, self.coarse_levels
    sem = vocab.semantic(window if prompt is None else np.concatenate([prompt.semantic, window]))
    sem = dedupe_consecutive(sem) if self.config.coarse.dedupe else sem
    acoustic = np.zeros(0, np.int32) if prompt is None else vocab.acoustic(prompt.acoustic[:, :q], range(q))
    return np.concatenate([sem, acoustic.reshape(-1)]).astype(np.int32)

  def fine_prompt(self, coarse: np.ndarray) -> np.ndarray:
    """F(levels 0..Q'-1 of a chunk): ids [T · Q'] (coarse: codes [T, Q'])."""
    return self.fine_model.vocab.acoustic(coarse, range(self.coarse_levels)).reshape(-1).astype(np.int32)

  def _coarse_streams(self, windows: list[tuple[np.ndarray, int]], prompt: VoicePrompt | None) -> list[np.ndarray]:
    """'streams' layout: per window (semantic codes, blocks), its coarse ids [frames, Q'] (module docstring). Every
    row's semantic token and the voice prompt's levels are given; the window's levels are sampled."""
    model, q, vocab = self.coarse_model, self.coarse_levels, self.coarse_model.vocab
    pad, bos, delay = vocab.spec.text.pad_id, vocab.spec.text.eos_id, self.config.coarse.stream_delay
    first = np.full((1, 1 + q), pad, np.int32)
    first[0, 0] = bos
    known = np.zeros((0, q), np.int32) if prompt is None else vocab.acoustic(prompt.acoustic[:, :q], range(q))
    forced = []
    for codes, count in windows:
      sem = vocab.semantic(codes if prompt is None else np.concatenate([prompt.semantic, codes]))
      frames = len(known) + count * self.n_a
      ids = np.full((frames, 1 + q), -1, np.int32)  # -1: to generate
      ids[:, 0] = frame_semantic(sem, self.n_s, self.n_a, frames)
      ids[:len(known), 1:] = known
      layout, _ = fine_streams(ids, 1, pad, delay)  # [frames + delay - 1 + Q', 1 + Q']
      forced.append((np.where(layout >= 0, layout, 0), layout >= 0))
    new = max(f[0].shape[0] for f in forced)
    out = model.generate_streams([first] * len(windows), forced, new, sampling=self.config.coarse_sampling,
                                 rng=jax.random.key(self.config.seed), batch_size=self.config.batch_size)
    return [undo_fine_streams(rows, 1, len(known) + count * self.n_a, delay)[len(known):, 1:]
            for (_, count), rows in zip(windows, out)]

  def coarse(self, semantic: Sequence[np.ndarray], prompt: VoicePrompt | None = None) -> list[np.ndarray]:
    """Semantic codes [T_s] per utterance → coarse codes [ceil(T_s / n_s) · n_a, Q'] (see the module docstring)."""
    model, q = self.coarse_model, self.coarse_levels
    prompt_blocks = 0 if prompt is None else prompt.semantic.size // self.n_s
    if prompt is not None and not (prompt.semantic.size == prompt_blocks * self.n_s < self.window_blocks * self.n_s
                                   and prompt.acoustic.shape[0] == prompt_blocks * self.n_a
                                   and prompt.acoustic.shape[1] >= q):
      raise ValueError(f"voice prompt of {prompt.semantic.size} semantic and {prompt.acoustic.shape} acoustic codes: "
                       f"need whole aligned blocks ({self.n_s} : {self.n_a} frames), fewer than the window's "
                       f"{self.window_blocks}, and >= {q} levels (make it with AcousticStages.voice_prompt)")
    per_window = self.window_blocks - prompt_blocks
    windows, owners = [], []  # (semantic codes of the window, its blocks), utterance index
    for i, codes in enumerate(semantic):
      codes = np.asarray(codes, np.int32).reshape(-1)
      blocks = -(-codes.size // self.n_s)
      codes = np.pad(codes, (0, blocks * self.n_s - codes.size), mode="edge") if codes.size else codes
      for start in range(0, blocks, per_window):
        count = min(per_window, blocks - start)
        windows.append((codes[start * self.n_s:(start + count) * self.n_s], count))
        owners.append(i)
    frames = [count * self.n_a for _, count in windows]
    offsets = _offsets(model, range(q))
    if self.config.coarse.layout == "streams":
      out = [ids.reshape(-1) for ids in self._coarse_streams(windows, prompt)] if windows else []
    else:
      prompts = [self.coarse_prompt(codes, prompt) for codes, _ in windows]
      out = model.generate(prompts, max(frames, default=1) * q, sampling=self.config.coarse_sampling,
                           rng=jax.random.key(self.config.seed), allowed_mask=_level_masks(model, range(q)),
                           batch_size=self.config.batch_size) if windows else []
    pieces: list[list[np.ndarray]] = [[] for _ in semantic]
    for owner, n, ids in zip(owners, frames, out):
      pieces[owner].append(ids[:n * q].reshape(n, q) - offsets)
    return [np.concatenate(p).astype(np.int32) if p else np.zeros((0, q), np.int32) for p in pieces]

  def fine(self, coarse: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Coarse codes [T, Q'] per utterance → all levels [T, Q], the fine ones decoded chunk by chunk."""
    model, q, levels = self.fine_model, self.coarse_levels, self.num_levels
    chunks, owners = [], []
    for i, codes in enumerate(coarse):
      codes = np.asarray(codes, np.int32)
      for start in range(0, codes.shape[0], self.chunk_frames):
        chunks.append(codes[start:start + self.chunk_frames])
        owners.append(i)
    fine_levels = list(range(q, levels))
    if self.config.fine.layout == "streams":
      out = [ids[:, q:].reshape(-1) for ids in self._fine_streams(chunks)] if chunks else []
    else:
      prompts = [self.fine_prompt(c) for c in chunks]
      out = model.generate(prompts, max((c.shape[0] for c in chunks), default=1) * len(fine_levels),
                           sampling=self.config.fine_sampling, rng=jax.random.key(self.config.seed + 1),
                           allowed_mask=_level_masks(model, fine_levels),
                           batch_size=self.config.batch_size) if chunks else []
    offsets = _offsets(model, fine_levels)
    pieces: list[list[np.ndarray]] = [[] for _ in coarse]
    for owner, chunk, ids in zip(owners, chunks, out):
      n = chunk.shape[0]
      pieces[owner].append(np.concatenate([chunk, ids[:n * len(fine_levels)].reshape(n, -1) - offsets], axis=1))
    return [np.concatenate(p).astype(np.int32) if p else np.zeros((0, levels), np.int32) for p in pieces]

  def _fine_streams(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
    """'streams' layout: coarse codes [T, Q'] per chunk → ids [T, Q] (the coarse levels as given, in ids)."""
    model, q, levels, vocab = self.fine_model, self.coarse_levels, self.num_levels, self.fine_model.vocab
    pad, bos = vocab.spec.text.pad_id, vocab.spec.text.eos_id
    first = np.full((1, levels), pad, np.int32)
    first[0, 0] = bos
    forced, layouts = [], []
    for codes in chunks:
      ids = np.full((codes.shape[0], levels), -1, np.int32)  # -1: to generate
      ids[:, :q] = vocab.acoustic(codes, range(q))
      layout, _ = fine_streams(ids, q, pad)  # [T + Q - Q', Q]
      forced.append((np.where(layout >= 0, layout, 0), layout >= 0))
      layouts.append(layout)
    new = max(f[0].shape[0] for f in forced)
    out = model.generate_streams([first] * len(chunks), forced, new, sampling=self.config.fine_sampling,
                                 rng=jax.random.key(self.config.seed + 1), batch_size=self.config.batch_size)
    return [undo_fine_streams(rows, q, codes.shape[0]) for codes, rows in zip(chunks, out)]

  def decode(self, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Codes [T, Q] per utterance → waveform float32 [T · hop] at the codec's sample rate."""
    return [decode_codes(self.codec, c, self.config.decode_bucket_seconds) for c in codes]

  def synthesize(self, semantic: Sequence[np.ndarray], prompt: VoicePrompt | None = None) -> list[np.ndarray]:
    """Semantic codes [T_s] per utterance → waveform [ceil(T_s / n_s) · n_a · hop] at the codec's rate."""
    return self.decode(self.fine(self.coarse(semantic, prompt)))
