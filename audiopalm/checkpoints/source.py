"""Find and load a source: the checkpoint a model starts from, is exported from, or generates with.

    source = find_source("runs/speech_text")          # an export, or a run directory (its newest checkpoint)
    source.model, source.spec, source.step             # TransformerConfig, VocabSpec or None, step or None
    source.run_config                                  # the resolved config of the run that made it, or None
    params = load_source(source, mesh, rules)          # laid out on `mesh` as the source's model lays them out

A source is either
  * an export: `params/` (orbax) + `model_config.json` [+ `vocab_spec.json`] [+ `train_config.json`], as written by
    `audiopalm.checkpoints.export` (a run's `export/`, an import of a Hugging Face checkpoint, an export job); or
  * a training run's model directory: `model_config.json` [+ `vocab_spec.json`] [+ `train_config.json`] +
    `checkpoints/<step>/state`
    (its newest complete checkpoint; another run may still be writing it, so it is opened read-only).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from audiopalm.files import storage
from audiopalm.files.paths import absolute
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.model.config import FREE_FIELDS
from audiopalm.model.params import abstract_params
from audiopalm.sharding.params import fit_sharding, unbox
from audiopalm.sharding.rules import ShardingRules, params_shardings
from audiopalm.vocab.spec import SPEC_FILE, VocabSpec, load_spec

# The resolved config of the training run that made a checkpoint (its arguments as JSON: model, data mixture,
# optimizer, ...), written beside `operative_config.gin` and carried into exports; evaluation reads the mixture.
RUN_CONFIG_FILE = "train_config.json"


@dataclasses.dataclass(frozen=True)
class Source:
  """A checkpoint to start from: its model config, its vocabulary spec (if saved) and where its arrays are."""

  path: epath.Path
  model: TransformerConfig
  spec: VocabSpec | None
  params_dir: epath.Path | None  # an export's params/
  state_dir: epath.Path | None  # a run's checkpoints/<step>/state
  step: int | None
  run_config: dict[str, Any] | None = None  # RUN_CONFIG_FILE, when the source has one


def find_source(path: str) -> Source:
  """Reads what `path` holds; FileNotFoundError / ValueError saying what is missing."""
  root = absolute(path)
  config_file = root / "model_config.json"
  if not storage.is_file(config_file):
    hint = (f"; it looks like a Hugging Face directory: import it first (python -m audiopalm.main.import_checkpoint "
            f"--hf_dir={root} --output=...)" if storage.is_file(root / "config.json") else "")
    raise FileNotFoundError(f"{root}: no model_config.json; InitFromConfig.path must be an export (params/ + "
                            f"model_config.json) or a training run's model directory{hint}")
  model = TransformerConfig(**json.loads(storage.read_text(config_file)))
  spec = load_spec(str(root)) if storage.is_file(root / SPEC_FILE) else None
  run_file = root / RUN_CONFIG_FILE
  run_config = json.loads(storage.read_text(run_file)) if storage.is_file(run_file) else None
  if storage.isdir(root / "params"):
    return Source(root, model, spec, root / "params", None, None, run_config)
  if storage.isdir(root / "checkpoints"):
    # Another run's directory (it may still be running): read only.
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    with ocp.CheckpointManager(root / "checkpoints", item_names=("state",), options=options) as manager:
      step = manager.latest_step()
    if step is not None:
      return Source(root, model, spec, None, root / "checkpoints" / str(step) / "state", step, run_config)
  hint = f"; its export is {root / 'export'}" if storage.isdir(root / "export" / "params") else ""
  raise FileNotFoundError(f"{root}: neither params/ (an export) nor a complete checkpoint under checkpoints/{hint}")


def check_architecture(source: TransformerConfig, run: TransformerConfig, where: str) -> None:
  """Refuses a run model whose architecture differs from the checkpoint's (all fields but FREE_FIELDS)."""
  diff = [f"{f.name}: {getattr(source, f.name)!r} in the checkpoint, {getattr(run, f.name)!r} in the run"
          for f in dataclasses.fields(TransformerConfig)
          if f.name not in FREE_FIELDS and getattr(source, f.name) != getattr(run, f.name)]
  if diff:
    raise ValueError(f"{where}: the run's TransformerConfig differs from the checkpoint's: " + "; ".join(diff)
                     + ". Start from the checkpoint's model_config.json (gin: train.model = "
                     "@model_config_from(); model_config_from.path = ...)")


@functools.lru_cache(maxsize=4)  # a run's initial state and load_source both need it: trace the model once
def source_layout(model: TransformerConfig, mesh: jax.sharding.Mesh, rules: ShardingRules) -> tuple[Any, Any, Any]:
  """(boxed abstract params, abstract params, shardings) of the checkpoint's model on `mesh` (vocabulary axes
  that the mesh does not divide are left unsharded)."""
  boxed = abstract_params(Transformer(model))
  abstract = unbox(boxed)
  shardings = jax.tree.map(lambda s, a: fit_sharding(s, a.shape), params_shardings(boxed, mesh, rules), abstract)
  return boxed, abstract, shardings


def _params_target(source: Source, mesh: jax.sharding.Mesh, rules: ShardingRules) -> Any:
  _, abstract, shardings = source_layout(source.model, mesh, rules)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def _restore_state_items(source: Source, target: dict[str, Any]) -> dict[str, Any]:
  """Restores the named subtrees (e.g. params, opt_state) of a run's saved state into `target`'s shardings."""
  restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape,
                                                              dtype=a.dtype), target)
  try:
    with ocp.PyTreeCheckpointer() as ckptr:
      return ckptr.restore(source.state_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                                         partial_restore=True))
  except (ValueError, KeyError) as e:
    raise ValueError(f"{source.state_dir}: cannot restore {sorted(target)} with the run's configuration (for "
                     f"optimizer_state='imported' the optimizer must be configured as in that run): {e}") from e


def load_source(source: Source, mesh: jax.sharding.Mesh, rules: ShardingRules) -> Any:
  """The parameters of `source`, sharded over `mesh` as its model lays them out (vocabulary axes the mesh does
  not divide unsharded)."""
  target = _params_target(source, mesh, rules)
  if source.params_dir is not None:
    return ocp.StandardCheckpointer().restore(source.params_dir, target)
  return _restore_state_items(source, {"params": target})["params"]


def load_source_state(source: Source, mesh: jax.sharding.Mesh, rules: ShardingRules,
                      opt_state_target: Any) -> tuple[Any, Any]:
  """(parameters, optimizer state) of a training run's directory: the parameters as `load_source` lays them out,
  the optimizer state into `opt_state_target` (ShapeDtypeStructs with shardings, of the optimizer that run was
  configured with)."""
  if source.params_dir is not None:
    raise ValueError(f"InitFromConfig.optimizer_state='imported' needs a training run's directory with "
                     f"checkpoints; {source.path} is a params-only export")
  restored = _restore_state_items(source, {"params": _params_target(source, mesh, rules),
                                           "opt_state": opt_state_target})
  return restored["params"], restored["opt_state"]
