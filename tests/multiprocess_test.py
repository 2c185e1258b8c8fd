"""A real 2-process run on loopback gives the same losses as a 1-process run with the same global batch.

The slow tests run the CLI (`python -m audiopalm.main.train`) as subprocesses: a
1-process reference on 8 simulated CPU devices, and 2-process runs
(`jax.distributed` over 127.0.0.1, gloo CPU collectives) with 4 devices per
process, whose mesh crosses the process boundary. Process 0 writes
`metrics.jsonl`; its per-step losses must equal the reference's within
`LOSS_RTOL`. The fast tests check the two pieces that make this hold without
starting any process: each process's rows of the global batch, and the text
iterator's per-host split.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import portpicker
import pytest
from jax.sharding import NamedSharding

from audiopalm.data.iterator import host_row_range
from audiopalm.data.text_source import TextSourceConfig
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules, batch_sharding

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_GIN = "gin_configs/experiments/tiny.gin"
TEXT_FILES = ("audiopalm/data/assets/licenses.txt", "audiopalm/data/assets/demo_text.txt")  # as tiny.gin
GLOBAL_BATCH = 16  # tiny.gin's BATCH_SIZE, the same for every run here
SEQ_LEN = 128  # tiny.gin's SEQ_LEN
NUM_STEPS = 12
TIMEOUT_S = 300  # per run (all its processes together)
# Per-step losses (and gradient norms) of the 2-process runs vs the 1-process run. The runs compute
# the same sums in a different order (other shards, gloo vs in-process reductions), float32: the
# observed relative difference is ~1e-7.
LOSS_RTOL = 1e-5

REFERENCE_MESH = {"ici": {"data": 2, "fsdp": 2, "tensor": 2}}
# Two-process meshes (4 devices per process, one granule per process):
#   dcn_data: data parallelism across the processes (the gradient all-reduce crosses them); the
#     device grid is the same one a single-slice {'data': 2, 'fsdp': 2, 'tensor': 2} mesh gives.
#   dcn_fsdp: FSDP across the processes (fsdp = 4, parameter all-gathers and gradient
#     reduce-scatters cross them), batch over fsdp only.
TWO_PROCESS_MESHES = {
    "dcn_data": {"ici": {"data": 1, "fsdp": 2, "tensor": 2}, "dcn": {"data": 2}},
    "dcn_fsdp": {"ici": {"data": 1, "fsdp": 2, "tensor": 2}, "dcn": {"fsdp": 2}},
}


def _mesh_shape(mesh: dict) -> dict[str, int]:
  dcn = mesh.get("dcn", {})
  return {a: mesh["ici"].get(a, 1) * dcn.get(a, 1) for a in ("data", "fsdp", "tensor")}


def _env(devices_per_process: int) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOPALM_")}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}", JAX_PLATFORMS="cpu",
             TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  return env


def _train_command(model_dir: pathlib.Path, mesh: dict, *extra: str) -> list[str]:
  cmd = [sys.executable, "-m", "audiopalm.main.train", f"--gin_file={TINY_GIN}", f"--gin.MODEL_DIR={model_dir}",
         f"--gin.TRAIN_STEPS={NUM_STEPS}", "--gin.TrainerConfig.log_every=1",
         f"--gin.CheckpointConfig.save_interval_steps={NUM_STEPS // 2}", f"--gin.MeshConfig.ici={mesh['ici']}"]
  if "dcn" in mesh:
    cmd.append(f"--gin.MeshConfig.dcn={mesh['dcn']}")
  return cmd + list(extra)


def _tail(path: pathlib.Path, lines: int = 80) -> str:
  text = path.read_text(errors="replace") if path.exists() else "(no output file)"
  return "\n".join(text.splitlines()[-lines:])


def _run(commands: list[list[str]], env: dict[str, str], log_dir: pathlib.Path) -> list[pathlib.Path]:
  """Runs the commands concurrently (cwd = repo root); fails with their output if any fails or hangs.

  As soon as one process fails the others are killed: its peers would otherwise wait in a
  collective until the coordinator gives up.
  """
  logs = [log_dir / f"process_{i}.log" for i in range(len(commands))]
  procs = []
  try:
    for cmd, log in zip(commands, logs):
      with log.open("wb") as out:
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    problem = None
    while problem is None and any(p.poll() is None for p in procs):
      failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
      if failed:
        problem = f"process {failed[0]} exited with {procs[failed[0]].returncode}"
      elif time.monotonic() > deadline:
        problem = f"timed out after {TIMEOUT_S} s"
      else:
        time.sleep(0.2)
    if problem is None and any(p.returncode != 0 for p in procs):
      problem = "exit codes " + str([p.returncode for p in procs])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  if problem is not None:
    report = "\n".join(f"===== process {i} (exit {p.returncode}): {' '.join(cmd)}\n{_tail(log)}"
                       for i, (p, cmd, log) in enumerate(zip(procs, commands, logs)))
    pytest.fail(f"Training run failed: {problem}\n{report}", pytrace=False)
  return logs


def _metrics(model_dir: pathlib.Path) -> list[dict]:
  path = model_dir / "metrics.jsonl"
  assert path.exists(), f"{path} was not written"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _check_run(model_dir: pathlib.Path, log: pathlib.Path, mesh: dict, num_processes: int) -> list[dict]:
  """The run really used `num_processes` processes and the mesh, and logged every step once."""
  expected = f"Mesh {_mesh_shape(mesh)} on 8 devices ({num_processes} processes)"
  assert expected in log.read_text(errors="replace"), f"{expected!r} not in the log of process 0:\n{_tail(log)}"
  rows = _metrics(model_dir)
  steps = [r["step"] for r in rows]
  assert steps == list(range(1, NUM_STEPS + 1)), f"metrics.jsonl has steps {steps}"
  losses = np.array([r["loss"] for r in rows])
  assert np.isfinite(losses).all(), losses
  assert losses[-1] < losses[0] - 0.5, f"the loss did not go down: {losses}"  # training, not a constant
  return rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
  """Metrics of the 1-process run on 8 devices (mesh data=2, fsdp=2, tensor=2)."""
  work = tmp_path_factory.mktemp("reference")
  model_dir = work / "run"
  logs = _run([_train_command(model_dir, REFERENCE_MESH)], _env(8), work)
  return _check_run(model_dir, logs[0], REFERENCE_MESH, num_processes=1)


@pytest.mark.slow
@pytest.mark.parametrize("mesh_name", list(TWO_PROCESS_MESHES))
def test_two_processes_match_one_process(mesh_name, reference, tmp_path):
  mesh = TWO_PROCESS_MESHES[mesh_name]
  model_dir = tmp_path / "run"
  coordinator = f"127.0.0.1:{portpicker.pick_unused_port()}"
  commands = [_train_command(model_dir, mesh, f"--coordinator_address={coordinator}", "--num_processes=2",
                             f"--process_id={i}") for i in range(2)]
  logs = _run(commands, _env(4), tmp_path)
  rows = _check_run(model_dir, logs[0], mesh, num_processes=2)
  for key in ("loss", "grad_norm"):
    got, want = np.array([r[key] for r in rows]), np.array([r[key] for r in reference])
    max_rel = float(np.max(np.abs(got - want) / np.abs(want)))
    print(f"{mesh_name}: max relative {key} difference {max_rel:.3g} (rtol {LOSS_RTOL})")
    np.testing.assert_allclose(got, want, rtol=LOSS_RTOL, atol=0,
                               err_msg=f"2-process {key} per step differs from the 1-process run ({mesh_name})")
  assert (model_dir / "checkpoints" / str(NUM_STEPS)).is_dir()


@pytest.mark.slow
def test_launch_gpu_sh_environment_path_matches_one_process(reference, tmp_path):
  """The multi-node path of `launch/gpu.sh` (coordinator, process count and id from the environment) on CPU:
  the script, not the test, tells each process which run it is in, and the run equals the 1-process one."""
  mesh = TWO_PROCESS_MESHES["dcn_data"]
  model_dir = tmp_path / "run"
  coordinator = f"127.0.0.1:{portpicker.pick_unused_port()}"
  env = _env(4)
  env.pop("JAX_PLATFORMS")  # the script sets it (--platform cpu)
  commands = [["env", f"AUDIOPALM_COORDINATOR_ADDRESS={coordinator}", "AUDIOPALM_NUM_PROCESSES=2",
               f"AUDIOPALM_PROCESS_ID={i}", "launch/gpu.sh", "--platform=cpu", "--",
               *_train_command(model_dir, mesh)] for i in range(2)]
  logs = _run(commands, env, tmp_path)
  assert "gpu.sh: environment on" in logs[0].read_text() and "process 0 of 2" in logs[0].read_text()
  rows = _check_run(model_dir, logs[0], mesh, num_processes=2)
  np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in reference], rtol=LOSS_RTOL, atol=0)


# Fast checks of the same property, in this process (8 CPU devices from conftest.py).


class _ProcessView:
  """A sharding as seen by a pretend process that owns `devices` (what `host_row_range` reads)."""

  def __init__(self, sharding: NamedSharding, devices):
    self.sharding, self.devices = sharding, set(devices)

  def addressable_devices_indices_map(self, shape):
    return {d: i for d, i in self.sharding.devices_indices_map(shape).items() if d in self.devices}


def _batch_sharding(mesh: dict) -> NamedSharding:
  cfg = MeshConfig(ici=mesh["ici"], dcn=mesh.get("dcn", {}), num_slices=2 if "dcn" in mesh else None)
  return batch_sharding(make_mesh(cfg), ShardingRules())


@pytest.mark.parametrize("mesh", [REFERENCE_MESH, *TWO_PROCESS_MESHES.values()], ids=["single_slice", *TWO_PROCESS_MESHES])
def test_host_row_range_is_contiguous_half_per_process(mesh):
  devices = jax.devices()
  assert len(devices) == 8
  sharding = _batch_sharding(mesh)
  ranges = [host_row_range(_ProcessView(sharding, devices[4 * p:4 * p + 4]), GLOBAL_BATCH, SEQ_LEN) for p in range(2)]
  assert ranges == [(0, 8), (8, 16)]


def test_host_row_range_rejects_batch_shards_interleaved_across_processes():
  # Data inside a process, fsdp across processes: each process holds rows 0-3 and 8-11 (or 4-7, 12-15).
  sharding = _batch_sharding({"ici": {"data": 2, "fsdp": 1, "tensor": 2}, "dcn": {"fsdp": 2}})
  with pytest.raises(ValueError, match="non-contiguous rows"):
    host_row_range(_ProcessView(sharding, jax.devices()[:4]), GLOBAL_BATCH, SEQ_LEN)


def test_text_iterator_host_halves_concatenate_to_the_global_batch():
  cfg = TextSourceConfig(paths=tuple(str(REPO / f) for f in TEXT_FILES), seq_len=SEQ_LEN,
                         global_batch_size=GLOBAL_BATCH)
  whole = cfg.make_iterator(0, GLOBAL_BATCH)
  halves = [cfg.make_iterator(0, GLOBAL_BATCH // 2), cfg.make_iterator(GLOBAL_BATCH // 2, GLOBAL_BATCH)]
  for _ in range(3):
    want = next(whole)
    parts = [next(h) for h in halves]
    assert set(want) == set(parts[0])
    for key, value in want.items():
      assert value.shape == (GLOBAL_BATCH, SEQ_LEN)
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), value, err_msg=key)
  assert want["weights"].sum() > 0
