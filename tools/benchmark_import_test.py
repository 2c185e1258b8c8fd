"""The import benchmark at a tiny size: it writes a synthetic checkpoint, imports it on 4 devices in a fresh
process, and reports one read per tensor and the peak memory."""

import pytest

from tools import benchmark_import

pytestmark = pytest.mark.slow
TINY = ["--set=num_layers=2", "--set=d_model=64", "--set=d_ff=96", "--set=num_heads=4", "--set=num_kv_heads=2",
        "--set=head_dim=16", "--set=vocab_size=512"]


def test_tiny_gemma2_import_reads_each_tensor_once_on_four_devices(tmp_path, capsys):
  result = benchmark_import.main(["--preset=gemma2_9b", *TINY, "--devices=4", f"--workdir={tmp_path}"])
  assert (result["reads_min"], result["reads_max"], result["devices"]) == (1.0, 1.0, 4)
  assert result["peak_gb"] >= result["before_gb"] > 0
  assert "| gemma2_9b" in capsys.readouterr().out
  assert not (tmp_path / "hf").exists()  # removed without --keep
