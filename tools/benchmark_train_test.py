"""Smoke test of the train-step benchmark: the tiny preset, two timed steps, a small matmul peak."""

import math

import pytest

from audiopalm.main.presets import model_preset
from audiopalm.sharding.mesh import MeshConfig, parse_axis_sizes
from tools import benchmark_train


def test_run_benchmark_tiny_returns_finite_positive_figures():
  result = benchmark_train.run_benchmark(
      model_cfg=model_preset("tiny"), preset_name="tiny", batch_size=8, seq_len=16, steps=2, warmup_steps=1,
      mesh_cfg=MeshConfig(ici={"data": 2, "fsdp": -1, "tensor": 1}), matmul_peak="always", matmul_size=128)
  assert result.num_devices >= 1 and result.global_batch == 8 and result.seq_len == 16
  assert result.tokens_per_s > 0 and result.step_time_median_s > 0 and result.flops_per_token > 0
  for value in (result.tokens_per_s, result.achieved_flops, result.step_time_mean_s, result.final_loss,
                result.matmul_peak_flops_per_device, result.matmul_peak_flops_one_device, result.mfu_vs_matmul_peak):
    assert value is not None and math.isfinite(value) and value > 0
  assert "MFU vs measured matmul peak" in benchmark_train.format_report(result)


def test_peak_override_gives_mfu_and_parse_axis_sizes():
  result = benchmark_train.run_benchmark(model_cfg=model_preset("tiny"), batch_size=8, seq_len=16, steps=1,
                                         warmup_steps=0, peak_flops_override=1e12, matmul_peak="never")
  assert result.peak_source == "override" and math.isfinite(result.mfu) and result.mfu > 0
  assert result.matmul_peak_flops_per_device is None
  assert parse_axis_sizes("data=2, fsdp=-1") == {"data": 2, "fsdp": -1}
  with pytest.raises(ValueError, match="AXIS=SIZE"):
    parse_axis_sizes("model=2")
  with pytest.raises(ValueError, match="--ici entry 'fsdp=two'.*SIZE an integer"):
    parse_axis_sizes("fsdp=two", "--ici")
