"""Train-step throughput and MFU on synthetic data, with the trainer's jit, shardings and donation.

    python -m tools.benchmark_train --preset=tiny
    python -m tools.benchmark_train --preset=palm_1b --dtype=bfloat16 --remat=dots_no_batch \
        --batch_size=16 --seq_len=2048 --grad_accum_steps=4 --steps=20 --warmup_steps=3

The state is initialised sharded (`init_train_state`), the step is the trainer's own
(`audiopalm.training.trainer.step_program`: its in/out shardings and donation), and a random
token batch is generated once, directly in the batch sharding, so the input
pipeline is not measured. After `--warmup_steps` steps (compilation is timed
separately before them), `--steps` steps are timed one by one, each until
`jax.block_until_ready`; tokens/s is computed from the median step time.

MFU = tokens/s * flops_per_token(cfg, seq_len) / (devices * peak per device):
model FLOPs (PaLM appendix B, rematerialisation not counted). The peak comes
from `--peak_flops_per_device` or the table in `audiopalm/training/metrics.py`
(dense bf16). Where that is unknown, or on CPU, the peak of a large f32 matmul
is also measured in the same run and MFU is reported against it too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from audiopalm.data.iterator import Batch
from audiopalm.main.presets import model_preset
from audiopalm.model import TransformerConfig, flops_per_token, param_count
from audiopalm.model.config import REMAT_POLICIES
from audiopalm.sharding.mesh import MeshConfig, make_mesh, parse_axis_sizes
from audiopalm.sharding.params import sharding_context
from audiopalm.sharding.rules import ShardingRules, batch_sharding
from audiopalm.training.metrics import mfu, peak_flops_per_device
from audiopalm.training.optimizer import OptimizerConfig
from audiopalm.training.param_groups import ParamGroupsConfig
from audiopalm.training.train_state import init_train_state
from audiopalm.training.train_step import TrainStepConfig
from audiopalm.training.trainer import step_program, validate_inputs

# Architecture fields that may be overridden from the command line (ints).
ARCH_OVERRIDES = ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "d_ff")

INPUT_NOTE = "synthetic token batch already on device in the batch sharding: input-pipeline cost excluded"
TIMING_NOTE = "each timed step blocks until ready (no overlap of host dispatch with the previous step)"


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
  """One benchmark run. FLOP/s figures are totals over all devices unless named per device."""

  preset: str
  params: int
  non_embedding_params: int
  dtype: str
  remat: str
  attention: str
  num_devices: int
  device_kind: str
  platform: str
  mesh: dict[str, int]
  global_batch: int
  seq_len: int
  grad_accum_steps: int
  loss_chunk_size: int | None
  warmup_steps: int
  timed_steps: int
  compile_s: float
  step_time_median_s: float
  step_time_mean_s: float
  step_time_min_s: float
  tokens_per_s: float  # from the median step time
  flops_per_token: float  # model FLOPs (fwd + bwd, no remat)
  achieved_flops: float  # tokens_per_s * flops_per_token, all devices
  peak_flops_per_device: float | None
  peak_source: str  # "override", "table" or "unknown"
  mfu: float  # NaN when the peak is unknown
  matmul_peak_flops_per_device: float | None  # measured, all devices at once; None if not measured
  matmul_peak_flops_one_device: float | None  # measured on one device alone
  matmul_size: int | None
  mfu_vs_matmul_peak: float | None
  final_loss: float
  memory_estimate_bytes: int | None  # XLA's compiled estimate per device (arguments + outputs + temps)
  peak_memory_bytes: int | None  # runtime peak, where the backend reports it (not on CPU)


def measure_matmul_peak(*, devices: Sequence[jax.Device], size: int = 2048, dtype: Any = jnp.float32,
                        repeats: int = 10) -> float:
  """Per-device FLOP/s of a jitted `size`^3 matmul run on all `devices` at once (one matmul each).

  All devices run together so that devices sharing hardware (e.g. simulated CPU
  devices on the same cores) are measured under the same contention as the
  training step. Best of `repeats` calls, each until `block_until_ready`.
  """
  n, k = size, len(devices)
  mesh = Mesh(np.asarray(devices), ("d",), axis_types=(AxisType.Auto,))
  sharding = NamedSharding(mesh, PartitionSpec("d"))
  make = jax.jit(lambda key: jax.random.normal(key, (k, n, n), dtype), out_shardings=sharding)
  a, b = make(jax.random.key(0)), make(jax.random.key(1))
  matmul = jax.jit(lambda x, y: jnp.einsum("dij,djk->dik", x, y), out_shardings=sharding)
  jax.block_until_ready(matmul(a, b))  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    times.append(time.perf_counter() - start)
  return 2.0 * n ** 3 / min(times)


def make_synthetic_batch(*, batch_size: int, seq_len: int, vocab_size: int, sharding: NamedSharding,
                         seed: int) -> Batch:
  """Random tokens (one segment per row, all weights 1), generated directly in `sharding`."""
  def generate(key):
    tokens = jax.random.randint(key, (batch_size, seq_len + 1), 0, vocab_size, jnp.int32)
    ones = jnp.ones((batch_size, seq_len), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32), (batch_size, seq_len))
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "positions": positions, "segment_ids": ones,
            "weights": ones.astype(jnp.float32)}
  return jax.jit(generate, out_shardings=sharding)(jax.random.key(seed))


def time_steps(*, step_fn: Any, state: Any, batch: Batch, steps: int) -> tuple[Any, dict, list[float]]:
  """Runs `steps` steps, each timed until its state and metrics are ready; returns (state, metrics, times)."""
  metrics, times = {}, []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return state, metrics, times


def _memory_estimate(compiled: Any) -> int | None:
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except  # not every backend / version reports it
    return None


def _runtime_peak_memory(devices: Sequence[jax.Device]) -> int | None:
  peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in devices]
  peaks = [p for p in peaks if p is not None]
  return max(peaks) if peaks else None


def _progress(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def run_benchmark(*, model_cfg: TransformerConfig, preset_name: str = "custom", batch_size: int, seq_len: int,
                  steps: int = 10, warmup_steps: int = 2, mesh_cfg: MeshConfig = MeshConfig(),
                  rules: ShardingRules = ShardingRules(), optimizer_cfg: OptimizerConfig = OptimizerConfig(),
                  step_cfg: TrainStepConfig = TrainStepConfig(), peak_flops_override: float | None = None,
                  matmul_peak: str = "auto", matmul_size: int = 2048, seed: int = 0) -> BenchmarkResult:
  """Builds, compiles and times the train step; `matmul_peak` is "auto" (CPU or unknown peak), "always" or
  "never"."""
  if steps < 1 or warmup_steps < 0:
    raise ValueError(f"need steps >= 1 and warmup_steps >= 0, got {steps}, {warmup_steps}")
  if matmul_peak not in ("auto", "always", "never"):
    raise ValueError(f"matmul_peak={matmul_peak!r}, allowed: ['auto', 'always', 'never']")
  device_mesh = make_mesh(mesh_cfg)
  rules.validate(device_mesh.axis_names)
  input_sharding = batch_sharding(device_mesh, rules)
  validate_inputs(batch_size, seq_len, None, model_cfg, input_sharding, step_cfg)
  devices = list(device_mesh.devices.flat)

  program = step_program(model=model_cfg, optimizer=optimizer_cfg, step=step_cfg, param_groups=ParamGroupsConfig(),
                         vocab_spec=None, mesh=device_mesh, rules=rules)
  step_fn = program.step_fn

  _progress(f"initialising {preset_name} ({param_count(model_cfg) / 1e6:.2f}M params) on mesh "
            f"{dict(device_mesh.shape)} ...")
  # init_train_state enters sharding_context itself, as in the trainer.
  state = init_train_state(program.net, program.tx, device_mesh, rules, seed)
  with sharding_context(device_mesh, rules):
    batch = make_synthetic_batch(batch_size=batch_size, seq_len=seq_len, vocab_size=model_cfg.vocab_size,
                                 sharding=input_sharding, seed=seed + 1)
    _progress("compiling the train step ...")
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    _progress(f"compiled in {compile_s:.1f}s; {warmup_steps} warmup steps ...")
    state, _, _ = time_steps(step_fn=compiled, state=state, batch=batch, steps=warmup_steps)
    _progress(f"timing {steps} steps ...")
    state, metrics, times = time_steps(step_fn=compiled, state=state, batch=batch, steps=steps)
  final_loss = float(jax.device_get(metrics["loss"]))
  peak_memory = _runtime_peak_memory(devices)
  del state

  median = statistics.median(times)
  tokens_per_s = batch_size * seq_len / median
  fpt = flops_per_token(model_cfg, seq_len)
  peak = peak_flops_per_device(devices[0], override=peak_flops_override)
  peak_source = "override" if peak_flops_override else ("table" if peak else "unknown")
  platform = devices[0].platform

  mm_all = mm_one = mfu_mm = None
  if matmul_peak == "always" or (matmul_peak == "auto" and (platform == "cpu" or peak is None)):
    _progress(f"measuring the f32 {matmul_size}^3 matmul peak on {len(devices)} device(s) ...")
    mm_all = measure_matmul_peak(devices=devices, size=matmul_size)
    mm_one = mm_all if len(devices) == 1 else measure_matmul_peak(devices=devices[:1], size=matmul_size)
    mfu_mm = mfu(tokens_per_s, fpt, len(devices), mm_all)

  return BenchmarkResult(
      preset=preset_name, params=param_count(model_cfg),
      non_embedding_params=param_count(model_cfg, include_embedding=False), dtype=model_cfg.dtype,
      remat=model_cfg.remat, attention=model_cfg.attention, num_devices=len(devices),
      device_kind=devices[0].device_kind, platform=platform,
      mesh=dict(device_mesh.shape), global_batch=batch_size, seq_len=seq_len,
      grad_accum_steps=step_cfg.grad_accum_steps, loss_chunk_size=step_cfg.loss_chunk_size,
      warmup_steps=warmup_steps, timed_steps=steps,
      compile_s=compile_s, step_time_median_s=median, step_time_mean_s=statistics.fmean(times),
      step_time_min_s=min(times), tokens_per_s=tokens_per_s, flops_per_token=fpt,
      achieved_flops=tokens_per_s * fpt, peak_flops_per_device=peak, peak_source=peak_source,
      mfu=mfu(tokens_per_s, fpt, len(devices), peak), matmul_peak_flops_per_device=mm_all,
      matmul_peak_flops_one_device=mm_one, matmul_size=matmul_size if mm_all else None,
      mfu_vs_matmul_peak=mfu_mm, final_loss=final_loss, memory_estimate_bytes=_memory_estimate(compiled),
      peak_memory_bytes=peak_memory)


def _tflops(x: float | None) -> str:
  return "n/a" if x is None else f"{x / 1e12:.4g} TFLOP/s"


def _pct(x: float | None) -> str:
  return "n/a" if x is None or math.isnan(x) else f"{100 * x:.2f}%"


def _gib(x: int | None) -> str:
  return "n/a" if x is None else f"{x / 2 ** 30:.2f} GiB"


def format_report(r: BenchmarkResult) -> str:
  """A two-column Markdown table of the result, with the measurement caveats underneath."""
  mesh = "x".join(str(v) for v in r.mesh.values()) + " (" + ",".join(f"{k}={v}" for k, v in r.mesh.items()) + ")"
  rows = [
      ("preset", f"{r.preset} (dtype {r.dtype}, remat {r.remat}, attention {r.attention})"),
      ("params", f"{r.params / 1e6:.2f}M ({r.non_embedding_params / 1e6:.2f}M non-embedding)"),
      ("devices", f"{r.num_devices} x {r.device_kind} ({r.platform})"),
      ("mesh", mesh),
      ("global batch", f"{r.global_batch} sequences (grad_accum_steps {r.grad_accum_steps}, "
                       f"loss_chunk_size {r.loss_chunk_size})"),
      ("seq len", str(r.seq_len)),
      ("steps", f"{r.warmup_steps} warmup + {r.timed_steps} timed; compile {r.compile_s:.1f}s"),
      ("step time", f"median {r.step_time_median_s * 1e3:.1f} ms, mean {r.step_time_mean_s * 1e3:.1f} ms, "
                    f"min {r.step_time_min_s * 1e3:.1f} ms"),
      ("tokens/s", f"{r.tokens_per_s:,.0f} (global; {r.tokens_per_s / r.num_devices:,.0f} per device)"),
      ("model FLOPs/token", f"{r.flops_per_token / 1e9:.4g} GFLOP (flops_per_token, remat not counted)"),
      ("achieved", f"{_tflops(r.achieved_flops)} total, {_tflops(r.achieved_flops / r.num_devices)} per device"),
      ("peak per device", f"{_tflops(r.peak_flops_per_device)} ({r.peak_source})"),
      ("MFU", _pct(r.mfu) if r.peak_flops_per_device else "n/a (peak unknown: pass --peak_flops_per_device)"),
  ]
  if r.matmul_peak_flops_per_device is not None:
    measured = f"{_tflops(r.matmul_peak_flops_per_device)} per device (f32 {r.matmul_size}^3 matmul"
    if r.num_devices > 1:
      measured += (f", all {r.num_devices} devices at once; one device alone "
                   f"{_tflops(r.matmul_peak_flops_one_device)}")
    rows += [
        ("measured matmul peak", measured + ")"),
        ("MFU vs measured matmul peak", _pct(r.mfu_vs_matmul_peak)),
    ]
  rows += [
      ("memory per device", f"XLA estimate {_gib(r.memory_estimate_bytes)}, runtime peak {_gib(r.peak_memory_bytes)}"),
      ("final loss", f"{r.final_loss:.4f}"),
  ]
  lines = ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
  lines += ["", f"Note: {INPUT_NOTE}.", f"Note: {TIMING_NOTE}; tokens/s and MFU use the median step time."]
  return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m tools.benchmark_train", description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="tiny",
                 help="model preset: a gin_configs/models/*.gin name (tiny, demo, palm_1b, palm_8b)")
  p.add_argument("--batch_size", type=int, default=16, help="global batch size (sequences)")
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--steps", type=int, default=10, help="timed steps")
  p.add_argument("--warmup_steps", type=int, default=2, help="untimed steps after compilation")
  p.add_argument("--mesh", default="data=1,fsdp=-1,tensor=1", help="mesh sizes; one axis may be -1 (fill)")
  p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="compute dtype override")
  p.add_argument("--remat", choices=REMAT_POLICIES, help="rematerialisation policy override")
  p.add_argument("--attention", choices=("einsum", "xla", "cudnn"),
                 help="attention implementation override (cudnn: jax.nn.dot_product_attention's cuDNN flash "
                      "attention, GPU with bfloat16 only)")
  for name in ARCH_OVERRIDES:
    p.add_argument(f"--{name}", type=int, help=f"override TransformerConfig.{name}")
  p.add_argument("--grad_accum_steps", type=int, default=1)
  p.add_argument("--loss_chunk_size", type=int, default=None,
                 help="project logits and compute the loss this many positions at a time (large vocabularies)")
  p.add_argument("--peak_flops_per_device", type=float, help="peak FLOP/s per device for MFU (overrides the table)")
  p.add_argument("--matmul_peak", choices=("auto", "always", "never"), default="auto",
                 help="measure a matmul peak: auto = on CPU or when the peak is unknown")
  p.add_argument("--matmul_size", type=int, default=2048, help="side of the square f32 matmul")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
  return p.parse_args(argv)


def benchmark_kwargs(args: argparse.Namespace) -> dict[str, Any]:
  """`run_benchmark` keyword arguments from parsed flags."""
  overrides = {k: getattr(args, k) for k in ("dtype", "remat", "attention") + ARCH_OVERRIDES
               if getattr(args, k) is not None}
  name = args.preset + (" + " + ",".join(f"{k}={v}" for k, v in overrides.items()) if overrides else "")
  return dict(model_cfg=model_preset(args.preset, **overrides), preset_name=name, batch_size=args.batch_size,
              seq_len=args.seq_len, steps=args.steps, warmup_steps=args.warmup_steps,
              mesh_cfg=MeshConfig(ici=parse_axis_sizes(args.mesh)),
              step_cfg=TrainStepConfig(grad_accum_steps=args.grad_accum_steps,
                                       loss_chunk_size=args.loss_chunk_size),
              peak_flops_override=args.peak_flops_per_device, matmul_peak=args.matmul_peak,
              matmul_size=args.matmul_size, seed=args.seed)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  result = run_benchmark(**benchmark_kwargs(args))
  print(format_report(result))
  if args.json:
    record = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in dataclasses.asdict(result).items()}
    print(json.dumps(record))


if __name__ == "__main__":
  main()
