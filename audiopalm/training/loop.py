"""The one training loop. Every model family trains through it; periodic work hangs off it as hooks.

    result = run_loop(state=state, step_fn=step, batches=batches, start=start, num_steps=num_steps,
                      checkpointer=checkpointer, data_iter=data_iter, hooks=[MetricsHook(...), ...])

The language model (`audiopalm.main.train`) and the codec (`audiopalm.main.train_codec`) build their state, step
function and input, then hand the loop the hooks they want (metrics, the loss guard, exports, held-out
evaluation); the loop imports none of them. One iteration:

  1. the next global batch (an input that runs out ends the loop: saved, then stopped);
  2. the step, `step_fn(step, state, batch) -> (state, metrics)` (`step`: steps taken before it; metrics stay on
     the device);
  3. after the first step of this process (its compilation), a wait for it, then every hook's `started(step)`;
  4. a preemption notice (SIGTERM; with several processes, JAX's preemption sync point) ends the loop here,
     before the hooks (only their quick `preempted(step, state, metrics)`), so that no evaluation delays the save;
  5. every hook in order: `hook(step, state, metrics)` (metrics with "rewinds", the run's rewinds so far);
  6. a checkpoint, when the checkpointer's interval says so (with the input's position and the loop's counters).

A hook that raises `Rewind` (the loss guard, `audiopalm.training.loss_guard`) rolls the run back: the newest
checkpoint before the bad step is restored, `skip_batches` input batches are skipped, that checkpoint is written
again with the input's new position and the rewind counted (the later ones are deleted), every hook hears
`rewound(step)`, and the loop goes on from there; past the cap the hook's error ends the run (the checkpoints
from the bad step on are deleted first). After the loop: every hook's `stopping` (a
`Rewind` here is handled the same way), the final checkpoint (forced, waited for), every hook's `finished`, and in
any case every hook's `close`. The wall time is accounted by category (`audiopalm.training.goodput`): the
input, the steps, checkpoint saves, and the hooks that name a `category` (e.g. "evaluation").
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
from audiopalm.training.goodput import Goodput

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoopResult:
  """How a loop ended: the last state, the steps taken in total (`step`) and by this call (from `start`), and
  whether a preemption notice stopped it."""

  state: Any
  start: int
  step: int
  preempted: bool


class Rewind(Exception):  # noqa: N818 (control flow, not an error)
  """Raised by a hook: roll back to the newest checkpoint before `bad_step` and skip `skip_batches` input
  batches; past `max_rewinds` rewinds in the run (or with no checkpoint before it), `error` ends the run."""

  def __init__(self, bad_step: int, reason: str, *, skip_batches: int, max_rewinds: int,
               error: type[Exception]):
    super().__init__(reason)
    self.bad_step, self.reason, self.skip_batches, self.max_rewinds, self.error = (bad_step, reason, skip_batches,
                                                                                    max_rewinds, error)


class Hook:
  """Periodic work that hangs off the loop. Subclasses override what they need; every method does nothing here.
  `category`: the goodput category its time counts as (None: part of the steps)."""

  category: str | None = None

  def started(self, step: int) -> None:
    """After the first step of this process has run (compiled and waited for)."""

  def __call__(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    """After every step (`step`: steps taken so far; `metrics`: that step's, not yet fetched)."""

  def preempted(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    """A preemption notice ends the loop after this step, instead of `__call__`: quick work only (the save is
    next; e.g. the loss guard reads this step's loss)."""

  def stopping(self, step: int, state: Any) -> None:
    """The loop has ended, before the final checkpoint (raise to keep the last good checkpoint instead)."""

  def rewound(self, step: int) -> None:
    """The run was rolled back to `step` (a `Rewind`)."""

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


class _Rollback:
  """Carries out a `Rewind` (see `audiopalm.training.loss_guard`): restore, drop later checkpoints, skip input."""

  def __init__(self, checkpointer: Checkpointer, data_iter: Any, loop_state: dict[str, Any]):
    self.checkpointer, self.data_iter, self.loop_state = checkpointer, data_iter, loop_state

  @property
  def count(self) -> int:
    return len(self.loop_state.setdefault("rewinds", []))

  def __call__(self, rewind: Rewind, current: int, state: Any) -> tuple[Any, int]:
    """Returns the restored state and its step (saved again at once, with the input's new position and the
    rewind counted), or raises the hook's error when no rewind is left (the checkpoints from the bad step on,
    written before it was judged, are deleted first: the newest left is good)."""
    self.checkpointer.wait()
    before = [s for s in self.checkpointer.all_steps() if s < rewind.bad_step]
    if self.count >= rewind.max_rewinds or not before:
      self.checkpointer.discard_after(before[-1] if before else -1)
      why = (f"no rewind is left ({self.count} of at most {rewind.max_rewinds} taken)" if before
             else f"there is no checkpoint before step {rewind.bad_step} to rewind to")
      raise rewind.error(f"{rewind.reason}; {why}; the last good checkpoint is kept. Lower the learning rate, or "
                         "restart from an earlier checkpoint with other data")
    target = before[-1]
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    shardings = jax.tree.map(lambda a: a.sharding, state)
    restored = self.checkpointer.restore(like, shardings, None, step=target)
    skipped = 0
    try:
      for skipped in range(1, rewind.skip_batches + 1):
        next(self.data_iter)
    except StopIteration:
      skipped -= 1
      log.warning("The input ran out while skipping batches after a rewind")
    self.loop_state["rewinds"].append({"bad_step": rewind.bad_step, "found_at": current, "to": target,
                                       "skipped_batches": skipped, "reason": rewind.reason})
    log.warning("Rewind: %s. Rolling back to step %d and skipping %d batches (rewind %d of at most %d)",
                rewind.reason, target, skipped, self.count, rewind.max_rewinds)
    # Checkpoint `target` again, now with the input's new position and the rewind counted (and drop the later
    # ones): a restart from here does not see the bad batches again and keeps the count.
    self.checkpointer.discard_after(target - 1)
    self.checkpointer.save(target, restored, self.data_iter, force=True, loop_state=self.loop_state)
    return restored, target


def run_loop(*, state: Any, step_fn: StepFn, batches: Iterator[Any], start: int, num_steps: int,
             checkpointer: Checkpointer, data_iter: Any, hooks: Sequence[Hook],
             context: ContextManager[Any] | None = None, goodput: Goodput | None = None) -> LoopResult:
  """Trains from step `start` until `num_steps`, the end of `batches` or a preemption notice (see the module
  docstring). `data_iter` is the input iterator whose state every checkpoint holds (`batches` reads it one batch
  at a time); `context` is entered around the steps (e.g. the mesh and sharding rules the step is traced in);
  `goodput` accounts for the wall time (`audiopalm.training.goodput`)."""
  current, preempted, first = start, False, True
  preemption = Preemption(checkpointer)
  loop_state = dict(checkpointer.loop_state)
  rollback = _Rollback(checkpointer, data_iter, loop_state)
  clock = goodput or Goodput.disabled()
  try:
    with context if context is not None else contextlib.nullcontext():
      while True:
        while current < num_steps:
          try:
            with clock.timed("data"):
              batch = next(batches)
          except StopIteration:
            log.warning("The input is exhausted after %d steps; saving and stopping", current)
            break
          state, metrics = step_fn(current, state, batch)
          current += 1
          if first:  # compiled and run: throughput is measured from here
            first = False
            jax.block_until_ready(state)
            clock.first_step_done(current)
            for hook in hooks:
              hook.started(current)
          else:
            clock.step_done(current)
          if preemption.reached(current):  # before the hooks: an evaluation would delay the save
            log.warning("Preemption notice: saving step %d and exiting", current)
            preempted = True
            try:
              for hook in hooks:
                hook.preempted(current, state, metrics)
            except Rewind as rewind:
              state, current = _rewind(rollback, rewind, current, state, hooks, clock)
            break
          try:
            for hook in hooks:
              with clock.timed(hook.category) if hook.category else contextlib.nullcontext():
                hook(current, state, {**metrics, "rewinds": rollback.count})
          except Rewind as rewind:
            state, current = _rewind(rollback, rewind, current, state, hooks, clock)
            continue
          with clock.timed("checkpoint"):
            if checkpointer.save(current, state, data_iter, loop_state=loop_state):
              clock.write()
        try:
          for hook in hooks:
            hook.stopping(current, state)
        except Rewind as rewind:  # the last step was bad
          state, current = _rewind(rollback, rewind, current, state, hooks, clock)
          if not preempted and current < num_steps:
            continue
        break
    with clock.timed("checkpoint"):
      checkpointer.save(current, state, data_iter, force=True, loop_state=loop_state)
      checkpointer.wait()
    result = LoopResult(state=state, start=start, step=current, preempted=preempted)
    for hook in hooks:
      hook.finished(result)
  finally:
    preemption.restore()
    clock.finish()
    for hook in hooks:
      hook.close()
    checkpointer.close()
  return result


def _rewind(rollback: _Rollback, rewind: Rewind, current: int, state: Any, hooks: Sequence[Hook],
            clock: Goodput) -> tuple[Any, int]:
  with clock.timed("checkpoint"):
    state, step = rollback(rewind, current, state)
  clock.rewound(current - step)
  for hook in hooks:
    hook.rewound(step)
  return state, step
