"""The loss guard: a loss spike or a run of non-finite steps rolls the run back (PaLM's recipe), a cap ends it.

    guard = LossGuard(LossGuardConfig(spike_multiple=3.0, window=100, skip_batches=200, max_rewinds=5))
    hooks = [guard, ...]   # first: it raises `Rewind` before any other hook sees the bad step

Each step's loss is read one step late (the device queue stays full). A step is bad when
- its loss is above `spike_multiple` × the median of the last `window` finite losses (once `window` are known), or
- it is the `max_consecutive_nonfinite`-th step in a row with a non-finite loss or gradient (the train step skips
  those updates; this ends a run of them).
Then the guard raises `Rewind`: the loop (`audiopalm.training.loop`) restores the newest checkpoint before the
first bad step, skips `skip_batches` batches of the input after the position it had reached (the batches around
the spike are never trained on again), saves that checkpoint again with the new input position and the rewind
counted, drops the later ones, and logs the rewind (the metrics count them too). After `max_rewinds` rewinds
(over the whole run, restarts included), or with no checkpoint before the bad step, the run ends with
`NonFiniteError` / `LossSpikeError`; the checkpoints from the bad step on are deleted, so the newest left is
good. The newest checkpoint before the bad step may be the one just before it: checkpoint rarely enough that it
predates the cause, or raise `skip_batches` when the data is the cause.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from typing import Any

import jax
import numpy as np

from audiopalm.training.loop import Hook, Rewind

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LossGuardConfig:
  """When a run rolls back, and how far.

  Attributes:
    spike_multiple: a loss above this multiple of the running median is a spike (None: spikes are not watched,
      only non-finite steps).
    window: steps in the running median (a spike is only judged once this many finite losses are known).
    max_consecutive_nonfinite: this many skipped (non-finite) steps in a row are bad.
    skip_batches: input batches skipped after the position the input had reached when the bad step was found.
    max_rewinds: rewinds allowed over the whole run; one more bad step ends it (0: never rewind, end at once).
  """

  spike_multiple: float | None = None
  window: int = 100
  max_consecutive_nonfinite: int = 10
  skip_batches: int = 100
  max_rewinds: int = 3

  def __post_init__(self):
    if self.spike_multiple is not None and not self.spike_multiple > 1:
      raise ValueError(f"LossGuardConfig.spike_multiple must be > 1 or None, got {self.spike_multiple}")
    if self.window < 1 or self.max_consecutive_nonfinite < 1 or self.skip_batches < 0 or self.max_rewinds < 0:
      raise ValueError(f"LossGuardConfig: need window >= 1, max_consecutive_nonfinite >= 1, skip_batches >= 0 and "
                       f"max_rewinds >= 0, got {self.window}, {self.max_consecutive_nonfinite}, {self.skip_batches}, "
                       f"{self.max_rewinds}")


class NonFiniteError(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient, and no rewind is left."""


class LossSpikeError(RuntimeError):
  """The loss spiked, and no rewind is left."""


class LossGuard(Hook):
  """Watches every step's loss and non-finite count (see the module docstring)."""

  def __init__(self, cfg: LossGuardConfig):
    self.cfg = cfg
    self._history: collections.deque[tuple[int, float]] = collections.deque(maxlen=cfg.window)
    self._previous: tuple[int, dict[str, jax.Array]] | None = None
    self._ran = False

  def started(self, step: int) -> None:
    self._ran = True

  def __call__(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    previous, self._previous = self._previous, (step, {k: metrics[k] for k in ("loss", "nonfinite_consecutive")})
    if previous is not None:
      self._judge(previous[0], previous[1])

  def preempted(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    self(step, state, metrics)  # the preempted step is judged in `stopping`, before it is saved

  def stopping(self, step: int, state: Any) -> None:
    if self._ran and self._previous is not None:  # the last step, read now
      previous, self._previous = self._previous, None
      self._judge(*previous)

  def rewound(self, step: int) -> None:
    self._previous = None
    while self._history and self._history[-1][0] > step:
      self._history.pop()

  def _judge(self, step: int, metrics: dict[str, jax.Array]) -> None:
    values = jax.device_get(metrics)
    loss, consecutive = float(values["loss"]), int(np.asarray(values["nonfinite_consecutive"]))
    if consecutive >= self.cfg.max_consecutive_nonfinite:
      self._bad(step - consecutive + 1, f"{consecutive} consecutive steps up to step {step} had a non-finite loss "
                f"or gradient (limit max_consecutive_nonfinite={self.cfg.max_consecutive_nonfinite})", NonFiniteError)
    if not math.isfinite(loss):
      return
    if self.cfg.spike_multiple is not None and len(self._history) == self.cfg.window:
      median = float(np.median([v for _, v in self._history]))
      if loss > self.cfg.spike_multiple * median:
        self._bad(step, f"the loss of step {step}, {loss:.4g}, is above {self.cfg.spike_multiple:g} × the median "
                  f"{median:.4g} of the last {self.cfg.window} steps", LossSpikeError)
    self._history.append((step, loss))

  def _bad(self, bad_step: int, reason: str, error: type[RuntimeError]) -> None:
    raise Rewind(bad_step, reason, skip_batches=self.cfg.skip_batches, max_rewinds=self.cfg.max_rewinds, error=error)
