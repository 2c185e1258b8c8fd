"""The ahead-of-time check: it lowers exactly the program a run compiles (StableHLO equal to the train step JAX
dumps from a real run of the same gin files), topology names, the analytical plan (its state part exact against a
real sharded state), verdicts and refusals, and a real TPU compilation on this CPU machine with the TPU compiler
(libtpu, installed apart from the project's environment, as the tool's documentation says)."""

import json
import os
import pathlib
import subprocess
import sys

import gin
import jax
import pytest

from audiopalm.cli.gin_flags import parse_gin
from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules
from audiopalm.training.optimizer import OptimizerConfig, make_optimizer
from audiopalm.training.train_state import init_train_state, state_shardings
from tools import aot_compile

REPO = pathlib.Path(__file__).resolve().parents[1]


# A run whose program depends on more than the model: per-group learning rates (the trainer's lr_scales), a
# 2 x 2 x 2 mesh, two microbatches.
RUN = ["--gin_file=gin_configs/experiments/tiny.gin", "--gin.ParamGroupsConfig.text_rows_lr_scale=0.5",
       "--gin.ParamGroupsConfig.other_lr_scale=2.0", "--gin.MeshConfig.ici={'data': 2, 'fsdp': 2, 'tensor': 2}",
       "--gin.TrainStepConfig.grad_accum_steps=2"]


def _lowered_by_aot_compile(flags: list[str]) -> str:
  gin.clear_config()
  try:
    args, bindings = aot_compile.parse_args(["--topology=cpu-8", *flags])  # the tool's own flags
    parse_gin(args.gin_file, bindings, args.gin_search_path, allow_required=True)
    return aot_compile.RunStep.from_gin().lower(jax.devices()).as_text(debug_info=False)
  finally:
    gin.clear_config()


@pytest.mark.slow
def test_lowers_the_program_a_run_compiles(tmp_path):
  """One step of a real run (`python -m audiopalm.main.train`, JAX dumping the IR of what it compiles) and the
  tool's lowering for the same gin files and devices: the same StableHLO, character for character."""
  dump = tmp_path / "ir"
  env = {**os.environ, "JAX_DUMP_IR_TO": str(dump), "JAX_INCLUDE_DEBUG_INFO_IN_DUMPS": "false"}
  proc = subprocess.run([sys.executable, "-m", "audiopalm.main.train", *RUN, f"--gin.MODEL_DIR={tmp_path / 'run'}",
                         "--gin.TRAIN_STEPS=1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (step,) = dump.glob("*jit_train_step*.mlir")  # the trainer compiles one train step
  assert _lowered_by_aot_compile(RUN) == step.read_text()
  # The comparison sees what the old tool missed: without the run's param groups the program differs.
  assert _lowered_by_aot_compile(RUN[:1] + RUN[3:]) != step.read_text()


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
  cfg = model_preset("tiny")
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


def _text_run(model: str, batch_size: int, seq_len: int) -> list[str]:
  """A text pretraining run's flags (MODEL_DIR and TRAIN_STEPS left out: the check does not need them)."""
  return [f"--gin_file=models/{model}.gin", "--gin_file=runs/pretrain_text.gin", "--gin.TEXT_FILES=('README.md',)",
          f"--gin.BATCH_SIZE={batch_size}", f"--gin.SEQ_LEN={seq_len}"]


def test_verdicts_and_refusals(tmp_path):
  fits = _run("--topology=v5p-256", *_text_run("palm_8b", 256, 2048), "--analytical_only",
              f"--output={tmp_path / 'plan.json'}")
  assert fits.returncode == 0 and "FITS" in fits.stdout, fits.stderr
  plan = json.loads((tmp_path / "plan.json").read_text())
  assert plan["mesh"] == {"data": 1, "fsdp": 128, "tensor": 1} and plan["compiled"] is None
  assert (plan["batch_size"], plan["seq_len"], plan["optimizer"]) == (256, 2048, "adafactor")  # the run's
  assert aot_compile.libtpu_requirement().startswith("libtpu==")  # what the installed jax[tpu] pins
  assert 8.5e9 < plan["model"]["params"] < 8.7e9  # PaLM 8B at this vocabulary
  # The same model on 16 chips of 16 GiB: the f32 state alone is ~8 GiB per chip, plus the activations.
  big = _run("--topology=v5litepod-16", *_text_run("palm_8b", 256, 2048), "--analytical_only")
  assert big.returncode == 1 and "DOES NOT FIT" in big.stdout
  bad_mesh = _run("--topology=v5p-8", *_text_run("tiny", 16, 128), "--gin.MeshConfig.ici={'tensor': 3}")
  assert bad_mesh.returncode == 2 and "aot_compile:" in bad_mesh.stderr and "tensor" in bad_mesh.stderr
  bad_batch = _run("--topology=v5p-16", *_text_run("tiny", 6, 128))
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
  one = _run("--topology=v5p-16", *_text_run("tiny", 16, 128), "--gin.TransformerConfig.remat='full'",
             f"--output={tmp_path / 'one.json'}", env=env)
  assert one.returncode == 0, one.stdout + one.stderr[-3000:]
  plan = json.loads((tmp_path / "one.json").read_text())
  assert plan["compiled"]["devices"] == 8 and plan["compiled"]["device_kind"].startswith("TPU v5")
  assert plan["compiled"]["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  assert plan["compiled"]["total_bytes"] > 0 and "compiled for 8 x TPU v5" in one.stdout
  two = _run("--topology=v5p-8", "--num_slices=2", *_text_run("tiny", 16, 128),
             "--gin.MeshConfig.ici={'fsdp': 2, 'tensor': 2}", "--gin.MeshConfig.dcn={'data': 2}",
             f"--output={tmp_path / 'two.json'}", env=env)
  assert two.returncode == 0, two.stdout + two.stderr[-3000:]
  plan = json.loads((tmp_path / "two.json").read_text())
  assert plan["compiled"]["devices"] == 8 and plan["compiled"]["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}


def test_a_cpu_topology_compiles_with_xla_cpu_standing_in(tmp_path):
  """`cpu-N` (e.g. one 8 x H100 host: cpu-8, 80 GiB) compiles the run's step for N XLA CPU devices, whatever
  XLA_FLAGS the caller had; a family preset with local layers, soft-caps and q/k norms lowers like any other."""
  result = _run("--topology=cpu-8", "--hbm_gib=80", *_text_run("gemma3_4b", 16, 128),
                "--gin.TransformerConfig.num_layers=2", "--gin.TransformerConfig.vocab_size=512",
                "--gin.TransformerConfig.d_model=64", "--gin.TransformerConfig.d_ff=96",
                "--gin.TransformerConfig.head_dim=16", f"--output={tmp_path / 'plan.json'}",
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  plan = json.loads((tmp_path / "plan.json").read_text())
  assert (plan["compiled"]["devices"], plan["compiled"]["device_kind"]) == (8, "cpu")
  assert plan["compiled"]["total_bytes"] > 0 and "standing in" in result.stdout
