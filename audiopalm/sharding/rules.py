"""Rules that map logical axis names to mesh axes, and their application.

A rule set is plain config: a tuple of `(logical_name, mesh_axes)` pairs where
`mesh_axes` is a mesh axis name, a tuple of them, or None (replicated). The
default set is the usual FSDP + tensor-parallel layout (MaxText-like).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from audiopalm.sharding import axes

MeshAxes = str | tuple[str, ...] | None

DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    (axes.VOCAB, "tensor"),
    (axes.EMBED, "fsdp"),
    (axes.MLP, "tensor"),
    (axes.HEADS, "tensor"),
    (axes.KV_HEADS, None),
    (axes.HEAD_DIM, None),
    (axes.NORM, None),
    (axes.LAYERS, None),
    (axes.ACT_BATCH, ("data", "fsdp")),
    (axes.ACT_LENGTH, None),
    (axes.ACT_EMBED, None),
    (axes.ACT_HEADS, "tensor"),
    (axes.ACT_KV_HEADS, "tensor"),  # the decoding cache's kv heads (left whole where they do not divide, as MQA's 1)
    (axes.ACT_MLP, "tensor"),
    (axes.ACT_VOCAB, "tensor"),
)


@dataclasses.dataclass(frozen=True)
class ShardingRules:
  """Logical-to-mesh axis rules.

  Attributes:
    rules: `(logical_name, mesh_axes)` pairs; every name in `axes.ALL_AXES` must
      appear exactly once.
  """

  rules: tuple[tuple[str, MeshAxes], ...] = DEFAULT_RULES

  def validate(self, mesh_axis_names: Sequence[str]) -> None:
    """Fails with a message naming the problem if the rules are inconsistent."""
    names = [name for name, _ in self.rules]
    unknown = sorted(set(names) - set(axes.ALL_AXES))
    if unknown:
      raise ValueError(f"Sharding rules name unknown logical axes {unknown}; known: {list(axes.ALL_AXES)}")
    missing = sorted(set(axes.ALL_AXES) - set(names))
    if missing:
      raise ValueError(f"Sharding rules have no entry for logical axes {missing}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
      raise ValueError(f"Sharding rules list logical axes more than once: {dup}")
    for name, target in self.rules:
      targets = (target,) if isinstance(target, str) else (target or ())
      bad = [t for t in targets if t not in mesh_axis_names]
      if bad:
        raise ValueError(
            f"Sharding rule {name!r} -> {target!r} names mesh axes {bad} that the mesh "
            f"does not have (mesh axes: {list(mesh_axis_names)})")

  def as_flax(self) -> tuple[tuple[str, MeshAxes], ...]:
    return tuple((n, tuple(t) if isinstance(t, list) else t) for n, t in self.rules)


def logical_to_mesh_spec(logical: PartitionSpec | Sequence[str | None], rules: ShardingRules) -> PartitionSpec:
  """Maps a logical PartitionSpec (names from `axes`) to a mesh PartitionSpec."""
  return nn.logical_to_mesh_axes(tuple(logical), rules.as_flax())


def logical_to_sharding(logical_tree: Any, mesh: Mesh, rules: ShardingRules) -> Any:
  """Maps a pytree of logical PartitionSpecs to a pytree of NamedShardings."""
  return nn.logical_to_mesh_sharding(logical_tree, mesh, rules.as_flax())


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
  """Constrains an activation's sharding by logical names (no-op outside a mesh/rules context)."""
  return nn.with_logical_constraint(x, tuple(logical))


def batch_sharding(mesh: Mesh, rules: ShardingRules) -> NamedSharding:
  """Sharding of [batch, length] input arrays (logical `activation_batch`, `activation_length`)."""
  return NamedSharding(mesh, logical_to_mesh_spec((axes.ACT_BATCH, axes.ACT_LENGTH), rules))


def params_shardings(abstract_boxed_params: Any, mesh: Mesh, rules: ShardingRules) -> Any:
  """NamedShardings for a (boxed, abstract) parameter tree produced by `model.init`."""
  logical = nn.get_partition_spec(abstract_boxed_params)
  return logical_to_sharding(logical, mesh, rules)
