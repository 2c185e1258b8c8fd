"""The input interface of the trainer, one global input state, and assembly of per-host batches into global arrays.

An input iterator yields *host-local* batches (this process's rows of the global batch) as dicts of numpy arrays
`[rows, length]` with the keys `BATCH_KEYS`, and exposes `get_state()` / `set_state(state)` with JSON states:

- `get_state()` is this process's part of the input's **global** state. Every checkpoint holds one global state,
  all processes' parts merged (`audiopalm.checkpoints.input_state`): dicts are merged key by key, and a key that
  several processes give must have the same value in each (so a position every process shares, like "rows
  consumed", is written once, and per-stream positions that processes own disjointly, like
  `{"streams": {"0": ..., "5": ...}}`, are united).
- `set_state(state)` takes that global state, whichever number of processes wrote it, and takes its own part.

So a run resumes on another number of processes (or devices, or mesh) at the same global position. A grain
`DatasetIterator` over data that every process reads alike (e.g. one host) satisfies this as it is.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import jax
import numpy as np
from jax.sharding import NamedSharding

# What a batch holds (each [batch, length]): inputs, targets (next tokens), positions (within each packed
# segment) and segment_ids (0 = padding) are int32; weights (the loss weight of each target) float32.
BATCH_KEYS = ("inputs", "targets", "positions", "segment_ids", "weights")
Batch = dict[str, jax.Array]


class InputIterator(Protocol):
  """Deterministic, per-host, checkpointable iterator of host-local batches."""

  def __next__(self) -> dict[str, np.ndarray]: ...

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...

  def get_state(self) -> dict[str, Any]: ...

  def set_state(self, state: dict[str, Any]) -> None: ...


def host_row_range(sharding: NamedSharding, global_batch: int, length: int) -> tuple[int, int]:
  """[start, stop) rows of the global batch that this process's devices hold.

  With the usual meshes (devices in process order, batch over data x fsdp) this
  is the process's contiguous 1/num_processes of the batch; with a mesh whose
  batch shards span processes it is the union of the shards the process holds.
  """
  starts, stops = [], []
  for index in sharding.addressable_devices_indices_map((global_batch, length)).values():
    rows = index[0]
    starts.append(rows.start or 0)
    stops.append(global_batch if rows.stop is None else rows.stop)
  start, stop = min(starts), max(stops)
  covered = np.zeros(global_batch, dtype=bool)
  for a, b in zip(starts, stops):
    covered[a:b] = True
  if not covered[start:stop].all():
    raise ValueError(f"This process holds non-contiguous rows of the global batch ({sorted(zip(starts, stops))}); "
                     "order the mesh devices by process")
  return start, stop


def to_global_batch(local: dict[str, np.ndarray], sharding: NamedSharding, global_batch: int) -> dict[str, jax.Array]:
  """Assembles every process's host-local rows into global arrays with `sharding`."""
  out = {}
  for key, value in local.items():
    global_shape = (global_batch,) + value.shape[1:]
    out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out


def state_differences(saved: dict[str, Any], now: dict[str, Any]) -> str:
  """'key: <saved> then, <now> now; ...' for the keys whose values differ ('' if none)."""
  keys = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
  return "; ".join(f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in keys)
