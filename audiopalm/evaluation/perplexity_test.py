"""Per-task / per-modality perplexity equals the same sums worked out from full logits in numpy."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiopalm.data.mixture import MixtureComponent
from audiopalm.data.speech_text_source import SpeechTextConfig
from audiopalm.evaluation.perplexity import modality_of_ids, perplexity
from audiopalm.main.presets import model_preset
from audiopalm.model import Transformer
from audiopalm.sharding.mesh import MeshConfig, make_mesh
from audiopalm.sharding.params import unbox
from audiopalm.tokens import synthetic

SMALL = synthetic.SyntheticConfig(examples=40, num_shards=2, min_seconds=1.0, max_seconds=3.0, semantic_vocab=64,
                                  acoustic_vocab=32, num_codebooks=2, words_per_second=2.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  out = tmp_path_factory.mktemp("ppl")
  synthetic.write_synthetic_dataset(str(out), SMALL)
  comps = (MixtureComponent("asr", str(out), rate=0.5), MixtureComponent("tts", str(out), rate=0.5))
  return SpeechTextConfig(components=comps, seq_len=128, global_batch_size=8, read_threads=0, packing_window=32,
                          log_every=0, shuffle=False)


def test_perplexity_matches_a_numpy_computation(data):
  cfg = model_preset("tiny", num_layers=1, d_model=32, d_ff=64, head_dim=8, vocab_size=data.vocab_spec.size)
  net = Transformer(cfg)
  tokens = jnp.zeros((1, 8), jnp.int32)
  params = unbox(net.init(jax.random.key(0), tokens, tokens, jnp.ones_like(tokens))["params"])
  mesh = make_mesh(MeshConfig(ici={"data": 2, "fsdp": 2, "tensor": 2}))
  result = perplexity(params, cfg, data, num_batches=2, mesh=mesh)

  # The same two batches, scored by hand.
  modality, names = modality_of_ids(data.vocab_spec)
  it = dataclasses.replace(data, emit_task_ids=True).make_iterator(0, data.global_batch_size)
  nll = {"asr": [], "tts": []}
  by_mod = {n: [] for n in names}
  for _ in range(2):
    b = next(it)
    logits = np.asarray(net.apply({"params": params}, b["inputs"], b["positions"], b["segment_ids"]), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    token_nll = -np.take_along_axis(logp, b["targets"][..., None], -1)[..., 0]
    scored = b["weights"] > 0
    for task_id, name in enumerate(data.task_names):
      nll[name] += token_nll[scored & (b["task_ids"] == task_id)].tolist()
    for m, name in enumerate(names):
      by_mod[name] += token_nll[scored & (modality[b["targets"]] == m)].tolist()
  for name in ("asr", "tts"):
    got = result["tasks"][name]
    assert got["tokens"] == len(nll[name]) > 0
    assert got["nll"] == pytest.approx(np.mean(nll[name]), rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(np.mean(nll[name])), rel=1e-5)
  # ASR outputs text, TTS outputs semantic tokens: both modalities are present, and the totals agree.
  assert result["modalities"]["text"]["tokens"] == len(by_mod["text"]) > 0
  assert result["modalities"]["semantic"]["tokens"] == len(by_mod["semantic"]) > 0
  assert result["modalities"]["semantic"]["nll"] == pytest.approx(np.mean(by_mod["semantic"]), rel=1e-5)
  assert result["overall"]["tokens"] == len(nll["asr"]) + len(nll["tts"])


def test_bad_arguments(data):
  cfg = model_preset("tiny", vocab_size=128)
  with pytest.raises(ValueError, match="larger than the model's"):
    perplexity({}, cfg, data, num_batches=1)
  with pytest.raises(ValueError, match="num_batches"):
    perplexity({}, cfg, data, num_batches=0)
