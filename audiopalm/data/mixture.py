"""One component of a training mixture: a format applied to a token dataset, as one stream's grain pipeline.

    component = MixtureComponent(format="asr", dataset="runs/tokens_demo", rate=1.0)
    ds = component_dataset(component, source, vocab, seed=0, shard_index=h, shard_count=n, ...)
    # grain.IterDataset of packer inputs {"targets": [n] int32, "weights": [n] float32}, one per sequence

The pipeline of a component, all of it deterministic in (seed, stream, number of streams):

    examples [N]  ──shuffle(seed)──▶  ──repeat(num_epochs)──▶  one sequence for all streams (new order every epoch)
      ──format(example, vocab, rng(seed, position))──▶  0..k sequences per example
      ──[k::K]──▶  this input stream's positions  ──drop sequences longer than a row, flatten──▶  mixed by rate

Input stream k of K (`audiopalm.data.streams`: a process runs the streams of its rows) takes the positions
k, k + K, k + 2K, ... of the shared stream, so in every epoch the streams' data are disjoint and together the
whole dataset, and neighbouring streams do not read neighbouring examples. The per-example rng (grain's
`random_map`) depends on the seed and the position in the shared stream, so crops differ between streams and
epochs, but never between a run and its resumption, whatever the number of processes.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import grain
import numpy as np

from audiopalm.data import packing
from audiopalm.data.token_source import TokenShardSource
from audiopalm.formats.base import TokenSequence, default_config, get_format

PREFLIGHT_EXAMPLES = 64  # examples a component's format is tried on before training starts


@dataclasses.dataclass(frozen=True)
class MixtureComponent:
  """A format over a token dataset, with its share of the mixture.

  Attributes:
    format: a registered format name ('asr', 'tts', 'semantic_lm', 'coarse_acoustic', ...).
    dataset: the token dataset directory (a `data_pipeline.tokenize` output, or for text formats a
      `audiopalm.main.import_text` one; local or gs://).
    rate: relative share of the mixture's sequences (rates are normalised over the components).
    config: the format's config (e.g. `AsrConfig(...)`); None: the format's default.
    split: the dataset split to read.
    name: the component's name in logs and task ids (default: the format name); unique within a mixture.
  """

  format: str
  dataset: str
  rate: float = 1.0
  config: Any = None
  split: str = "train"
  name: str | None = None

  def __post_init__(self):
    if not self.rate > 0:
      raise ValueError(f"mixture component {self.label!r}: rate must be > 0, got {self.rate}")
    if not str(self.dataset):
      raise ValueError(f"mixture component {self.label!r}: dataset is empty (set the token dataset directory)")
    get_format(self.format, self.config)  # unknown format or a config of the wrong type: fail now

  @property
  def label(self) -> str:
    return self.name or self.format

  @property
  def resolved_config(self) -> Any:
    return self.config if self.config is not None else default_config(self.format)


@dataclasses.dataclass
class ComponentStats:
  """Counters of one component in this process (not checkpointed)."""

  examples: int = 0
  sequences: int = 0
  dropped_too_long: int = 0
  _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

  def count(self, sequences: int, dropped: int) -> None:
    with self._lock:
      self.examples += 1
      self.sequences += sequences
      self.dropped_too_long += dropped


class _FormatExample:
  """example → [packer inputs] for one component (a grain random map: called with a per-index rng)."""

  def __init__(self, component: MixtureComponent, vocab: Any, length: int, task_id: int | None,
               stats: ComponentStats):
    self.fn = get_format(component.format, component.config)
    self.vocab, self.length, self.task_id, self.stats = vocab, length, task_id, stats

  def sequences(self, example: dict[str, Any], rng: np.random.Generator) -> tuple[list[TokenSequence], int]:
    made = list(self.fn(example, self.vocab, rng))
    kept = [s for s in made if packing.fits(s, self.length)]
    return kept, len(made) - len(kept)

  def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    kept, dropped = self.sequences(example, rng)
    self.stats.count(len(kept), dropped)
    return [packing.sequence_features(s, self.task_id) for s in kept]


class _Flatten(grain.experimental.FlatMapTransform):
  """[packer inputs] → packer inputs (checkpointed by grain as the parent's state + the index in the list)."""

  max_fan_out = 1 << 16

  def flat_map(self, element: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return element


def component_seed(seed: int, index: int) -> int:
  """A 32-bit seed for component `index` of a mixture seeded with `seed` (grain seeds are 32-bit)."""
  return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def stream_slice(ds: grain.MapDataset, shard_index: int, shard_count: int, source: Any) -> grain.MapDataset:
  """Positions shard_index, shard_index + shard_count, ... of `ds` (disjoint between streams, together all);
  `source` (the dataset's examples) must have an example for every stream."""
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"input stream {shard_index} of {shard_count}")
  if len(source) < shard_count:
    raise ValueError(f"{source!r}: {len(source)} examples cannot be split between {shard_count} input streams; "
                     f"set SpeechTextConfig.streams to at most {len(source)} (or a smaller global batch)")
  return ds[shard_index::shard_count]


def stream_examples(source: TokenShardSource, shard_index: int, shard_count: int) -> grain.MapDataset:
  """This stream's share of the examples in dataset order (what `preflight` tries)."""
  return stream_slice(grain.MapDataset.source(source), shard_index, shard_count, source)


def component_dataset(component: MixtureComponent, source: TokenShardSource, vocab: Any, *, seed: int,
                      shard_index: int, shard_count: int, length: int, num_epochs: int | None, shuffle: bool,
                      read_options: grain.ReadOptions, stats: ComponentStats,
                      task_id: int | None = None) -> grain.IterDataset:
  """The component's packer inputs in input stream `shard_index` of `shard_count` (see the module docstring)."""
  ds = grain.MapDataset.source(source)
  ds = (ds.shuffle(seed=seed) if shuffle else ds).repeat(num_epochs)
  ds = ds.random_map(_FormatExample(component, vocab, length, task_id, stats), seed=seed)
  ds = stream_slice(ds, shard_index, shard_count, source)
  return grain.experimental.FlatMapIterDataset(ds.to_iter_dataset(read_options), _Flatten())


def preflight(component: MixtureComponent, source: TokenShardSource, vocab: Any, length: int,
              shard_index: int, shard_count: int, seed: int) -> None:
  """Fails (ValueError) now, not as a silent endless loop later, if the format makes no sequence that fits a row
  from the first `PREFLIGHT_EXAMPLES` examples of this stream (e.g. 'ast' on data without translations)."""
  examples = stream_examples(source, shard_index, shard_count)
  fmt = _FormatExample(component, vocab, length, None, ComponentStats())
  tried = made = too_long = 0
  for i in range(min(PREFLIGHT_EXAMPLES, len(examples))):
    kept, dropped = fmt.sequences(examples[i], np.random.default_rng([seed, i]))
    tried, made, too_long = tried + 1, made + len(kept), too_long + dropped
    if kept:
      return
  why = (f"all {too_long} sequences it made are longer than the row length {length}" if too_long else
         "it skipped every one (formats skip examples that lack what they need: a transcript, a language, "
         "translation fields, audio, word `alignments` for word-interleaved TTS)")
  raise ValueError(f"mixture component {component.label!r}: format {component.format!r} made no usable sequence "
                   f"from the first {tried} examples of {source.directory} (split {component.split!r}): {why}")
