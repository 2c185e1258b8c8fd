"""Orbax checkpoints of a training state, the input's global position and the loop's counters.

    checkpointer = Checkpointer(model_dir, CheckpointConfig(save_interval_steps=1000))
    state = checkpointer.restore(abstract_state, shardings, data_iter)   # None: no checkpoint yet
    checkpointer.save(step, state, data_iter)                            # when the interval says so

A checkpoint is `<model_dir>/checkpoints/<step>/{state,input,loop}`: `state` is the state pytree (sharded arrays,
written by every process for its shards: the language model's `TrainState`, the codec's `CodecTrainState`),
`input` the input's one global state (JSON: every process's part merged, `audiopalm.checkpoints.input_state`),
`loop` the loop's counters (JSON, e.g. loss-spike rewinds). Nothing in a checkpoint depends on the number of
processes or devices that wrote it: a restore reshards the state onto the new mesh and hands the global input
state to this process's iterator. Orbax writes to a temporary directory and renames it when complete, so a crash mid-save never
leaves a checkpoint that looks complete; `latest_step()` only sees finished ones.

A restore reads and checks the small parts first (the input state, the state's shapes), so a run that cannot
continue (another input, another model) fails naming what differs, before any array is read or compiled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from typing import Any

import jax
import orbax.checkpoint as ocp

from audiopalm.checkpoints.input_state import global_input_state
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
  """Saves and restores (state, input position, loop counters) under `<model_dir>/checkpoints`."""

  def __init__(self, model_dir: str, cfg: CheckpointConfig):
    self.directory = absolute(model_dir) / "checkpoints"
    options = ocp.CheckpointManagerOptions(save_interval_steps=cfg.save_interval_steps,
                                           max_to_keep=cfg.max_to_keep,
                                           enable_async_checkpointing=cfg.async_save,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "input": ocp.JsonCheckpointHandler(),
                       "loop": ocp.JsonCheckpointHandler()})
    self._last_saved: int | None = None
    self.loop_state: dict[str, Any] = {}  # the restored checkpoint's loop counters ({} for a new run)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore(self, abstract_state: Any, shardings: Any, data_iter: Any, step: int | None = None) -> Any | None:
    """Restores checkpoint `step` (default: the newest complete one) into `shardings` and `data_iter` (None: keep
    its position); None if there is none. The input state and the state's shapes are checked first."""
    step = self.manager.latest_step() if step is None else step
    if step is None:
      return None
    metadata = self.manager.item_metadata(step)
    items = set(metadata.keys())
    if "input" not in items:
      raise ValueError(f"checkpoint {step} in {self.directory} holds no global input state (items {sorted(items)}): "
                       "it was written before inputs were saved independently of the number of processes. Start a "
                       "new run from its parameters with InitFromConfig.path=<this run's model_dir>")
    small = self.manager.restore(step, args=ocp.args.Composite(
        input=ocp.args.JsonRestore(), **({"loop": ocp.args.JsonRestore()} if "loop" in items else {})))
    if data_iter is not None:
      data_iter.set_state(small.input)
    self.loop_state = dict(small.get("loop") or {})
    _check_shapes(metadata["state"], abstract_state, f"checkpoint {step} in {self.directory}")
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    log.info("Restored checkpoint of step %d from %s", step, self.directory)
    return restored.state

  def save(self, step: int, state: Any, data_iter: Any, force: bool = False,
           loop_state: dict[str, Any] | None = None) -> bool:
    """Starts a save if the interval says so (or `force`); returns whether one started. Every process must call
    it at the same steps (the input's global state is gathered from all of them)."""
    if step == self._last_saved or step == self.manager.latest_step():
      return False
    if not force and not self.manager.should_save(step):
      return False
    saved = self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), input=ocp.args.JsonSave(global_input_state(data_iter)),
        loop=ocp.args.JsonSave(loop_state or {})), force=force)
    if saved:
      self._last_saved = step
    if saved and os.environ.get(_KILL_DURING_SAVE_ENV) == str(step):
      log.warning("Fault injection: SIGKILL during the asynchronous save of step %d", step)
      os.kill(os.getpid(), signal.SIGKILL)
    return saved

  def discard_after(self, step: int) -> None:
    """Deletes the checkpoints of steps after `step` (a rollback: they hold a state the run no longer follows)."""
    self.wait()
    for later in [s for s in self.all_steps() if s > step]:
      self.manager.delete(later)
      log.info("Deleted checkpoint %d (the run was rolled back to step %d)", later, step)
    self.manager.reload()
    self._last_saved = None

  def reached_preemption(self, step: int) -> bool:
    """True on every process once any process received a preemption notice (multi-host)."""
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'a/b/c' → shape of every array leaf."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if hasattr(leaf, "shape"):
      out["/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)] = tuple(leaf.shape)
  return out


def _check_shapes(saved: Any, abstract: Any, where: str) -> None:
  """ValueError naming the leaves whose shapes differ, or that only one side has."""
  have, want = _shapes(saved), _shapes(abstract)
  order = lambda names: sorted(names, key=lambda k: (not k.startswith("params"), k))  # noqa: E731 (parameters first)
  problems = [f"{k}: only in the checkpoint" for k in order(set(have) - set(want))]
  problems += [f"{k}: not in the checkpoint" for k in order(set(want) - set(have))]
  problems += [f"{k}: shape {have[k]} saved, {want[k]} now" for k in order(set(have) & set(want))
               if have[k] != want[k]]
  if problems:
    shown = "; ".join(problems[:8]) + (f"; … {len(problems) - 8} more" if len(problems) > 8 else "")
    raise ValueError(f"{where} does not fit this run's state ({len(problems)} differences: {shown}). The model or "
                     "optimizer config differs from the run that wrote it: restore that config, or start a new run "
                     "from its parameters with InitFromConfig.path")
