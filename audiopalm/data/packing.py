"""Packing training sequences into fixed-length rows with segment ids and positions.

    ds = grain.IterDataset of {"targets": [n] int32, "weights": [n] float32}     # one dict per TokenSequence
    rows = pack(ds, length=2048, algorithm="best_fit_decreasing", window=4096)   # checkpointable grain dataset
    batch = to_batch(rows_batched, bos_id=eos_id, pad_id=pad_id)                 # the trainer's BATCH_KEYS

Each sequence becomes one segment of a row: `targets` are its tokens, `inputs` the same shifted right by one
with `bos_id` first (as `audiopalm.data.text_source`), `positions` restart at 0, `segment_ids` count 1, 2, ...
within the row (0 = padding), `weights` are its loss weights (0 on padding). The model's attention is masked by
segment ids, so packed sequences never see each other.

Algorithms (all deterministic; a restored iterator repacks the current group and continues exactly):
- 'best_fit_decreasing' (default, `WindowPackIterDataset`): reads a window of `window` sequences, sorts them
  longest first and puts each into the row it leaves least room in (a new row if none fits), then emits the
  window's rows in a seeded random order. Only the last rows of a window are left part-empty, so the padding is
  a small fraction of a window's rows. State: the parent's state at the window's start + rows emitted.
- 'best_fit' / 'first_fit' (grain's `{BestFit,FirstFit}PackIterDataset`): fill `num_bins` rows at a time in
  arrival order and emit them all when a sequence fits none; the emptiest rows of every group are padding.
`tools/benchmark_data.py` compares them. Sequences longer than `length` must be removed first (`fits`).
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Any

import grain
import numpy as np

from audiopalm.data.iterator import BATCH_KEYS
from audiopalm.formats.base import TokenSequence

PACKED_KEYS = ("targets", "weights")  # what each sequence carries into the packer
_GRAIN_PACKERS = {"first_fit": grain.experimental.FirstFitPackIterDataset,
                  "best_fit": grain.experimental.BestFitPackIterDataset}
ALGORITHMS = ("best_fit_decreasing", *_GRAIN_PACKERS)


def sequence_features(seq: TokenSequence, task_id: int | None = None) -> dict[str, np.ndarray]:
  """A sequence as the packer's input: {"targets": [n] int32, "weights": [n] float32 (, "task_ids": [n] int32)}."""
  out = {"targets": seq.tokens.astype(np.int32, copy=False), "weights": seq.weights.astype(np.float32, copy=False)}
  if task_id is not None:
    out["task_ids"] = np.full(len(seq), task_id, np.int32)
  return out


def pack(ds: grain.IterDataset, *, length: int, algorithm: str = "best_fit_decreasing", window: int = 4096,
         num_bins: int = 512, pad_id: int = 0, seed: int = 0,
         keys: tuple[str, ...] = PACKED_KEYS) -> grain.IterDataset:
  """Packs sequence dicts (`sequence_features`) into rows of `length` (see the module docstring).

  Rows have, per key k: k [length], k_segment_ids, k_positions (grain's names). `window` is used by
  'best_fit_decreasing', `num_bins` by grain's packers; `seed` orders the rows within a window / group.
  """
  if algorithm not in ALGORITHMS:
    raise ValueError(f"packing algorithm {algorithm!r}; choose one of {list(ALGORITHMS)}")
  if length < 2 or num_bins < 1 or window < 1:
    raise ValueError(f"packing needs length >= 2, window >= 1 and num_bins >= 1, got {length}, {window}, {num_bins}")
  padding = {k: (pad_id if k == "targets" else 0) for k in keys}
  if algorithm == "best_fit_decreasing":
    return WindowPackIterDataset(ds, length=length, window=window, seed=seed, padding=padding)
  return _GRAIN_PACKERS[algorithm](ds, length_struct={k: length for k in keys}, num_packing_bins=num_bins,
                                   seed=seed, shuffle_bins=True, padding_struct=padding)


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
  """Rows of item indices: items longest first (ties: lower index first), each into the row with the least room
  left that fits it, else a new row. Rows are returned in the order they were opened."""
  rows: list[list[int]] = []
  free: list[tuple[int, int]] = []  # sorted (room left, row)
  for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
    n = lengths[i]
    if not 0 < n <= capacity:
      raise ValueError(f"a sequence of {n} tokens cannot be packed into rows of {capacity}")
    slot = bisect.bisect_left(free, (n, -1))
    if slot < len(free):
      room, row = free.pop(slot)
      rows[row].append(i)
    else:
      room, row = capacity, len(rows)
      rows.append([i])
    if room - n:
      bisect.insort(free, (room - n, row))
  return rows


class WindowPackIterDataset(grain.IterDataset):
  """Best-fit-decreasing packing over windows of sequences (see the module docstring)."""

  def __init__(self, parent: grain.IterDataset, *, length: int, window: int, seed: int, padding: dict[str, Any]):
    super().__init__(parent)
    self.length, self.window, self.seed, self.padding = length, window, seed, padding

  def __iter__(self) -> grain.DatasetIterator:
    return _WindowPackIterator(self._parent.__iter__(), self)

  def __str__(self) -> str:
    return f"WindowPackIterDataset(length={self.length}, window={self.window})"


class _WindowPackIterator(grain.DatasetIterator):
  """State: {"parent": the parent's state at the current window's start, "window": its index, "next_row"}."""

  def __init__(self, parent: grain.DatasetIterator, spec: WindowPackIterDataset):
    super().__init__(parent)
    self.spec = spec
    self._start_state = self._parent.get_state()
    self._window = 0
    self._next_row = 0
    self._elements: list[dict[str, np.ndarray]] | None = None  # the current window's sequences
    self._rows: list[list[int]] = []  # their assignment to rows, in emission order

  def _load(self) -> None:
    """Reads the window starting at the parent's current position and packs it."""
    self._start_state = self._parent.get_state()
    elements = []
    for _ in range(self.spec.window):
      try:
        elements.append(next(self._parent))
      except StopIteration:
        break
    rows = best_fit_decreasing([len(e["targets"]) for e in elements], self.spec.length)
    order = np.random.default_rng([self.spec.seed, self._window]).permutation(len(rows))
    self._elements, self._rows = elements, [rows[i] for i in order]

  def __next__(self) -> dict[str, np.ndarray]:
    if self._elements is None:
      self._load()
    while self._next_row >= len(self._rows):
      if not self._elements:  # the last window was empty: the parent is exhausted
        raise StopIteration
      self._window += 1
      self._next_row = 0
      self._load()
    row = self._row([self._elements[i] for i in self._rows[self._next_row]])
    self._next_row += 1
    return row

  def _row(self, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    L = self.spec.length  # noqa: N806
    lengths = [len(p["targets"]) for p in parts]
    used = sum(lengths)
    segment_ids = np.zeros(L, np.int32)
    segment_ids[:used] = np.repeat(np.arange(1, len(parts) + 1, dtype=np.int32), lengths)
    positions = np.zeros(L, np.int32)
    positions[:used] = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
    out = {}
    for key, pad in self.spec.padding.items():
      first = parts[0][key]
      value = np.full((L,) + first.shape[1:], pad, first.dtype)
      value[:used] = np.concatenate([p[key] for p in parts])
      out[key], out[f"{key}_segment_ids"], out[f"{key}_positions"] = value, segment_ids, positions
    return out

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._start_state, "window": self._window, "next_row": self._next_row}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._window = state["window"]
    self._load()
    self._next_row = state["next_row"]


def fits(seq: TokenSequence, length: int) -> bool:
  """Whether a sequence can be packed into rows of `length` (non-empty and not longer)."""
  return 0 < len(seq) <= length


def to_batch(packed: dict[str, np.ndarray], bos_id: int, pad_id: int = 0) -> dict[str, np.ndarray]:
  """Packed rows [rows, length] (grain's keys) → the trainer's BATCH_KEYS (+ "task_ids" when packed).

  inputs[i] = targets[i - 1] within a segment, `bos_id` at each segment start, `pad_id` on padding. Multi-stream
  rows (targets and weights [rows, length, streams]) shift every stream alike; a segment starts with `bos_id` in
  stream 0 and `pad_id` in the others.
  """
  targets = packed["targets"].astype(np.int32)  # [rows, length] or [rows, length, streams]
  segment_ids = packed["targets_segment_ids"].astype(np.int32)  # [rows, length]
  positions = packed["targets_positions"].astype(np.int32)  # [rows, length]
  streams = targets.ndim == 3
  seg = segment_ids[..., None] if streams else segment_ids  # broadcasts over the streams
  start = (positions == 0)[..., None] if streams else positions == 0
  bos = np.array([bos_id] + [pad_id] * (targets.shape[-1] - 1), np.int32) if streams else bos_id
  previous = np.roll(targets, 1, axis=1)
  inputs = np.where(start, bos, previous)
  inputs = np.where(seg > 0, inputs, pad_id).astype(np.int32)
  out = {"inputs": inputs, "targets": np.where(seg > 0, targets, pad_id).astype(np.int32),
         "positions": np.where(segment_ids > 0, positions, 0).astype(np.int32), "segment_ids": segment_ids,
         "weights": np.where(seg > 0, packed["weights"], 0).astype(np.float32)}
  assert tuple(out) == BATCH_KEYS
  if "task_ids" in packed:
    out["task_ids"] = np.where(segment_ids > 0, packed["task_ids"], -1).astype(np.int32)
  return out


@dataclasses.dataclass
class PackingStats:
  """Counters of a loader since it started (not checkpointed: they describe this process's run). Updated by the
  thread that iterates the loader.

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

  @property
  def efficiency(self) -> float:
    """Fraction of emitted row positions holding a token (not padding)."""
    return self.tokens / (self.rows * self.length) if self.rows else 0.0

  def count_batch(self, batch: dict[str, np.ndarray]) -> None:
    segment_ids = batch["segment_ids"]  # [rows, length]
    self.rows += segment_ids.shape[0]
    self.tokens += int(np.count_nonzero(segment_ids))
    self.sequences += int(segment_ids.max(axis=-1).sum())

  def summary(self) -> str:
    return (f"{self.rows} rows of {self.length}, {self.sequences} sequences, packing efficiency "
            f"{self.efficiency:.2%} non-pad")
