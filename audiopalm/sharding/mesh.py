"""Device mesh from named parallelism sizes, single-slice or hybrid ICI x DCN.

`MeshConfig(ici={"data": 1, "fsdp": -1, "tensor": 1})` puts all local devices
on `fsdp`. For multi-slice TPU / multi-node GPU, `dcn` sizes give the
parallelism *across* slices (granules); the mesh axis size is ici * dcn.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")


def parse_axis_sizes(spec: str, flag: str = "--mesh") -> dict[str, int]:
  """A command-line mesh: 'data=1,fsdp=-1,tensor=1' -> {'data': 1, 'fsdp': -1, 'tensor': 1}; axes left out are 1
  (`MeshConfig` checks the sizes)."""
  sizes = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    name, sep, value = item.partition("=")
    if not sep or name.strip() not in MESH_AXES or not re.fullmatch(r"\s*-?\d+\s*", value):
      raise ValueError(f"{flag} entry {item!r}: expected AXIS=SIZE with AXIS in {list(MESH_AXES)} and SIZE an "
                       "integer (-1: the rest)")
    sizes[name.strip()] = int(value)
  return sizes


def _fill(sizes: Mapping[str, int], total: int, what: str) -> tuple[int, ...]:
  """Resolves one `-1` entry so the product equals `total`; fails naming the problem."""
  unknown = sorted(set(sizes) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"MeshConfig.{what} names unknown mesh axes {unknown}; mesh axes are {list(MESH_AXES)}")
  values = [int(sizes.get(a, 1)) for a in MESH_AXES]
  fills = [a for a, v in zip(MESH_AXES, values) if v == -1]
  bad = [(a, v) for a, v in zip(MESH_AXES, values) if v == 0 or v < -1]
  if bad:
    raise ValueError(f"MeshConfig.{what}: sizes must be positive or -1, got {dict(bad)}")
  if len(fills) > 1:
    raise ValueError(f"MeshConfig.{what}: at most one axis may be -1, got {fills}")
  known = math.prod(v for v in values if v != -1)
  if fills:
    if total % known:
      raise ValueError(f"MeshConfig.{what}={dict(sizes)}: the fixed sizes (product {known}) do not divide "
                       f"the {total} available devices, so axis {fills[0]!r} cannot be filled")
    values[values.index(-1)] = total // known
  if math.prod(values) != total:
    raise ValueError(f"MeshConfig.{what}={dict(zip(MESH_AXES, values))} uses {math.prod(values)} devices but "
                     f"{total} are available; make the product equal {total} or set one axis to -1")
  return tuple(values)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Parallelism sizes per mesh axis (`data`, `fsdp`, `tensor`).

  Attributes:
    ici: sizes within a slice / node (fast interconnect); one may be -1 (fill).
    dcn: sizes across slices / nodes; empty = single slice. One may be -1.
    num_slices: number of slices / nodes (granules); None = from the devices
      (TPU `slice_index`) or the process count when `dcn` is given. Set it
      explicitly on GPU clusters that run one process per GPU (then the
      process count is not the node count).
  """

  ici: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"data": 1, "fsdp": -1, "tensor": 1})
  dcn: Mapping[str, int] = dataclasses.field(default_factory=dict)
  num_slices: int | None = None

  def __hash__(self):
    return hash((tuple(sorted(self.ici.items())), tuple(sorted(self.dcn.items())), self.num_slices))

  def shapes(self, num_devices: int, num_slices: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ici_shape, dcn_shape) for `num_devices` devices in `num_slices` slices; validates."""
    if num_devices % num_slices:
      raise ValueError(f"{num_devices} devices cannot be split into {num_slices} equal slices")
    dcn = _fill(self.dcn, num_slices, "dcn") if self.dcn else (1,) * len(MESH_AXES)
    ici = _fill(self.ici, num_devices // num_slices, "ici")
    return ici, dcn


def _granules(devices: Sequence[jax.Device], num_slices: int) -> list[list[jax.Device]]:
  """Splits devices into `num_slices` granules: by TPU slice, else by process, else in order."""
  for key in ("slice_index", "process_index"):
    groups: dict[int, list[jax.Device]] = {}
    for d in devices:
      groups.setdefault(getattr(d, key, 0), []).append(d)
    if len(groups) == num_slices:
      return [groups[k] for k in sorted(groups)]
  per = len(devices) // num_slices
  return [list(devices[i * per:(i + 1) * per]) for i in range(num_slices)]


def _num_slices(cfg: MeshConfig, devices: Sequence[jax.Device]) -> int:
  if cfg.num_slices is not None:
    return cfg.num_slices
  if not cfg.dcn:
    return 1
  if devices[0].platform == "tpu":
    return len({d.slice_index for d in devices})
  return len({d.process_index for d in devices})


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the mesh; every axis has an explicit `AxisType.Auto` (GSPMD propagation).

  Multi-slice: each mesh axis is (dcn size) x (ici size), slice-major, so the
  collectives of an axis with dcn size 1 never leave a slice.
  """
  devices = list(devices if devices is not None else jax.devices())
  num_slices = _num_slices(cfg, devices)
  ici, dcn = cfg.shapes(len(devices), num_slices)
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if num_slices == 1:
    if devices == list(jax.devices()):
      return jax.make_mesh(ici, MESH_AXES, axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(ici), MESH_AXES, axis_types=axis_types)
  if devices[0].platform == "tpu":  # topology-aware placement within each slice
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, allow_split_physical_axes=True)
    return Mesh(grid, MESH_AXES, axis_types=axis_types)
  granules = np.empty((num_slices,) + ici, dtype=object)
  for i, group in enumerate(_granules(devices, num_slices)):
    granules[i] = np.asarray(group, dtype=object).reshape(ici)
  grid = granules.reshape(dcn + ici)  # [dcn axes..., ici axes...]
  n = len(MESH_AXES)
  grid = grid.transpose([j for i in range(n) for j in (i, n + i)])  # interleave (dcn_i, ici_i)
  grid = grid.reshape(tuple(d * i for d, i in zip(dcn, ici)))
  return Mesh(grid, MESH_AXES, axis_types=axis_types)
