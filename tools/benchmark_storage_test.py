"""The storage benchmark at a tiny size: it runs end to end and every target it checks is met."""

import pytest

from tools import benchmark_storage

pytestmark = pytest.mark.slow


def test_tiny_run_meets_every_target(tmp_path, capsys):
  rows = benchmark_storage.main(["--recordings=1", "--minutes=0.5", "--processes=2", "--shards=5", "--reads=5",
                                 f"--workdir={tmp_path / 'work'}"])
  checked = [r for r in rows if r["ok"] in (True, False)]
  assert len(checked) == 7 and all(r["ok"] for r in checked), [r for r in checked if not r["ok"]]
  assert "| loader start: requests per shard |" in capsys.readouterr().out
