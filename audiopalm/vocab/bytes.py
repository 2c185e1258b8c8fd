"""The byte-level text vocabulary: UTF-8 bytes shifted past two special ids.

    ids = encode("héllo")      # int32 [n_bytes]: byte b → b + BYTE_OFFSET
    decode(ids)                # "héllo" (ids outside the byte range are dropped)

Token ids: 0 = padding, 1 = EOS/BOS, 2..257 = bytes; `VOCAB_SIZE` = 258 (a model may pad its vocabulary
further). The tiny text checkpoint and the embedded default's speech-text runs use it
(`audiopalm.vocab.combined.load_text_vocab("byte")`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PAD, EOS, BYTE_OFFSET = 0, 1, 2
VOCAB_SIZE = 256 + BYTE_OFFSET


def encode(text: str) -> np.ndarray:
  return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32) + BYTE_OFFSET


def decode(tokens: Sequence[int]) -> str:
  data = bytes(int(t) - BYTE_OFFSET for t in tokens if BYTE_OFFSET <= int(t) < VOCAB_SIZE)
  return data.decode("utf-8", errors="replace")
