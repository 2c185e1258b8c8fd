"""The decoder's parameter tree: initialised, or only its shapes and logical axes.

    boxed = abstract_params(Transformer(cfg))       # ShapeDtypeStruct leaves boxed with logical axis names
    boxed = init_params(Transformer(cfg), rng)      # real values, boxed the same way

Both trace `Transformer.__call__` on a dummy batch (one row of 8 tokens): the parameters do not depend on it.
Unbox with `audiopalm.sharding.params.unbox`; lay out with `audiopalm.sharding.rules.params_shardings`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from audiopalm.model.transformer import Transformer


def dummy_inputs(batch: int, length: int, streams: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(tokens, positions, segment_ids) of zeros, zeros and ones: [batch, length] int32 each (tokens
  [batch, length, streams] for more than one token stream)."""
  positions = jnp.zeros((batch, length), jnp.int32)
  tokens = jnp.zeros((batch, length, streams), jnp.int32) if streams > 1 else positions
  return tokens, positions, jnp.ones_like(positions)


def init_params(model: Transformer, rng: jax.Array) -> Any:
  """Boxed parameters initialised from `rng` (call inside `jax.jit` with `out_shardings` to create them sharded)."""
  return model.init(rng, *dummy_inputs(1, 8, model.cfg.token_streams))["params"]


def abstract_params(model: Transformer) -> Any:
  """Boxed abstract parameters (ShapeDtypeStruct leaves with logical names); allocates nothing."""
  return jax.eval_shape(lambda rng: init_params(model, rng), jax.random.key(0))
