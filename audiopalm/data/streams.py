"""An input assembled from K independent streams: the unit of data that moves between processes on a resize.

    it = StreamsIterator(build, identity, global_batch_size=16, streams=16, row_start=8, row_stop=16)
    next(it)         # {key: [8, ...]}: one batch of G/K rows from each of streams 8 … 15, concatenated in order
    it.get_state()   # {"input": identity, "global_batch_size": 16, "streams": {"8": …, …, "15": …}}

Stream k fills rows [k·G/K, (k+1)·G/K) of every global batch, and is a pure function of (k, K) and the input's
config: `build(k, K, n)` returns its grain iterator of batches of G/K rows (`n`: the streams this process runs,
which share its reading threads and buffers). A process runs the streams of
its rows, so each process reads and packs only its share of the data, and the global batch is the same whatever
the number of processes. The state of each stream is its own, so all processes' states together
(`audiopalm.checkpoints.input_state`) are one global position, `{"streams": {k: state of stream k}}`, from
which any number of processes whose rows split no stream resume exactly.

K is fixed for a run (it is in the state). A process whose rows would split a stream, a state with other
streams, or a global batch K does not divide fail with a message naming the numbers; a changed global batch
size that K divides continues every stream at its next row (said in one line).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import numpy as np

from audiopalm.data.iterator import state_differences

log = logging.getLogger(__name__)

BuildStream = Callable[[int, int, int], Any]  # (stream k, streams K, streams here) → iterator of [G/K rows] batches


def stream_layout(global_batch_size: int, streams: int, row_start: int, row_stop: int) -> range:
  """The streams whose rows are exactly [row_start, row_stop) of the global batch; ValueError naming the numbers
  if `streams` does not divide the batch or the rows would split a stream."""
  if streams < 1 or global_batch_size % streams:
    raise ValueError(f"the global batch of {global_batch_size} rows cannot be made of {streams} input streams "
                     f"(each stream fills an equal share of rows): use a global batch size that is a multiple of "
                     f"{streams}")
  per_stream = global_batch_size // streams
  if row_start % per_stream or row_stop % per_stream or not 0 <= row_start < row_stop <= global_batch_size:
    raise ValueError(f"this process holds rows [{row_start}, {row_stop}) of the global batch of {global_batch_size}, "
                     f"which split the input's {streams} streams of {per_stream} rows each: run on a number of "
                     f"processes that divides {streams} (each process must hold whole streams)")
  return range(row_start // per_stream, row_stop // per_stream)


class StreamsIterator:
  """This process's streams, batch by batch (see the module docstring). `identity` says which input a state
  belongs to (`check`: refuse another input's state; else start afresh with a warning); `fixed`: whether K was
  set by the user (else a restored state's K is taken); `report(batch)` sees every host batch."""

  def __init__(self, build: BuildStream, identity: dict[str, Any], *, global_batch_size: int, streams: int,
               row_start: int, row_stop: int, fixed: bool = True, check: bool = True,
               report: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = lambda b: b):
    self.build, self.base_identity = build, json.loads(json.dumps(identity))  # as a restored one reads
    self.global_batch_size, self.row_start, self.row_stop = global_batch_size, row_start, row_stop
    self.fixed, self.check, self.report = fixed, check, report
    self._open(streams)

  def _open(self, streams: int) -> None:
    self.num_streams = streams
    self.streams = stream_layout(self.global_batch_size, streams, self.row_start, self.row_stop)
    self.identity = {**self.base_identity, "streams": streams}
    self._its = {k: self.build(k, streams, len(self.streams)) for k in self.streams}

  def __iter__(self) -> "StreamsIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    parts = [next(self._its[k]) for k in self.streams]
    batch = parts[0] if len(parts) == 1 else {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return self.report(batch)

  def get_state(self) -> dict[str, Any]:
    return {"input": self.identity, "global_batch_size": self.global_batch_size,
            "streams": {str(k): it.get_state() for k, it in self._its.items()}}

  def set_state(self, state: dict[str, Any]) -> None:
    saved = state.get("input", {})
    saved_streams = saved.get("streams")
    if not self.fixed and isinstance(saved_streams, int) and saved_streams != self.num_streams:
      self._open(saved_streams)  # the run's K (its default follows the global batch size, which may have changed)
    what = state_differences(saved, self.identity)
    if what:
      if self.check:
        raise ValueError(f"the checkpoint's input state was saved by a different input config ({what}); it "
                         "cannot continue this one. Restore the config, or set "
                         "SpeechTextConfig.check_resumed_state=False to start the new input from its beginning")
      log.warning("The input config changed (%s): the input starts from its beginning", what)
      return
    missing = [k for k in self.streams if str(k) not in state.get("streams", {})]
    if missing:
      raise ValueError(f"the checkpoint's input state lacks streams {missing} of {self.num_streams} (it is "
                       "incomplete: was it written by every process?)")
    if state.get("global_batch_size") != self.global_batch_size:
      log.warning("The global batch size changed (%s then, %d now): each of the %d input streams continues at its "
                  "next row, %d rows per batch", state.get("global_batch_size"), self.global_batch_size,
                  self.num_streams, self.global_batch_size // self.num_streams)
    for k in self.streams:
      self._its[k].set_state(state["streams"][str(k)])
