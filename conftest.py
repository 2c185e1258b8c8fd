"""Test set-up: 8 simulated CPU devices for every test process (set before JAX loads)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def _fresh_jax_state_per_module():
  """Each test module starts from JAX state no other module left: compiled executables dropped, and JAX's
  persistent compilation cache off again if a test ran a training entry point in this process (which turns it
  on). A full session that kept them (issue 26's tests added many compiled programs) crashed XLA's CPU compiler
  late, reproducibly: a segfault compiling tools/benchmark_train_test's first program, which no group of
  modules run alone reproduced."""
  yield
  import jax  # pylint: disable=import-outside-toplevel
  from jax._src import compilation_cache  # pylint: disable=import-outside-toplevel
  if jax.config.jax_compilation_cache_dir is not None:
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
  jax.clear_caches()


@pytest.fixture(scope="session")
def demo_tokens(tmp_path_factory) -> pathlib.Path:
  """The bundled corpus tokenized by the demo job (`gin_configs/tokenize/demo.gin`), once per test session."""
  out = tmp_path_factory.mktemp("demo_tokens") / "tokens"
  cmd = [sys.executable, "-m", "data_pipeline.tokenize", "--gin_file=gin_configs/tokenize/demo.gin",
         f"--gin.OUTPUT_DIR={out}"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return out


@pytest.fixture(scope="session")
def gcs_emulator():
  """A real GCS emulator (fake-gcs-server, `tools.gcs_emulator`) on loopback for the whole session, its
  environment set in os.environ (subprocesses inherit it): gs:// paths reach it, nothing reaches the network."""
  from tools.gcs_emulator import GcsEmulator  # pylint: disable=import-outside-toplevel
  with GcsEmulator() as emulator, emulator.environment():
    yield emulator


@pytest.fixture
def gcs_bucket(gcs_emulator) -> str:
  """A fresh, empty bucket on the session's emulator, as a gs:// URL ("gs://test-<random>")."""
  return f"gs://{gcs_emulator.create_bucket()}"
