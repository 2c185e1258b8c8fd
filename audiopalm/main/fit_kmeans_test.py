"""The fit_kmeans command line reproduces the bundled demo semantic tokenizer."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from audiopalm.semantic.kmeans_test import SHARDED_VS_SINGLE_ATOL
from audiopalm.semantic.standardize import FeatureStats

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "audiopalm" / "data" / "assets" / "demo_semantic"
# float32 features differ across CPUs by a few ulps (~1e-7 relative); averaged over 16,466 frames the statistics
# differ by far less. Measured between a run on an AMD EPYC and the bundle: 3.4e-10 of a std for the means,
# 1.5e-8 relative for the squared deviations (and centroids within 4.8e-7).
STATS_TOL = 1e-6


def test_cli_reproduces_the_bundled_demo_tokenizer(tmp_path):
  out = tmp_path / "demo_semantic"
  command = [sys.executable, "-m", "audiopalm.main.fit_kmeans", "--gin_file=gin_configs/experiments/semantic_demo_mfcc.gin",
             f"--gin.OUTPUT_DIR={out}"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "k-means" in result.stderr and "Wrote" in result.stderr  # progress and summary
  spec, bundled = (json.loads((d / "semantic_tokenizer.json").read_text()) for d in (out, BUNDLED))
  inertia = [d["spec"]["kmeans"]["fit"].pop("final_inertia") for d in (spec, bundled)]
  stats = [d.pop("stats") for d in (spec, bundled)]
  assert spec == bundled  # the spec and the k-means record (steps, points, reassignments)
  assert inertia[0] == pytest.approx(inertia[1], rel=1e-5)
  # Statistics: float64 sums over the same frames (the count is exact) of float32 MFCC features whose last bits
  # depend on the CPU that computes them (bit-exact on the machine that made the bundle, not on an AMD EPYC): the
  # means agree to STATS_TOL of a standard deviation, the squared deviations to STATS_TOL relative.
  new, old = (FeatureStats.from_dict(s) for s in stats)
  assert new.count == old.count
  np.testing.assert_array_less(np.abs(new.mean - old.mean), STATS_TOL * old.std)
  np.testing.assert_allclose(new.m2, old.m2, rtol=STATS_TOL, atol=0)
  # The bundle was fitted on 1 device; tests run with 8 simulated devices, whose k-means sums add in another
  # order (the same assignments, centroids within kmeans_test's stated 1e-5).
  np.testing.assert_allclose(np.load(out / "centroids.npy"), np.load(BUNDLED / "centroids.npy"),
                             atol=SHARDED_VS_SINGLE_ATOL, rtol=0)
  assert (out / "encoder" / "config.json").read_text() == (BUNDLED / "encoder" / "config.json").read_text()
  again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert again.returncode != 0 and "already fitted" in again.stderr
