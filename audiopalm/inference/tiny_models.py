"""Tiny randomly initialised speech models for tests: real decoders with the bundled tokenizers' vocabulary.

    main = export_tiny(tmp / "main", "speech_text", model_preset("tiny"))   # any small TransformerConfig
    paths = export_tiny_set(tmp / "models", model_preset("tiny"))           # {"main", "coarse", "fine"}

'speech_text' models have the AudioPaLM vocabulary (bytes + the bundled semantic tokenizer's units), 'acoustic'
models the AudioLM stages' (bytes + semantic + every level of the bundled codec), laid out as `VocabConfig`
lays out a run's vocabulary for the demo tokens, so exports of them load like trained runs' exports.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from audiopalm.checkpoints.export import export_params
from audiopalm.codec.checkpoint import load_codec
from audiopalm.codec.tokenizer import CodecTokenizer
from audiopalm.inference.audio_tokens import BUNDLED
from audiopalm.model import Transformer, TransformerConfig
from audiopalm.model.params import dummy_inputs
from audiopalm.semantic.tokenizer import load_semantic_tokenizer
from audiopalm.vocab.combined import load_text_vocab
from audiopalm.vocab.spec import VocabSpec, make_spec


@functools.cache
def bundled_identities() -> tuple[str, str, int]:
  """(semantic identity, codec identity of all its levels, codec levels) of the bundled tokenizers."""
  codec = load_codec(str(BUNDLED["acoustic"]))
  levels = codec.config.num_quantizers
  return load_semantic_tokenizer(str(BUNDLED["semantic"])).identity, CodecTokenizer(codec, levels).identity, levels


def tiny_spec(kind: str) -> VocabSpec:
  semantic, acoustic, levels = bundled_identities()
  text = load_text_vocab("byte").spec
  if kind == "speech_text":
    return make_spec(text, semantic=(256, semantic))
  if kind == "acoustic":
    return make_spec(text, semantic=(256, semantic), acoustic=[(256, acoustic)] * levels)
  raise ValueError(f"unknown tiny model kind {kind!r}")


def export_tiny(directory: str, kind: str, model: TransformerConfig, seed: int = 0, streams: int = 0,
                semantic: bool = False) -> str:
  """Writes a random `model` (its vocabulary sized for `kind`) as an export (params/, model_config.json,
  vocab_spec.json); `streams` > 0: a multi-stream 'acoustic' model over levels 0..streams-1, after a semantic
  stream if `semantic` (the stages' 'streams' layouts: fine, coarse)."""
  spec = tiny_spec(kind)
  ranges = ((spec.semantic.offset, spec.semantic.end),) if semantic else ()
  ranges += tuple((r.offset, r.end) for r in spec.acoustic[:streams])
  cfg = model.replace(vocab_size=spec.size, stream_vocab=ranges if len(ranges) > 1 else ())
  params = nn.unbox(Transformer(cfg).init(jax.random.key(seed), *dummy_inputs(1, 8, cfg.token_streams)))["params"]
  export_params(params, cfg, str(directory), spec)
  return str(directory)


def export_tiny_set(directory: str, model: TransformerConfig, seed: int = 0) -> dict[str, str]:
  """A speech-text model ('main') and the two acoustic stage models ('coarse', 'fine'), seeds seed..seed+2."""
  kinds = {"main": "speech_text", "coarse": "acoustic", "fine": "acoustic"}
  return {name: export_tiny(f"{directory}/{name}", kind, model, seed=seed + i)
          for i, (name, kind) in enumerate(kinds.items())}
