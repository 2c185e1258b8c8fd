"""Orbax checkpoints of the train state and the data-iterator state, and params-only export.

A checkpoint is `<model_dir>/checkpoints/<step>/{state,data}`: `state` is the
TrainState (sharded arrays, written by every process for its shards), `data`
holds one JSON iterator state per process (grain's handler). Orbax writes to
a temporary directory and renames it when complete, so a crash mid-save never
leaves a checkpoint that looks complete; `latest_step()` only sees finished ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from audiopalm.training.train_state import TrainState
from audiopalm.vocab.spec import save_spec

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


def absolute(path: str | os.PathLike) -> epath.Path:
  """`path` as orbax needs it: a relative local path made absolute (against the working directory); URLs as given."""
  path = os.fspath(path)
  return epath.Path(path if "://" in path else os.path.abspath(path))


class Checkpointer:
  """Saves and restores (TrainState, data iterator) pairs under `<model_dir>/checkpoints`."""

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

  def restore(self, abstract_state: TrainState, shardings: TrainState, data_iter: Any) -> TrainState | None:
    """Restores the newest complete checkpoint into `shardings` and `data_iter`; None if there is none."""
    step = self.manager.latest_step()
    if step is None:
      return None
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=grain.checkpoint.CheckpointRestore(data_iter)))
    log.info("Restored checkpoint of step %d from %s", step, self.directory)
    return restored.state

  def save(self, step: int, state: TrainState, data_iter: Any, force: bool = False) -> bool:
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


def export_params(params: Any, model_config: Any, export_dir: str, vocab_spec: Any = None) -> None:
  """Writes a params-only checkpoint (orbax, sharded arrays) + `model_config.json` (+ `vocab_spec.json` when the
  model was trained with a combined vocabulary) for downstream use."""
  path = absolute(export_dir)
  if path.exists():
    if jax.process_index() == 0:
      path.rmtree()
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(path / "params", params)
  ckptr.wait_until_finished()
  if jax.process_index() == 0:
    (path / "model_config.json").write_text(json.dumps(dataclasses.asdict(model_config), indent=2))
    if vocab_spec is not None:
      save_spec(vocab_spec, str(path))
  log.info("Exported params to %s", path)


def load_exported_params(export_dir: str, abstract_params: Any | None = None) -> Any:
  """Loads params written by `export_params` (into the shardings of `abstract_params`, if given)."""
  ckptr = ocp.StandardCheckpointer()
  return ckptr.restore(absolute(export_dir) / "params", abstract_params)
