"""The restart benchmark at a tiny size: it runs end to end and prints its tables from the runs' goodput records."""

import pytest

from tools import benchmark_restart

pytestmark = pytest.mark.slow


def test_tiny_run_prints_restart_times_and_goodput(tmp_path, capsys):
  benchmark_restart.main(["--steps=4", f"--workdir={tmp_path / 'work'}"])
  out = capsys.readouterr().out
  for row in ("| cold cache (new run) |", "| warm cache (restart) |", "| no cache (new run) |", "| redone |"):
    assert row in out, out
  assert "2 invocations, 8 steps" in out, out
