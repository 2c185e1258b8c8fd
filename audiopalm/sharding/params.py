"""Laying out parameter trees: the tracing context, unboxing, and shardings that fit every shape.

    with sharding_context(mesh, rules):       # model code traced here resolves its logical constraints
      params = jax.jit(init, out_shardings=shardings)(rng)
    plain = unbox(boxed)                      # LogicallyPartitioned leaves → their values
    fit_sharding(sharding, (301, 128))        # dimensions the mesh does not divide are left whole
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from audiopalm.sharding.rules import ShardingRules


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


def fit_sharding(sharding: NamedSharding, shape: tuple[int, ...]) -> NamedSharding:
  """`sharding` with every dimension the mesh axes do not divide left unsharded (e.g. a 301-row vocabulary)."""
  spec = []
  for dim, axes_ in zip(shape, tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))):
    names = () if axes_ is None else ((axes_,) if isinstance(axes_, str) else tuple(axes_))
    size = 1
    for n in names:
      size *= sharding.mesh.shape[n]
    spec.append(axes_ if names and dim % size == 0 else None)
  return NamedSharding(sharding.mesh, PartitionSpec(*spec))


def fits(sharding: NamedSharding, leaf: jax.ShapeDtypeStruct) -> bool:
  """Whether `sharding` can lay out `leaf` (rank and divisibility)."""
  if len(sharding.spec) > leaf.ndim:
    return False
  whole = tuple(sharding.spec) + (None,) * (leaf.ndim - len(sharding.spec))
  return tuple(fit_sharding(sharding, leaf.shape).spec) == whole
