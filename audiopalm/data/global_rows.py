"""Inputs whose rows are a pure function of their global index: each process computes only its rows of a batch.

    it = GlobalRowsIterator(row, identity, global_batch_size=16, row_start=0, row_stop=8)
    next(it)         # {key: [8, ...]}: rows b·16 + 0 … b·16 + 7 of the global row sequence, for batch b
    it.get_state()   # {"input": identity, "global_batch_size": 16, "rows": rows consumed}: alike on every process

The text input (`audiopalm.data.text_source`) and the codec's audio crops (`audiopalm.codec.audio_crops`) are
such inputs. Their state is one global position, the rows consumed by all processes together, so a run resumes at
the same row on any number of processes. If the global batch size changed, the input continues at that same
row with batches of the new size (said in one line): the rows' order is unchanged, only its cut into batches
(an input that draws per-row randomness from the batch and row numbers, like the audio crops, draws anew).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import grain
import numpy as np

from audiopalm.data.iterator import state_differences

log = logging.getLogger(__name__)

_MAX_BATCHES = 2**40  # effectively endless (grain needs a length that fits in an index)

Row = Callable[[int], dict[str, np.ndarray]]  # global row index → {key: [...]} (one row)


class GlobalRowsIterator:
  """This process's rows [row_start, row_stop) of every global batch of `row(0), row(1), …` (see the module
  docstring). `identity` says which input the state belongs to (a restored state of another input is refused);
  `read_options` sets grain's reading threads."""

  def __init__(self, row: Row, identity: dict[str, Any], *, global_batch_size: int, row_start: int, row_stop: int,
               read_options: grain.ReadOptions | None = None):
    if not 0 <= row_start < row_stop <= global_batch_size:
      raise ValueError(f"rows [{row_start}, {row_stop}) are not inside the global batch of {global_batch_size}")
    self.row, self.identity = row, json.loads(json.dumps(identity))  # as a restored one reads
    self.global_batch_size, self.row_start, self.row_stop = global_batch_size, row_start, row_stop
    self.read_options = read_options or grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    self._start(0)

  def _start(self, offset: int) -> None:
    """Batch b of the new grain iterator holds global rows offset + b·G + [row_start, row_stop)."""
    self._offset = offset
    g, first, per_host = self.global_batch_size, self.row_start, self.row_stop - self.row_start

    def local(j: int) -> dict[str, np.ndarray]:
      b, r = divmod(j, per_host)
      return self.row(offset + b * g + first + r)

    ds = grain.MapDataset.range(_MAX_BATCHES * per_host).map(local).batch(per_host)
    self._it = iter(ds.to_iter_dataset(self.read_options))

  def __iter__(self) -> "GlobalRowsIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._it)

  @property
  def rows_consumed(self) -> int:
    """Global rows in the batches taken so far (by all processes together)."""
    return self._offset + self._it.get_state()["next_index"] * self.global_batch_size

  def get_state(self) -> dict[str, Any]:
    return {"input": self.identity, "global_batch_size": self.global_batch_size, "rows": self.rows_consumed}

  def set_state(self, state: dict[str, Any]) -> None:
    what = state_differences(state.get("input", {}), self.identity)
    if what or "rows" not in state:
      raise ValueError(f"the checkpoint's input state belongs to another input ({what or state!r}); it cannot "
                       "continue this one. Restore the input's config, or start a new run (another model_dir)")
    if state["global_batch_size"] != self.global_batch_size:
      log.warning("The global batch size changed (%d then, %d now): the input continues at global row %d with "
                  "batches of %d rows", state["global_batch_size"], self.global_batch_size, state["rows"],
                  self.global_batch_size)
    self._start(int(state["rows"]))
