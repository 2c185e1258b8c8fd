"""Packing training sequences into fixed-length rows with grain's first-fit / best-fit packers.

    ds = grain.IterDataset of {"targets": [n] int32, "weights": [n] float32}     # one dict per TokenSequence
    rows = pack(ds, length=2048, num_bins=128, pad_id=vocab.spec.text.pad_id)    # grain packing, checkpointable
    batch = to_batch(rows_batched, bos_id=eos_id, pad_id=pad_id)                 # the trainer's BATCH_KEYS

Each sequence becomes one segment of a row: `targets` are its tokens, `inputs` the same shifted right by one
with `bos_id` first (as `audiopalm.data.text_source`), `positions` restart at 0, `segment_ids` count 1, 2, ...
within the row (0 = padding), `weights` are its loss weights (0 on padding). The model's attention is masked by
segment ids, so packed sequences never see each other.

grain's packers (`grain.experimental.{FirstFit,BestFit}PackIterDataset`) fill `num_bins` rows at a time and
emit them all when a sequence fits none; their iterator state is the parent's state at the start of the current
group of rows plus the next row, so a restored loader repacks that group identically. More bins waste less
(the last rows of a group are the emptiest) but delay data more; `tools/benchmark_data.py` measures both.
Sequences longer than `length` must be removed before packing (`fits`): grain refuses them.
"""

from __future__ import annotations

import dataclasses
import threading

import grain
import numpy as np

from audiopalm.formats.base import TokenSequence
from audiopalm.training.train_step import BATCH_KEYS

PACKED_KEYS = ("targets", "weights")  # what each sequence carries into the packer
ALGORITHMS = {"first_fit": grain.experimental.FirstFitPackIterDataset,
              "best_fit": grain.experimental.BestFitPackIterDataset}


def sequence_features(seq: TokenSequence, task_id: int | None = None) -> dict[str, np.ndarray]:
  """A sequence as the packer's input: {"targets": [n] int32, "weights": [n] float32 (, "task_ids": [n] int32)}."""
  out = {"targets": seq.tokens.astype(np.int32, copy=False), "weights": seq.weights.astype(np.float32, copy=False)}
  if task_id is not None:
    out["task_ids"] = np.full(len(seq), task_id, np.int32)
  return out


def pack(ds: grain.IterDataset, *, length: int, num_bins: int, pad_id: int = 0, algorithm: str = "best_fit",
         seed: int = 0, keys: tuple[str, ...] = PACKED_KEYS) -> grain.IterDataset:
  """Packs sequence dicts (`sequence_features`) into rows of `length` (see the module docstring).

  Rows have, per key k: k [length], k_segment_ids, k_positions (grain's names). Row order within each group of
  `num_bins` rows is shuffled with `seed` (grain's `shuffle_bins`), so the fullest rows do not always come first.
  """
  if algorithm not in ALGORITHMS:
    raise ValueError(f"packing algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}")
  if length < 2 or num_bins < 1:
    raise ValueError(f"packing needs length >= 2 and num_bins >= 1, got {length}, {num_bins}")
  padding = {k: (pad_id if k == "targets" else 0) for k in keys}
  return ALGORITHMS[algorithm](ds, length_struct={k: length for k in keys}, num_packing_bins=num_bins, seed=seed,
                               shuffle_bins=True, padding_struct=padding)


def fits(seq: TokenSequence, length: int) -> bool:
  """Whether a sequence can be packed into rows of `length` (non-empty and not longer)."""
  return 0 < len(seq) <= length


def to_batch(packed: dict[str, np.ndarray], bos_id: int, pad_id: int = 0) -> dict[str, np.ndarray]:
  """Packed rows [rows, length] (grain's keys) → the trainer's BATCH_KEYS (+ "task_ids" when packed).

  inputs[i] = targets[i - 1] within a segment, `bos_id` at each segment start, `pad_id` on padding.
  """
  targets = packed["targets"].astype(np.int32)  # [rows, length]
  segment_ids = packed["targets_segment_ids"].astype(np.int32)  # [rows, length]
  positions = packed["targets_positions"].astype(np.int32)  # [rows, length]
  previous = np.roll(targets, 1, axis=-1)
  inputs = np.where(positions == 0, bos_id, previous)
  inputs = np.where(segment_ids > 0, inputs, pad_id).astype(np.int32)
  out = {"inputs": inputs, "targets": np.where(segment_ids > 0, targets, pad_id).astype(np.int32),
         "positions": np.where(segment_ids > 0, positions, 0).astype(np.int32), "segment_ids": segment_ids,
         "weights": np.where(segment_ids > 0, packed["weights"], 0).astype(np.float32)}
  assert tuple(out) == BATCH_KEYS
  if "task_ids" in packed:
    out["task_ids"] = np.where(segment_ids > 0, packed["task_ids"], -1).astype(np.int32)
  return out


@dataclasses.dataclass
class PackingStats:
  """Counters of a loader since it started (not checkpointed: they describe this process's run).

  Attributes:
    rows: packed rows emitted.
    tokens: non-padding positions of those rows.
    sequences: sequences packed (segments).
    length: the row length.
  """

  rows: int = 0
  tokens: int = 0
  sequences: int = 0
  length: int = 0
  _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

  @property
  def efficiency(self) -> float:
    """Fraction of emitted row positions holding a token (not padding)."""
    return self.tokens / (self.rows * self.length) if self.rows else 0.0

  def count_batch(self, batch: dict[str, np.ndarray]) -> None:
    segment_ids = batch["segment_ids"]  # [rows, length]
    with self._lock:
      self.rows += segment_ids.shape[0]
      self.tokens += int(np.count_nonzero(segment_ids))
      self.sequences += int(segment_ids.max(axis=-1).sum())

  def summary(self) -> str:
    return (f"{self.rows} rows of {self.length}, {self.sequences} sequences, packing efficiency "
            f"{self.efficiency:.2%} non-pad")
