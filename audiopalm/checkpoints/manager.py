"""Orbax checkpoints of a training state and the data-iterator state.

    checkpointer = Checkpointer(model_dir, CheckpointConfig(save_interval_steps=1000))
    state = checkpointer.restore(abstract_state, shardings, data_iter)   # None: no checkpoint yet
    checkpointer.save(step, state, data_iter)                            # when the interval says so

A checkpoint is `<model_dir>/checkpoints/<step>/{state,data}`: `state` is the
state pytree (sharded arrays, written by every process for its shards: the language model's
`TrainState`, the codec's `CodecTrainState`), `data` holds one JSON iterator state per process
(grain's handler). Orbax writes to a temporary directory and renames it when complete, so a
crash mid-save never leaves a checkpoint that looks complete; `latest_step()` only sees finished ones.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from audiopalm.files.paths import absolute

log = logging.getLogger(__name__)

# Test-only fault injection: SIGKILL this process right after the asynchronous save of this step
# has started (its files are still being written). Used to prove that a crash mid-save is safe.
_KILL_DURING_SAVE_ENV = "AUDIOPALM_FAULT_KILL_DURING_SAVE_STEP"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When and how checkpoints are written.

  Attributes:
    save_interval_steps: save every this many steps (and at the end, and on SIGTERM). Orbax also
      saves the first step of a run that has no checkpoint yet, which proves early that saving works.
    max_to_keep: keep the newest K checkpoints (None keeps all).
    async_save: write in a background thread while training continues.
  """

  save_interval_steps: int = 1000
  max_to_keep: int | None = 3
  async_save: bool = True

  def __post_init__(self):
    if self.save_interval_steps < 1:
      raise ValueError(f"CheckpointConfig.save_interval_steps must be >= 1, got {self.save_interval_steps}")
    if self.max_to_keep is not None and self.max_to_keep < 1:
      raise ValueError(f"CheckpointConfig.max_to_keep must be >= 1 or None, got {self.max_to_keep}")


class Checkpointer:
  """Saves and restores (state, data iterator) pairs under `<model_dir>/checkpoints`."""

  def __init__(self, model_dir: str, cfg: CheckpointConfig):
    self.directory = absolute(model_dir) / "checkpoints"
    options = ocp.CheckpointManagerOptions(save_interval_steps=cfg.save_interval_steps,
                                           max_to_keep=cfg.max_to_keep,
                                           enable_async_checkpointing=cfg.async_save,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()})
    self._last_saved: int | None = None

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, abstract_state: Any, shardings: Any, data_iter: Any) -> Any | None:
    """Restores the newest complete checkpoint into `shardings` and `data_iter`; None if there is none."""
    step = self.manager.latest_step()
    if step is None:
      return None
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=grain.checkpoint.CheckpointRestore(data_iter)))
    log.info("Restored checkpoint of step %d from %s", step, self.directory)
    return restored.state

  def save(self, step: int, state: Any, data_iter: Any, force: bool = False) -> bool:
    """Starts a save if the interval says so (or `force`); returns whether one started."""
    if step == self._last_saved or step == self.manager.latest_step():
      return False
    saved = self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter)), force=force)
    if saved:
      self._last_saved = step
    if saved and os.environ.get(_KILL_DURING_SAVE_ENV) == str(step):
      log.warning("Fault injection: SIGKILL during the asynchronous save of step %d", step)
      os.kill(os.getpid(), signal.SIGKILL)
    return saved

  def reached_preemption(self, step: int) -> bool:
    """True on every process once any process received a preemption notice (multi-host)."""
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
