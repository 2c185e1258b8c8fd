"""The speech–text training input of `audiopalm.main.train`: a mixture of formats over token datasets, packed.

    data = SpeechTextConfig(components=(MixtureComponent("asr", "runs/tokens_demo", rate=1.0),
                                        MixtureComponent("tts", "runs/tokens_demo", rate=1.0)),
                            seq_len=1024, global_batch_size=16)
    data.vocab_spec                                   # the run's combined vocabulary (saved with checkpoints)
    it = data.make_iterator(row_start, row_stop)      # this host's rows of every global batch (its streams)
    batch = next(it)                                  # BATCH_KEYS, each [row_stop - row_start, seq_len]
    it.get_state() / it.set_state(state)              # JSON; the trainer saves it in every checkpoint

The global batch is made of K input streams (`audiopalm.data.streams`; K = `streams`, by default up to 64),
and each process runs the streams of its rows. Per stream: each component streams its formatted sequences from
the stream's disjoint slice of its dataset (`audiopalm.data.mixture`), the components are interleaved by rate
(grain's deterministic `mix`: rates are shares of sequences), packed into rows (best fit decreasing over windows
of sequences, or grain's packers), batched, and turned into the trainer's keys (`packing.to_batch`). Everything
is a pure function of (seed, stream, K), not of the number of processes: a resumed loader continues exactly
where the checkpointed one was, on any number of processes that divides K. The packing efficiency is logged
every `log_every` batches.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import grain
import numpy as np

from audiopalm.data import mixture, packing
from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.streams import StreamsIterator
from audiopalm.data.token_source import TokenShardSource
from audiopalm.files import storage
from audiopalm.formats import audiolm_stages
from audiopalm.tokens import dataset_info
from audiopalm.vocab.build import VocabConfig, build_vocabulary, check_tokens
from audiopalm.vocab.combined import CombinedVocabulary
from audiopalm.vocab.spec import VocabSpec

log = logging.getLogger(__name__)

ACOUSTIC_FORMATS = ("coarse_acoustic", "fine_acoustic")  # formats that read acoustic tokens
TEXT_FORMATS = ("text_lm",)  # formats that read only transcripts (a audiopalm.main.import_text dataset serves them)
REMOTE_READ_THREADS = 16  # default read threads when a dataset is remote (gs://, ...)
DEFAULT_MAX_STREAMS = 64  # the default number of input streams is the largest divisor of the batch up to this
MIN_STREAM_WINDOW = 256  # sequences per packing window of a stream, at least (or packing_window if smaller)
_PACKING_SEED = 1 << 30  # the packer's row-order seed is component_seed(seed, this)


@dataclasses.dataclass(frozen=True)
class SpeechTextConfig:
  """The speech–text input of a training run (the trainer's `InputSpec`).

  Attributes:
    components: the mixture (`MixtureComponent`s with their rates); names must be unique.
    vocab_config: how the combined vocabulary is made (`VocabConfig`); `vocab` is the vocabulary it makes.
    seq_len: tokens per packed row.
    global_batch_size: rows per step over all processes.
    seed: shuffling, per-example format randomness and row order are pure functions of it.
    shuffle: shuffle each host's examples (a new order every epoch); off: dataset order (e.g. for evaluation).
    num_epochs: passes over each component's data (None: endless; with a finite number the input ends when the
      first component runs out; one host only, e.g. for evaluation).
    packing: 'best_fit_decreasing' (over windows of sequences), or grain's 'best_fit' / 'first_fit' packers
      (see `audiopalm.data.packing`).
    packing_window: sequences per best-fit-decreasing window, over all streams: each stream packs windows of
      packing_window / streams, but at least min(packing_window, 256) (more: less padding, more memory and a longer
      replay when a checkpoint is restored).
    packing_bins: rows filled at a time by grain's packers.
    read_threads: grain threads reading and formatting examples, per component and process, shared out among the
      process's streams (at least one each) (grain's `ReadOptions`); None: 0 when every dataset is on a local disk
      (reading in the calling thread is fastest: the work holds the GIL), else 16 (remote reads, e.g. gs://, wait
      on the network).
    prefetch: examples read ahead by those threads, per component and process (shared out like the threads).
    index_dir: cache directory for the TFRecord offset indexes (None: rebuild them at start; fast locally).
    emit_task_ids: add "task_ids" [rows, seq_len] (the component index of each token, -1 on padding) to batches.
    log_every: log the packing efficiency every this many batches (0: never).
    check_resumed_state: refuse to resume from an iterator state saved under another input config (mixture,
      seq_len, streams, packing, ...); False: start such an input afresh instead (with a warning).
    streams: independent input streams the global batch is made of (each fills global_batch_size / streams
      rows; a process runs the streams of its rows). Fixed for a run: it resumes exactly on any number of
      processes that divides it. None: the largest divisor of global_batch_size up to 64 for an endless input
      (64 processes, or any divisor of it), one for a finite input; a resumed run keeps its own. Set it for pods
      of more than 64 hosts.
  """

  components: tuple[MixtureComponent, ...] = ()
  vocab_config: VocabConfig = VocabConfig()
  seq_len: int = 1024
  global_batch_size: int = 16
  seed: int = 0
  shuffle: bool = True
  num_epochs: int | None = None
  packing: str = "best_fit_decreasing"
  packing_window: int = 4096
  packing_bins: int = 512
  read_threads: int | None = None
  prefetch: int = 256
  index_dir: str | None = None
  emit_task_ids: bool = False
  log_every: int = 100
  check_resumed_state: bool = True
  streams: int | None = None

  def __post_init__(self):
    object.__setattr__(self, "components", tuple(self.components))
    if not self.components:
      raise ValueError("SpeechTextConfig.components is empty: give the mixture (a gin_configs/mixtures/*.gin file)")
    labels = [c.label for c in self.components]
    if len(set(labels)) != len(labels):
      raise ValueError(f"mixture component names repeat: {labels}; give repeated formats distinct `name`s")
    if self.seq_len < 2 or self.global_batch_size < 1:
      raise ValueError(f"SpeechTextConfig: seq_len ({self.seq_len}) must be >= 2 and global_batch_size "
                       f"({self.global_batch_size}) >= 1")
    if self.num_epochs is not None and self.num_epochs < 1:
      raise ValueError(f"SpeechTextConfig.num_epochs must be >= 1 or None, got {self.num_epochs}")
    if self.packing not in packing.ALGORITHMS:
      raise ValueError(f"SpeechTextConfig.packing {self.packing!r}; choose one of {list(packing.ALGORITHMS)}")
    if min(self.packing_bins, self.packing_window) < 1 or min(self.read_threads or 0, self.prefetch, self.log_every) < 0:
      raise ValueError("SpeechTextConfig: packing_window and packing_bins must be >= 1 and read_threads, prefetch, "
                       "log_every >= 0")
    if self.streams is not None and (self.streams < 1 or self.global_batch_size % self.streams):
      raise ValueError(f"SpeechTextConfig.streams={self.streams} must be >= 1 and divide global_batch_size "
                       f"({self.global_batch_size})")
    if self.streams not in (None, 1) and self.num_epochs is not None:
      raise ValueError(f"SpeechTextConfig.streams={self.streams} with num_epochs={self.num_epochs}: a finite input "
                       "is one stream (its streams would run out after different numbers of batches)")

  # -------------------------------------------------------------------------------------------------------------
  # Vocabulary (the trainer reads `vocab_spec` and `vocab_size`).

  @functools.cached_property
  def _metadata(self) -> dict[str, dataset_info.DatasetMetadata]:
    """dataset directory → its metadata.json (read once)."""
    out = {}
    for c in self.components:
      if c.dataset not in out:
        if not storage.is_file(storage.join(c.dataset, dataset_info.METADATA_FILE)):
          make = (f"python -m audiopalm.main.import_text --text=audiopalm/data/assets/demo_text.txt --like=<the speech "
                  f"tokens> --output_dir={c.dataset} (text-only examples)" if c.format in TEXT_FORMATS else
                  "python -m data_pipeline.tokenize --gin_file=gin_configs/tokenize/demo.gin "
                  f"--gin.OUTPUT_DIR={c.dataset}")
          raise FileNotFoundError(
              f"mixture component {c.label!r}: no token dataset at {c.dataset} (no {dataset_info.METADATA_FILE}). "
              f"Make it first, e.g. {make}")
        out[c.dataset] = dataset_info.read_metadata(c.dataset)
    return out

  @functools.cached_property
  def _tokens(self) -> dict[str, Any]:
    """dataset directory → its tokenizers, checked to be the same for every dataset (as far as they are read)."""
    out = {directory: meta.tokens for directory, meta in self._metadata.items()}
    first_dir, first = next(iter(out.items()))
    uses_acoustic = any(c.format in ACOUSTIC_FORMATS for c in self.components)
    for directory, tokens in out.items():
      for kind in ("semantic",) + (("acoustic",) if uses_acoustic else ()):
        a, b = getattr(first, kind).identity, getattr(tokens, kind).identity
        if a != b:
          raise ValueError(f"the mixture's datasets were made with different {kind} tokenizers: {first_dir} ({a}) vs "
                           f"{directory} ({b}); one vocabulary cannot hold both")
    return out

  def _needs(self) -> tuple[int, tuple[str, ...]]:
    """(acoustic levels, special tokens) the mixture's formats need."""
    first = next(iter(self._tokens.values()))
    uses_acoustic = any(c.format in ACOUSTIC_FORMATS for c in self.components)
    delay = any(getattr(c.resolved_config, "layout", None) == "delay" for c in self.components)
    return (first.acoustic.num_codebooks if uses_acoustic else 0), ((audiolm_stages.DELAY_PAD,) if delay else ())

  @functools.cached_property
  def vocab(self) -> CombinedVocabulary:
    levels, specials = self._needs()
    directory, tokens = next(iter(self._tokens.items()))
    vocab = build_vocabulary(self.vocab_config, tokens, levels, specials, source=directory)
    for other_dir, other in self._tokens.items():
      check_tokens(vocab.spec, other, levels, other_dir)
    return vocab

  @property
  def vocab_spec(self) -> VocabSpec:
    return self.vocab.spec

  @property
  def vocab_size(self) -> int:
    """Token ids are < this (the trainer checks that the model's vocabulary covers it)."""
    return self.vocab.spec.size

  @functools.cached_property
  def stream_vocab(self) -> tuple[tuple[int, int], ...]:
    """Each token stream's vocabulary range for a multi-stream mixture (the AudioLM stages' 'streams' layout;
    the model's `TransformerConfig.stream_vocab`), () for plain token sequences. Every component must agree."""
    first = next(iter(self._tokens.values()))
    levels = first.acoustic.num_codebooks if first.acoustic is not None else None
    found = {c.label: (audiolm_stages.stream_vocab(c.resolved_config, self.vocab, levels)
                       if getattr(c.resolved_config, "layout", None) == "streams" else ()) for c in self.components}
    if len(set(found.values())) > 1:
      raise ValueError("the mixture's components lay out tokens differently: "
                       + "; ".join(f"{label}: {len(v) or 1} token stream(s)" for label, v in found.items())
                       + " (a multi-stream model reads only 'streams' layouts with the same levels)")
    return next(iter(found.values()))

  @property
  def task_names(self) -> list[str]:
    """Component labels by task id (the values of "task_ids")."""
    return [c.label for c in self.components]

  # -------------------------------------------------------------------------------------------------------------
  # The iterator.

  @property
  def num_streams(self) -> int:
    """K: `streams`, or by default the largest divisor of the global batch up to DEFAULT_MAX_STREAMS for an
    endless input (one for a finite input)."""
    if self.streams is not None:
      return self.streams
    if self.num_epochs is not None:
      return 1
    return max(k for k in range(1, min(self.global_batch_size, DEFAULT_MAX_STREAMS) + 1)
               if self.global_batch_size % k == 0)

  def make_iterator(self, row_start: int, row_stop: int) -> StreamsIterator:
    """This process's rows [row_start, row_stop) of every global batch (the trainer's input contract): the
    streams of those rows (`audiopalm.data.streams`)."""
    if self.num_epochs is not None and (row_start, row_stop) != (0, self.global_batch_size):
      raise ValueError(f"SpeechTextConfig.num_epochs={self.num_epochs} with several processes: they would run out "
                       "after different numbers of batches (their packing differs) and the others would wait "
                       "forever; train endlessly (num_epochs=None) for TRAIN_STEPS steps instead")
    packing_stats = packing.PackingStats(length=self.seq_len)
    report = _Report(packing_stats, self._component_stats, self.log_every, row_start)
    return StreamsIterator(self.stream, self.state_identity(), global_batch_size=self.global_batch_size,
                           streams=self.num_streams, row_start=row_start, row_stop=row_stop,
                           fixed=self.streams is not None, check=self.check_resumed_state, report=report)

  def state_identity(self) -> dict[str, Any]:
    """What a saved iterator state is only valid for (compared on restore; the streams are added to it)."""
    return {"components": [repr(c) for c in self.components], "vocab_size": self.vocab_size, "seq_len": self.seq_len,
            "seed": self.seed, "shuffle": self.shuffle, "num_epochs": self.num_epochs, "packing": self.packing,
            "packing_window": self.packing_window, "packing_bins": self.packing_bins,
            "emit_task_ids": self.emit_task_ids}

  @functools.cached_property
  def _sources(self) -> dict[tuple[str, str], TokenShardSource]:
    """(dataset, split) → its examples (opened once, shared by the streams)."""
    out: dict[tuple[str, str], TokenShardSource] = {}
    for c in self.components:
      if (c.dataset, c.split) not in out:
        out[c.dataset, c.split] = TokenShardSource(c.dataset, c.split, self.index_dir,
                                                   dataset_name=self._metadata[c.dataset].dataset_name)
    return out

  @functools.cached_property
  def _component_stats(self) -> dict[str, mixture.ComponentStats]:
    """Per-component counters of this process (all its streams)."""
    return {c.label: mixture.ComponentStats() for c in self.components}

  def stream(self, index: int, count: int, here: int = 1) -> grain.DatasetIterator:
    """Stream `index` of `count`: its batches of global_batch_size / count rows (see the module docstring);
    `here`: the streams this process runs (they share its reading threads and prefetch buffers)."""
    return iter(self.dataset(index, count, self.global_batch_size // count, here))

  def dataset(self, stream: int, streams: int, rows: int, here: int = 1) -> grain.IterDataset:
    """Stream `stream` of `streams` as batches of `rows` rows (see the module docstring)."""
    vocab = self.vocab
    threads = self.read_threads
    if threads is None:
      threads = REMOTE_READ_THREADS if any("://" in c.dataset for c in self.components) else 0
    threads = -(-threads // here)  # shared out, at least one each
    read_options = grain.ReadOptions(num_threads=threads,
                                     prefetch_buffer_size=max(1, self.prefetch // here) if threads else 0)
    streams_by_label, rates = {}, {}
    for i, c in enumerate(self.components):
      seed = mixture.component_seed(self.seed, i)
      source = self._sources[c.dataset, c.split]
      mixture.preflight(c, source, vocab, self.seq_len, stream, streams, seed)
      streams_by_label[c.label] = mixture.component_dataset(
          c, source, vocab, seed=seed, shard_index=stream, shard_count=streams, length=self.seq_len,
          num_epochs=self.num_epochs, shuffle=self.shuffle, read_options=read_options,
          stats=self._component_stats[c.label], task_id=i if self.emit_task_ids else None)
      rates[c.label] = c.rate
    mixed = (grain.IterDataset.mix(streams_by_label, rates) if len(streams_by_label) > 1
             else next(iter(streams_by_label.values())))
    keys = packing.PACKED_KEYS + (("task_ids",) if self.emit_task_ids else ())
    pad_id, bos_id = vocab.spec.text.pad_id, vocab.spec.text.eos_id
    packed = packing.pack(mixed, length=self.seq_len, algorithm=self.packing,
                          window=max(-(-self.packing_window // streams), min(self.packing_window, MIN_STREAM_WINDOW)),
                          num_bins=self.packing_bins, pad_id=pad_id,
                          seed=mixture.component_seed(self.seed, _PACKING_SEED), keys=keys)
    # An endless input drops nothing; a finite one ends with a partial batch, filled with weight-0 padding rows.
    finite = self.num_epochs is not None
    return packed.batch(rows, drop_remainder=not finite).map(
        lambda b: _fill_rows(packing.to_batch(b, bos_id=bos_id, pad_id=pad_id), rows, pad_id))


def _fill_rows(batch: dict[str, np.ndarray], rows: int, pad_id: int) -> dict[str, np.ndarray]:
  """A batch of fewer than `rows` rows (a finite input's last) padded to `rows` with empty rows: pad tokens,
  segment 0, weight 0, task id -1."""
  short = rows - next(iter(batch.values())).shape[0]
  if short <= 0:
    return batch
  fill = {"inputs": pad_id, "targets": pad_id, "task_ids": -1}
  return {k: np.concatenate([v, np.full((short,) + v.shape[1:], fill.get(k, 0), v.dtype)]) for k, v in batch.items()}


class _Report:
  """Counts packed batches and logs the packing efficiency and per-component counters now and then."""

  def __init__(self, stats: packing.PackingStats, components: dict[str, mixture.ComponentStats], every: int,
               first_row: int):
    self.stats, self.components, self.every, self.first_row, self.batches = stats, components, every, first_row, 0

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    self.stats.count_batch(batch)
    self.batches += 1
    if self.every and self.batches % self.every == 0:
      parts = ", ".join(f"{name}: {s.examples} examples → {s.sequences} sequences ({s.dropped_too_long} too long)"
                        for name, s in self.components.items())
      log.info("input (rows from %d, %d batches): %s; %s", self.first_row, self.batches, self.stats.summary(), parts)
    return batch
