"""A simple real input source: byte-level tokens of text files, packed into fixed-length rows.

The input of text-only pretraining (e.g. the tiny text checkpoint that speech-text training
starts from; speech-text runs use `audiopalm.data.speech_text_source`). Documents are
paragraphs (blank-line separated); each becomes UTF-8 bytes + EOS, and the
stream of documents is packed (concatenate, then split into rows of `length`
tokens) with segment ids and per-segment positions. A document cut at a row
boundary continues as a new segment in the next row.

Token ids are the byte vocabulary's (`audiopalm.vocab.bytes`: 0 = padding, 1 = EOS/BOS, 2..257 = bytes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import numpy as np

from audiopalm.data.global_rows import GlobalRowsIterator
from audiopalm.files import storage
from audiopalm.vocab.bytes import EOS, PAD, VOCAB_SIZE, encode
from audiopalm.vocab.combined import load_text_vocab
from audiopalm.vocab.spec import make_spec

@dataclasses.dataclass(frozen=True)
class TextSourceConfig:
  """Where the text comes from and how it is cut.

  Attributes:
    paths: text files (local or gs://).
    seq_len: tokens per packed row.
    global_batch_size: rows per step over all processes.
    seed: shuffling seed; the row order is a pure function of it.
    shuffle: shuffle rows (reshuffled every epoch).
  """

  paths: tuple[str, ...] = ()
  seq_len: int = 256
  global_batch_size: int = 16
  seed: int = 0
  shuffle: bool = True

  vocab_size = VOCAB_SIZE  # token ids are < this (the trainer checks the model's vocabulary covers it)

  @property
  def vocab_spec(self) -> Any:
    """The byte vocabulary as a spec (saved with the run's checkpoints, so they can be extended with audio)."""
    return make_spec(load_text_vocab("byte").spec)

  def __post_init__(self):
    if isinstance(self.paths, str):
      object.__setattr__(self, "paths", (self.paths,))
    if not self.paths:
      raise ValueError("TextSourceConfig.paths is empty: give at least one text file")
    if self.seq_len < 2 or self.global_batch_size < 1:
      raise ValueError(f"TextSourceConfig: seq_len ({self.seq_len}) must be >= 2 and global_batch_size "
                       f"({self.global_batch_size}) >= 1")

  def make_iterator(self, row_start: int, row_stop: int) -> GlobalRowsIterator:
    """The trainer's input contract (`audiopalm.training.trainer.InputSpec`)."""
    return make_text_iterator(self, row_start, row_stop)


def pack_documents(docs: Sequence[np.ndarray], length: int) -> dict[str, np.ndarray]:
  """Concatenate-then-split packing. Returns arrays [rows, length] (see module docstring)."""
  stream = np.concatenate([np.append(d, EOS) for d in docs]).astype(np.int32)
  seg = np.concatenate([np.full(len(d) + 1, i + 1, np.int32) for i, d in enumerate(docs)])
  rows = -(-len(stream) // length)
  pad = rows * length - len(stream)
  targets = np.pad(stream, (0, pad)).reshape(rows, length)
  seg = np.pad(seg, (0, pad)).reshape(rows, length)
  # Renumber segments within each row from 1; a continued document starts a new segment.
  starts = np.ones_like(seg, dtype=bool)
  starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
  segment_ids = np.where(seg > 0, np.cumsum(starts, axis=1), 0).astype(np.int32)
  idx = np.broadcast_to(np.arange(length), (rows, length))
  start_idx = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
  positions = np.where(seg > 0, idx - start_idx, 0).astype(np.int32)
  inputs = np.where(starts, EOS, np.roll(targets, 1, axis=1))  # shift right within each segment
  inputs = np.where(seg > 0, inputs, PAD).astype(np.int32)
  return {"inputs": inputs, "targets": targets, "positions": positions, "segment_ids": segment_ids,
          "weights": (seg > 0).astype(np.float32)}


def load_rows(cfg: TextSourceConfig) -> dict[str, np.ndarray]:
  docs = []
  for path in cfg.paths:
    if not storage.is_file(path):
      raise FileNotFoundError(f"Text source file not found: {path}")
    text = storage.read_text(path)
    docs += [encode(par.strip()) for par in text.split("\n\n") if par.strip()]
  if not docs:
    raise ValueError(f"No text in {list(cfg.paths)}")
  return pack_documents(docs, cfg.seq_len)


def make_text_iterator(cfg: TextSourceConfig, row_start: int, row_stop: int) -> GlobalRowsIterator:
  """Iterator over this host's rows [row_start, row_stop) of every global batch.

  Global batch b consists of rows b·G … b·G + G - 1 of the (shuffled, repeated) row sequence, so the
  concatenation of all hosts' batches is independent of the number of processes, and the state (rows consumed,
  `audiopalm.data.global_rows`) is one global position.
  """
  rows = load_rows(cfg)
  num_rows = len(rows["inputs"])
  table = grain.MapDataset.source(range(num_rows))
  if cfg.shuffle:
    table = table.shuffle(seed=cfg.seed)
  table = table.repeat(None)

  def row(k: int) -> dict[str, np.ndarray]:
    i = table[k]
    return {key: v[i] for key, v in rows.items()}

  identity = {"source": "text", "paths": list(cfg.paths), "seq_len": cfg.seq_len, "seed": cfg.seed,
              "shuffle": cfg.shuffle, "rows": num_rows}
  return GlobalRowsIterator(row, identity, global_batch_size=cfg.global_batch_size, row_start=row_start,
                            row_stop=row_stop)
