"""Synthetic token datasets: real shards and metadata with random codes, for benchmarks and loader tests.

    meta = write_synthetic_dataset("/tmp/synth", SyntheticConfig(examples=2000, min_seconds=5, max_seconds=30))
    info, seg = tokens_info(cfg), segment(cfg, i)   # the tokenizers, and segment i, for shards written by hand

writes what `data_pipeline.tokenize` writes (TFRecord shards, metadata.json, stats.json, TFDS files) for
`examples` segments of uniformly drawn durations at the given token rates, with random-word transcripts of
`words_per_second`. The codes are random, so only sizes and speeds mean anything: loaders, packing and
benchmarks can run at LibriLight-like lengths without audio or tokenizers. From the command line:
`python -m tools.make_synthetic_tokens --output=/tmp/synth --examples=2000 --min_seconds=5 --max_seconds=30`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from audiopalm.files import storage
from audiopalm.tokens import dataset_info, schema, shards

_WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
          "they you were her she there one all we their been has would when if more will out so said what up its "
          "about into than them can only other time new some could these two may first then do any like my now "
          "over such our man me even most made after also did many before must through back years where much your "
          "way well down should because each just those people how too little state good very make world still").split()


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Sizes of a synthetic token dataset (defaults: the tokenization defaults, LibriLight-like segments).

  Attributes:
    examples, num_shards: segments and shards of the 'train' split.
    min_seconds, max_seconds: segment durations are uniform in this range.
    semantic_rate, semantic_vocab: semantic tokens per second and codebook size.
    acoustic_rate, acoustic_vocab, num_codebooks: acoustic frames per second, codebook size, RVQ levels.
    words_per_second: transcript length; 0 = no transcripts.
    language: the examples' language.
    seed: random codes and words.
  """

  examples: int = 1000
  num_shards: int = 4
  min_seconds: float = 5.0
  max_seconds: float = 30.0
  semantic_rate: float = 25.0
  semantic_vocab: int = 1024
  acoustic_rate: float = 50.0
  acoustic_vocab: int = 1024
  num_codebooks: int = 12
  words_per_second: float = 2.7
  language: str = "English"
  seed: int = 0


def tokens_info(cfg: SyntheticConfig) -> schema.TokensInfo:
  return schema.TokensInfo(
      semantic=schema.TokenizerSpec("semantic", "synthetic", f"semantic-synthetic-k{cfg.semantic_vocab}",
                                    cfg.semantic_vocab, 1, cfg.semantic_rate, 16000),
      acoustic=schema.TokenizerSpec("codec", "synthetic", f"codec-synthetic-k{cfg.acoustic_vocab}-q{cfg.num_codebooks}",
                                    cfg.acoustic_vocab, cfg.num_codebooks, cfg.acoustic_rate, 16000))


def segment(cfg: SyntheticConfig, i: int) -> schema.TokenizedSegment:
  """Segment i (a pure function of the config's seed and i)."""
  rng = np.random.default_rng([cfg.seed, i])
  seconds = float(rng.uniform(cfg.min_seconds, cfg.max_seconds))
  words = int(round(seconds * cfg.words_per_second))
  transcript = " ".join(rng.choice(_WORDS, words)) if cfg.words_per_second > 0 else None
  return schema.TokenizedSegment(
      id=f"synth{i:07d}_0000", utterance_id=f"synth{i:07d}", segment_index=0, source=f"synthetic/{i}.flac",
      start=0.0, duration=seconds, transcript=transcript, language=cfg.language, speaker=f"spk{i % 97}",
      semantic=rng.integers(0, cfg.semantic_vocab, int(seconds * cfg.semantic_rate)),  # [T_s]
      acoustic=rng.integers(0, cfg.acoustic_vocab, (int(seconds * cfg.acoustic_rate), cfg.num_codebooks)))  # [T_a, Q]


def write_synthetic_dataset(output_dir: str, cfg: SyntheticConfig = SyntheticConfig()) -> dataset_info.DatasetMetadata:
  """Writes the dataset (see the module docstring) and returns its metadata."""
  if cfg.examples < cfg.num_shards or cfg.num_shards < 1 or not 0 < cfg.min_seconds <= cfg.max_seconds:
    raise ValueError(f"bad synthetic dataset sizes: {cfg}")
  storage.makedirs(output_dir)
  info = tokens_info(cfg)
  stats = []
  bounds = np.linspace(0, cfg.examples, cfg.num_shards + 1).astype(int)
  for shard in range(cfg.num_shards):
    with shards.ShardWriter(output_dir, shard, cfg.num_shards, info) as writer:
      for i in range(bounds[shard], bounds[shard + 1]):
        writer.write(segment(cfg, i))
    stats.append(writer.stats)
  return dataset_info.write_dataset_info(output_dir, tokens=info, shards=stats, description="synthetic (random codes)")

