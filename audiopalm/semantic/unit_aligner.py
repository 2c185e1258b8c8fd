"""What the units of a CTC-trained semantic tokenizer say: a transcript, and where each word is, from the units alone.

    aligner = UnitAligner.from_tokenizer(load_semantic_tokenizer("runs/main/semantic"))
    aligner.transcribe(units)                    # 'PUSH NINE YELLOW BLOCKS RIGHT' (best path over the units)
    aligner.word_times(units, "PUSH NINE ...")   # [W, 2] float32 (start, end) seconds per word, or None

The units are k-means clusters of the last layer of an encoder trained with CTC (`audiopalm.ssl.ctc_encoder`,
`experiments/semantic_demo_ctc.gin`). Its CTC head applied to each centroid (back in feature space: centroid ·
std + mean, the inverse of the tokenizer's standardization) gives every unit log-probabilities over blank +
alphabet, `log_probs` [K, 1 + A]. A unit sequence is then a CTC emission matrix [T, 1 + A] by look-up:

  transcribe    best-path decoding (repeats merged, blanks dropped): how many of the words the units carry, with
                no model (a yardstick for generated units that needs neither the acoustic stages nor an ASR model)
  word_times    Viterbi forced alignment of a known transcript (CTC's topology: blank, c_1, blank, c_2, ...,
                blank; repeated characters separated by a blank). Word w spans from the first frame of its first
                character to the last frame of its last character; times are frames / frame rate. None when the
                transcript has a character outside the alphabet or needs more frames than there are (each
                character takes one, a repeated one two).

The data pipeline writes `word_times` into the token shards as `alignments` (`audiopalm.tokens.schema`), which the
formats that cut text and audio at word boundaries read (`formats.audiopalm_tasks`: `interleaved`, word-interleaved
`tts`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audiopalm.semantic.ctc_train import greedy_decode
from audiopalm.ssl.ctc_encoder import CtcEncoder

_NEG = -1e30  # log 0 in the Viterbi lattice


class UnitAligner:
  """Per-unit CTC log-probabilities [K, 1 + A] over blank + `alphabet`, at `frame_rate` units per second."""

  def __init__(self, log_probs: np.ndarray, alphabet: str, frame_rate: float):
    log_probs = np.asarray(log_probs, np.float64)
    if log_probs.ndim != 2 or log_probs.shape[1] != 1 + len(alphabet):
      raise ValueError(f"UnitAligner: log_probs must be [K, 1 + {len(alphabet)}] (blank + alphabet), got "
                       f"{log_probs.shape}")
    if not frame_rate > 0:
      raise ValueError(f"UnitAligner: frame_rate must be > 0, got {frame_rate}")
    self.log_probs, self.alphabet, self.frame_rate = log_probs, alphabet, float(frame_rate)
    self._index = {c: i + 1 for i, c in enumerate(alphabet)}

  @classmethod
  def from_tokenizer(cls, tokenizer: Any) -> "UnitAligner":
    """The aligner of a `SemanticTokenizer` whose units are k-means clusters of a CTC encoder's last layer, unpooled
    (ValueError naming what is not so: another encoder, another layer, pooled frames)."""
    encoder, spec = getattr(tokenizer, "encoder", None), getattr(tokenizer, "spec", None)
    if encoder is None or spec is None:
      raise ValueError(f"this semantic tokenizer's units cannot be read as characters: it is a "
                       f"{type(tokenizer).__name__}, not an encoder's k-means (audiopalm.semantic.tokenizer)")
    problems = []
    if not isinstance(encoder, CtcEncoder):
      problems.append(f"its encoder is a {getattr(encoder, 'name', type(encoder).__name__)} encoder, not a "
                      "CTC-trained one (audiopalm.ssl.ctc_encoder)")
    elif spec.layer != encoder.num_layers:
      problems.append(f"its units are of layer {spec.layer}, the CTC head reads layer {encoder.num_layers}")
    if spec.downsample != 1:
      problems.append(f"its units pool {spec.downsample} frames")
    if problems:
      raise ValueError("this semantic tokenizer's units cannot be read as characters: " + "; ".join(problems))
    head = encoder.params["ctc_head"]
    features = np.asarray(tokenizer.centroids, np.float64) * np.asarray(tokenizer.std, np.float64) + np.asarray(
        tokenizer.mean, np.float64)  # [K, D]
    logits = features @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"], np.float64)  # [K, 1 + A]
    logits -= logits.max(-1, keepdims=True)
    return cls(logits - np.log(np.exp(logits).sum(-1, keepdims=True)), encoder.config.alphabet, tokenizer.frame_rate)

  def _emissions(self, units: Any) -> np.ndarray:
    units = np.asarray(units, np.int64).reshape(-1)
    if units.size and (units.min() < 0 or units.max() >= self.log_probs.shape[0]):
      raise ValueError(f"units must be in [0, {self.log_probs.shape[0]}), got [{units.min()}, {units.max()}]")
    return self.log_probs[units]  # [T, 1 + A]

  def transcribe(self, units: Any) -> str:
    """Best-path CTC decoding of units [T]: the most likely label per unit, repeats merged, blanks dropped; words
    joined by single spaces."""
    return greedy_decode(self._emissions(units), self.alphabet)

  def word_times(self, units: Any, transcript: str) -> np.ndarray | None:
    """[W, 2] float32 (start, end) seconds of each whitespace-separated word of `transcript` in units [T] (module
    docstring), or None when the transcript cannot be aligned to them."""
    words = transcript.split()
    if not words:
      return None
    text = " ".join(words)
    if any(c not in self._index for c in text):
      return None
    labels = np.array([self._index[c] for c in text], np.int64)  # [L]
    path = self._viterbi(self._emissions(units), labels)
    if path is None:
      return None
    char_of_frame = np.where(path % 2 == 1, path // 2, -1)  # [T]: the character each frame emits, -1 for blank
    times, start = [], 0
    for word in words:
      end = start + len(word)  # characters [start, end) of `text`
      frames = np.flatnonzero((char_of_frame >= start) & (char_of_frame < end))
      times.append((frames[0], frames[-1] + 1))
      start = end + 1  # past the space
    return (np.asarray(times, np.float64) / self.frame_rate).astype(np.float32)

  @staticmethod
  def _viterbi(emissions: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """The best CTC path of `labels` [L] through emissions [T, 1 + A]: the state (0..2L, odd = label (s-1)/2) of
    every frame [T], or None when T is too short."""
    frames, size = emissions.shape[0], 2 * labels.size + 1
    repeats = int((labels[1:] == labels[:-1]).sum())
    if frames < labels.size + repeats:
      return None
    states = np.zeros(size, np.int64)  # the label each state emits
    states[1::2] = labels
    skip = np.zeros(size, bool)  # state s may be entered from s - 2 (a label after a different label)
    skip[3::2] = labels[1:] != labels[:-1]
    score = np.full(size, _NEG)
    score[:2] = emissions[0, states[:2]]
    back = np.zeros((frames, size), np.int8)  # how many states back each state was entered from
    for t in range(1, frames):
      options = np.stack([score, np.concatenate([[_NEG], score[:-1]]),
                          np.where(skip, np.concatenate([[_NEG, _NEG], score[:-2]]), _NEG)])  # [3, S]
      back[t] = options.argmax(0)
      score = options[back[t], np.arange(size)] + emissions[t, states]
    state = size - 1 if score[size - 1] >= score[size - 2] else size - 2
    if score[state] <= _NEG / 2:
      return None
    path = np.zeros(frames, np.int64)
    for t in range(frames - 1, -1, -1):
      path[t] = state
      state -= back[t, state]
    return path
