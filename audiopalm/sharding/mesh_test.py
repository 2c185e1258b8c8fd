import jax
import pytest

from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import DEFAULT_RULES, ShardingRules


def test_fill_axis_takes_remaining_devices():
  mesh = make_mesh(MeshConfig(ici={"data": 2, "fsdp": -1, "tensor": 2}))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize("ici, message", [
    ({"data": 3, "fsdp": -1}, "do not divide the 8 available devices"),
    ({"data": 3, "fsdp": 1, "tensor": 1}, "uses 3 devices but 8 are available"),
    ({"data": -1, "fsdp": -1}, "at most one axis may be -1"),
    ({"dta": 8}, "unknown mesh axes"),
    ({"data": 0, "fsdp": -1}, "must be positive"),
])
def test_bad_sizes_fail_naming_the_problem(ici, message):
  with pytest.raises(ValueError, match=message):
    make_mesh(MeshConfig(ici=ici))


def test_hybrid_mesh_is_slice_major():
  """dcn data=2: the first half of the `data` axis is slice 0, so other axes never cross slices."""
  mesh = make_mesh(MeshConfig(ici={"data": 1, "fsdp": 2, "tensor": 2}, dcn={"data": 2}, num_slices=2))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  ids = [[d.id for d in mesh.devices[i].flat] for i in range(2)]
  assert sorted(ids[0]) == [0, 1, 2, 3] and sorted(ids[1]) == [4, 5, 6, 7]


def test_rules_validation():
  ShardingRules().validate(("data", "fsdp", "tensor"))
  with pytest.raises(ValueError, match="does not have"):
    ShardingRules().validate(("data", "model"))
  with pytest.raises(ValueError, match="no entry for logical axes"):
    ShardingRules(rules=DEFAULT_RULES[1:]).validate(("data", "fsdp", "tensor"))
  with pytest.raises(ValueError, match="unknown logical axes"):
    ShardingRules(rules=DEFAULT_RULES + (("vocabulary", None),)).validate(("data", "fsdp", "tensor"))
