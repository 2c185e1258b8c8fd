"""Vocabulary extension: old rows kept, new rows initialised as asked, text logits unchanged, sharded = unsharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer
from audiopalm.model.params import abstract_params
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.params import unbox
from audiopalm.sharding.rules import ShardingRules, params_shardings
from audiopalm.vocab.combined import load_text_vocab
from audiopalm.vocab.extend import check_extends, extend_params
from audiopalm.vocab.spec import make_spec

TEXT = load_text_vocab("byte").spec
OLD = make_spec(TEXT)  # 258 text ids, padded to 384
NEW = make_spec(TEXT, semantic=(256, "sem"), acoustic=[(64, "codec")] * 2)  # 258 + 256 + 128 → 768
# Text logits after the extension equal those before up to float32 reassociation (XLA tiles a matmul over 768
# vocabulary rows differently from one over 384): 1e-6 of the peak |logit|.
TOL = 1e-6


def _model(tied: bool, vocab: int):
  return model_preset("tiny", num_layers=1, d_model=32, d_ff=64, head_dim=8, vocab_size=vocab, tie_embeddings=tied)


def _init(cfg, seed=0):
  net = Transformer(cfg)
  return net, abstract_params(net), unbox(net.init(jax.random.key(seed), *(jnp.zeros((1, 8), jnp.int32),) * 2,
                                                   jnp.ones((1, 8), jnp.int32))["params"])


def _logits(net, params, tokens):
  t = tokens.shape[1]
  return net.apply({"params": params}, tokens, jnp.broadcast_to(jnp.arange(t), tokens.shape), jnp.ones_like(tokens))


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("init", ["zero", "mean", "random"])
def test_text_logits_unchanged_and_new_rows_initialised(tied, init):
  old_net, boxed, params = _init(_model(tied, OLD.size))
  new_params = extend_params(params, boxed, OLD, NEW.size, init, jax.random.key(3))
  new_net = Transformer(_model(tied, NEW.size))
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 2, TEXT.size)
  before, after = _logits(old_net, params, tokens), _logits(new_net, new_params, tokens)
  assert after.shape[-1] == NEW.size
  before, after = np.asarray(before[..., :TEXT.size]), np.asarray(after[..., :TEXT.size])
  assert np.abs(after - before).max() <= TOL * np.abs(before).max()

  table, new_table = np.asarray(params["embed"]["table"]), np.asarray(new_params["embed"]["table"])
  np.testing.assert_array_equal(new_table[:TEXT.size], table[:TEXT.size])
  added = new_table[TEXT.size:]
  if init == "zero":
    assert not added.any()
  elif init == "mean":
    np.testing.assert_allclose(added, np.broadcast_to(table[:TEXT.size].mean(0), added.shape), atol=1e-6)
  else:
    assert abs(added.std() / table[:TEXT.size].std() - 1) < 0.1 and abs(added.mean()) < 0.05
  if not tied:
    unembed = np.asarray(new_params["unembed"])
    np.testing.assert_array_equal(unembed[:, :TEXT.size], np.asarray(params["unembed"])[:, :TEXT.size])
    assert unembed.shape == (32, NEW.size)
  # Nothing but the vocabulary axes changed.
  np.testing.assert_array_equal(np.asarray(new_params["final_norm"]["scale"]),
                                np.asarray(params["final_norm"]["scale"]))


def test_audio_rows_already_trained_are_kept():
  semantic_only = make_spec(TEXT, semantic=(256, "sem"))  # 514 → 640
  _, boxed, params = _init(_model(True, semantic_only.size))
  out = extend_params(params, boxed, semantic_only, NEW.size, "zero")
  table = np.asarray(out["embed"]["table"])
  np.testing.assert_array_equal(table[:514], np.asarray(params["embed"]["table"])[:514])
  assert not table[514:].any()


def test_extension_refuses_layouts_that_change_meaning():
  with pytest.raises(ValueError, match="text vocabulary differs"):
    check_extends(OLD, make_spec(load_text_vocab("byte").spec.__class__("byte", 300, "other", 0, 1)))
  semantic_only = make_spec(TEXT, semantic=(256, "sem"))
  with pytest.raises(ValueError, match=r"semantic ids \[258, 514\) of sem are \[259, 515\)"):
    check_extends(semantic_only, make_spec(TEXT, semantic=(256, "sem"), specials=("<delay_pad>",)))
  with pytest.raises(ValueError, match="semantic .* of sem are absent"):
    check_extends(semantic_only, OLD)
  check_extends(OLD, NEW)
  check_extends(semantic_only, NEW)
  _, boxed, params = _init(_model(True, OLD.size))
  with pytest.raises(ValueError, match="smaller than the rows"):
    extend_params(params, boxed, NEW, 300)


def test_sharded_extension_equals_unsharded():
  """On a 2 × 2 × 2 mesh, from a 301-row model (rows the tensor axis does not divide) to the padded 768."""
  odd = make_spec(TEXT, semantic=(43, "sem"), pad_to_multiple=1)  # 301 rows
  cfg = _model(False, odd.size)
  _, boxed, params = _init(cfg)
  mesh = make_mesh(MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2}))
  rules = ShardingRules()
  new_boxed = abstract_params(Transformer(_model(False, NEW.size)))
  out_shardings = params_shardings(new_boxed, mesh, rules)
  sharded = jax.jit(lambda p: extend_params(p, boxed, odd, NEW.size, "random", jax.random.key(5)),
                    out_shardings=out_shardings)(params)
  plain = extend_params(params, boxed, odd, NEW.size, "random", jax.random.key(5))
  assert sharded["unembed"].sharding.spec == out_shardings["unembed"].spec
  kept = slice(0, odd.used)
  np.testing.assert_array_equal(np.asarray(sharded["unembed"])[:, kept], np.asarray(plain["unembed"])[:, kept])
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(plain)):  # random rows: std reduced in another order
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
