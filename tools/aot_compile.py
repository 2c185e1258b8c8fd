r"""Ahead-of-time check of a training run for a TPU topology, from a CPU machine: does the run's train step compile
on that mesh, and does it fit in each chip's memory? Catch an OOM or a bad mesh before paying for the pod.

    python -m tools.aot_compile --topology=v5p-256 --gin_file=gin_configs/experiments/speech_text_from_hf.gin \
        [--gin.NAME=VALUE ...] [--num_slices=1] [--hbm_gib=G] [--usable_fraction=0.9] [--analytical_only] \
        [--output=plan.json]

The run is given as the run itself is: its `--gin_file`s and `--gin.NAME=VALUE` bindings (MODEL_DIR and
TRAIN_STEPS may be left out). What `train` is bound to (model, data, optimizer, step, param groups, mesh, sharding
rules) goes through the trainer's own step builder (`audiopalm.training.trainer.step_program`: the same
optimizer with its per-group learning rates, shardings and donation), so the program checked is the program the
run compiles. A speech-text run's vocabulary comes from its token datasets' metadata.json (not their shards).

Two answers, both per device:
  compiled     the run's jitted train step lowered for the topology's devices and compiled by the TPU compiler;
               XLA's memory figures (arguments + outputs + temporaries − donated aliases). Needs the TPU compiler,
               libtpu, importable next to the installed JAX; it runs without any TPU (install it apart from the
               project's environment, e.g. `pip install --target=/opt/libtpu 'libtpu==<what jax[tpu] pins>'` and
               `PYTHONPATH=/opt/libtpu`; the message without it names the version).
  analytical   what the state takes on each device under the mesh (exact: parameters and optimizer state shard
               by shard), plus gradients and an estimate of the activations saved for the backward pass under the
               remat policy, and the logits. Always reported; the only answer where the TPU compiler is missing or
               for a topology it does not know (`--topology=cpu-N --hbm_gib=G` for any N devices of G GiB, e.g.
               one 8 x H100 host: `--topology=cpu-8 --hbm_gib=80`).
  cpu-N        the step compiled by XLA's CPU compiler for N host devices, standing in for a GPU host's compiler
               (no GPU needed): the same partitioned program, XLA CPU's buffer assignment.
A plan fits when it needs at most `--usable_fraction` (default 0.9) of the chip's HBM. Exit status: 0 fits,
1 does not fit, 2 bad arguments or a mesh that cannot lay out the model or the batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import re
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, AxisType

from audiopalm.cli.gin_flags import add_gin_flags, bound_arguments, parse_gin, split_gin_bindings
from audiopalm.files import storage
from audiopalm.main.train import TRAIN
from audiopalm.model import TransformerConfig, param_count
from audiopalm.sharding.mesh import MESH_AXES, MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules, batch_sharding
from audiopalm.training.optimizer import OptimizerConfig
from audiopalm.training.param_groups import ParamGroupsConfig
from audiopalm.training.train_step import TrainStepConfig
from audiopalm.training.trainer import StepProgram, step_program, validate_inputs

log = logging.getLogger("tools.aot_compile")
GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice type: generation, chip grid, HBM per device (one JAX device per chip: megacore on v4 / v5p)."""
  name: str  # as given, e.g. v5p-256
  generation: str  # v4, v5p, v5e, v6e, or cpu
  grid: tuple[int, ...]  # chips per slice, e.g. (4, 4, 8)
  hbm_gib: float
  chip_config: str = "default"

  @property
  def devices_per_slice(self) -> int:
    return math.prod(self.grid)

  @property
  def libtpu_name(self) -> str:
    return f"{self.generation}:{'x'.join(map(str, self.grid))}"


# HBM per chip (GiB) and the slice shapes of each generation, by chip count (Cloud TPU documentation).
_HBM_GIB = {"v4": 32.0, "v5p": 95.0, "v5e": 16.0, "v6e": 32.0}
_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8), 256: (4, 8, 8),
       512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}  # v4 ends at 4096 chips
_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}


def parse_topology(name: str, hbm_gib: float | None = None) -> Topology:
  """`v5p-256` / `v4-32` (TensorCores: 2 per chip), `v5litepod-64` / `v6e-256` (chips), `v5p:4x4x8` (chip grid),
  or `cpu-N` (N devices of this host standing in, with --hbm_gib)."""
  if m := re.fullmatch(r"cpu-(\d+)", name):
    if hbm_gib is None:
      raise ValueError("--topology=cpu-N needs --hbm_gib (memory per device)")
    return Topology(name, "cpu", (int(m.group(1)),), hbm_gib)
  if m := re.fullmatch(r"(v4|v5p|v5e|v6e):(\d+(?:x\d+)+)", name):
    gen, grid = m.group(1), tuple(int(x) for x in m.group(2).split("x"))
  elif m := re.fullmatch(r"(v4|v5p)-(\d+)", name):
    gen, cores = m.group(1), int(m.group(2))
    if cores // 2 not in _3D or cores % 2:
      raise ValueError(f"--topology {name}: not one of the cubic {gen} slices {sorted(2 * c for c in _3D)} "
                       f"(TensorCores); give another shape as {gen}:AxBxC (chips)")
    grid = _3D[cores // 2]
  elif m := re.fullmatch(r"(v5litepod|v5e|v6e)-(\d+)", name):
    gen, chips = ("v5e" if m.group(1) == "v5litepod" else m.group(1)), int(m.group(2))
    if chips not in _2D:
      raise ValueError(f"--topology {name}: {gen} slices have {sorted(_2D)} chips")
    grid = _2D[chips]
  else:
    raise ValueError(f"--topology {name!r}: expected e.g. v5p-256, v4-32, v5litepod-64, v6e-256, v5p:4x4x8 or cpu-8")
  return Topology(name, gen, grid, hbm_gib if hbm_gib is not None else _HBM_GIB[gen],
                  chip_config="megacore" if gen in ("v4", "v5p") else "default")


def libtpu_requirement() -> str:
  """The TPU compiler the installed JAX pins for its 'tpu' extra, as a pip requirement (e.g. libtpu==0.0.42.*)."""
  for req in importlib.metadata.requires("jax") or []:
    if m := re.match(r"(libtpu\s*[=<>~!]=?\s*[\w.*]+)\s*;.*extra\s*==\s*['\"]tpu['\"]", req):
      return m.group(1).replace(" ", "")
  return "libtpu"


def cpu_devices(topology: Topology, num_slices: int) -> list[Any] | None:
  """A `cpu-N` topology's stand-in devices: N of this host's XLA CPU devices (`main` asks XLA for them), or None
  where the process has fewer."""
  count = topology.devices_per_slice * num_slices
  devices = jax.devices("cpu")
  return devices[:count] if topology.generation == "cpu" and len(devices) >= count else None


def tpu_devices(topology: Topology, num_slices: int) -> list[Any] | None:
  """The topology's devices from the TPU compiler (libtpu), or None where it is not installed."""
  if topology.generation == "cpu":
    return cpu_devices(topology, num_slices)
  if importlib.util.find_spec("libtpu") is None:
    return None
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  hosts = (2, 4, 1) if topology.generation in ("v5e", "v6e") and topology.devices_per_slice == 8 else (2, 2, 1)
  if topology.devices_per_slice < 4:
    hosts = topology.grid + (1,) * (3 - len(topology.grid))
  desc = topologies.get_topology_desc(platform="tpu", topology_name=topology.libtpu_name,
                                      chip_config_name=topology.chip_config, chips_per_host_bounds=hosts,
                                      num_slices=num_slices)
  return list(desc.devices)


def abstract_mesh(cfg: MeshConfig, num_devices: int, num_slices: int) -> AbstractMesh:
  """The mesh's axis sizes without devices (for the analytical plan)."""
  ici, dcn = cfg.shapes(num_devices, num_slices)
  return AbstractMesh(tuple(i * d for i, d in zip(ici, dcn)), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _shard_bytes(leaves: Any, shardings: Any) -> int:
  """Bytes on one device: each leaf's shard (the shardings fit every leaf: `fit_sharding` left undividable
  dimensions whole)."""
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(leaves), jax.tree.leaves(shardings)):
    shape = sharding.shard_shape(leaf.shape) if leaf.shape else ()
    total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
  return total


def analytical_plan(cfg: TransformerConfig, abstract: Any, shardings: Any, mesh_shape: dict[str, int],
                    batch_size: int, seq_len: int, grad_accum_steps: int, loss_chunk_size: int | None) -> dict:
  """Bytes per device: the state (exact), gradients (the parameters' shards in f32; twice with accumulation: the
  running sum and the microbatch's), the activations kept for the backward pass and one layer's working set
  (estimates), and the logits of one loss chunk."""
  params = _shard_bytes(abstract.params, shardings.params)
  opt = _shard_bytes(abstract.opt_state, shardings.opt_state)
  grads = _shard_bytes(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), abstract.params),
                       shardings.params) * (2 if grad_accum_steps > 1 else 1)
  batch_shards = mesh_shape["data"] * mesh_shape["fsdp"]
  tokens = batch_size // grad_accum_steps * seq_len / batch_shards  # one microbatch's tokens on one device
  act = jnp.dtype(cfg.dtype).itemsize
  tensor = mesh_shape["tensor"]
  heads = cfg.num_heads / tensor
  kv_heads = cfg.num_kv_heads / tensor if cfg.num_kv_heads % tensor == 0 else cfg.num_kv_heads  # MQA: replicated
  # Saved per layer (forward values the backward pass needs), per token, in units of `act` bytes: 'full' keeps
  # the block's input; 'dots' / 'dots_no_batch' also the matmul outputs (q, k, v, attention output, the MLP's
  # gate/up and down); 'none' everything.
  qkv = (heads + 2 * kv_heads) * cfg.head_dim
  matmuls = qkv + heads * cfg.head_dim + 2 * cfg.d_ff / tensor + cfg.d_model
  per_token_layer = {"full": cfg.d_model, "dots": cfg.d_model + matmuls, "dots_no_batch": cfg.d_model + matmuls,
                     "none": cfg.d_model * 4 + matmuls + 2 * cfg.d_ff / tensor}[cfg.remat]
  saved = tokens * per_token_layer * cfg.num_layers * act
  einsum = cfg.attention == "einsum"  # materialises [heads, query, key] scores (xla / cudnn flash does not)
  if einsum and cfg.remat in ("none", "dots"):  # 'dots' saves the batched score matmul too, 'none' the softmax
    saved += tokens * seq_len * heads * (4 if cfg.remat == "none" else act) * cfg.num_layers
  # One layer live at a time in the backward pass: its activations, its attention scores, probabilities and their
  # gradient (einsum, f32), its weights all-gathered over fsdp (compute dtype), and the embedding table gathered
  # with its full f32 gradient before the reduce-scatter.
  layer_params = (param_count(cfg, include_embedding=False) - cfg.d_model) / cfg.num_layers
  working = (tokens * (cfg.d_model * 4 + matmuls + 2 * cfg.d_ff / tensor) * act
             + (tokens * seq_len * heads * 4 * 3 if einsum else 0)
             + layer_params / tensor * act + cfg.vocab_size * cfg.d_model / tensor * (act + 4))
  chunk_tokens = tokens if loss_chunk_size is None else min(tokens, loss_chunk_size * tokens / seq_len)
  logits = chunk_tokens * cfg.vocab_size / tensor * 4 * 2  # logits and their gradient
  parts = {"params": params, "optimizer_state": opt, "gradients": grads, "activations_saved": int(saved),
           "activations_working": int(working), "logits": int(logits)}
  return {"bytes": parts, "total_bytes": int(sum(parts.values())),
          "tokens_per_device_per_microbatch": tokens,
          "note": "state exact from the shardings; activations and logits estimated (XLA may fuse or keep more)"}


@dataclasses.dataclass(frozen=True)
class RunStep:
  """What a run's gin binds to `train` that makes its train step (the rest: where it writes, how long it runs)."""

  model: TransformerConfig
  data: Any  # the run's input (its batch size, sequence length and vocabulary spec)
  optimizer: OptimizerConfig
  step: TrainStepConfig
  param_groups: ParamGroupsConfig
  mesh: MeshConfig
  rules: ShardingRules

  @classmethod
  def from_gin(cls) -> "RunStep":
    """From the parsed gin config: `train`'s bindings, its defaults where a parameter is unbound."""
    return cls(**bound_arguments(TRAIN, "train", [f.name for f in dataclasses.fields(cls)]))

  def program(self, mesh: Any) -> StepProgram:
    """The trainer's step program on `mesh` (devices, or an AbstractMesh for the analytical plan)."""
    return step_program(model=self.model, optimizer=self.optimizer, step=self.step, param_groups=self.param_groups,
                        vocab_spec=getattr(self.data, "vocab_spec", None), mesh=mesh, rules=self.rules)

  def lower(self, devices: Sequence[Any]) -> jax.stages.Lowered:
    """The run's train step lowered for `devices` (its mesh laid out on them)."""
    return self.program(make_mesh(self.mesh, devices)).lower(self.data.global_batch_size, self.data.seq_len)


def compiled_plan(run: RunStep, devices: list) -> dict:
  """The run's train step (the trainer's step program: shardings, donation, optimizer) compiled for `devices`."""
  start = time.perf_counter()
  lowered = run.lower(devices)
  mesh_shape = dict(make_mesh(run.mesh, devices).shape)
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    # The TPU compiler refuses a program that cannot fit: that is this tool's answer, not a failure.
    return {"bytes": {}, "total_bytes": None, "compile_seconds": time.perf_counter() - start,
            "devices": len(devices), "device_kind": devices[0].device_kind, "mesh": mesh_shape,
            "compiler_refused": str(e).splitlines()[0]}
  seconds = time.perf_counter() - start
  m = compiled.memory_analysis()
  parts = {"arguments": int(m.argument_size_in_bytes), "outputs": int(m.output_size_in_bytes),
           "temporaries": int(m.temp_size_in_bytes), "donated_aliases": -int(m.alias_size_in_bytes),
           "generated_code": int(m.generated_code_size_in_bytes)}
  return {"bytes": parts, "total_bytes": int(sum(parts.values())), "compile_seconds": seconds,
          "devices": len(devices), "device_kind": devices[0].device_kind, "mesh": mesh_shape}


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
  """(flags, gin bindings)."""
  rest, bindings = split_gin_bindings(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(prog="python -m tools.aot_compile", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("--topology", required=True, help="v5p-256, v4-32, v5litepod-64, v6e-256, v5p:4x4x8 or cpu-N")
  p.add_argument("--num_slices", type=int, default=1, help="slices of --topology (multi-slice)")
  p.add_argument("--hbm_gib", type=float, default=None, help="memory per device (default: the chip's HBM)")
  p.add_argument("--usable_fraction", type=float, default=0.9, help="share of HBM a plan may use")
  add_gin_flags(p)
  p.add_argument("--analytical_only", action="store_true", help="skip compiling even where libtpu is installed")
  p.add_argument("--output", default=None, help="write the plan as JSON")
  return p.parse_args(rest), bindings


def plan(args: argparse.Namespace, run: RunStep) -> dict:
  """The analytical plan, and the compiled one where the TPU compiler is installed; raises ValueError on bad
  settings (before compiling)."""
  topology = parse_topology(args.topology, args.hbm_gib)
  if args.num_slices < 1:
    raise ValueError("--num_slices must be positive")
  cfg, mesh_cfg, data = run.model, run.mesh, run.data
  num_devices = topology.devices_per_slice * args.num_slices
  # As `make_mesh` counts slices on the pod: the config's number, else the topology's when the mesh spans slices.
  slices = mesh_cfg.num_slices or (args.num_slices if mesh_cfg.dcn else 1)
  mesh = abstract_mesh(mesh_cfg, num_devices, slices)
  run.rules.validate(mesh.axis_names)
  validate_inputs(data.global_batch_size, data.seq_len, getattr(data, "vocab_size", None), cfg,
                  batch_sharding(mesh, run.rules), run.step)
  program = run.program(mesh)
  usable = topology.hbm_gib * GIB * args.usable_fraction
  result: dict[str, Any] = {
      "topology": topology.name, "num_slices": args.num_slices, "devices": num_devices,
      "hbm_gib_per_device": topology.hbm_gib, "usable_fraction": args.usable_fraction,
      "model": {"params": param_count(cfg), "d_model": cfg.d_model, "num_layers": cfg.num_layers,
                "vocab_size": cfg.vocab_size, "dtype": cfg.dtype, "param_dtype": cfg.param_dtype, "remat": cfg.remat},
      "mesh": dict(mesh.shape), "batch_size": data.global_batch_size, "seq_len": data.seq_len,
      "grad_accum_steps": run.step.grad_accum_steps, "optimizer": run.optimizer.name,
      "analytical": analytical_plan(cfg, program.abstract, program.shardings, dict(mesh.shape),
                                    data.global_batch_size, data.seq_len, run.step.grad_accum_steps,
                                    run.step.loss_chunk_size)}
  result["analytical"]["fits"] = result["analytical"]["total_bytes"] <= usable
  devices = None if args.analytical_only else tpu_devices(topology, args.num_slices)
  if devices is None:
    result["compiled"] = None
    result["compiled_skipped"] = ("--analytical_only" if args.analytical_only else
                                  f"this process has fewer than {num_devices} CPU devices"
                                  if topology.generation == "cpu" else
                                  "the TPU compiler is not installed here (to compile: pip install "
                                  f"--target=DIR '{libtpu_requirement()}' and PYTHONPATH=DIR)")
  else:
    compiled = compiled_plan(run, devices)
    compiled["fits"] = compiled["total_bytes"] is not None and compiled["total_bytes"] <= usable
    result["compiled"] = compiled
  result["fits"] = (result["compiled"] or result["analytical"])["fits"]
  return result


def table(result: dict) -> str:
  gib = lambda b: f"{b / GIB:.3g}"  # noqa: E731
  m = result["model"]
  lines = [f"{result['topology']} x {result['num_slices']} slice(s): {result['devices']} devices of "
           f"{result['hbm_gib_per_device']:g} GiB; mesh {result['mesh']}",
           f"model {m['params'] / 1e9:.2f}B params (vocab {m['vocab_size']}, {m['dtype']} compute, {m['param_dtype']} "
           f"params, remat {m['remat']}); batch {result['batch_size']} x {result['seq_len']}, "
           f"accumulation {result['grad_accum_steps']}, {result['optimizer']}", "",
           "| per device (GiB) | analytical | compiled (XLA) |", "|---|---|---|"]
  a, c = result["analytical"]["bytes"], (result["compiled"] or {}).get("bytes", {})
  rows = [("params", a["params"], None), ("optimizer state", a["optimizer_state"], None),
          ("gradients", a["gradients"], None), ("activations saved (est.)", a["activations_saved"], None),
          ("activations working (est.)", a["activations_working"], None), ("logits (est.)", a["logits"], None),
          ("arguments", None, c.get("arguments")), ("outputs", None, c.get("outputs")),
          ("temporaries", None, c.get("temporaries")), ("donated (aliased)", None, c.get("donated_aliases")),
          ("code", None, c.get("generated_code"))]
  for name, x, y in rows:
    if x is not None or y is not None:
      lines.append(f"| {name} | {'' if x is None else gib(x)} | {'' if y is None else gib(y)} |")
  compiled = result["compiled"]
  compiled_total = "–" if not compiled or compiled["total_bytes"] is None else gib(compiled["total_bytes"])
  lines.append(f"| **total** | **{gib(result['analytical']['total_bytes'])}** | **{compiled_total}** |")
  usable = result["hbm_gib_per_device"] * result["usable_fraction"]
  if compiled and compiled.get("compiler_refused"):
    lines.append(f"\nthe TPU compiler refused it for {compiled['devices']} x {compiled['device_kind']}: "
                 f"{compiled['compiler_refused']}")
  elif compiled:
    stand_in = (" (XLA's CPU compiler standing in for an accelerator's: its buffer assignment, not the GPU "
                "compiler's)" if compiled["device_kind"] == "cpu" else "")
    lines.append(f"\ncompiled for {compiled['devices']} x {compiled['device_kind']} in "
                 f"{compiled['compile_seconds']:.0f} s{stand_in}")
  else:
    lines.append(f"\nnot compiled: {result['compiled_skipped']}; the analytical plan decides")
  verdict = "FITS" if result["fits"] else "DOES NOT FIT"
  lines.append(f"{verdict}: usable {usable:.1f} GiB per device ({result['usable_fraction']:.0%} of HBM)")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  args, bindings = parse_args(argv)
  # Compile for the topology's devices; JAX itself runs on the CPU (without this, an installed libtpu makes JAX
  # look for TPU chips first). Set before JAX starts a backend.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if m := re.fullmatch(r"cpu-(\d+)", args.topology):  # the stand-in: that many XLA CPU devices
    count = int(m.group(1)) * args.num_slices
    os.environ["XLA_FLAGS"] = (re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                                      os.environ.get("XLA_FLAGS", "")) +
                               f" --xla_force_host_platform_device_count={count}").strip()
  logging.basicConfig(level=logging.WARNING)
  parse_gin(args.gin_file, bindings, args.gin_search_path, allow_required=True)
  try:
    result = plan(args, RunStep.from_gin())
  except (ValueError, FileNotFoundError) as e:
    print(f"aot_compile: {e}", file=sys.stderr)
    return 2
  print(table(result))
  if args.output:
    storage.write_text(args.output, json.dumps(result, indent=2))
  return 0 if result["fits"] else 1


if __name__ == "__main__":
  sys.exit(main())
