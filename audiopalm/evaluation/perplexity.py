"""Held-out perplexity per task and per modality of the predicted token.

    result = perplexity(params, model_cfg, data, num_batches=20, mesh=mesh, rules=rules)
    result["tasks"]["asr"]["perplexity"], result["modalities"]["semantic"]["perplexity"], result["overall"]

`data` is a `SpeechTextConfig` (its components name the tasks; `emit_task_ids` is switched on here): the scored
positions are the ones the training loss counts (loss weight > 0, i.e. each task's output). A position's
modality is that of its target token in the vocabulary spec: 'text' (text ids and specials), 'semantic', or
'acoustic' (any acoustic level); `result["levels"]` splits the acoustic tokens by RVQ level ("0", "1", ...), each
with `uniform_nll` = ln(codebook size), the loss of a model that knows nothing but the level's range. Per group:
tokens, mean negative log-likelihood (nats) and perplexity = exp(nll). A multi-stream model
(`TransformerConfig.stream_vocab`) scores each stream's token against its own head, as its training loss does.
The forward pass is jit-compiled with the same shardings as training; every process reads its own rows.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiopalm.data.iterator import host_row_range, to_global_batch
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.model.loss import stream_targets
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.params import sharding_context
from audiopalm.sharding.rules import ShardingRules, batch_sharding
from audiopalm.vocab.spec import VocabSpec

_KEYS = ("inputs", "targets", "positions", "segment_ids", "weights", "task_ids")


def modality_of_ids(spec: VocabSpec) -> tuple[np.ndarray, list[str]]:
  """[spec.size] int32: each id's modality index, and the modality names."""
  names = ["text", "semantic", "acoustic"]
  out = np.zeros(spec.size, np.int32)
  if spec.semantic is not None:
    out[spec.semantic.offset:spec.semantic.end] = 1
  for level in spec.acoustic:
    out[level.offset:level.end] = 2
  return out, names


def level_of_ids(spec: VocabSpec) -> tuple[np.ndarray, list[int]]:
  """[spec.size] int32: each id's index among the acoustic levels (-1 for other ids), and the levels."""
  out = np.full(spec.size, -1, np.int32)
  levels = sorted(spec.acoustic, key=lambda r: r.level)
  for i, r in enumerate(levels):
    out[r.offset:r.end] = i
  return out, [r.level for r in levels]


def _summary(nll: float, tokens: float) -> dict[str, float]:
  mean = nll / tokens if tokens else float("nan")
  return {"tokens": int(tokens), "nll": mean, "perplexity": math.exp(mean) if tokens else float("nan")}


@functools.partial(jax.jit, static_argnames=("cfg", "num_tasks", "num_modalities", "num_levels"))
def _sums(params: Any, batch: dict[str, jax.Array], modality: jax.Array, level: jax.Array, *, cfg: TransformerConfig,
          num_tasks: int, num_modalities: int, num_levels: int) -> tuple[jax.Array, ...]:
  """nll and token sums per task [tasks], per modality [modalities] and per acoustic level [levels] of one batch
  (compiled once per model)."""
  logits = Transformer(cfg).apply({"params": params}, batch["inputs"], batch["positions"], batch["segment_ids"])
  targets, weights = batch["targets"], batch["weights"]
  if cfg.stream_vocab:  # [batch, length, streams]: stream s against its own head (rows [start, end))
    nlls, insides = [], []
    for s, (a, b) in enumerate(cfg.stream_vocab):
      local, inside = stream_targets(targets[..., s], a, b)
      logp = jax.nn.log_softmax(logits[..., a:b], axis=-1)
      nlls.append(-jnp.take_along_axis(logp, local[..., None], axis=-1)[..., 0])
      insides.append(inside)
    nll, inside = jnp.stack(nlls, axis=-1), jnp.stack(insides, axis=-1)  # [batch, length, streams]
    w = ((weights > 0) & inside).astype(jnp.float32)
    task_ids = jnp.broadcast_to(batch["task_ids"][..., None], targets.shape)
  else:  # one stream: a trailing axis of 1
    logp = jax.nn.log_softmax(logits, axis=-1)  # [batch, length, vocab]
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)  # [batch, length, 1]
    w, task_ids, targets = (weights > 0).astype(jnp.float32)[..., None], batch["task_ids"][..., None], targets[..., None]
  task = jax.nn.one_hot(task_ids, num_tasks) * w[..., None]  # [batch, length, streams, tasks] (-1 → zeros)
  mod = jax.nn.one_hot(modality[targets], num_modalities) * w[..., None]
  lev = jax.nn.one_hot(level[targets], num_levels) * w[..., None]  # non-acoustic ids (-1) → zeros
  return (jnp.einsum("BTS,BTSK->K", nll, task), jnp.sum(task, axis=(0, 1, 2)),
          jnp.einsum("BTS,BTSM->M", nll, mod), jnp.sum(mod, axis=(0, 1, 2)),
          jnp.einsum("BTS,BTSL->L", nll, lev), jnp.sum(lev, axis=(0, 1, 2)))


def perplexity(params: Any, model_cfg: TransformerConfig, data: Any, num_batches: int | None,
               mesh: jax.sharding.Mesh | None = None, rules: ShardingRules = ShardingRules()) -> dict[str, Any]:
  """Per-task, per-modality and overall perplexity over `num_batches` batches of `data` (see module docstring);
  None: until the input ends (a `data` with `num_epochs` set, read by one process; its last batch is padded, so
  every example counts; a mixture ends when its first component does)."""
  if num_batches is not None and num_batches < 1:
    raise ValueError(f"num_batches must be >= 1 or None, got {num_batches}")
  if num_batches is None and (data.num_epochs is None or jax.process_count() > 1):
    raise ValueError("num_batches=None reads until the input ends: give data with num_epochs, in one process")
  data = dataclasses.replace(data, emit_task_ids=True)
  spec = data.vocab_spec
  if spec.size > model_cfg.vocab_size:
    raise ValueError(f"the data's vocabulary ({spec.size} ids) is larger than the model's ({model_cfg.vocab_size})")
  mesh = mesh if mesh is not None else make_mesh(MeshConfig(ici={"data": -1, "fsdp": 1, "tensor": 1}))
  sharding = batch_sharding(mesh, rules)
  modality, modality_names = modality_of_ids(spec)
  level, level_names = level_of_ids(spec)
  task_names = data.task_names
  num_tasks, num_modalities, num_levels = len(task_names), len(modality_names), max(len(level_names), 1)

  row_start, row_stop = host_row_range(sharding, data.global_batch_size, data.seq_len)
  iterator = data.make_iterator(row_start, row_stop)
  totals = [np.zeros(n) for n in (num_tasks, num_tasks, num_modalities, num_modalities, num_levels, num_levels)]
  batches = 0
  with sharding_context(mesh, rules):
    while num_batches is None or batches < num_batches:
      try:
        local = next(iterator)
      except StopIteration:
        if num_batches is not None:
          raise ValueError(f"the input ended after {batches} of {num_batches} batches") from None
        break
      batches += 1
      batch = to_global_batch({k: local[k] for k in _KEYS}, sharding, data.global_batch_size)
      parts = _sums(params, batch, jnp.asarray(modality), jnp.asarray(level), cfg=model_cfg, num_tasks=num_tasks,
                    num_modalities=num_modalities, num_levels=num_levels)
      for total, part in zip(totals, parts):
        total += np.asarray(jax.device_get(part), np.float64)
  if not batches:
    raise ValueError(f"the input holds no whole batch of {data.global_batch_size} rows of {data.seq_len} tokens")
  task_nll, task_tokens, mod_nll, mod_tokens, level_nll, level_tokens = totals
  sizes = {r.level: r.size for r in spec.acoustic}
  return {"tasks": {name: _summary(task_nll[i], task_tokens[i]) for i, name in enumerate(task_names)},
          "modalities": {name: _summary(mod_nll[i], mod_tokens[i]) for i, name in enumerate(modality_names)
                         if mod_tokens[i]},
          "levels": {str(q): {**_summary(level_nll[i], level_tokens[i]), "uniform_nll": math.log(sizes[q])}
                     for i, q in enumerate(level_names) if level_tokens[i]},
          "overall": _summary(float(task_nll.sum()), float(task_tokens.sum())),
          "batches": batches}
