"""The training state and its sharded initialisation.

Parameters are created directly in their sharded layout (`jax.jit` with
`out_shardings`), so no host ever holds the whole model. Optimizer-state
leaves that mirror a parameter take that parameter's sharding.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from audiopalm.model import Transformer
from audiopalm.sharding.rules import ShardingRules, params_shardings


class TrainState(flax.struct.PyTreeNode):
  """Everything a checkpoint must hold to resume exactly (the data state is saved beside it)."""

  step: jax.Array  # int32 scalar: train steps taken (skipped ones included)
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32 raw key data
  nonfinite_total: jax.Array  # int32 scalar: skipped non-finite steps so far
  nonfinite_consecutive: jax.Array  # int32 scalar: skipped non-finite steps in a row


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: ShardingRules) -> Iterator[None]:
  """Mesh + logical rules in effect while tracing model code."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules.as_flax()):
    yield


def unbox(boxed: Any) -> Any:
  """Strips the logical-partitioning boxes without applying sharding constraints (usable inside or
  outside a mesh context; the layout is fixed by `out_shardings` / restore targets instead)."""
  return jax.tree.map(lambda x: x.value if isinstance(x, nn.LogicallyPartitioned) else x, boxed,
                      is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _dummy_inputs(batch: int, length: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  tokens = jnp.zeros((batch, length), jnp.int32)
  return tokens, tokens, jnp.ones_like(tokens)


def abstract_params(model: Transformer) -> Any:
  """Boxed abstract parameters (ShapeDtypeStruct leaves with logical names); allocates nothing."""
  return jax.eval_shape(lambda rng: model.init(rng, *_dummy_inputs(1, 8))["params"], jax.random.key(0))


def _opt_state_shardings(abstract_opt: Any, abstract_params: Any, param_shardings: Any, mesh: Mesh) -> Any:
  """Optimizer leaves whose tree path ends with a parameter's path and whose shape is the
  parameter's take its sharding; everything else (counts, factored statistics) is replicated."""
  by_path = {tuple(str(k) for k in path): (sharding, leaf.shape) for (path, sharding), leaf in zip(
      jax.tree_util.tree_leaves_with_path(param_shardings), jax.tree.leaves(abstract_params))}
  replicated = NamedSharding(mesh, PartitionSpec())

  def pick(path, leaf):
    keys = tuple(str(k) for k in path)
    for start in range(len(keys)):
      match = by_path.get(keys[start:])
      if match is not None:
        sharding, shape = match
        return sharding if leaf.shape == shape and _fits(sharding, leaf) else replicated
    return replicated
  return jax.tree_util.tree_map_with_path(pick, abstract_opt)


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


def _fits(sharding: NamedSharding, leaf: jax.ShapeDtypeStruct) -> bool:
  """Whether `sharding` can lay out `leaf` (rank and divisibility)."""
  if len(sharding.spec) > leaf.ndim:
    return False
  for dim, axes_ in zip(leaf.shape, sharding.spec):
    if axes_ is None:
      continue
    names = (axes_,) if isinstance(axes_, str) else axes_
    size = 1
    for n in names:
      size *= sharding.mesh.shape[n]
    if dim % size:
      return False
  return True


def init_train_state(model: Transformer, tx: optax.GradientTransformation, mesh: Mesh, rules: ShardingRules,
                     seed: int) -> TrainState:
  """Initialises parameters and optimizer state directly into their shardings."""
  _, shardings = state_shardings(model, tx, mesh, rules)

  def init(rng):
    param_rng, state_rng = jax.random.split(rng)
    params = unbox(model.init(param_rng, *_dummy_inputs(1, 8))["params"])
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params), rng=jax.random.key_data(state_rng),
                      nonfinite_total=zero, nonfinite_consecutive=zero)

  with sharding_context(mesh, rules):
    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))
