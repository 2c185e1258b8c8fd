"""Vocabulary extension: a text (or smaller) checkpoint's embedding and output rows grown to a larger vocabulary.

    check_extends(old_spec, new_spec)                       # ValueError naming what would change meaning
    params = extend_params(params, boxed_abstract, old_spec, new_vocab_size, init="zero", rng=key)

AudioPaLM appends audio rows after the text rows of a pretrained text model, initialised to zero. The rows of
the old layout ([0, old.used): text, specials, audio ranges the old model already had) are copied unchanged; every
row after them up to the new size is initialised:
    zero     all zeros (AudioPaLM); tied models then give new tokens logit 0 until trained
    mean     the mean of the old model's text rows, per dimension (a common choice for new tokens)
    random   N(0, std) with std = the standard deviation of the old text rows (same scale as the text rows)

Which parameter axes hold vocabulary rows is read from the logical axis names (`axes.VOCAB`): the embedding table
[vocab, embed] and the untied output layer [embed, vocab]. Everything else is returned as it is. Under `jax.jit`
with `out_shardings` the result is assembled in its sharded layout; no host needs a whole table.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiopalm.sharding import axes
from audiopalm.vocab.spec import VocabSpec

INITS = ("zero", "mean", "random")


def check_extends(old: VocabSpec, new: VocabSpec) -> None:
  """Refuses (ValueError) a new layout in which a token of the old one would change its id or meaning."""
  problems = []
  if old.text != new.text:
    problems.append(f"the text vocabulary differs ({old.text.kind}:{old.text.identity}, {old.text.size} ids vs "
                    f"{new.text.kind}:{new.text.identity}, {new.text.size} ids)")
  if new.specials[:len(old.specials)] != old.specials:
    problems.append(f"the special tokens {list(old.specials)} are not the first of {list(new.specials)}")
  ranges = {r.name: r for r in new.audio_ranges}
  for r in old.audio_ranges:
    if ranges.get(r.name) != r:
      now = ranges.get(r.name)
      problems.append(f"{r.name} ids [{r.offset}, {r.end}) of {r.tokenizer} are "
                      + ("absent" if now is None else f"[{now.offset}, {now.end}) of {now.tokenizer}")
                      + " in the new vocabulary")
  if problems:
    raise ValueError("the new vocabulary does not extend the checkpoint's: " + "; ".join(problems)
                     + ". The run's vocabulary must have the checkpoint's text vocabulary (VocabConfig.text_kind / "
                     "text_path), its special tokens first, and its audio ranges from the same tokenizers; ranges "
                     "are laid out text, specials, semantic, acoustic, so a checkpoint with audio rows cannot gain "
                     "special tokens")


def vocab_axes(boxed_abstract: Any) -> Any:
  """Per parameter leaf: the index of its vocabulary axis, or None."""
  def find(x):
    names = tuple(x.names) if isinstance(x, nn.LogicallyPartitioned) else ()
    return names.index(axes.VOCAB) if axes.VOCAB in names else None
  return jax.tree.map(find, boxed_abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _grow(table: jax.Array, axis: int, keep: int, text_rows: int, size: int, init: str, rng: jax.Array) -> jax.Array:
  """`table` with its rows along `axis` cut to `keep` and grown to `size` by `init`."""
  rows = jnp.moveaxis(table, axis, 0).astype(jnp.float32)  # [vocab, ...]
  old = rows[:keep]
  shape = (size - keep, *rows.shape[1:])
  if init == "zero":
    new = jnp.zeros(shape, jnp.float32)
  elif init == "mean":
    new = jnp.broadcast_to(jnp.mean(rows[:text_rows], axis=0), shape)
  else:
    new = jax.random.normal(rng, shape, jnp.float32) * jnp.std(rows[:text_rows])
  return jnp.moveaxis(jnp.concatenate([old, new], axis=0), 0, axis).astype(table.dtype)


def extend_params(params: Any, boxed_abstract: Any, old: VocabSpec, new_size: int, init: str = "zero",
                  rng: jax.Array | None = None) -> Any:
  """`params` (laid out for the old vocabulary) with every vocabulary axis grown to `new_size` rows.

  Rows [0, old.used) are kept; the rest is initialised by `init` (see the module docstring). `boxed_abstract` is
  the boxed abstract parameter tree of the old model (for the logical axis names). Jit this (with out_shardings)
  to keep the result sharded.
  """
  if init not in INITS:
    raise ValueError(f"vocabulary init {init!r}; choose one of {INITS}")
  if new_size < old.used:
    raise ValueError(f"the new vocabulary ({new_size} rows) is smaller than the rows the checkpoint uses "
                     f"({old.used})")
  rng = jax.random.key(0) if rng is None else rng
  vocab = vocab_axes(boxed_abstract)
  leaves, treedef = jax.tree.flatten(params)
  axis_leaves = treedef.flatten_up_to(vocab)
  out = []
  for i, (leaf, axis) in enumerate(zip(leaves, axis_leaves)):
    if axis is None:
      out.append(leaf)
      continue
    if leaf.shape[axis] < old.used:
      raise ValueError(f"a vocabulary axis has {leaf.shape[axis]} rows but the checkpoint's spec uses {old.used}")
    out.append(_grow(leaf, axis, old.used, old.text.size, new_size, init, jax.random.fold_in(rng, i)))
  return jax.tree.unflatten(treedef, out)
