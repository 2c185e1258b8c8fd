"""The input's one global state, as every checkpoint holds it: all processes' parts merged.

    state = global_input_state(data_iter)   # on every process, at the same step: {…} (JSON), alike everywhere
    data_iter.set_state(state)              # on restore, on any number of processes

An input iterator's `get_state()` is this process's part of the global state (the contract is in
`audiopalm.data.iterator`): dicts merge key by key; a key several processes give must have the same value in each
(a position they share, e.g. the rows consumed), and keys that processes own disjointly (e.g. the streams of
their rows) are united. So nothing saved depends on how many processes wrote it.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils


def merge_states(states: Sequence[Any], where: str = "input state") -> Any:
  """One global state from every process's part (see the module docstring); ValueError naming the first key on
  which two processes disagree."""
  first = states[0]
  if all(isinstance(s, dict) for s in states):
    keys = list(dict.fromkeys(k for s in states for k in s))
    return {k: merge_states([s[k] for s in states if k in s], f"{where}[{k!r}]") for k in keys}
  for other in states[1:]:
    if other != first:
      raise ValueError(f"the processes' input states disagree at {where}: {first!r} vs {other!r}; the input cannot "
                       "be saved as one global state (each process must report its own part, or the same value)")
  return first


def global_input_state(data_iter: Any) -> Any:
  """Every process's `data_iter.get_state()` merged into the input's one global state (`merge_states`)."""
  local = data_iter.get_state()
  if jax.process_count() == 1:
    return json.loads(json.dumps(local))
  blob = np.frombuffer(json.dumps(local).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.int32(blob.size))).reshape(-1)
  padded = np.zeros(1 << int(sizes.max()).bit_length(), np.uint8)  # a power of two: few distinct programs
  padded[:blob.size] = blob
  every = np.asarray(multihost_utils.process_allgather(padded))  # [processes, longest]
  return merge_states([json.loads(every[i, :n].tobytes()) for i, n in enumerate(sizes)])
