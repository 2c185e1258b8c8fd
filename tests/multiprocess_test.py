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
import signal
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


def _processes(model_dir: pathlib.Path, mesh: dict, num_processes: int, *extra: str) -> tuple[list[list[str]], dict]:
  """The commands and environment of a run on `num_processes` processes (8 devices in all)."""
  if num_processes == 1:
    return [_train_command(model_dir, mesh, *extra)], _env(8)
  coordinator = f"127.0.0.1:{portpicker.pick_unused_port()}"
  return [_train_command(model_dir, mesh, f"--coordinator_address={coordinator}", f"--num_processes={num_processes}",
                         f"--process_id={i}", *extra) for i in range(num_processes)], _env(8 // num_processes)


@pytest.mark.slow
def test_a_run_moves_between_two_processes_and_one_exactly(reference, tmp_path):
  """2 processes × 4 devices → 1 process × 8 devices → 2 processes × 4 devices, a third of the run each, each
  resuming from the other's checkpoint: the loss sequence is the uninterrupted 1-process run's."""
  model_dir = tmp_path / "run"
  legs = [(2, TWO_PROCESS_MESHES["dcn_data"]), (1, REFERENCE_MESH), (2, TWO_PROCESS_MESHES["dcn_fsdp"])]
  for leg, (num_processes, mesh) in enumerate(legs):
    stop = NUM_STEPS * (leg + 1) // len(legs)
    commands, env = _processes(model_dir, mesh, num_processes, f"--gin.TRAIN_STEPS={stop}",
                               f"--gin.CheckpointConfig.save_interval_steps={NUM_STEPS // len(legs)}")
    log_dir = tmp_path / f"leg{leg}"
    log_dir.mkdir()
    logs = _run(commands, env, log_dir)
    if leg:
      assert f"Restored checkpoint of step {NUM_STEPS * leg // len(legs)}" in logs[0].read_text()
  rows = _metrics(model_dir)
  assert [r["step"] for r in rows] == list(range(1, NUM_STEPS + 1))
  np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in reference], rtol=LOSS_RTOL, atol=0,
                             err_msg="the loss sequence across 2 → 1 → 2 processes differs from the uninterrupted run")


# Preemption and a lost process, on 2 processes (mesh dcn_data): the run must stop on every process at one step,
# save it once and exit 0 (SIGTERM), or stop within the heartbeat timeout with a non-zero exit (SIGKILL of a
# peer); either way the restart continues the uninterrupted loss sequence exactly.
LONG_STEPS = 40  # long enough that a signal sent after step 3 lands well before the end
HEARTBEAT_S = 5


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> list[float]:
  """Losses of an uninterrupted 1-process run of LONG_STEPS steps."""
  work = tmp_path_factory.mktemp("long_reference")
  _run([_train_command(work / "run", REFERENCE_MESH, f"--gin.TRAIN_STEPS={LONG_STEPS}")], _env(8), work)
  return [r["loss"] for r in _metrics(work / "run")]


def _start(commands: list[list[str]], env: dict[str, str], log_dir: pathlib.Path) -> list[subprocess.Popen]:
  procs = []
  for i, cmd in enumerate(commands):
    with (log_dir / f"process_{i}.log").open("wb") as out:
      procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
  return procs


def _logged_steps(model_dir: pathlib.Path) -> dict[int, float]:
  """Step → the loss logged last for it (a restarted run re-logs the steps after its checkpoint)."""
  path = model_dir / "metrics.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
  return {r["step"]: r["loss"] for r in rows}


def _wait(procs: list[subprocess.Popen], log_dir: pathlib.Path, until, what: str, timeout: float = TIMEOUT_S):
  deadline = time.monotonic() + timeout
  while not until():
    if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
      for p in procs:
        if p.poll() is None:
          p.kill()
        p.wait()
      logs = "\n".join(f"===== process {i} (exit {p.returncode})\n{_tail(log_dir / f'process_{i}.log')}"
                       for i, p in enumerate(procs))
      pytest.fail(f"waiting for {what}: failed or timed out\n{logs}", pytrace=False)
    time.sleep(0.1)


def _interrupted_run(tmp_path: pathlib.Path, interrupt) -> tuple[pathlib.Path, list[subprocess.Popen], pathlib.Path]:
  """A 2-process run of LONG_STEPS steps, `interrupt(procs)` once it has logged step 3; waits for it to end."""
  model_dir, log_dir = tmp_path / "run", tmp_path / "interrupted"
  log_dir.mkdir()
  commands, env = _processes(model_dir, TWO_PROCESS_MESHES["dcn_data"], 2, f"--gin.TRAIN_STEPS={LONG_STEPS}",
                             "--gin.CheckpointConfig.save_interval_steps=4", f"--heartbeat_timeout_s={HEARTBEAT_S}")
  procs = _start(commands, env, log_dir)
  _wait(procs, log_dir, lambda: max(_logged_steps(model_dir), default=0) >= 3, "step 3")
  interrupt(procs)
  deadline = time.monotonic() + 120
  while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
    time.sleep(0.1)
  for p in procs:
    if p.poll() is None:
      p.kill()
      pytest.fail(f"a process did not exit within 120 s of the interruption:\n{_tail(log_dir / 'process_0.log')}")
  return model_dir, procs, log_dir


def _restart_matches(model_dir: pathlib.Path, tmp_path: pathlib.Path, long_reference: list[float],
                     unlogged: tuple[int, ...] = ()) -> None:
  """A 2-process restart runs 4 steps past the furthest step logged; every step's loss is the reference's
  (`unlogged`: a preempted step, whose metrics the loop does not log: it saves at once)."""
  stop = max(_logged_steps(model_dir)) + 4
  assert stop <= LONG_STEPS, f"the run reached step {stop - 4} before the interruption took effect"
  log_dir = tmp_path / "restart"
  log_dir.mkdir()
  commands, env = _processes(model_dir, TWO_PROCESS_MESHES["dcn_data"], 2, f"--gin.TRAIN_STEPS={stop}")
  _run(commands, env, log_dir)
  losses = _logged_steps(model_dir)
  steps = [s for s in range(1, stop + 1) if s not in unlogged]
  assert sorted(losses) == steps
  np.testing.assert_allclose([losses[s] for s in steps], [long_reference[s - 1] for s in steps], rtol=LOSS_RTOL, atol=0,
                             err_msg="the restarted run's losses differ from the uninterrupted run's")


def _preempted_step(log: pathlib.Path) -> int:
  text = log.read_text(errors="replace")
  found = [int(line.rsplit("Preemption notice: saving step ", 1)[1].split()[0]) for line in text.splitlines()
           if "Preemption notice: saving step " in line]
  assert len(found) == 1, f"expected one preemption notice in {log}:\n{_tail(log)}"
  return found[0]


@pytest.mark.slow
@pytest.mark.parametrize("who", ["all", "one"])
def test_sigterm_stops_every_process_at_one_step_saved_once_and_the_restart_is_exact(who, long_reference, tmp_path):
  targets = {"all": (0, 1), "one": (1,)}[who]
  model_dir, procs, log_dir = _interrupted_run(
      tmp_path, lambda procs: [procs[i].send_signal(signal.SIGTERM) for i in targets])
  assert [p.returncode for p in procs] == [0, 0], _tail(log_dir / "process_0.log")
  steps = [_preempted_step(log_dir / f"process_{i}.log") for i in range(2)]
  assert steps[0] == steps[1], f"the processes stopped at different steps: {steps}"
  saved = sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit())
  assert saved[-1] == steps[0] and len(saved) == len(set(saved)), saved
  _restart_matches(model_dir, tmp_path, long_reference, unlogged=(steps[0],))


@pytest.mark.slow
def test_sigkill_of_one_process_ends_the_other_within_the_heartbeat_and_the_restart_is_exact(long_reference,
                                                                                              tmp_path):
  killed = {}

  def kill(procs):
    killed["at"] = time.monotonic()
    procs[1].send_signal(signal.SIGKILL)

  model_dir, procs, log_dir = _interrupted_run(tmp_path, kill)
  assert procs[1].returncode == -signal.SIGKILL and procs[0].returncode != 0
  waited = time.monotonic() - killed["at"]
  assert waited < HEARTBEAT_S + 30, f"the surviving process took {waited:.0f} s to stop"
  # Either its collective failed (our message, exit 1) or JAX's coordination service ended it (SIGABRT).
  log = (log_dir / "process_0.log").read_text(errors="replace")
  assert ("Process 0 of 2 failed; exiting with status 1" in log and procs[0].returncode == 1) or (
      "another task died" in log), _tail(log_dir / "process_0.log")
  _restart_matches(model_dir, tmp_path, long_reference)
