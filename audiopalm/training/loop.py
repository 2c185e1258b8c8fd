"""The one training loop. Every model family trains through it; periodic work hangs off it as hooks.

    result = run_loop(state=state, step_fn=step, batches=batches, start=start, num_steps=num_steps,
                      checkpointer=checkpointer, data_iter=data_iter, hooks=[MetricsHook(...), ...])

The language model (`audiopalm.main.train`) and the codec (`audiopalm.main.train_codec`) build their state, step
function and input, then hand the loop the hooks they want (metrics, checkpoints, the non-finite guard, exports,
held-out evaluation); the loop imports none of them. One iteration:

  1. the next global batch (an input that runs out ends the loop: saved, then stopped);
  2. the step, `step_fn(step, state, batch) -> (state, metrics)` (`step`: steps taken before it; metrics stay on
     the device);
  3. after the first step of this process (its compilation), a wait for it, then every hook's `started(step)`;
  4. a preemption notice (SIGTERM; with several processes, JAX's preemption sync point) ends the loop here,
     before the hooks, so that no evaluation delays the save;
  5. every hook in order: `hook(step, state, metrics)`.

Then every hook's `stopping`, the final checkpoint (forced, waited for), every hook's `finished`, and in any case
every hook's `close`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from typing import Any, Callable, ContextManager, Iterator, Sequence

import jax

from audiopalm.checkpoints.manager import Checkpointer

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoopResult:
  """How a loop ended: the last state, the steps taken in total (`step`) and by this call (from `start`), and
  whether a preemption notice stopped it."""

  state: Any
  start: int
  step: int
  preempted: bool


class Hook:
  """Periodic work that hangs off the loop. Subclasses override what they need; every method does nothing here."""

  def started(self, step: int) -> None:
    """After the first step of this process has run (compiled and waited for)."""

  def __call__(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    """After every step (`step`: steps taken so far; `metrics`: that step's, not yet fetched)."""

  def stopping(self, step: int, state: Any) -> None:
    """The loop has ended, before the final checkpoint (raise to keep the last good checkpoint instead)."""

  def finished(self, result: LoopResult) -> None:
    """After the final checkpoint is written (exports, a last evaluation)."""

  def close(self) -> None:
    """In any case, at the very end (writers)."""


class Preemption:
  """SIGTERM sets a flag (single process); multi-process runs use JAX's preemption sync point."""

  def __init__(self, checkpointer: Checkpointer):
    self.checkpointer = checkpointer
    self.flag = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self.flag.set())

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self.checkpointer.reached_preemption(step)
    return self.flag.is_set()

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


StepFn = Callable[[int, Any, Any], tuple[Any, dict[str, jax.Array]]]


def run_loop(*, state: Any, step_fn: StepFn, batches: Iterator[Any], start: int, num_steps: int,
             checkpointer: Checkpointer, data_iter: Any, hooks: Sequence[Hook],
             context: ContextManager[Any] | None = None) -> LoopResult:
  """Trains from step `start` until `num_steps`, the end of `batches` or a preemption notice (see the module
  docstring). `data_iter` is the input iterator whose state every checkpoint holds (`batches` reads it one batch
  at a time); `context` is entered around the steps (e.g. the mesh and sharding rules the step is traced in)."""
  current, preempted = start, False
  preemption = Preemption(checkpointer)
  try:
    with context if context is not None else contextlib.nullcontext():
      while current < num_steps:
        try:
          batch = next(batches)
        except StopIteration:
          log.warning("The input is exhausted after %d steps; saving and stopping", current)
          break
        state, metrics = step_fn(current, state, batch)
        current += 1
        if current == start + 1:  # compiled and run: throughput is measured from here
          jax.block_until_ready(state)
          for hook in hooks:
            hook.started(current)
        if preemption.reached(current):  # before the hooks: an evaluation would delay the save
          log.warning("Preemption notice: saving step %d and exiting", current)
          preempted = True
          break
        for hook in hooks:
          hook(current, state, metrics)
    for hook in hooks:
      hook.stopping(current, state)
    checkpointer.save(current, state, data_iter, force=True)
    checkpointer.wait()
    result = LoopResult(state=state, start=start, step=current, preempted=preempted)
    for hook in hooks:
      hook.finished(result)
  finally:
    preemption.restore()
    for hook in hooks:
      hook.close()
    checkpointer.close()
  return result
