"""Audio in and out at inference: finding the tokenizers a model was trained with, waveforms → tokens.

    semantic = tokenizer_for(model.spec, "semantic", flag_path, search=[model.path])   # identity checked
    codes = tokenize(semantic, [wave_1, wave_2])                                     # [T, 1] each

A model's vocabulary spec names its tokenizers by identity only. `tokenizer_for` loads the given path, or else
the first of the usual places that holds the right one: `tokenizers/<role>` in each search directory or its
parent (`audiopalm.main.export_checkpoint --tokens_dir` puts them beside the models) and the bundled demo tokenizers.
A tokenizer whose identity differs from the spec's is refused: its tokens would mean something else to the
model.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from etils import epath

from audiopalm.files import storage
from audiopalm.tokenizers.base import AudioTokenizer, load_tokenizer
from audiopalm.vocab.spec import VocabSpec

log = logging.getLogger(__name__)

ASSETS = epath.Path(__file__).resolve().parents[1] / "data" / "assets"
BUNDLED = {"semantic": ASSETS / "demo_semantic", "acoustic": ASSETS / "demo_codec"}
KINDS = {"semantic": "semantic", "acoustic": "codec"}
BUCKET_SECONDS = 1.0  # waveforms are zero-padded to whole buckets (few compilations; tokens are unchanged)


def wanted_identity(spec: VocabSpec, role: str) -> str:
  """The identity of the `role` ('semantic' / 'acoustic') tokenizer `spec` was built with."""
  if role == "semantic":
    if spec.semantic is None:
      raise ValueError("the vocabulary has no semantic range")
    return spec.semantic.tokenizer
  identities = {r.tokenizer for r in spec.acoustic}
  if len(identities) != 1:
    raise ValueError(f"the vocabulary's acoustic ranges name {len(identities)} tokenizers: {sorted(identities)}")
  return identities.pop()


def tokenizer_for(spec: VocabSpec, role: str, path: str | None = None, search: Sequence[str] = (),
                  num_levels: int | None = None) -> AudioTokenizer:
  """The `role` tokenizer of `spec`: `path` if given (checked), else found (see the module docstring)."""
  identity = wanted_identity(spec, role)
  options = {} if role == "semantic" else {"num_levels": num_levels or len(spec.acoustic)}
  candidates = [epath.Path(path)] if path else (
      [p / "tokenizers" / role for d in search for p in (epath.Path(d), epath.Path(d).parent)] + [BUNDLED[role]])
  seen = []
  for candidate in candidates:
    if not storage.exists(candidate):
      seen.append(f"{candidate} (missing)")
      continue
    tokenizer = load_tokenizer(KINDS[role], str(candidate), **options)
    if tokenizer.identity == identity:
      log.info("%s tokenizer: %s", role, candidate)
      return tokenizer
    seen.append(f"{candidate} ({tokenizer.identity})")
  flag = "--semantic_tokenizer" if role == "semantic" else "--codec"
  raise ValueError(f"no {role} tokenizer with the model's identity {identity!r}: tried {'; '.join(seen)}. Pass the "
                   f"one the model's tokens were made with ({flag}=PATH; a token dataset's metadata.json names it)")


def tokenize(tokenizer: AudioTokenizer, waves: Sequence[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
  """Waveforms [S] at `tokenizer.sample_rate` → tokens [T, num_codebooks] each (T = tokenizer.num_frames(S))."""
  out: list[np.ndarray] = []
  bucket = max(1, int(BUCKET_SECONDS * tokenizer.sample_rate))
  for start in range(0, len(waves), batch_size):
    batch = [np.asarray(w, np.float32).reshape(-1) for w in waves[start:start + batch_size]]
    lengths = np.array([w.size for w in batch], np.int32)
    width = -(-max(int(lengths.max()), 1) // bucket) * bucket
    padded = np.stack([np.pad(w, (0, width - w.size)) for w in batch])  # [B, S]
    tokens, token_lengths = tokenizer.encode(padded, lengths)
    tokens, token_lengths = np.asarray(tokens), np.asarray(token_lengths)
    out += [tokens[i, :token_lengths[i]] for i in range(len(batch))]
  return out
