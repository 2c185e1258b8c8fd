"""The training state and its sharded initialisation.

Parameters are created directly in their sharded layout (`jax.jit` with
`out_shardings`), so no host ever holds the whole model. Optimizer-state
leaves that mirror a parameter take that parameter's sharding.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from audiopalm.model import Transformer
from audiopalm.model.params import abstract_params, init_params
from audiopalm.sharding.params import fits, sharding_context, unbox
from audiopalm.sharding.rules import ShardingRules, params_shardings


class TrainState(flax.struct.PyTreeNode):
  """Everything a checkpoint must hold to resume exactly (the data state is saved beside it)."""

  step: jax.Array  # int32 scalar: train steps taken (skipped ones included)
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32 raw key data
  nonfinite_total: jax.Array  # int32 scalar: skipped non-finite steps so far
  nonfinite_consecutive: jax.Array  # int32 scalar: skipped non-finite steps in a row


def mirrored_params(opt_tree: Any, params_tree: Any) -> list[int | None]:
  """For each leaf of `opt_tree` (flattened order): the flat index of the parameter it mirrors (an optimizer
  leaf whose tree path ends with that parameter's path and which has its shape, e.g. Adam's moments), or None
  (counts, factored statistics)."""
  by_path = {tuple(str(k) for k in path): (i, leaf.shape)
             for i, (path, leaf) in enumerate(jax.tree_util.tree_leaves_with_path(params_tree))}

  def find(path, leaf):
    keys = tuple(str(k) for k in path)
    for start in range(len(keys)):
      match = by_path.get(keys[start:])
      if match is not None:
        return match[0] if leaf.shape == match[1] else None
    return None
  return [find(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(opt_tree)]


def _opt_state_shardings(abstract_opt: Any, abstract_params: Any, param_shardings: Any, mesh: Mesh) -> Any:
  """Optimizer leaves that mirror a parameter take its sharding (if it fits); everything else is replicated."""
  p_shardings = jax.tree.leaves(param_shardings)
  replicated = NamedSharding(mesh, PartitionSpec())
  leaves, treedef = jax.tree.flatten(abstract_opt)
  picked = [replicated if i is None or not fits(p_shardings[i], leaf) else p_shardings[i]
            for leaf, i in zip(leaves, mirrored_params(abstract_opt, abstract_params))]
  return jax.tree.unflatten(treedef, picked)


def state_shardings(model: Transformer, tx: optax.GradientTransformation, mesh: Mesh,
                    rules: ShardingRules) -> tuple[TrainState, TrainState]:
  """(abstract TrainState, TrainState of NamedShardings)."""
  boxed = abstract_params(model)
  p_shard = params_shardings(boxed, mesh, rules)
  p_abs = unbox(boxed)
  o_abs = jax.eval_shape(tx.init, p_abs)
  o_shard = _opt_state_shardings(o_abs, p_abs, p_shard, mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  scalar = jax.ShapeDtypeStruct((), jnp.int32)
  abstract = TrainState(step=scalar, params=p_abs, opt_state=o_abs,
                        rng=jax.ShapeDtypeStruct((2,), jnp.uint32), nonfinite_total=scalar,
                        nonfinite_consecutive=scalar)
  shardings = TrainState(step=replicated, params=p_shard, opt_state=o_shard, rng=replicated,
                         nonfinite_total=replicated, nonfinite_consecutive=replicated)
  return abstract, shardings


def init_train_state(model: Transformer, tx: optax.GradientTransformation, mesh: Mesh, rules: ShardingRules,
                     seed: int) -> TrainState:
  """Initialises parameters and optimizer state directly into their shardings."""
  _, shardings = state_shardings(model, tx, mesh, rules)

  def init(rng):
    param_rng, state_rng = jax.random.split(rng)
    params = unbox(init_params(model, param_rng))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params), rng=jax.random.key_data(state_rng),
                      nonfinite_total=zero, nonfinite_consecutive=zero)

  with sharding_context(mesh, rules):
    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))
