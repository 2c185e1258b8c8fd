"""Params-only exports: what downstream fine-tuning, inference and continued pretraining read.

    export_params(params, model_config, "runs/x/export", vocab_spec)     # params/ + model_config.json [+ spec]
    params = load_exported_params("runs/x/export", abstract_params)      # into their shardings
    export_source(find_source("runs/x"), "exports/x", "bfloat16")        # a run's newest params, cast, exported

An export directory holds `params/` (an orbax checkpoint of the parameter tree, sharded arrays),
`model_config.json` (the `TransformerConfig`), for a model trained with a combined vocabulary `vocab_spec.json`,
and for a model this stack trained `train_config.json` (the run's resolved config, which evaluation reads). `audiopalm.checkpoints.source.find_source` recognises it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from audiopalm.checkpoints.source import RUN_CONFIG_FILE, Source, load_source
from audiopalm.files import storage
from audiopalm.files.paths import absolute
from audiopalm.model import TransformerConfig
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.rules import ShardingRules
from audiopalm.vocab.spec import VocabSpec, save_spec

log = logging.getLogger(__name__)


def export_params(params: Any, model_config: TransformerConfig, export_dir: str, vocab_spec: VocabSpec | None = None,
                  run_config: dict[str, Any] | None = None) -> None:
  """Writes a params-only checkpoint (orbax, sharded arrays) + `model_config.json` (+ `vocab_spec.json` when the
  model was trained with a combined vocabulary, + `train_config.json`: the resolved config of the run that made
  it, when known) for downstream use."""
  path = absolute(export_dir)
  if path.exists():
    if jax.process_index() == 0:
      path.rmtree()
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(path / "params", params)
  ckptr.wait_until_finished()
  if jax.process_index() == 0:
    storage.write_text(path / "model_config.json", json.dumps(dataclasses.asdict(model_config), indent=2))
    if vocab_spec is not None:
      save_spec(vocab_spec, str(path))
    if run_config is not None:
      storage.write_text(path / RUN_CONFIG_FILE, json.dumps(run_config, indent=2))
  log.info("Exported params to %s", path)


def load_exported_params(export_dir: str, abstract_params: Any | None = None) -> Any:
  """Loads params written by `export_params` (into the shardings of `abstract_params`, if given)."""
  ckptr = ocp.StandardCheckpointer()
  return ckptr.restore(absolute(export_dir) / "params", abstract_params)


def export_source(source: Source, directory: str, dtype: str) -> tuple[Any, TransformerConfig]:
  """`source`'s parameters cast to `dtype`, sharded over every local device (fsdp), written with `export_params`
  (params/, model_config.json with param_dtype = dtype, vocab_spec.json). Returns (params, config)."""
  mesh = make_mesh(MeshConfig())  # fsdp over every local device
  params = load_source(source, mesh, ShardingRules())
  params = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(jnp.dtype(dtype)), p))(params)
  cfg = source.model.replace(param_dtype=dtype)
  export_params(params, cfg, directory, source.spec, source.run_config)
  return params, cfg


def check_output(output: str, sources: Sequence[str], overwrite: bool) -> epath.Path:
  """The output directory, refused when it exists (without `overwrite`) or when it is or holds a source."""
  final = absolute(output)
  for source in sources:
    src = absolute(source)
    if final == src or str(src).startswith(str(final) + "/") or str(final).startswith(str(src) + "/"):
      raise ValueError(f"--output {final} overlaps the checkpoint {src}; export somewhere else")
  if storage.exists(final) and not overwrite:
    raise FileExistsError(f"{final} exists; pass --overwrite to replace it")
  return final
