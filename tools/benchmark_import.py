r"""Benchmark of the Hugging Face import's host memory and reads: a synthetic checkpoint of a preset's architecture
(random bfloat16 tensors, safetensors files as transformers writes them), imported by `load_hf_params` in a fresh
process; its peak resident memory against the checkpoint's size, and how often each tensor was read.

    python -m tools.benchmark_import [--preset=gemma2_9b] [--set num_layers=8 ...] [--devices=1] \
        [--workdir=/tmp/benchmark_import] [--keep]

`--set FIELD=VALUE` replaces a field of the preset (e.g. fewer layers where the host has less memory than the
checkpoint); `--devices=N` imports onto N simulated CPU devices with the parameters sharded fsdp-wise (each
process must still read each tensor once). The parameters are kept in the checkpoint's dtype (bfloat16), so the
imported model is as large as the checkpoint; on CPU the devices' memory is the host's, so the peak counts both.
Prints a Markdown table (results in docs/benchmarks.md):
    checkpoint GB | peak RSS GB | RSS before import GB | (peak - before) / checkpoint | reads per tensor | seconds
Peak and resident memory are the import process's own (/proc/self/status VmHWM and VmRSS; Linux only).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
FILE_BYTES = 2 * 10**9  # per safetensors file


def _status_gb(field: str) -> float:
  """A memory figure of this process from /proc/self/status (VmRSS: now; VmHWM: the peak). Not getrusage's
  ru_maxrss: Linux carries that over from the parent across fork and exec."""
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith(field + ":"):
      return int(line.split()[1]) * 1024 / 1e9  # kB
  raise RuntimeError(f"no {field} in /proc/self/status")


def make_checkpoint(cfg, directory: pathlib.Path, seed: int = 0) -> int:
  """Writes a transformers checkpoint of `cfg`'s architecture with random bfloat16 tensors (a random block tiled)
  into `directory`; returns its tensor bytes."""
  import ml_dtypes  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  from audiopalm.hf import lm_layout  # pylint: disable=import-outside-toplevel
  from audiopalm.hf.export_lm import hf_config  # pylint: disable=import-outside-toplevel

  directory.mkdir(parents=True, exist_ok=True)
  block = (0.02 * np.random.default_rng(seed).standard_normal(1 << 20)).astype(ml_dtypes.bfloat16)
  shapes = {lm_layout.EMBED: (cfg.vocab_size, cfg.d_model), lm_layout.FINAL_NORM: (cfg.d_model,)}
  for i in range(cfg.num_layers):
    shapes.update({f"model.layers.{i}.{e.suffix}": e.shape for e in lm_layout.layer_entries(cfg)})
  if not cfg.tie_embeddings:
    shapes[lm_layout.LM_HEAD] = (cfg.vocab_size, cfg.d_model)
  groups: list[dict[str, tuple[int, ...]]] = [{}]
  size = 0
  for name, shape in shapes.items():
    nbytes = int(np.prod(shape)) * 2
    if groups[-1] and size + nbytes > FILE_BYTES:
      groups.append({})
      size = 0
    groups[-1][name] = shape
    size += nbytes
  names = [f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors" for k in range(len(groups))]
  for file, group in zip(names, groups):
    tensors = {name: np.resize(block, shape) for name, shape in group.items()}
    save_file(tensors, str(directory / file), metadata={"format": "pt"})
    del tensors
  index = {"metadata": {"total_size": sum(int(np.prod(s)) * 2 for s in shapes.values())},
           "weight_map": {name: file for file, group in zip(names, groups) for name in group}}
  (directory / "model.safetensors.index.json").write_text(json.dumps(index))
  (directory / "config.json").write_text(json.dumps(hf_config(cfg, torch_dtype="bfloat16")))
  return index["metadata"]["total_size"]


def _child(directory: str, devices: int) -> None:
  """The measured import (a fresh process): prints one JSON line."""
  if devices > 1:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  import jax  # pylint: disable=import-outside-toplevel

  from audiopalm.hf.import_lm import config_from_hf, load_hf_params  # pylint: disable=import-outside-toplevel
  from audiopalm.hf.tensors import SafetensorsReader, read_config  # pylint: disable=import-outside-toplevel
  from audiopalm.model import Transformer  # pylint: disable=import-outside-toplevel
  from audiopalm.model.params import abstract_params  # pylint: disable=import-outside-toplevel
  from audiopalm.sharding.mesh import MeshConfig, make_mesh  # pylint: disable=import-outside-toplevel
  from audiopalm.sharding.rules import ShardingRules, params_shardings  # pylint: disable=import-outside-toplevel

  cfg = config_from_hf(read_config(directory), param_dtype="bfloat16", dtype="bfloat16")
  shardings = None
  if devices > 1:
    mesh = make_mesh(MeshConfig(ici={"data": 1, "fsdp": -1, "tensor": 1}))
    shardings = params_shardings(abstract_params(Transformer(cfg)), mesh, ShardingRules())
  jax.block_until_ready(jax.numpy.zeros(8))
  before = _status_gb("VmRSS")
  start = time.perf_counter()
  reader = SafetensorsReader(directory)
  params = load_hf_params(directory, cfg, shardings, reader=reader)
  jax.block_until_ready(params)
  seconds = time.perf_counter() - start
  reads = [reader.reads(name) for name in reader.entries]
  params_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  print(json.dumps({"before_gb": before, "peak_gb": _status_gb("VmHWM"), "seconds": seconds, "reads_min": min(reads),
                    "reads_max": max(reads), "params_bytes": params_bytes, "devices": jax.device_count()}))


def main(argv: Sequence[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default="gemma2_9b")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="replace a field of the preset")
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--workdir", default="/tmp/benchmark_import")
  p.add_argument("--keep", action="store_true", help="keep the synthetic checkpoint")
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    _child(args.child, args.devices)
    return {}
  from audiopalm.main.presets import model_preset  # pylint: disable=import-outside-toplevel
  from audiopalm.model import param_count  # pylint: disable=import-outside-toplevel

  overrides = {}
  for item in args.set:
    field, _, value = item.partition("=")
    overrides[field] = ast.literal_eval(value)
  cfg = model_preset(args.preset, **overrides)
  directory = pathlib.Path(args.workdir) / "hf"
  shutil.rmtree(directory, ignore_errors=True)
  print(f"writing a synthetic {args.preset} checkpoint ({param_count(cfg) / 1e9:.2f}B parameters, bfloat16) to "
        f"{directory} ...", file=sys.stderr, flush=True)
  checkpoint_bytes = make_checkpoint(cfg, directory)
  print("importing it in a fresh process ...", file=sys.stderr, flush=True)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", "tools.benchmark_import", f"--child={directory}",
                         f"--devices={args.devices}"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise SystemExit(f"the import failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  if not args.keep:
    shutil.rmtree(directory, ignore_errors=True)
  gb = checkpoint_bytes / 1e9
  result.update(checkpoint_gb=gb, ratio=(result["peak_gb"] - result["before_gb"]) / gb, preset=args.preset,
                overrides=overrides)
  print(f"| preset | devices | checkpoint GB | peak RSS GB | RSS before import GB | (peak - before) / checkpoint "
        f"| reads per tensor | seconds |\n|---|---|---|---|---|---|---|---|\n"
        f"| {args.preset}{' ' + str(overrides) if overrides else ''} | {result['devices']} | {gb:.2f} | "
        f"{result['peak_gb']:.2f} | {result['before_gb']:.2f} | {result['ratio']:.3f} | "
        f"{result['reads_min']:.2f}–{result['reads_max']:.2f} | {result['seconds']:.1f} |")
  return result


if __name__ == "__main__":
  main()
