"""Decode throughput of `audiopalm.inference.generate` (KV cache, one jitted prefill + a `lax.while_loop` of steps).

    python -m tools.benchmark_decode --preset=tiny                                   # CPU: batch 1, 8, 32
    python -m tools.benchmark_decode --preset=palm_1b --dtype=bfloat16 --batch_sizes=1,8,32,128 \
        --prompt_len=512 --new_tokens=256 --repeats=5                                # one H100 (intended)

The intended measurement is the ~1B preset (`palm_1b`) on one H100; on a CPU only the tiny preset is
practical. Parameters are random (initialised once, jitted; the model's own `param_dtype`), prompts are random
token ids of exactly `--prompt_len` tokens, decoding is greedy and there are no stop tokens, so every row runs
the full `--new_tokens` (a fresh tied model tends to repeat tokens; that does not change the timing).

What is timed: the public `generate(params, cfg, prompts, n)` call, from host prompts to the returned numpy
arrays (so it includes padding the prompts on the host, their transfer and the transfer of the result back;
no mesh, one device). `generate` compiles once per (batch, longest prompt, max_new_tokens), so two shapes are
compiled per batch size: n = 1 and n = N = `--new_tokens`. The first call of each is untimed; "compile s" is
those two first calls minus their median run times (tracing + XLA compilation). Then `--repeats` rounds each
time one n = 1 call and one n = N call (alternating, so load from other processes falls on both alike); the
medians are t_1 and t_N.

  prefill ms  = t_1: the prompt forward pass filling the cache, plus picking the first token (with n = 1 the
                while loop runs no step). Its cache holds prompt_len + 1 positions instead of prompt_len + N.
  ms / step   = (t_N - t_1) / (N - 1): one loop step, i.e. one new token for every row of the batch.
  tok/s steps = batch / (ms / step): decode-only throughput, prefill excluded.
  tok/s total = batch * N / t_N: end to end, prefill and host overhead included.

For large models on an accelerator, steady-state decoding is memory-bound: each step reads all parameters and
the cache for one token per row, so tok/s steps grows almost linearly with the batch until the matmuls become
compute-bound. The tiny preset on a CPU is dominated by per-step overhead instead (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiopalm.inference import generate
from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer, TransformerConfig, param_count


@dataclasses.dataclass(frozen=True)
class DecodeRow:
  """Timings of one batch size (seconds unless named ms)."""

  preset: str
  device_kind: str
  dtype: str  # compute dtype
  batch: int
  prompt_len: int
  new_tokens: int
  repeats: int
  compile_s: float  # first calls of n = 1 and n = N minus their median runs
  prefill_ms: float  # median t_1
  total_ms: float  # median t_N
  step_ms: float  # (t_N - t_1) / (N - 1)
  step_tokens_per_s: float  # batch / step time
  total_tokens_per_s: float  # batch * N / t_N
  tokens_generated: int  # new tokens returned by the last n = N call, all rows (batch * N without stops)


def init_params(cfg: TransformerConfig, seed: int = 0) -> Any:
  """Random parameters (unboxed), initialised under jit so large presets do not run op by op."""
  tokens = jnp.zeros((1, 8), jnp.int32)
  return jax.jit(lambda key: nn.unbox(Transformer(cfg).init(key, tokens, tokens, tokens))["params"])(
      jax.random.key(seed))


def _timed_generate(params: Any, cfg: TransformerConfig, prompts: list[np.ndarray],
                    new_tokens: int) -> tuple[float, list[np.ndarray]]:
  start = time.perf_counter()
  out = generate(params, cfg, prompts, new_tokens, stop_tokens=())  # numpy: the device work has finished
  return time.perf_counter() - start, out


def _progress(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def benchmark_rows(*, cfg: TransformerConfig, batch_sizes: Sequence[int] = (1, 8, 32), prompt_len: int = 64,
                   new_tokens: int = 128, repeats: int = 5, preset_name: str = "custom", seed: int = 0,
                   params: Any = None) -> list[DecodeRow]:
  """Times prefill and decode steps of `generate` for each batch size (see the module docstring)."""
  if new_tokens < 2 or prompt_len < 1 or repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
    raise ValueError(f"need new_tokens >= 2, prompt_len >= 1, repeats >= 1 and batch sizes >= 1, got "
                     f"{new_tokens}, {prompt_len}, {repeats}, {list(batch_sizes)}")
  device_kind = jax.devices()[0].device_kind
  if params is None:
    _progress(f"initialising {preset_name} ({param_count(cfg) / 1e6:.2f}M params) on {device_kind} ...")
    params = init_params(cfg, seed)
  rng = np.random.default_rng(seed)
  rows = []
  for batch in batch_sizes:
    prompts = list(rng.integers(0, cfg.vocab_size, (batch, prompt_len), dtype=np.int32))
    _progress(f"batch {batch}: compiling n=1 and n={new_tokens} ...")
    first_1, _ = _timed_generate(params, cfg, prompts, 1)
    first_n, _ = _timed_generate(params, cfg, prompts, new_tokens)
    times_1, times_n = [], []
    for _ in range(repeats):
      t, _ = _timed_generate(params, cfg, prompts, 1)
      times_1.append(t)
      t, out = _timed_generate(params, cfg, prompts, new_tokens)
      times_n.append(t)
    t_1, t_n = statistics.median(times_1), statistics.median(times_n)
    step = (t_n - t_1) / (new_tokens - 1)
    rows.append(DecodeRow(
        preset=preset_name, device_kind=device_kind, dtype=cfg.dtype, batch=batch, prompt_len=prompt_len,
        new_tokens=new_tokens, repeats=repeats, compile_s=first_1 + first_n - t_1 - t_n, prefill_ms=t_1 * 1e3,
        total_ms=t_n * 1e3, step_ms=step * 1e3, step_tokens_per_s=batch / step if step > 0 else float("inf"),
        total_tokens_per_s=batch * new_tokens / t_n, tokens_generated=sum(o.size for o in out)))
    _progress(f"batch {batch}: prefill {t_1 * 1e3:.1f} ms, {step * 1e3:.2f} ms/step")
  return rows


def format_table(rows: Sequence[DecodeRow], cfg: TransformerConfig) -> str:
  """A Markdown table of the rows under a heading naming the preset, device and JAX version."""
  r0 = rows[0]
  heading = (f"decode throughput: {r0.preset} ({param_count(cfg) / 1e6:.2f}M params, compute {cfg.dtype}, "
             f"params {cfg.param_dtype}), 1 x {r0.device_kind} ({jax.devices()[0].platform}), jax {jax.__version__}, "
             f"greedy, no stop tokens, median of {r0.repeats}")
  lines = [heading, "",
           "| device | dtype | batch | prompt | new | compile s | prefill ms | ms / step | tok/s steps | tok/s total |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r.device_kind} | {r.dtype} | {r.batch} | {r.prompt_len} | {r.new_tokens} | {r.compile_s:.1f} "
                 f"| {r.prefill_ms:.1f} | {r.step_ms:.2f} | {r.step_tokens_per_s:,.0f} | {r.total_tokens_per_s:,.0f} |")
  return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m tools.benchmark_decode", description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="tiny", help="model preset: a gin_configs/models/*.gin name (tiny, demo, palm_1b, palm_8b)")
  p.add_argument("--batch_sizes", default="1,8,32", help="comma-separated batch sizes")
  p.add_argument("--prompt_len", type=int, default=64, help="tokens per prompt (all rows the same length)")
  p.add_argument("--new_tokens", type=int, default=128, help="max_new_tokens (every row runs all of them)")
  p.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
  p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="compute dtype override")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  overrides = {"dtype": args.dtype} if args.dtype else {}
  cfg = model_preset(args.preset, **overrides)
  name = args.preset + (f" + dtype={args.dtype}" if args.dtype else "")
  rows = benchmark_rows(cfg=cfg, batch_sizes=[int(b) for b in args.batch_sizes.split(",") if b.strip()],
                        prompt_len=args.prompt_len, new_tokens=args.new_tokens, repeats=args.repeats,
                        preset_name=name, seed=args.seed)
  print(format_table(rows, cfg))


if __name__ == "__main__":
  main()
