"""Goodput: where a run's wall time went, across all its restarts (as MaxText's goodput monitor reports it).

    goodput = Goodput(model_dir, start_step, writer)   # at the loop's start; the clock started with the process
    with goodput.timed("data"): batch = next(batches)  # time the loop spends outside its steps, by category
    goodput.first_step_done(step)                      # the first step ran: its time is compilation
    goodput.step_done(step)                            # every step (the record is rewritten every write_every_s)
    summary = goodput.finish()                         # this invocation's record + the run's summary

Categories of wall time (seconds), per invocation of a run (a process start, restarts included):
  startup      process start → the loop's start (imports, initialisation, restoring a checkpoint);
  compilation  the first step of the invocation (tracing, compiling or loading from the persistent cache, and
               one step);
  data         waiting for the input (the loop blocked in `next(batches)`);
  checkpoint   blocking time of checkpoint saves (the rest of an asynchronous save overlaps training);
  evaluation   held-out evaluations;
  steps        the rest of the loop: the steps (and the hooks that only read their results);
  other        after the last step (the hooks' last work, e.g. the export).
Steps computed twice are badput: after a restart, the steps between the restored checkpoint and the furthest
step an earlier invocation reached; after a loss-spike rewind, the steps rolled back. Their time (at this
invocation's mean step time) moves from `steps` to `redone`. goodput = (steps − redone) / all wall time.

Process 0 writes one record per invocation to `<model_dir>/goodput/<start time>-<pid>.json`, updated at every
checkpoint and every `write_every_s` (10) seconds: a killed process leaves its last update, so the steps it took
after that are not known to the restart (an undercount of redone steps of at most that long), and the run's summary
(all records summed) goes to the log, `<model_dir>/goodput/summary.json` and TensorBoard (`goodput/...`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
import uuid
from typing import Any, Iterator

import jax
import psutil

from audiopalm.files import storage

log = logging.getLogger(__name__)

_LAST_FINISH = [0.0]  # when the last run in this process finished (its successor's startup starts there)
CATEGORIES = ("startup", "compilation", "data", "checkpoint", "evaluation", "steps", "other")
GOODPUT_DIR = "goodput"
SUMMARY_FILE = "summary.json"


def process_start_time() -> float:
  """When this process started (seconds since the epoch, from the OS)."""
  return psutil.Process(os.getpid()).create_time()


@dataclasses.dataclass
class InvocationRecord:
  """One invocation's accounting (what the JSON record holds)."""

  started: float  # process start (or the end of the previous run in this process), seconds since the epoch
  updated: float
  start_step: int
  last_step: int
  furthest_step: int  # the furthest step reached (beyond last_step after a rewind)
  seconds: dict[str, float]
  steps_run: int = 0  # steps taken after the first (the first one's time is compilation)
  redone_steps: int = 0  # of those, the ones computed before (after a restart or a rewind)

  @property
  def wall(self) -> float:
    return self.updated - self.started

  @property
  def step_time(self) -> float:
    """Mean seconds per step after the first (0 when unknown)."""
    return self.seconds.get("steps", 0.0) / self.steps_run if self.steps_run > 0 else 0.0


class Goodput:
  """This invocation's clock (see the module docstring). `model_dir` None: count, write nothing; `writer`: a
  `MetricsWriter` for the TensorBoard summary; `started`: the process start (default: from the OS)."""

  def __init__(self, model_dir: str | None, start_step: int, writer: Any | None = None, started: float | None = None,
               write_every_s: float = 10.0):
    self.directory = storage.join(model_dir, GOODPUT_DIR) if model_dir is not None else None
    self.primary = jax.process_index() == 0 and self.directory is not None
    self.writer, self.write_every_s = writer, write_every_s
    self._last_write = time.perf_counter()
    if started is None:  # a second run in the same process starts when the first one ended
      started = max(process_start_time(), _LAST_FINISH[0])
    now = time.time()
    self.record = InvocationRecord(started=started, updated=now, start_step=start_step, last_step=start_step,
                                   furthest_step=start_step, seconds={c: 0.0 for c in CATEGORIES})
    self.record.seconds["startup"] = now - started
    self._loop_clock = time.perf_counter()  # the loop's time not yet given to a category
    self._outside = 0.0  # seconds of the current stretch spent in `timed` categories
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(started))}-{os.getpid()}-{uuid.uuid4().hex[:6]}.json"
    self.path = storage.join(self.directory, name) if self.directory is not None else None
    self.earlier = self._earlier_records()
    reached = max((r.furthest_step for r in self.earlier), default=start_step)
    self._to_redo = max(0, reached - start_step)  # steps an earlier invocation took already (counted as redone)
    if self.primary:
      log.info("Time to the loop: %.1f s since the process started", self.record.seconds["startup"])

  @classmethod
  def disabled(cls) -> "Goodput":
    """A clock that writes and logs nothing."""
    return cls(None, 0, started=time.time())

  def _earlier_records(self) -> list[InvocationRecord]:
    if not self.primary or self.directory is None or not storage.isdir(self.directory):
      return []
    out = []
    for name in sorted(storage.listdir(self.directory)):
      if name.endswith(".json") and name != SUMMARY_FILE:
        try:
          out.append(InvocationRecord(**json.loads(storage.read_text(storage.join(self.directory, name)))))
        except (ValueError, TypeError) as e:  # a record cut by a crash mid-write, or from another version
          log.warning("Goodput: ignoring %s (%s)", name, e)
    return out

  @contextlib.contextmanager
  def timed(self, category: str) -> Iterator[None]:
    """Counts the time inside the block as `category` (not as steps)."""
    begin = time.perf_counter()
    try:
      yield
    finally:
      spent = time.perf_counter() - begin
      self.record.seconds[category] += spent
      self._outside += spent

  def _close_stretch(self, category: str) -> None:
    now = time.perf_counter()
    self.record.seconds[category] += now - self._loop_clock - self._outside
    self._loop_clock, self._outside = now, 0.0

  def first_step_done(self, step: int) -> None:
    """The invocation's first step has run (and was waited for): the time since the loop began is compilation."""
    self._close_stretch("compilation")
    self._count(step, timed=False)
    if self.primary:
      log.info("Time to the first step: %.1f s since the process started (startup %.1f s, compilation and the "
               "first step %.1f s)", time.time() - self.record.started, self.record.seconds["startup"],
               self.record.seconds["compilation"])

  def step_done(self, step: int) -> None:
    self._close_stretch("steps")
    self._count(step)
    if self.primary and time.perf_counter() - self._last_write > self.write_every_s:
      self.write()

  def _count(self, step: int, timed: bool = True) -> None:
    redone = self._to_redo > 0
    self._to_redo -= redone
    self.record.steps_run += timed
    self.record.redone_steps += redone and timed
    self.record.last_step = step
    self.record.furthest_step = max(self.record.furthest_step, step)

  def rewound(self, steps: int) -> None:
    """A loss-spike rewind rolled back `steps` steps: they will be taken again."""
    self._to_redo += steps

  def write(self) -> None:
    """Writes this invocation's record (process 0; the stretch since the last step is not in it yet)."""
    self.record.updated = time.time()
    self._last_write = time.perf_counter()
    if self.primary and self.path is not None:
      storage.write_text(self.path, json.dumps(dataclasses.asdict(self.record), indent=1))

  def finish(self) -> dict[str, Any]:
    """Writes the record and the run's summary (log, summary.json, TensorBoard); returns the summary."""
    self._close_stretch("other")
    self.write()
    _LAST_FINISH[0] = time.time()
    result = summarize(self.earlier + [self.record])
    if self.primary and self.directory is not None:
      storage.write_text(storage.join(self.directory, SUMMARY_FILE), json.dumps(result, indent=1))
      if self.writer is not None:
        self.writer.write(self.record.last_step, {}, tensorboard_only={
            "goodput/goodput": result["goodput"], **{f"goodput/{k}_s": v for k, v in result["seconds"].items()}})
      parts = ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items())
      log.info("Goodput %.1f%% over %d invocation(s), %.1f s of wall time: %s", 100 * result["goodput"],
               result["invocations"], result["wall_s"], parts)
    return result


def summarize(records: list[InvocationRecord]) -> dict[str, Any]:
  """The run's accounting from all its invocations' records."""
  seconds = {c: sum(r.seconds.get(c, 0.0) for r in records) for c in CATEGORIES}
  seconds["redone"] = sum(r.redone_steps * r.step_time for r in records)
  seconds["steps"] -= seconds["redone"]
  wall = sum(r.wall for r in records)
  return {"goodput": seconds["steps"] / wall if wall > 0 else 0.0, "wall_s": wall, "invocations": len(records),
          "redone_steps": sum(r.redone_steps for r in records),
          "steps": max((r.furthest_step for r in records), default=0), "seconds": seconds}
