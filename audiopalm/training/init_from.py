"""Continued pretraining: the first train state of a run, taken from an existing checkpoint instead of random.

    state = initial_state(InitFromConfig(path="runs/gemma_import"), model_cfg, net, tx, mesh, rules, data_spec)

`path` is either
  * an export: `params/` (orbax) + `model_config.json` [+ `vocab_spec.json`], as written by
    `audiopalm.main.import_checkpoint` (a Hugging Face Gemma / Llama), a run's `export/` or `audiopalm.main.export_checkpoint`; or
  * a training run's model directory (the stack's own checkpoints): its newest complete checkpoint is read,
    the parameters, and with `optimizer_state="imported"` the optimizer state too.

The run's model must have the checkpoint's architecture (every TransformerConfig field except vocab_size and the
numerics/compilation fields in `FREE_FIELDS`). When the run's vocabulary is larger (audio tokens added), the
embedding and output rows are extended (`audiopalm.vocab.extend`): the old rows are kept, the new ones
initialised by `vocab_init`; the run's vocabulary spec must extend the checkpoint's. Imported optimizer moments
get zero rows for the new tokens, and keep their step counts (the learning-rate schedule continues where the
checkpoint's run left off). Only the first start of a run reads `path`; resuming reads the run's own checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from audiopalm.checkpoints.source import (Source, check_architecture, find_source, load_source, load_source_state,
                                          source_layout)
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.sharding.params import fit_sharding, sharding_context
from audiopalm.sharding.rules import ShardingRules
from audiopalm.training.train_state import TrainState, mirrored_params, state_shardings
from audiopalm.vocab.extend import INITS, check_extends, extend_params, vocab_axes
from audiopalm.vocab.spec import SPEC_FILE, VocabSpec

log = logging.getLogger(__name__)

PROVENANCE_FILE = "init_from.json"


@dataclasses.dataclass(frozen=True)
class InitFromConfig:
  """Where a new run's parameters come from.

  Attributes:
    path: an export directory or a training run's model directory (see the module docstring); None = random
      initialisation.
    vocab_init: how rows added by a vocabulary extension start: 'zero' (AudioPaLM), 'mean' (of the text rows)
      or 'random' (normal with the text rows' standard deviation).
    optimizer_state: 'fresh' (a new optimizer state) or 'imported' (the run directory's optimizer state: same
      optimizer configuration required; its step count carries over).
    seed: seed of the 'random' rows.
  """

  path: str | None = None
  vocab_init: Literal["zero", "mean", "random"] = "zero"
  optimizer_state: Literal["fresh", "imported"] = "fresh"
  seed: int = 0

  def __post_init__(self):
    if self.vocab_init not in INITS:
      raise ValueError(f"InitFromConfig.vocab_init={self.vocab_init!r}, allowed: {list(INITS)}")
    if self.optimizer_state not in ("fresh", "imported"):
      raise ValueError(f"InitFromConfig.optimizer_state={self.optimizer_state!r}, allowed: ['fresh', 'imported']")


def provenance(cfg: InitFromConfig) -> dict[str, Any]:
  """What a run started from (written to `<model_dir>/init_from.json`): the config, the resolved path and the
  checkpoint step read (None for an export)."""
  source = find_source(cfg.path)
  return {**dataclasses.asdict(cfg), "resolved_path": str(source.path), "step": source.step}


def _old_spec(source: Source, run: TransformerConfig, spec: VocabSpec | None) -> VocabSpec | None:
  """The checkpoint's spec, checked against the run's; None when no extension is needed or possible."""
  if source.spec is None:
    if run.vocab_size != source.model.vocab_size:
      raise ValueError(f"{source.path}: no {SPEC_FILE}, so its vocabulary cannot be extended from "
                       f"{source.model.vocab_size} to {run.vocab_size} rows (which rows are text is unknown)")
    if spec is not None:
      log.warning("%s has no %s; its %d rows are taken as the run's vocabulary unchanged", source.path, SPEC_FILE,
                  run.vocab_size)
    return None
  if spec is None:
    raise ValueError(f"{source.path} was trained with a combined vocabulary ({SPEC_FILE}) but the run's input has "
                     "none")
  check_extends(source.spec, spec)
  return source.spec


def initial_state(cfg: InitFromConfig, model_cfg: TransformerConfig, tx: optax.GradientTransformation,
                  mesh: jax.sharding.Mesh, rules: ShardingRules, spec: VocabSpec | None, seed: int) -> TrainState:
  """The first TrainState of a run started from `cfg.path` (see the module docstring)."""
  source = find_source(cfg.path)
  check_architecture(source.model, model_cfg, str(source.path))
  old_spec = _old_spec(source, model_cfg, spec)
  run_abstract, run_shardings = state_shardings(Transformer(model_cfg), tx, mesh, rules)
  boxed, src_abstract, _ = source_layout(source.model, mesh, rules)
  if cfg.optimizer_state == "imported":
    params, opt_state = load_source_state(source, mesh, rules, _opt_state_target(source, tx, mesh, rules))
  else:
    params, opt_state = load_source(source, mesh, rules), None

  rows = model_cfg.vocab_size
  param_dtype = jnp.dtype(model_cfg.param_dtype)

  def grow(params):
    if old_spec is not None:  # (without a spec the vocabulary is unchanged: `_old_spec` refused otherwise)
      params = extend_params(params, boxed, old_spec, rows, cfg.vocab_init, jax.random.key(cfg.seed))
    return jax.tree.map(lambda p: p.astype(param_dtype), params)

  with sharding_context(mesh, rules):
    params = jax.jit(grow, out_shardings=run_shardings.params)(params)
    if cfg.optimizer_state == "fresh":
      opt_state = jax.jit(tx.init, out_shardings=run_shardings.opt_state)(params)
    else:
      opt_state = _extend_optimizer_state(opt_state, src_abstract, boxed, old_spec, rows, run_shardings.opt_state,
                                          run_abstract.opt_state)
  log.info("Initialised from %s%s (%d → %d vocabulary rows, new rows %s, %s optimizer state)", source.path,
           f" step {source.step}" if source.step is not None else "", source.model.vocab_size, rows, cfg.vocab_init,
           cfg.optimizer_state)

  def assemble(params, opt_state):  # one jit: every leaf its own buffer (the train step donates them all)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=opt_state,
                      rng=jax.random.key_data(jax.random.key(seed)), nonfinite_total=zero, nonfinite_consecutive=zero)
  return jax.jit(assemble, out_shardings=run_shardings, donate_argnums=(0, 1))(params, opt_state)


def _opt_state_target(source: Source, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh,
                      rules: ShardingRules) -> Any:
  """The optimizer state of the source's run (optimizer `tx`) as ShapeDtypeStructs with shardings, laid out as its
  parameters (vocabulary axes the mesh does not divide unsharded)."""
  abstract_state, state_sh = state_shardings(Transformer(source.model), tx, mesh, rules)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=fit_sharding(s, a.shape)),
                      abstract_state.opt_state, state_sh.opt_state)


# Optimizer-state fields holding a second moment (Adam's nu, Adafactor's unfactored v): new rows start at the mean
# of the text rows' values, not zero. A zero second moment with an imported step count makes Adafactor's first
# update of a new row ~t^0.4 times a normal one (its beta2 = 1 - t^-0.8 is close to 1 late in a run).
SECOND_MOMENTS = ("nu", "v")


def _field_names(path: tuple) -> set[str]:
  return {getattr(k, "name", getattr(k, "key", None)) for k in path}


def _extend_optimizer_state(opt_state: Any, src_params: Any, boxed: Any, old_spec: VocabSpec | None, rows: int,
                            shardings: Any, run_abstract: Any) -> Any:
  """Imported optimizer state for the extended vocabulary. Leaves mirroring a parameter with a vocabulary axis
  keep their old rows; new rows get zero first moments and second moments equal to the mean of the text rows (see
  SECOND_MOMENTS). Everything else is kept. Leaves that cannot be extended (factored statistics with a vocabulary
  axis) are refused."""
  param_axes = jax.tree.leaves(vocab_axes(boxed), is_leaf=lambda x: x is None)
  paths, treedef = jax.tree_util.tree_flatten_with_path(opt_state)
  mirrors = mirrored_params(opt_state, src_params)
  keep = old_spec.used if old_spec is not None else rows  # without a spec the vocabulary is unchanged
  text_rows = old_spec.text.size if old_spec is not None else rows
  second = [bool(_field_names(path) & set(SECOND_MOMENTS)) for path, _ in paths]
  wanted = jax.tree.leaves(run_abstract)
  for (path, leaf), i, target in zip(paths, mirrors, wanted):
    axis = None if i is None else param_axes[i]
    shape = list(leaf.shape)
    if axis is not None:
      shape[axis] = rows
    if tuple(shape) != tuple(target.shape):
      raise ValueError(f"optimizer_state='imported': the optimizer-state leaf {jax.tree_util.keystr(path)} "
                       f"{tuple(leaf.shape)} cannot be extended to {tuple(target.shape)} (factored statistics "
                       "with a vocabulary axis); use InitFromConfig.optimizer_state='fresh'")

  def grow(leaves):
    out = []
    for leaf, i, is_second in zip(leaves, mirrors, second):
      axis = None if i is None else param_axes[i]
      if axis is None or (leaf.shape[axis] == rows and keep == rows):
        out.append(leaf)
        continue
      kept = jax.lax.slice_in_dim(leaf, 0, keep, axis=axis)
      shape = list(leaf.shape)
      shape[axis] = rows - keep
      fill = (jnp.mean(jax.lax.slice_in_dim(leaf, 0, text_rows, axis=axis), axis=axis, keepdims=True)
              if is_second else jnp.zeros((), leaf.dtype))
      out.append(jnp.concatenate([kept, jnp.broadcast_to(fill, shape).astype(leaf.dtype)], axis=axis))
    return out
  leaves = [leaf for _, leaf in paths]
  return jax.tree.unflatten(treedef, jax.jit(grow, out_shardings=jax.tree.leaves(shardings))(leaves))
