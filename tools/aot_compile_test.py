"""The ahead-of-time check: topology names, the analytical plan (its state part exact against a real sharded
state), verdicts and refusals, and a real TPU compilation on this CPU machine with the TPU compiler (libtpu,
installed apart from the project's environment, as the tool's documentation says)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from audiopalm.model import Transformer, preset
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules
from audiopalm.training.optimizer import OptimizerConfig, make_optimizer
from audiopalm.training.train_state import init_train_state, state_shardings
from tools import aot_compile

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, generation, grid, hbm", [
    ("v5p-256", "v5p", (4, 4, 8), 95.0), ("v4-32", "v4", (2, 2, 4), 32.0), ("v5litepod-64", "v5e", (8, 8), 16.0),
    ("v6e-256", "v6e", (16, 16), 32.0), ("v5p:2x4x4", "v5p", (2, 4, 4), 95.0)])
def test_topology_names(name, generation, grid, hbm):
  t = aot_compile.parse_topology(name)
  assert (t.generation, t.grid, t.hbm_gib) == (generation, grid, hbm)
  assert t.libtpu_name == f"{generation}:{'x'.join(map(str, grid))}"


@pytest.mark.parametrize("name, message", [("v5p-3", "TensorCores"), ("v4-16384", "TensorCores"), ("v6e-12", "chips"),
                                           ("h100-8", "expected e.g."), ("cpu-8", "needs --hbm_gib")])
def test_unknown_topologies_are_refused(name, message):
  with pytest.raises(ValueError, match=message):
    aot_compile.parse_topology(name)


def test_state_part_of_the_analytical_plan_is_exact():
  """Bytes per device of parameters and optimizer state: the plan (abstract mesh) = a real sharded state."""
  cfg = preset("tiny")
  mesh_cfg = MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2})
  tx = make_optimizer(OptimizerConfig(name="adamw"))
  abstract, shardings = state_shardings(Transformer(cfg), tx, aot_compile.abstract_mesh(mesh_cfg, 8, 1),
                                        ShardingRules())
  plan = aot_compile.analytical_plan(cfg, abstract, shardings, {"data": 2, "fsdp": 2, "tensor": 2}, 16, 128, 1, None)
  state = init_train_state(Transformer(cfg), tx, make_mesh(mesh_cfg), ShardingRules(), seed=0)
  device = jax.devices()[0]
  on_device = lambda tree: sum(s.data.nbytes for leaf in jax.tree.leaves(tree)  # noqa: E731
                               for s in leaf.addressable_shards if s.device == device)
  assert plan["bytes"]["params"] == on_device(state.params)
  assert plan["bytes"]["optimizer_state"] == on_device(state.opt_state)


def _run(*args, env=None):
  return subprocess.run([sys.executable, "-m", "tools.aot_compile", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=900, env={**os.environ, **(env or {})})


def test_verdicts_and_refusals(tmp_path):
  fits = _run("--topology=v5p-256", "--preset=palm_8b", "--batch_size=256", "--seq_len=2048", "--analytical_only",
              f"--output={tmp_path / 'plan.json'}")
  assert fits.returncode == 0 and "FITS" in fits.stdout, fits.stderr
  plan = json.loads((tmp_path / "plan.json").read_text())
  assert plan["mesh"] == {"data": 1, "fsdp": 128, "tensor": 1} and plan["compiled"] is None
  assert aot_compile.libtpu_requirement().startswith("libtpu==")  # what the installed jax[tpu] pins
  assert 8.5e9 < plan["model"]["params"] < 8.7e9  # PaLM 8B at this vocabulary
  # The same model on 16 chips of 16 GiB: the f32 state alone is ~8 GiB per chip, plus the activations.
  big = _run("--topology=v5litepod-16", "--preset=palm_8b", "--batch_size=256", "--seq_len=2048",
             "--analytical_only")
  assert big.returncode == 1 and "DOES NOT FIT" in big.stdout
  bad_mesh = _run("--topology=v5p-8", "--preset=tiny", "--batch_size=16", "--seq_len=128", "--ici=tensor=3")
  assert bad_mesh.returncode == 2 and "aot_compile:" in bad_mesh.stderr and "tensor" in bad_mesh.stderr
  bad_batch = _run("--topology=v5p-16", "--preset=tiny", "--batch_size=6", "--seq_len=128")
  assert bad_batch.returncode == 2 and "global_batch_size 6 must be divisible" in bad_batch.stderr


@pytest.fixture(scope="session")
def libtpu(tmp_path_factory) -> pathlib.Path:
  """The TPU compiler the installed JAX pins, in a directory of its own (never in the project's environment)."""
  target = tmp_path_factory.mktemp("libtpu")
  proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", f"--target={target}",
                         aot_compile.libtpu_requirement()], capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return target


@pytest.mark.slow
def test_compiles_the_train_step_for_a_tpu_slice_and_a_multi_slice(libtpu, tmp_path):
  env = {"PYTHONPATH": f"{REPO}{os.pathsep}{libtpu}", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  one = _run("--topology=v5p-16", "--preset=tiny", "--batch_size=16", "--seq_len=128", "--remat=full",
             f"--output={tmp_path / 'one.json'}", env=env)
  assert one.returncode == 0, one.stdout + one.stderr[-3000:]
  plan = json.loads((tmp_path / "one.json").read_text())
  assert plan["compiled"]["devices"] == 8 and plan["compiled"]["device_kind"].startswith("TPU v5")
  assert plan["compiled"]["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  assert plan["compiled"]["total_bytes"] > 0 and "compiled for 8 x TPU v5" in one.stdout
  two = _run("--topology=v5p-8", "--num_slices=2", "--preset=tiny", "--batch_size=16", "--seq_len=128",
             "--ici=fsdp=2,tensor=2", f"--output={tmp_path / 'two.json'}", env=env)
  assert two.returncode == 0, two.stdout + two.stderr[-3000:]
  plan = json.loads((tmp_path / "two.json").read_text())
  assert plan["compiled"]["devices"] == 8 and plan["compiled"]["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
