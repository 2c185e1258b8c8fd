"""`generate` on 8 simulated devices gives the unsharded greedy tokens (data 2 x fsdp 2 x tensor 2)."""

import numpy as np
import pytest

from audiopalm.inference import cache_shardings, generate
from audiopalm.inference.decode_test import CONFIGS, NEW, PROMPTS, _params
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules

MESH = MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2})


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sharded_generation_equals_unsharded(name):
  """3 prompts are padded to 4 rows (one per batch shard); GQA's 2 kv heads shard over tensor, MQA's 1 does not."""
  cfg = CONFIGS[name]
  params = _params(cfg)
  mesh = make_mesh(MESH)
  sharded = generate(params, cfg, PROMPTS, NEW, mesh=mesh)
  for a, b in zip(sharded, generate(params, cfg, PROMPTS, NEW)):
    np.testing.assert_array_equal(a, b)


def test_cache_shardings():
  mesh = make_mesh(MESH)
  for name, kv_spec in [("palm", None), ("llama_gqa", "tensor")]:
    shardings = cache_shardings(CONFIGS[name], batch=4, max_len=16, mesh=mesh, rules=ShardingRules())
    assert tuple(shardings.key.spec) == (None, ("data", "fsdp"), None, kv_spec, None), name
    assert shardings.value.spec == shardings.key.spec and tuple(shardings.lengths.spec) == (("data", "fsdp"),)
  odd = cache_shardings(CONFIGS["palm"], batch=3, max_len=16, mesh=mesh, rules=ShardingRules())
  assert tuple(odd.key.spec)[1] is None  # a batch the shards do not divide stays whole
