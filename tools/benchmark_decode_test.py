"""Smoke test of the decode benchmark: the tiny preset at small sizes, one timed repeat (no timing thresholds)."""

import math

import pytest

from audiopalm.main.presets import model_preset
from tools import benchmark_decode


def test_rows_have_finite_positive_timings_and_all_tokens():
  # 48 new tokens: the n = 48 minus n = 1 difference stays well above the timing noise of a few calls. Medians of
  # 5: with one call each, one stall of the n = 1 call on a loaded machine (15.7 ms against 1.4) made the
  # difference negative.
  rows = benchmark_decode.benchmark_rows(cfg=model_preset("tiny"), batch_sizes=(1, 2), prompt_len=8, new_tokens=48,
                                         repeats=5, preset_name="tiny")
  assert [r.batch for r in rows] == [1, 2]
  for r in rows:
    assert (r.prompt_len, r.new_tokens, r.repeats, r.dtype, r.device_kind) == (8, 48, 5, "float32", "cpu")
    assert r.tokens_generated == r.batch * 48  # no stop tokens: every row runs all new tokens
    for value in (r.compile_s, r.prefill_ms, r.total_ms, r.step_ms, r.step_tokens_per_s, r.total_tokens_per_s):
      assert math.isfinite(value) and value > 0
  with pytest.raises(ValueError, match="new_tokens >= 2"):
    benchmark_decode.benchmark_rows(cfg=model_preset("tiny"), batch_sizes=(1,), new_tokens=1)


def test_main_prints_table(capsys):
  benchmark_decode.main(["--batch_sizes=1", "--prompt_len=4", "--new_tokens=8", "--repeats=1"])
  out = capsys.readouterr().out
  assert "decode throughput: tiny" in out and "jax " in out
  assert "| device | dtype | batch | prompt | new | compile s | prefill ms | ms / step | tok/s steps |" in out
  assert "| cpu | float32 | 1 | 4 | 8 |" in out
